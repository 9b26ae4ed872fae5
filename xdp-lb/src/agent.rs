//! `xdp-lb run`: load (or adopt) the data plane and keep its maps in step with the config,
//! the backends' health and the kernel's neighbour table.
//!
//! One task owns the `Reconciler`, the only writer of the maps. Everything else — SIGHUP and
//! `xdp-lb reload`, health transitions, neighbour changes — arrives as an event in its loop and
//! produces a new `DesiredState`, applied as a diff. So reload, a backend going down and a
//! restart that adopts the previous agent's maps are all the same, tested path.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde_json::json;
use thiserror::Error;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use xdp_lb_common::{BACKEND_F_FORWARD, Counter, VipKey};

use crate::{
    config::{self, Config, ConfigError},
    control::{self, Command, ControlError, Request, Response},
    dataplane::{Dataplane, DataplaneError, MapSizes},
    health::{Checker, HealthEvent},
    neighbor::{L2Next, Lookup, NeighborError, Neighbors, fmt_mac},
    reconcile::{ApplyReport, ReconcileError, Reconciler},
    state::{self, Health, Ids, StateError, vip_key},
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
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::instance::VrrpError),
    #[error(
        "NAT needs a source address: agent.snat_address is not set and {0} has no IPv4 address"
    )]
    NoSnatAddress(String),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("removing the pins: {0}")]
    Cleanup(#[source] std::io::Error),
}

pub struct RunOptions {
    pub config_path: PathBuf,
    /// On SIGTERM/SIGINT leave the program attached and the maps pinned, for the next
    /// `xdp-lb run` to adopt (an upgrade without an outage).
    pub keep_dataplane: bool,
}

struct Agent {
    config_path: PathBuf,
    config: Config,
    loaded_at: SystemTime,
    started_at: Instant,
    dataplane: Dataplane,
    reconciler: Reconciler,
    ids: Ids,
    neighbors: Neighbors,
    resolved: BTreeMap<Ipv4Addr, L2Next>,
    /// Last lookup result per backend address, to log changes once.
    lookups: BTreeMap<Ipv4Addr, Lookup>,
    checker: Checker,
    /// VIPs that had no usable backend at the last reconcile (logged once per transition).
    vips_without_backends: BTreeSet<VipKey>,
    health_transitions: u64,
    vrrp: Vec<crate::vrrp::instance::Instance>,
    /// The MAC of agent.interface: only frames addressed to it are balanced.
    local_mac: Option<[u8; 6]>,
    /// NAT: the SNAT address in use (agent.snat_address, or the interface's primary address).
    snat_address: Option<Ipv4Addr>,
    nat: NatStatus,
}

/// What NAT expiry has seen, for `status` and `/metrics`.
#[derive(Debug, Default)]
struct NatStatus {
    last: crate::nat::Sweep,
    reclaimed_total: u64,
}

