//! Data-plane tracking for VRRP: what keepalived users scripted as "is haproxy alive?", done
//! from the agent's own knowledge.

use super::Agent;
use crate::{netlink, route_announce::Facts};

impl Agent {
    /// Data-plane tracking for VRRP and for the announcements (level-triggered: every tick and
    /// after every change): the program must be attached (the kernel says so) and every VIP
    /// must have a usable backend. What keepalived users scripted as "is haproxy alive?".
    pub(super) async fn track(&mut self) {
        if self.vrrp.is_empty() && self.announcer.is_none() {
            return;
        }
        let attached = match self
            .guard
            .dataplane()
            .attached()
            .and_then(|(i, _)| netlink::ifindex(i))
        {
            Some(ifindex) => self.netlink.xdp_attached(ifindex).await.unwrap_or(true),
            None => false,
        };
        if let Some(announcer) = self.announcer.as_mut() {
            let facts = Facts {
                config: &self.config,
                attached,
                without_backends: &self.vips_without_backends,
                awaiting_snapshot: self.sync.as_ref().is_some_and(|s| s.snapshot == "waiting"),
            };
            announcer.update(&facts).await;
        }
        if self.vrrp.is_empty() {
            return;
        }
        let problem = if !attached {
            Some("the XDP program is not attached".to_owned())
        } else if !self.vips_without_backends.is_empty() {
            let names: Vec<&str> = self
                .config
                .vips
                .iter()
                .filter(|v| self.vips_without_backends.contains(&v.key()))
                .map(|v| v.name.as_str())
                .collect();
            Some(format!("VIP {} has no usable backend", names.join(", ")))
        } else {
            None
        };
        for (instance, cfg) in self.vrrp.iter().zip(&self.config.vrrp) {
            match (cfg.track_dataplane, cfg.track_weight) {
                (false, _) => {}
                (true, 0) => instance.track(problem.clone(), 0).await,
                (true, weight) => {
                    let penalty = if problem.is_some() { weight } else { 0 };
                    instance.track(None, penalty).await;
                }
            }
        }
    }
}
