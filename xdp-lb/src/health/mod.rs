//! Health checks: one tokio task per (VIP, backend), haproxy's semantics.
//!
//! A backend is up or down. Every `interval` its task probes it (`probe.rs`: `tcp` connects;
//! `http` GETs `http_path` and compares the status; `https` does so over TLS, `tls.rs`; `dns`
//! sends a query over UDP and compares the rcode, `dns.rs`; `none` does not probe and is always
//! up) and counts the results (`rise_fall.rs`: `fall` consecutive failures take an up backend
//! down, `rise` consecutive successes bring a down one up).
//!
//! A transition reaches the maps by one route: the task sends it to the agent as a
//! [`HealthEvent`]; the agent applies it to its [`HealthTable`] (`table.rs`), from which it
//! computes the desired state. The tasks also note each probe's result in a [`ProbeLog`], which
//! only `status` reads.

mod dns;
mod failure;
mod probe;
mod rise_fall;
mod table;
mod tls;
mod tunnel;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{sync::mpsc, task::JoinHandle};

pub use self::{
    failure::{CheckSetupError, ProbeFailure},
    probe::Prober,
    rise_fall::RiseFall,
    table::{HealthTable, Verdict},
    tunnel::TunnelPath,
};
use crate::{
    clock::unix_now,
    config::{BackendKey, CheckType, Config, FamilyAddresses, HealthCheckConfig, VipConfig},
};

/// What the checks through tunnels need from the agent: the backends' ids (a probe's port),
/// this node's tunnel sources, and where the program's maps are pinned.
#[derive(Debug, Clone, Copy)]
pub struct TunnelInputs<'a> {
    pub backend_ids: &'a BTreeMap<BackendKey, u32>,
    pub source: FamilyAddresses,
    pub pin_dir: &'a std::path::Path,
}

/// Which run of a backend's check sent an event: a reload that changes a check replaces its
/// task, and an event the old task sent just before is stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CheckId(u64);

/// A transition of one backend's check.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub key: BackendKey,
    pub check: CheckId,
    pub vip_name: String,
    pub up: bool,
    pub reason: String,
    /// When the probe that completed the streak finished (Unix seconds).
    pub at_unix: u64,
}

/// The last probe of a backend, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastProbe {
    /// "ok", "connect refused", "HTTP 503", "timeout after 1s", or why no probe runs.
    pub result: String,
    /// When it finished (Unix seconds; 0: no probe yet).
    pub at_unix: u64,
}

/// Written by the check tasks, read by `status` only.
pub type ProbeLog = Arc<Mutex<BTreeMap<BackendKey, LastProbe>>>;

/// What one check task probes, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    key: BackendKey,
    vip_name: String,
    check: HealthCheckConfig,
    /// The backend's port, or the check's own (`health_check.port`).
    port: u16,
    /// `health_check.through_tunnel`: the probe through the VIP's tunnel, after the check's.
    tunnel: Option<TunnelPath>,
}

struct Task {
    target: Target,
    id: CheckId,
    handle: JoinHandle<()>,
}

/// The running checks, one per configured backend.
pub struct Checker {
    tasks: BTreeMap<BackendKey, Task>,
    events: mpsc::Sender<HealthEvent>,
    next_id: u64,
    probes: ProbeLog,
}

