//! The control socket's requests (and the pages' `status`), answered from the agent's loop.

use super::Agent;
use crate::control::{Request, Response};

impl Agent {
    pub(super) async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Reload { config } => {
                let (ok, message) = match self.reload(config, "xdp-lb reload").await {
                    Ok(message) => (true, message),
                    Err(rejected) => (false, rejected.to_string()),
                };
                Response {
                    ok,
                    message,
                    status: None,
                }
            }
            Request::Status => Response {
                ok: true,
                message: "ok".into(),
                status: Some(Box::new(self.status())),
            },
            Request::Drain => self.drain(true),
            Request::Undrain => self.drain(false),
        }
    }

    /// `xdp-lb drain` (`on`) and `xdp-lb undrain`.
    fn drain(&mut self, on: bool) -> Response {
        let Some(announcer) = self.announcer.as_mut() else {
            return Response {
                ok: false,
                message: "nothing to drain: the config has no [announce] section".into(),
                status: None,
            };
        };
        let was = announcer.draining();
        announcer.set_draining(on);
        let message = match (was, on) {
            (true, true) => "already draining",
            (false, false) => "not draining",
            (false, true) => {
                "draining: every VIP is withdrawn; flows that still arrive are forwarded (`xdp-lb undrain` ends it)"
            }
            (true, false) => "undrained: VIPs this node can serve are announced again",
        };
        Response {
            ok: true,
            message: message.into(),
            status: None,
        }
    }
}