pub async fn run(opts: RunOptions) -> Result<(), AgentError> {
    let config = config::load(&opts.config_path)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;

    // The control socket first: it refuses to start a second agent on the same socket.
    let (command_tx, mut commands) = mpsc::channel::<Command>(16);
    let control_task = control::serve(&config.agent.control_socket, command_tx.clone()).await?;
    let socket = config.agent.control_socket.clone();

    let dataplane = Dataplane::load(&config.agent.pin_dir, MapSizes::from(&config.agent))?;
    let adopted = dataplane.adopted_maps;
    let (health_tx, mut health_events) = mpsc::channel::<HealthEvent>(64);
    let mut agent = match Agent::new(opts.config_path, config, dataplane, health_tx) {
        Ok(agent) => agent,
        Err(boxed) => {
            let (err, dataplane) = *boxed;
            control_task.abort();
            let _ = std::fs::remove_file(&socket);
            // Maps an earlier agent left are still forwarding: never remove those.
            let _ = dataplane.stop(adopted);
            return Err(err);
        }
    };
    if let Err(err) = agent.start().await {
        control_task.abort();
        let _ = std::fs::remove_file(&socket);
        let _ = agent.dataplane.stop(adopted);
        return Err(err);
    }

    let http_task = match agent.config.agent.listen {
        Some(addr) => {
            match crate::http::serve(addr, agent.config.agent.pin_dir.clone(), command_tx).await {
                Ok(task) => {
                    tracing::info!(%addr, "serving /metrics, /stats and /healthz");
                    Some(task)
                }
                Err(err) => {
                    // Forwarding matters more than the stats page: keep running, say why.
                    tracing::error!(%addr, error = %err, "cannot serve /metrics and /stats (agent.listen)");
                    None
                }
            }
        }
        None => None,
    };

    // The flow log and aya-log readers run always; the program only reports when
    // agent.flow_log is on (SETTINGS), so a reload can switch it.
    let mut readers = Vec::new();
    if let Some(ring) = agent.dataplane.maps.flow_log.take() {
        match crate::flow_log::spawn(ring) {
            Ok(t) => readers.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot read the flow log"),
        }
    }
    if let Some(logger) = agent.dataplane.logger.take() {
        match crate::flow_log::spawn_ebpf_logger(logger) {
            Ok(t) => readers.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot read the program's debug log"),
        }
    }

    let mut tick = tokio::time::interval(NEIGHBOR_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                let _ = agent.reload(None, "SIGHUP").await;
            }
            Some(command) = commands.recv() => {
                let response = agent.handle(command.request).await;
                let _ = command.reply.send(response);
            }
            Some(event) = health_events.recv() => {
                agent.on_health(event);
                agent.track().await;
            }
            _ = tick.tick() => {
                agent.expire_nat();
                match agent.refresh_neighbors().await {
                    Ok(true) => agent.reconcile_logged("neighbour change"),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "neighbour refresh failed; will retry"),
                }
                agent.track().await;
            }
        }
    };
    control_task.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    for t in readers {
        t.abort();
    }
    let _ = std::fs::remove_file(&socket);
    drop(agent.checker);
    // VRRP first: a master sends priority 0 so its peer takes over after Skew_Time only.
    for instance in std::mem::take(&mut agent.vrrp) {
        instance.shutdown().await;
    }
    log_counters(&agent.dataplane);
    if opts.keep_dataplane {
        tracing::info!(
            signal = reason,
            pin_dir = %agent.config.agent.pin_dir.display(),
            "stopping with --keep-dataplane: the program stays attached and the maps pinned; the next `xdp-lb run` adopts them"
        );
    } else {
        tracing::info!(
            signal = reason,
            "stopping: detaching the program and removing the pins"
        );
    }
    agent
        .dataplane
        .stop(opts.keep_dataplane)
        .map_err(AgentError::Cleanup)?;
    tracing::info!("stopped");
    Ok(())
}

impl Agent {
    fn new(
        config_path: PathBuf,
        config: Config,
        dataplane: Dataplane,
        health_tx: mpsc::Sender<HealthEvent>,
    ) -> Result<Self, Box<(AgentError, Dataplane)>> {
        let reconciler = match Reconciler::new(&dataplane.maps) {
            Ok(r) => r,
            Err(e) => return Err(Box::new((e.into(), dataplane))),
        };
        let adopted = Ids::from_maps(
            &reconciler.current_vip_ids(),
            &reconciler.current_backends(),
        );
        // An adopted backend keeps forwarding with the MAC its predecessor learned until a
        // fresh lookup says otherwise: a restart must not re-hash established flows.
        let mut resolved = BTreeMap::new();
        for info in reconciler.current_backend_infos() {
            if info.flags & BACKEND_F_FORWARD != 0 {
                let addr = Ipv4Addr::from(info.addr_be.to_ne_bytes());
                resolved.insert(
                    addr,
                    L2Next {
                        ifindex: info.ifindex,
                        mac: info.mac,
                        src_mac: info.src_mac,
                    },
                );
            }
        }
        if dataplane.adopted_maps {
            tracing::info!(
                pin_dir = %config.agent.pin_dir.display(),
                vips = adopted.vips.len(),
                backends = adopted.backends.len(),
                "adopting the maps a previous agent left pinned (flow table included); converging them to the config"
            );
        }
        let ids = match adopted.assign(&config) {
            Ok(ids) => ids,
            Err(e) => return Err(Box::new((e.into(), dataplane))),
        };
        let neighbors = match Neighbors::new() {
            Ok(n) => n,
            Err(e) => return Err(Box::new((e.into(), dataplane))),
        };
        Ok(Self {
            config_path,
            config,
            loaded_at: SystemTime::now(),
            started_at: Instant::now(),
            dataplane,
            reconciler,
            ids,
            neighbors,
            resolved,
            lookups: BTreeMap::new(),
            checker: Checker::new(health_tx),
            vips_without_backends: BTreeSet::new(),
            health_transitions: 0,
            vrrp: Vec::new(),
            local_mac: None,
            snat_address: None,
            nat: NatStatus::default(),
        })
    }