impl Checker {
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            tasks: BTreeMap::new(),
            events,
            next_id: 0,
            probes: ProbeLog::default(),
        }
    }

    /// The last probe of every backend (`status`).
    pub fn probes(&self) -> &ProbeLog {
        &self.probes
    }

    /// Starts checks for new backends, stops those of removed ones, and restarts those whose
    /// check changed, each from the state `table` holds for its backend (so a reload does not
    /// flap them).
    pub fn follow_config(
        &mut self,
        config: &Config,
        table: &HealthTable,
        tunnels: &TunnelInputs<'_>,
    ) {
        let wanted: BTreeMap<BackendKey, Target> = config
            .vips
            .iter()
            .flat_map(|vip| {
                vip.backends.iter().map(|b| {
                    let key = (vip.key(), b.address);
                    // The backend's own port (a NAT backend may listen elsewhere than the VIP).
                    let port = vip.health_check.port.unwrap_or(b.port);
                    Target {
                        key,
                        vip_name: vip.name.clone(),
                        check: vip.health_check.clone(),
                        port,
                        tunnel: tunnel_path(vip, b.address, port, tunnels),
                    }
                })
            })
            .map(|t| (t.key, t))
            .collect();
        let mut probes = self
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tasks.retain(|key, task| {
            let keep = wanted.get(key) == Some(&task.target);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        probes.retain(|key, _| wanted.contains_key(key));
        for (key, target) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let up = table.get(&key).map_or(target.check.starts_up(), |v| v.up);
            if target.check.kind == CheckType::None {
                probes.insert(key, first_probe(&target.check));
            } else {
                probes
                    .entry(key)
                    .or_insert_with(|| first_probe(&target.check));
            }
            let id = CheckId(self.next_id);
            self.next_id += 1;
            let handle = tokio::spawn(check_loop(
                target.clone(),
                id,
                up,
                self.events.clone(),
                self.probes.clone(),
            ));
            self.tasks.insert(key, Task { target, id, handle });
        }
    }

    /// Whether `event` comes from the check running now for its backend.
    pub fn is_current(&self, event: &HealthEvent) -> bool {
        self.tasks
            .get(&event.key)
            .is_some_and(|t| t.id == event.check)
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

/// The path of a backend's probe through its VIP's tunnel, if its check goes through it (and
/// the agent knows its id and a source of the VIP's family: it always does once the maps
/// are written).
fn tunnel_path(
    vip: &VipConfig,
    backend: std::net::IpAddr,
    port: u16,
    tunnels: &TunnelInputs<'_>,
) -> Option<TunnelPath> {
    if !vip.health_check.through_tunnel {
        return None;
    }
    let of = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(_) => tunnels.source.v4.map(std::net::IpAddr::V4),
        std::net::IpAddr::V6(_) => tunnels.source.v6.map(std::net::IpAddr::V6),
    };
    Some(TunnelPath {
        backend_id: *tunnels.backend_ids.get(&(vip.key(), backend))?,
        backend,
        vip: vip.address,
        port,
        gue_port: vip.tunnel.and_then(|t| t.gue_port),
        inner_source: of(vip.address)?,
        outer_source: of(backend),
        probes_pin: tunnels
            .pin_dir
            .join(xdp_lb_common::map_names::TUNNEL_PROBES),
    })
}

/// What `status` shows before a check's first probe.
fn first_probe(check: &HealthCheckConfig) -> LastProbe {
    LastProbe {
        result: if check.kind == CheckType::None {
            "no check configured".into()
        } else {
            "not checked yet".into()
        },
        at_unix: 0,
    }
}

async fn check_loop(
    target: Target,
    id: CheckId,
    up: bool,
    events: mpsc::Sender<HealthEvent>,
    probes: ProbeLog,
) {
    let Target {
        key,
        vip_name,
        check,
        port,
        tunnel,
    } = target;
    if check.kind == CheckType::None {
        return;
    }
    let note = |result: String, at_unix: u64| {
        if let Ok(mut log) = probes.lock()
            && let Some(p) = log.get_mut(&key)
        {
            *p = LastProbe { result, at_unix };
        }
    };
    let addr = SocketAddr::from((key.1, port));
    let prober = match Prober::new(&check) {
        Ok(p) => p,
        Err(reason) => {
            // The files were readable at validation; say why they are not now, and hold the
            // backend in its current state rather than guess.
            tracing::error!(vip = %vip_name, backend = %key.1, %reason, "cannot start the health check");
            note(format!("check not started: {reason}"), 0);
            return;
        }
    };
    let mut counter = RiseFall::new(up, check.rise, check.fall);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut result = prober.probe(addr).await;
        if let (Ok(()), Some(path)) = (&result, &tunnel) {
            result = tunnel::probe(path, check.timeout).await;
        }
        let at_unix = unix_now();
        let shown = match &result {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason.to_string(),
        };
        note(shown.clone(), at_unix);
        let Some(up) = counter.observe(result.is_ok()) else {
            continue;
        };
        let reason = if up {
            format!("{} consecutive successful checks", check.rise)
        } else {
            format!("{} consecutive failed checks, last: {shown}", check.fall)
        };
        let event = HealthEvent {
            key,
            check: id,
            vip_name: vip_name.clone(),
            up,
            reason,
            at_unix,
        };
        if events.send(event).await.is_err() {
            return; // the agent is stopping
        }
    }
}
