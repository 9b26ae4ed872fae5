//! How a VIP is announced to the routers (active-active behind ECMP): `[announce]`.
//!
//! xdp-lb does not speak BGP. It keeps one `/32` route per announced VIP address in a kernel
//! routing table of its own (`announce.table`, route protocol [`ROUTE_PROTOCOL`]). No `ip rule`
//! points at that table, so this host's own forwarding is untouched; the routing engine learns
//! the table (BIRD: `protocol kernel { kernel table 1000; learn; … }`; FRR: `ip import-table
//! 1000`) and advertises what it finds, with BFD to the routers. The coupling is the same for
//! any engine, and the kernel holds the truth: an engine that restarts reads it back, and an
//! agent that restarts adopts the routes its predecessor left (no withdraw/announce flap).
//!
//! A VIP's address is in the table exactly while this node can serve it: the program is
//! attached (the kernel says so), every announced VIP on the address has a usable backend, and
//! the node is not draining. Everything else here is reporting why not.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use xdp_lb_common::AnyVipKey;

use crate::{
    config::{AnnounceConfig, Config},
    netlink::{self, Netlink},
};

/// The route protocol of the announcements (`ip route show table 1000` prints "proto 250"):
/// a number of our own, so the engine's filters and the agent's adoption can tell these routes
/// from any other (BIRD's `learn` skips only `proto kernel` routes and its own).
pub const ROUTE_PROTOCOL: u8 = 250;

/// How long the engine-socket probe may take before the engine counts as not reachable.
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The facts a decision is made from, gathered by the agent each tick.
pub struct Facts<'a> {
    pub config: &'a Config,
    /// The kernel reports the program attached to agent.interface.
    pub attached: bool,
    /// VIPs with no usable backend at the last reconcile.
    pub without_backends: &'a BTreeSet<AnyVipKey>,
    /// `[sync]`: still waiting for a peer's snapshot (a node that starts announces nothing
    /// before it holds the flows the other nodes serve).
    pub awaiting_snapshot: bool,
}

/// Whether the routing engine answers on `announce.engine_socket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Engine {
    /// No `engine_socket` configured.
    NotChecked,
    Reachable,
    NotReachable(String),
}

/// `status` of `[announce]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    pub table: u32,
    pub draining: bool,
    pub engine: Engine,
    /// Addresses whose route is in the table now.
    pub announced: Vec<IpAddr>,
}

pub struct Announcer {
    cfg: AnnounceConfig,
    netlink: Netlink,
    /// Addresses whose route is in the table (what the kernel has, as far as we know).
    installed: BTreeSet<IpAddr>,
    /// Per announced VIP (by name): None when announced, else why not.
    verdicts: BTreeMap<String, Option<String>>,
    draining: bool,
    engine: Engine,
}

impl Announcer {
    /// Adopts the routes a previous agent left in the table: they stay unless this agent's
    /// first decision says otherwise, so a restart does not flap the announcement.
    pub async fn start(cfg: AnnounceConfig, netlink: Netlink) -> Self {
        let installed = match netlink.table_routes(cfg.table, ROUTE_PROTOCOL).await {
            Ok(found) => found.into_iter().collect(),
            Err(e) => {
                tracing::warn!(table = cfg.table, error = %e, "announce: cannot list the routes a previous agent left; starting from none");
                BTreeSet::new()
            }
        };
        if !installed.is_empty() {
            tracing::info!(table = cfg.table, routes = ?installed, "announce: adopting the routes a previous agent left");
        }
        Self {
            cfg,
            netlink,
            installed,
            verdicts: BTreeMap::new(),
            draining: false,
            engine: Engine::NotChecked,
        }
    }

