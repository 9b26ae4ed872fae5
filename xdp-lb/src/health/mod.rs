//! Health checks: one tokio task per (VIP, backend), haproxy's semantics.
//!
//! A backend is up or down. Every `interval` the task probes it (`probe.rs`: `tcp` connects;
//! `http` GETs `http_path` and compares the status; `https` does so over TLS, `tls.rs`; `dns`
//! sends a query over UDP and compares the rcode, `dns.rs`; `none` does not probe and is always up). `fall` consecutive
//! failures take an up backend down; `rise` consecutive successes bring a down one up. Each
//! transition is sent to the agent as a [`HealthEvent`] with the reason; the agent turns it
//! into a new desired state for the one reconciler. The last result of every probe is kept in
//! [`HealthTable`] for `xdp-lb status`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use tokio::{sync::mpsc, task::JoinHandle};
use xdp_lb_common::AnyVipKey;

mod dns;
mod probe;
mod tls;

pub use self::probe::Prober;
use crate::{
    clock::unix_now,
    config::{CheckType, Config, HealthCheckConfig},
    state::vip_key,
};

/// A backend's identity for health: the VIP it serves and its address.
pub type BackendKey = (AnyVipKey, IpAddr);

#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub key: BackendKey,
    pub vip_name: String,
    pub up: bool,
    pub reason: String,
}

/// What `status` shows for one backend's check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendHealth {
    pub up: bool,
    /// The last probe's result ("ok", "connect refused", "HTTP 503", "timeout after 1s").
    pub last_check: String,
    /// When the last probe finished (seconds since the Unix epoch).
    pub last_check_unix: u64,
    pub transitions: u64,
    /// Unix seconds of the last transition (or of the check's start).
    pub since_unix: u64,
}

/// Shared between the checker tasks (writers) and the agent (reader).
pub type HealthTable = Arc<Mutex<BTreeMap<BackendKey, BackendHealth>>>;

struct Task {
    check: HealthCheckConfig,
    port: u16,
    handle: JoinHandle<()>,
}

/// The set of running checks, kept in step with the config by [`Checker::sync`].
pub struct Checker {
    tasks: BTreeMap<BackendKey, Task>,
    events: mpsc::Sender<HealthEvent>,
    pub table: HealthTable,
}

impl Checker {
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            tasks: BTreeMap::new(),
            events,
            table: Arc::default(),
        }
    }

    /// Starts checks for new backends, stops those of removed ones, and restarts those whose
    /// check changed (keeping their current up/down state, so a reload does not flap them).
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: BTreeMap<BackendKey, (String, HealthCheckConfig, u16)> = BTreeMap::new();
        for vip in &config.vips {
            let key = vip_key(vip);
            for b in &vip.backends {
                // The backend's own port (a NAT backend may listen elsewhere than the VIP).
                let port = vip.health_check.port.unwrap_or(b.port);
                wanted.insert(
                    (key, b.address),
                    (vip.name.clone(), vip.health_check.clone(), port),
                );
            }
        }
        let gone: Vec<BackendKey> = self
            .tasks
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(task) = self.tasks.remove(&key) {
                task.handle.abort();
            }
            if let Ok(mut t) = self.table.lock() {
                t.remove(&key);
            }
        }
        for (key, (vip_name, check, port)) in wanted {
            if let Some(task) = self.tasks.get(&key) {
                if task.check == check && task.port == port {
                    continue;
                }
                task.handle.abort();
            }
            let now = unix_now();
            let up = {
                let mut table = self.table.lock().expect("health table poisoned");
                let entry = table.entry(key).or_insert_with(|| BackendHealth {
                    up: !check.start_down || check.kind == CheckType::None,
                    last_check: "not checked yet".into(),
                    last_check_unix: 0,
                    transitions: 0,
                    since_unix: now,
                });
                if check.kind == CheckType::None && !entry.up {
                    entry.up = true;
                    entry.last_check = "no check configured".into();
                }
                entry.up
            };
            let handle = tokio::spawn(check_loop(
                key,
                vip_name,
                check.clone(),
                port,
                up,
                self.events.clone(),
                self.table.clone(),
            ));
            self.tasks.insert(
                key,
                Task {
                    check,
                    port,
                    handle,
                },
            );
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

async fn check_loop(
    key: BackendKey,
    vip_name: String,
    check: HealthCheckConfig,
    port: u16,
    mut up: bool,
    events: mpsc::Sender<HealthEvent>,
    table: HealthTable,
) {
    if check.kind == CheckType::None {
        return;
    }
    let addr = SocketAddr::from((key.1, port));
    let prober = match Prober::new(&check) {
        Ok(p) => p,
        Err(reason) => {
            // The files were readable at validation; say why they are not now, and hold the
            // backend in its current state rather than guess.
            tracing::error!(vip = %vip_name, backend = %key.1, %reason, "cannot start the health check");
            if let Ok(mut t) = table.lock()
                && let Some(h) = t.get_mut(&key)
            {
                h.last_check = format!("check not started: {reason}");
            }
            return;
        }
    };
    let mut streak = 0u32;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = prober.probe(addr).await;
        let now = unix_now();
        let ok = result.is_ok();
        let shown = match &result {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason.clone(),
        };
        // Count consecutive results that disagree with the current state.
        if ok != up {
            streak += 1;
        } else {
            streak = 0;
        }
        let threshold = if up { check.fall } else { check.rise };
        let transition = streak >= threshold;
        if transition {
            up = !up;
            streak = 0;
        }
        if let Ok(mut t) = table.lock()
            && let Some(h) = t.get_mut(&key)
        {
            h.last_check = shown.clone();
            h.last_check_unix = now;
            if transition {
                h.up = up;
                h.transitions += 1;
                h.since_unix = now;
            }
        }
        if transition {
            let reason = if up {
                format!("{} consecutive successful checks", check.rise)
            } else {
                format!("{} consecutive failed checks, last: {shown}", check.fall)
            };
            if events
                .send(HealthEvent {
                    key,
                    vip_name: vip_name.clone(),
                    up,
                    reason,
                })
                .await
                .is_err()
            {
                return; // the agent is stopping
            }
        }
    }
}