    /// Fills the maps, then attaches: the first packet already sees the whole config.
    async fn start(&mut self) -> Result<(), AgentError> {
        self.checker.sync(&self.config);
        if let Some(ifindex) = crate::dataplane::ifindex(&self.config.agent.interface) {
            self.local_mac = self
                .neighbors
                .link_mac(ifindex)
                .await?
                .filter(|m| *m != [0; 6]);
        }
        self.snat_address = self.snat_address_for(&self.config).await?;
        if self.snat_address.is_some() {
            self.check_nat_sysctls();
        }
        let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
        loop {
            self.refresh_neighbors().await?;
            if self.all_resolved() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.reconcile("start")?;
        let interface = self.config.agent.interface.clone();
        let mode = self
            .dataplane
            .attach(&interface, self.config.agent.xdp_mode)?;
        for cfg in self.config.vrrp.clone() {
            let instance =
                crate::vrrp::instance::Instance::start(cfg, self.neighbors.handle()).await?;
            self.vrrp.push(instance);
        }
        self.track().await;
        tracing::info!(
            interface = %interface,
            mode = mode.as_str(),
            config = %self.config_path.display(),
            vips = self.config.vips.len(),
            control_socket = %self.config.agent.control_socket.display(),
            "xdp-lb is forwarding"
        );
        Ok(())
    }

    /// Data-plane tracking for VRRP (level-triggered: every tick and after every change): the
    /// program must be attached (the kernel says so) and every VIP must have a usable backend.
    /// What keepalived users scripted as "is haproxy alive?".
    async fn track(&mut self) {
        if self.vrrp.is_empty() {
            return;
        }
        let attached = match self
            .dataplane
            .attached
            .as_ref()
            .and_then(|(i, _)| crate::dataplane::ifindex(i))
        {
            Some(ifindex) => self.neighbors.xdp_attached(ifindex).await.unwrap_or(true),
            None => false,
        };
        let problem = if !attached {
            Some("the XDP program is not attached".to_owned())
        } else if !self.vips_without_backends.is_empty() {
            let names: Vec<&str> = self
                .config
                .vips
                .iter()
                .filter(|v| self.vips_without_backends.contains(&vip_key(v)))
                .map(|v| v.name.as_str())
                .collect();
            Some(format!("VIP {} has no usable backend", names.join(", ")))
        } else {
            None
        };
        for (instance, cfg) in self.vrrp.iter().zip(&self.config.vrrp) {
            if !cfg.track_dataplane {
                continue;
            }
            if cfg.track_weight > 0 {
                instance
                    .track(
                        None,
                        if problem.is_some() {
                            cfg.track_weight
                        } else {
                            0
                        },
                    )
                    .await;
            } else {
                instance.track(problem.clone(), 0).await;
            }
        }
    }

    /// The SNAT address `config` needs: None without NAT VIPs; else agent.snat_address, or the
    /// first IPv4 address of agent.interface that is not a VIP.
    async fn snat_address_for(&self, config: &Config) -> Result<Option<Ipv4Addr>, AgentError> {
        if !config
            .vips
            .iter()
            .any(|v| v.forwarding == config::Forwarding::Nat)
        {
            return Ok(None);
        }
        if let Some(a) = config.agent.snat_address {
            return Ok(Some(a));
        }
        let interface = &config.agent.interface;
        let mut exclude: Vec<Ipv4Addr> = config.vips.iter().map(|v| v.address).collect();
        exclude.extend(
            config
                .vrrp
                .iter()
                .flat_map(|v| v.virtual_addresses.iter().map(|(a, _)| *a)),
        );
        let found = match crate::dataplane::ifindex(interface) {
            Some(ifindex) => self.neighbors.primary_ipv4(ifindex, &exclude).await?,
            None => None,
        };
        match found {
            Some(a) => {
                tracing::info!(snat_address = %a, interface = %interface, "NAT: connections to backends use the interface's address (agent.snat_address unset)");
                Ok(Some(a))
            }
            None => Err(AgentError::NoSnatAddress(interface.clone())),
        }
    }

    /// NAT relies on kernel settings the agent does not change behind the operator's back;
    /// it says which are missing and what each one breaks.
    fn check_nat_sysctls(&self) {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let iface = &self.config.agent.interface;
        let forwarding = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
        if read(&forwarding) != "1" {
            tracing::warn!(
                "NAT: IPv4 forwarding is off on {iface}: NAT packets are dropped (counter drop_nat_forwarding_disabled); fix: sysctl -w net.ipv4.conf.{iface}.forwarding=1"
            );
        }
        let accept_local = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
        if read(&accept_local) != "1" {
            tracing::warn!(
                "NAT: accept_local is off on {iface}: a NAT packet whose next hop is not resolved yet (counter pass_nat_no_neighbour) is dropped by the kernel as a martian instead of being forwarded while it resolves; fix: sysctl -w net.ipv4.conf.{iface}.accept_local=1"
            );
        }
        let range = read("/proc/sys/net/ipv4/ip_local_port_range");
        let mut parts = range
            .split_whitespace()
            .filter_map(|p| p.parse::<u16>().ok());
        if let (Some(lo), Some(hi)) = (parts.next(), parts.next()) {
            let (slo, shi) = self.config.agent.snat_port_range;
            let reserved = read("/proc/sys/net/ipv4/ip_local_reserved_ports");
            if lo <= shi && slo <= hi && reserved.is_empty() {
                tracing::warn!(
                    "NAT: the kernel's ephemeral ports {lo}-{hi} overlap agent.snat_port_range {slo}-{shi}: a local connection (a health check) could share a port with a NAT flow; fix: sysctl -w net.ipv4.ip_local_reserved_ports={slo}-{shi}, or move either range"
                );
            }
        }
    }

    /// Reclaims expired NAT flows (every tick while a NAT VIP is configured).
    fn expire_nat(&mut self) {
        if self.snat_address.is_none() {
            return;
        }
        let timeouts = crate::nat::Timeouts::of(&self.config.agent);
        match self
            .reconciler
            .expire_nat_flows(&mut self.dataplane.maps, &timeouts)
        {
            Ok(sweep) => {
                if sweep.reclaimed > 0 {
                    tracing::debug!(reclaimed = sweep.reclaimed, live = ?sweep.live, "NAT flows expired");
                }
                self.nat.reclaimed_total += sweep.reclaimed;
                self.nat.last = sweep;
            }
            Err(err) => tracing::warn!(error = %err, "NAT expiry failed; will retry"),
        }
    }

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

    /// Backends of NAT VIPs only (the program asks the FIB for their next hop per packet).
    fn nat_only_backends(&self) -> BTreeSet<Ipv4Addr> {
        let of = |nat: bool| -> BTreeSet<Ipv4Addr> {
            self.config
                .vips
                .iter()
                .filter(|v| (v.forwarding == config::Forwarding::Nat) == nat)
                .flat_map(|v| v.backends.iter().map(|b| b.address))
                .collect()
        };
        of(true).difference(&of(false)).copied().collect()
    }

    /// Whether every DSR backend's MAC is known.
    fn all_resolved(&self) -> bool {
        let nat_only = self.nat_only_backends();
        self.backend_addresses()
            .iter()
            .all(|a| nat_only.contains(a) || self.resolved.contains_key(a))
    }

    /// Looks up every backend's neighbour; returns whether the usable set changed.
    async fn refresh_neighbors(&mut self) -> Result<bool, AgentError> {
        let mut resolved = BTreeMap::new();
        let configured = self.backend_addresses();
        let nat_only = self.nat_only_backends();
        for addr in configured.iter().copied() {
            let lookup = self.neighbors.lookup(addr).await?;
            if let Lookup::NotOnLink { via } = lookup
                && nat_only.contains(&addr)
            {
                // A routed NAT backend: keep its gateway's MAC warm, so the program's FIB
                // lookups find the neighbour resolved (the lookup requests it if not).
                let _ = self.neighbors.lookup(via).await?;
            }
            if self.lookups.get(&addr) != Some(&lookup) {
                match lookup {
                    Lookup::Resolved(_) => {
                        tracing::info!(backend = %addr, "backend reachable: {}", lookup.describe())
                    }
                    Lookup::NotOnLink { .. } | Lookup::Pending { .. }
                        if nat_only.contains(&addr) =>
                    {
                        tracing::info!(backend = %addr, "NAT backend: {}", lookup.describe())
                    }
                    _ => {
                        tracing::warn!(backend = %addr, "backend not usable: {}", lookup.describe())
                    }
                }
                self.lookups.insert(addr, lookup);
            }
            match lookup {
                Lookup::Resolved(next) => {
                    resolved.insert(addr, next);
                }
                // The kernel is (re)probing a MAC we know: keep forwarding to it meanwhile.
                Lookup::Pending { state, .. } if state != "failed" => {
                    if let Some(prev) = self.resolved.get(&addr) {
                        resolved.insert(addr, *prev);
                    }
                }
                _ => {}
            }
        }
        self.lookups.retain(|a, _| configured.contains(a));
        let changed = resolved != self.resolved;
        self.resolved = resolved;
        Ok(changed)
    }

    fn health(&self) -> Health {
        let mut health = Health::new();
        if let Ok(table) = self.checker.table.lock() {
            for (key, h) in table.iter() {
                health.insert(*key, h.up);
            }
        }
        health
    }

    fn reconcile(&mut self, cause: &str) -> Result<ApplyReport, AgentError> {
        let mut desired =
            state::desired_state(&self.config, &self.ids, &self.resolved, &self.health());
        desired.settings = desired.settings.with_local_mac(self.local_mac);
        if desired.settings.snat_port_max != 0 && desired.settings.snat_addr_be == 0 {
            desired.settings.snat_addr_be = self
                .snat_address
                .map_or(0, |a| xdp_lb_common::ipv4_be(a.octets()));
        }
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
        let empty: BTreeSet<VipKey> = desired
            .vips
            .iter()
            .filter(|(_, v)| v.backend_count == 0)
            .map(|(k, _)| *k)
            .collect();
        for (key, vip) in &desired.vips {
            match (
                empty.contains(key),
                self.vips_without_backends.contains(key),
            ) {
                (true, false) => tracing::warn!(
                    vip = %vip.name,
                    cause,
                    "VIP has no usable backend: its new connections are dropped (counter drop_no_backend)"
                ),
                (false, true) => {
                    tracing::info!(vip = %vip.name, cause, "VIP has usable backends again")
                }
                _ => {}
            }
        }
        self.vips_without_backends = empty;
        Ok(report)
    }

    fn reconcile_logged(&mut self, cause: &str) {
        if let Err(err) = self.reconcile(cause) {
            tracing::error!(cause, error = %err, "applying a change to the maps failed; will retry on the next change");
        }
    }

    fn on_health(&mut self, event: HealthEvent) {
        self.health_transitions += 1;
        let (vip, backend) = (&event.vip_name, event.key.1);
        if event.up {
            tracing::info!(vip = %vip, backend = %backend, reason = %event.reason, "backend UP");
        } else {
            tracing::warn!(vip = %vip, backend = %backend, reason = %event.reason, "backend DOWN");
        }
        let cause = format!("health: {backend} {}", if event.up { "up" } else { "down" });
        self.reconcile_logged(&cause);
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Reload { config } => match self.reload(config, "xdp-lb reload").await {
                Ok(message) => Response {
                    ok: true,
                    message,
                    status: None,
                },
                Err(message) => Response {
                    ok: false,
                    message,
                    status: None,
                },
            },
            Request::Status => Response {
                ok: true,
                message: "ok".into(),
                status: Some(self.status()),
            },
        }
    }