    /// A reload may change the section (the table needs a restart: `agent::reload`).
    pub fn set_config(&mut self, cfg: AnnounceConfig) {
        self.cfg = cfg;
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// `xdp-lb drain` / `undrain`: the next `sync` withdraws or restores.
    pub fn set_draining(&mut self, on: bool) {
        if on != self.draining {
            tracing::warn!(
                draining = on,
                "announce: {}",
                if on {
                    "draining: withdrawing every VIP; flows that still arrive are forwarded"
                } else {
                    "undrained: announcing the VIPs this node can serve again"
                }
            );
        }
        self.draining = on;
    }

    /// Why each announced VIP is or is not announced now: the decision, without side effects.
    fn decide(&self, facts: &Facts<'_>) -> BTreeMap<String, Option<String>> {
        let announced: Vec<_> = facts
            .config
            .vips
            .iter()
            .filter(|v| self.cfg.vips.contains(&v.name))
            .collect();
        let own = |v: &crate::config::VipConfig| -> Option<String> {
            if self.draining {
                Some("draining".into())
            } else if facts.awaiting_snapshot {
                Some("waiting for the sync snapshot".into())
            } else if !facts.attached {
                Some("the XDP program is not attached".into())
            } else if facts.without_backends.contains(&v.key()) {
                Some("no usable backend".into())
            } else {
                None
            }
        };
        announced
            .iter()
            .map(|v| {
                // One route per address: it goes when any VIP on the address cannot be served
                // here, so routers send its traffic to nodes that can serve every port of it.
                let why = own(v).or_else(|| {
                    announced
                        .iter()
                        .find(|o| o.address == v.address && o.name != v.name && own(o).is_some())
                        .map(|o| {
                            format!("VIP {} on the same address has no usable backend", o.name)
                        })
                });
                (v.name.clone(), why)
            })
            .collect()
    }

    /// Brings the table to the decision: adds and removes routes, logs every VIP's change with
    /// its reason, and probes the engine. A failed netlink call is retried on the next tick.
    pub async fn update(&mut self, facts: &Facts<'_>) {
        let verdicts = self.decide(facts);
        for (name, why) in &verdicts {
            if self.verdicts.get(name) != Some(why) {
                match why {
                    None => tracing::info!(vip = %name, "announce: VIP announced"),
                    Some(reason) => {
                        tracing::warn!(vip = %name, reason = %reason, "announce: VIP withdrawn");
                    }
                }
            }
        }
        let wanted: BTreeSet<IpAddr> = facts
            .config
            .vips
            .iter()
            .filter(|v| matches!(verdicts.get(&v.name), Some(None)))
            .map(|v| v.address)
            .collect();
        self.verdicts = verdicts;
        self.converge(&wanted).await;
        self.probe_engine().await;
    }

    async fn converge(&mut self, wanted: &BTreeSet<IpAddr>) {
        for addr in self
            .installed
            .difference(wanted)
            .copied()
            .collect::<Vec<_>>()
        {
            match self
                .netlink
                .remove_table_route(self.cfg.table, ROUTE_PROTOCOL, addr)
                .await
            {
                Ok(()) => {
                    self.installed.remove(&addr);
                    tracing::info!(%addr, table = self.cfg.table, "announce: route removed");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "announce: cannot remove the route; will retry");
                }
            }
        }
        let missing: Vec<_> = wanted.difference(&self.installed).copied().collect();
        if missing.is_empty() {
            return;
        }
        let Some(ifindex) = netlink::ifindex(&self.cfg.interface) else {
            tracing::warn!(interface = %self.cfg.interface, "announce: announce.interface does not exist; nothing announced");
            return;
        };
        for addr in missing {
            match self
                .netlink
                .add_table_route(self.cfg.table, ROUTE_PROTOCOL, ifindex, addr)
                .await
            {
                Ok(()) => {
                    self.installed.insert(addr);
                    tracing::info!(%addr, table = self.cfg.table, "announce: route added");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "announce: cannot add the route; will retry");
                }
            }
        }
    }

    /// Removes every route (stop): returns whether there was anything to withdraw.
    pub async fn withdraw_all(&mut self, reason: &str) -> bool {
        let had = !self.installed.is_empty();
        if had {
            tracing::warn!(reason, routes = ?self.installed, "announce: withdrawing every VIP");
        }
        self.converge(&BTreeSet::new()).await;
        had
    }

    async fn probe_engine(&mut self) {
        let now = match &self.cfg.engine_socket {
            None => Engine::NotChecked,
            Some(path) => match probe(path).await {
                Ok(()) => Engine::Reachable,
                Err(why) => Engine::NotReachable(why.to_string()),
            },
        };
        if now != self.engine {
            match &now {
                Engine::NotReachable(why) => tracing::warn!(
                    socket = %self.cfg.engine_socket.as_deref().unwrap_or(Path::new("")).display(),
                    error = %why,
                    "announce: routing engine not reachable; forwarding goes on, routes stay in table {} for the engine to learn when it starts",
                    self.cfg.table
                ),
                Engine::Reachable => tracing::info!("announce: routing engine reachable"),
                Engine::NotChecked => {}
            }
        }
        self.engine = now;
    }

    pub fn status(&self) -> AnnounceStatus {
        AnnounceStatus {
            table: self.cfg.table,
            draining: self.draining,
            engine: self.engine.clone(),
            announced: self.installed.iter().copied().collect(),
        }
    }

    /// For `status` of a VIP: None when the VIP is not under `[announce]`.
    pub fn verdict(&self, vip: &str) -> Option<String> {
        let why = self.verdicts.get(vip)?;
        Some(match why {
            None => "announced".into(),
            Some(reason) => format!("withdrawn: {reason}"),
        })
    }
}

/// Why the routing engine does not answer on its control socket.
#[derive(Debug, thiserror::Error)]
enum EngineDown {
    #[error("{0}: {1}")]
    Refused(String, std::io::Error),
    #[error("{0}: no answer within {ENGINE_PROBE_TIMEOUT:?}")]
    Silent(String),
}

/// Connects to the engine's control socket and hangs up: a running engine accepts.
async fn probe(path: &Path) -> Result<(), EngineDown> {
    match tokio::time::timeout(ENGINE_PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(EngineDown::Refused(path.display().to_string(), e)),
        Err(_) => Err(EngineDown::Silent(path.display().to_string())),
    }
}

impl Engine {
    pub fn describe(&self) -> String {
        match self {
            Engine::NotChecked => "not checked (no announce.engine_socket)".into(),
            Engine::Reachable => "reachable".into(),
            Engine::NotReachable(why) => format!("not reachable ({why})"),
        }
    }
}
