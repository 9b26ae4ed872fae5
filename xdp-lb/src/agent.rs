//! `xdp-lb run`: load the data plane, keep its maps in step with the config and the kernel's
//! neighbour table, reload on SIGHUP, and clean up on SIGINT/SIGTERM.
//!
//! Everything that changes what the maps should hold (config, neighbours) produces a new
//! `DesiredState`; the one `Reconciler` writes the difference.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};
use xdp_lb_common::Counter;

use crate::{
    config::{self, Config, ConfigError},
    dataplane::{Dataplane, DataplaneError, MapSizes},
    neighbor::{L2Next, Lookup, NeighborError, Neighbors},
    reconcile::{ApplyReport, ReconcileError, Reconciler},
    state::{self, Ids, StateError},
};

/// How often backends' neighbour entries are looked up again (MAC changes, late ARP replies).
pub const NEIGHBOR_REFRESH: Duration = Duration::from_secs(1);
/// How long start-up waits for ARP replies before attaching with what is resolved.
const INITIAL_RESOLVE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("updating the maps: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("neighbour lookup: {0}")]
    Neighbor(#[from] NeighborError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("removing the pins: {0}")]
    Cleanup(#[source] std::io::Error),
}

pub struct RunOptions {
    pub config_path: PathBuf,
}

struct Agent {
    config_path: PathBuf,
    config: Config,
    dataplane: Dataplane,
    reconciler: Reconciler,
    ids: Ids,
    neighbors: Neighbors,
    resolved: BTreeMap<Ipv4Addr, L2Next>,
    /// Last lookup result per backend address, to log changes once.
    lookups: BTreeMap<Ipv4Addr, Lookup>,
}

pub async fn run(opts: RunOptions) -> Result<(), AgentError> {
    let config = config::load(&opts.config_path)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;

    let dataplane = Dataplane::load(&config.agent.pin_dir, MapSizes::from(&config.agent))?;
    let reconciler = Reconciler::new(&dataplane.maps)?;
    let adopted = Ids::from_maps(
        &reconciler.current_vip_ids(),
        &reconciler.current_backends(),
    );
    if !adopted.vips.is_empty() {
        tracing::info!(
            pin_dir = %config.agent.pin_dir.display(),
            vips = adopted.vips.len(),
            backends = adopted.backends.len(),
            "found maps left by a previous agent; keeping their flow table and converging them to the config"
        );
    }
    let ids = adopted.assign(&config)?;
    let mut agent = Agent {
        config_path: opts.config_path,
        config,
        dataplane,
        reconciler,
        ids,
        neighbors: Neighbors::new()?,
        resolved: BTreeMap::new(),
        lookups: BTreeMap::new(),
    };

    // Fill the maps before attaching, so the first packet already sees the whole config.
    let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
    loop {
        agent.refresh_neighbors().await?;
        if agent.all_resolved() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.reconcile("start")?;
    let interface = agent.config.agent.interface.clone();
    let mode = agent
        .dataplane
        .attach(&interface, agent.config.agent.xdp_mode)?;
    tracing::info!(
        interface = %interface,
        mode = mode.as_str(),
        config = %agent.config_path.display(),
        vips = agent.config.vips.len(),
        "xdp-lb is forwarding"
    );

    let mut tick = tokio::time::interval(NEIGHBOR_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => agent.reload(),
            _ = tick.tick() => {
                match agent.refresh_neighbors().await {
                    Ok(true) => {
                        if let Err(err) = agent.reconcile("neighbour change") {
                            tracing::error!(error = %err, "applying a neighbour change failed; will retry");
                        }
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "neighbour refresh failed; will retry"),
                }
            }
        }
    };
    tracing::info!(
        signal = reason,
        "stopping: detaching the program and removing the pins"
    );
    log_counters(&agent.dataplane);
    agent.dataplane.stop().map_err(AgentError::Cleanup)?;
    tracing::info!("stopped");
    Ok(())
}

impl Agent {
    fn backend_addresses(&self) -> Vec<Ipv4Addr> {
        let mut addrs: Vec<Ipv4Addr> = self
            .config
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| b.address))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    fn all_resolved(&self) -> bool {
        self.backend_addresses()
            .iter()
            .all(|a| self.resolved.contains_key(a))
    }

    /// Looks up every backend's neighbour; returns whether the usable set changed.
    async fn refresh_neighbors(&mut self) -> Result<bool, AgentError> {
        let mut resolved = BTreeMap::new();
        let configured = self.backend_addresses();
        for addr in configured.iter().copied() {
            let lookup = self.neighbors.lookup(addr).await?;
            if self.lookups.get(&addr) != Some(&lookup) {
                match lookup {
                    Lookup::Resolved(_) => {
                        tracing::info!(backend = %addr, "backend reachable: {}", lookup.describe())
                    }
                    _ => {
                        tracing::warn!(backend = %addr, "backend not usable: {}", lookup.describe())
                    }
                }
                self.lookups.insert(addr, lookup);
            }
            if let Some(next) = lookup.resolved() {
                resolved.insert(addr, next);
            }
        }
        self.lookups.retain(|a, _| configured.contains(a));
        let changed = resolved != self.resolved;
        self.resolved = resolved;
        Ok(changed)
    }

    fn reconcile(&mut self, cause: &str) -> Result<ApplyReport, AgentError> {
        let desired = state::desired_state(&self.config, &self.ids, &self.resolved);
        let started = Instant::now();
        let report = self.reconciler.apply(&mut self.dataplane.maps, &desired)?;
        if !report.is_empty() {
            tracing::info!(
                cause,
                added = ?report.vips_added,
                updated = ?report.vips_updated,
                vips_removed = report.vips_removed,
                backends_written = report.backends_written,
                backends_removed = report.backends_removed,
                flows_purged = report.flows_purged,
                took_us = started.elapsed().as_micros() as u64,
                "maps updated"
            );
        }
        for vip in desired.vips.values() {
            if vip.backend_count == 0 {
                tracing::warn!(vip = %vip.name, cause, "VIP has no usable backend: its new connections are dropped");
            }
        }
        Ok(report)
    }

    /// SIGHUP: re-read the config; apply it as a diff, or keep everything as it is.
    fn reload(&mut self) {
        tracing::info!(config = %self.config_path.display(), "SIGHUP: reloading the config");
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(error = %err, "reload rejected; the running configuration is unchanged");
                return;
            }
        };
        if let Some(why) = needs_restart(&self.config, &new) {
            tracing::error!(
                "reload rejected: {why} cannot change while running (restart the agent); the running configuration is unchanged"
            );
            return;
        }
        let ids = match self.ids.assign(&new) {
            Ok(ids) => ids,
            Err(err) => {
                tracing::error!(error = %err, "reload rejected; the running configuration is unchanged");
                return;
            }
        };
        let (old_config, old_ids) = (
            std::mem::replace(&mut self.config, new),
            std::mem::replace(&mut self.ids, ids),
        );
        if let Err(err) = self.reconcile("reload") {
            tracing::error!(error = %err, "applying the reloaded config failed; restoring the previous one");
            self.config = old_config;
            self.ids = old_ids;
            if let Err(err) = self.reconcile("reload rollback") {
                tracing::error!(error = %err, "rollback failed; the maps will converge on the next change");
            }
        }
    }
}

/// Agent settings fixed at load time.
fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let (a, b) = (&old.agent, &new.agent);
    if a.interface != b.interface {
        Some("agent.interface")
    } else if a.xdp_mode != b.xdp_mode {
        Some("agent.xdp_mode")
    } else if a.pin_dir != b.pin_dir {
        Some("agent.pin_dir")
    } else if a.flow_table_size != b.flow_table_size {
        Some("agent.flow_table_size")
    } else if a.max_vips != b.max_vips {
        Some("agent.max_vips")
    } else {
        None
    }
}

fn log_counters(dataplane: &Dataplane) {
    let mut parts = Vec::new();
    for c in Counter::ALL {
        if let Ok(values) = dataplane.maps.counters.get(&(c as u32), 0) {
            let total: u64 = values.iter().sum();
            if total > 0 {
                parts.push(format!("{}={total}", c.name()));
            }
        }
    }
    tracing::info!(counters = %parts.join(" "), "final counters");
}

/// Whether `path` parses and validates (for `check-config`).
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}