    /// Re-reads the config (from `path` if given) and applies it as a diff, or keeps
    /// everything exactly as it is and says why.
    async fn reload(&mut self, path: Option<PathBuf>, cause: &str) -> Result<String, String> {
        let path = path.unwrap_or_else(|| self.config_path.clone());
        tracing::info!(config = %path.display(), cause, "reloading the config");
        let reject = |why: String| {
            tracing::error!("reload rejected, the running configuration is unchanged: {why}");
            Err(format!(
                "reload rejected, the running configuration is unchanged: {why}"
            ))
        };
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(err) => return reject(err.to_string()),
        };
        if self.config.vrrp != new.vrrp {
            return reject(
                "[[vrrp]] sections cannot change while running (restart the agent)".into(),
            );
        }
        if let Some(key) = needs_restart(&self.config, &new) {
            return reject(format!(
                "{key} cannot change while running (restart the agent)"
            ));
        }
        let ids = match self.ids.assign(&new) {
            Ok(ids) => ids,
            Err(err) => return reject(err.to_string()),
        };
        let snat_address = match self.snat_address_for(&new).await {
            Ok(a) => a,
            Err(err) => return reject(err.to_string()),
        };
        let first_nat = snat_address.is_some() && self.snat_address.is_none();
        let old_snat = std::mem::replace(&mut self.snat_address, snat_address);
        let old_config = std::mem::replace(&mut self.config, new);
        if first_nat {
            self.check_nat_sysctls();
        }
        let old_ids = std::mem::replace(&mut self.ids, ids);
        // New backends start in their check's start state; removed ones stop being checked.
        self.checker.sync(&self.config);
        // Resolve new backends' MACs first (bounded, as at start), so that they take new
        // connections as soon as the reload is acknowledged.
        let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
        loop {
            if let Err(err) = self.refresh_neighbors().await {
                tracing::warn!(error = %err, "neighbour lookup during reload failed; will retry");
                break;
            }
            if self.all_resolved() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.reconcile("reload") {
            Ok(report) => {
                self.config_path = path;
                self.loaded_at = SystemTime::now();
                let message = format!(
                    "reloaded {}: {} VIP(s) added, {} updated, {} removed; {} backend(s) written, {} removed",
                    self.config_path.display(),
                    report.vips_added.len(),
                    report.vips_updated.len(),
                    report.vips_removed,
                    report.backends_written,
                    report.backends_removed
                );
                tracing::info!("{message}");
                Ok(message)
            }
            Err(err) => {
                self.config = old_config;
                self.ids = old_ids;
                self.snat_address = old_snat;
                self.checker.sync(&self.config);
                self.reconcile_logged("reload rollback");
                reject(format!(
                    "applying it failed ({err}); the previous configuration was restored"
                ))
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let table = self
            .checker
            .table
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        let vips: Vec<serde_json::Value> = self
            .config
            .vips
            .iter()
            .map(|vip| {
                let key = vip_key(vip);
                let backends: Vec<serde_json::Value> = vip
                    .backends
                    .iter()
                    .map(|b| {
                        let h = table.get(&(key, b.address));
                        json!({
                            "address": b.address.to_string(),
                            "port": b.port,
                            "weight": b.weight,
                            "state": format!("{:?}", b.state).to_lowercase(),
                            "health": match h { Some(h) if h.up => "up", Some(_) => "down", None => "unknown" },
                            "last_check": h.map(|h| h.last_result.clone()),
                            "last_check_unix": h.map(|h| h.last_check_unix),
                            "since_unix": h.map(|h| h.since_unix),
                            "transitions": h.map(|h| h.transitions),
                            "mac": self.resolved.get(&b.address).map(|n| fmt_mac(&n.mac)),
                            "neighbour": self.lookups.get(&b.address).map(|l| l.describe()),
                        })
                    })
                    .collect();
                json!({
                    "name": vip.name,
                    "address": vip.address.to_string(),
                    "port": vip.port,
                    "forwarding": format!("{:?}", vip.forwarding).to_lowercase(),
                    "health_check": format!("{:?}", vip.health_check.kind).to_lowercase(),
                    "usable_backends": !self.vips_without_backends.contains(&key),
                    "backends": backends,
                })
            })
            .collect();
        json!({
            "config": self.config_path.display().to_string(),
            "loaded_unix": unix(self.loaded_at),
            "uptime_seconds": self.started_at.elapsed().as_secs(),
            "interface": self.config.agent.interface,
            "attached": self.dataplane.attached.as_ref().map(|(_, m)| m.as_str()),
            "pin_dir": self.config.agent.pin_dir.display().to_string(),
            "health_transitions": self.health_transitions,
            "vips": vips,
            "nat": self.snat_address.map(|a| json!({
                "snat_address": a.to_string(),
                "snat_port_range": format!("{}-{}", self.config.agent.snat_port_range.0, self.config.agent.snat_port_range.1),
                "flows": self.nat.last.live,
                "reclaimed_total": self.nat.reclaimed_total,
            })),
            "vrrp": self.vrrp.iter().filter_map(|i| i.status.lock().ok().map(|s| serde_json::to_value(&*s).unwrap_or_default())).collect::<Vec<_>>(),
        })
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
    } else if a.control_socket != b.control_socket {
        Some("agent.control_socket")
    } else if a.listen != b.listen {
        Some("agent.listen")
    } else {
        None
    }
}

fn log_counters(dataplane: &Dataplane) {
    let mut parts = Vec::new();
    for c in Counter::ALL {
        if let Ok(total) = dataplane.maps.counter(c)
            && total > 0
        {
            parts.push(format!("{}={total}", c.name()));
        }
    }
    tracing::info!(counters = %parts.join(" "), "final counters");
}

/// Whether `path` parses and validates (for `check-config`).
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}
