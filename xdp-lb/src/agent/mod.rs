//! `xdp-lb run`: load (or adopt) the data plane and keep its maps in step with the config,
//! the backends' health and the kernel's neighbour table.
//!
//! One task owns the `Reconciler`, the only writer of the maps. Everything else — SIGHUP and
//! `xdp-lb reload`, health transitions, neighbour changes — arrives as an event in its loop and
//! produces new [`state::Inputs`], whose desired state is applied as a diff. So reload, a
//! backend going down and a restart that adopts the previous agent's maps are all the same,
//! tested path.
//!
//! Here: start, the event loop and stop. Beside it: `apply` (inputs → desired state → the
//! reconciler), `neighbours` (the backends' next hops), `nat_setup` (SNAT address, kernel
//! settings), `reload`, `status`, `tracking` (VRRP's view of the data plane), and `guard` (what
//! is undone however `run` ends).

mod apply;
mod guard;
mod host_checks;
mod nat_setup;
mod neighbours;
mod reload;
mod slow_start;
mod status;
mod sync;
mod tracking;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use xdp_lb_common::{AnyVipKey, Counter};

pub use self::host_checks::route_warnings;
use self::{guard::StopGuard, neighbours::Neighbours};
use crate::{
    config::{self, Config, ConfigError, SnatAddresses, XdpMode},
    control::{self, Command, ControlError, Request, Response},
    dataplane::{AttachMode, Dataplane, DataplaneError, MapSizes, ReconcileError, Reconciler},
    health::{Checker, HealthEvent},
    nat::Sweep,
    netlink::{self, Netlink, NetlinkError},
    observe::flow_log,
    route_announce::Announcer,
    state::{Ids, StateError},
    vrrp::instance::{Instance, VrrpError},
};

/// How often backends' neighbour entries are looked up again (MAC changes, late ARP replies).
pub const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
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
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Vrrp(#[from] VrrpError),
    #[error(
        "NAT needs a source address: agent.snat_address has no {1} address and {0} has none either"
    )]
    NoSnatAddress(String, &'static str),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("removing the pins: {0}")]
    Cleanup(#[source] std::io::Error),
    #[error("sync: {0}")]
    Sync(String),
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
    /// The data plane, the control socket and the background tasks, undone on drop.
    guard: StopGuard,
    reconciler: Reconciler,
    ids: Ids,
    netlink: Netlink,
    neighbours: Neighbours,
    checker: Checker,
    /// VIPs that had no usable backend at the last reconcile (logged once per transition).
    vips_without_backends: BTreeSet<AnyVipKey>,
    health_transitions: u64,
    /// Backends taking their share of new flows step by step.
    slow_start: slow_start::SlowStart,
    vrrp: Vec<Instance>,
    /// The MAC of agent.interface: only frames addressed to it are balanced.
    local_mac: Option<[u8; 6]>,
    /// NAT: the SNAT addresses in use, per family (agent.snat_address, or the interface's).
    snat_address: SnatAddresses,
    nat: NatExpiry,
    /// `[announce]`: the VIP routes the routing engine advertises.
    announcer: Option<Announcer>,
    /// `[sync]`: flows exchanged with the other LB nodes.
    sync: Option<sync::SyncRuntime>,
}

/// What NAT expiry has seen, for `status` and `/metrics`.
#[derive(Debug, Default)]
struct NatExpiry {
    last: Sweep,
    reclaimed_total: u64,
}

pub async fn run(opts: RunOptions) -> Result<(), AgentError> {
    let config = config::load(&opts.config_path)?;
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;

    // The control socket first: it refuses to start a second agent on the same socket.
    let (command_tx, mut commands) = mpsc::channel::<Command>(16);
    let control_task = control::serve(&config.agent.control_socket, command_tx.clone()).await?;
    let mut guard = StopGuard::new(config.agent.control_socket.clone(), control_task);

    let sizes = MapSizes {
        flow_table_size: config.agent.flow_table_size,
        flow_table_size_ipv6: config.agent.flow_table_size_ipv6,
        max_vips: config.agent.max_vips,
    };
    let (dataplane, mut maps) = Dataplane::load(&config.agent.pin_dir, sizes)?;
    if let Some(ring) = maps.take_flow_log() {
        // The reader runs always; the program only reports when agent.flow_log is on
        // (SETTINGS), so a reload can switch it.
        match flow_log::spawn(ring) {
            Ok(t) => guard.tasks.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot read the flow log"),
        }
    }
    // [sync]: the task binds its port now, so that a port in use stops the start here.
    let (sync_tx, mut sync_rx) = mpsc::channel::<crate::sync::stream::Inbound>(1024);
    let sync = match (&config.sync, maps.take_sync_events()) {
        (Some(cfg), Some(ring)) => {
            let key = crate::sync::key::load(&cfg.key_file).map_err(AgentError::Sync)?;
            let (task, sync) =
                crate::sync::stream::start(cfg, &key, ring, sync_tx, &config.agent.pin_dir)
                    .await
                    .map_err(|e| AgentError::Sync(format!("UDP port {}: {e}", cfg.port)))?;
            tracing::info!(peers = ?cfg.peers, port = cfg.port, "sync: exchanging flows with the peers");
            guard.tasks.push(task);
            Some(sync)
        }
        _ => None,
    };
    guard.hold(dataplane);
    let (health_tx, mut health_events) = mpsc::channel::<HealthEvent>(64);
    let mut agent = Agent::new(opts.config_path, config, guard, maps, health_tx)?;
    agent.sync = sync.map(|sync| sync::SyncRuntime {
        sync,
        installed: 0,
        known: 0,
        conflicts: 0,
        unknown: 0,
        removed: 0,
        snapshot: if agent
            .config
            .sync
            .as_ref()
            .is_some_and(|s| s.snapshot_wait.is_zero())
        {
            "not asked".into()
        } else {
            "waiting".into()
        },
    });
    agent.start().await?;
    agent.serve_http(command_tx).await;

    let mut tick = tokio::time::interval(NEIGHBOUR_REFRESH);
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
                // A reload or a drain changes what is announced: say so to the routers now.
                agent.track().await;
            }
            Some(inbound) = sync_rx.recv() => {
                agent.on_sync(inbound).await;
            }
            Some(event) = health_events.recv() => {
                agent.on_health(event);
                agent.track().await;
            }
            _ = tick.tick() => {
                agent.expire_nat();
                if agent.slow_start.active() {
                    // One step: finished ramps are at their full share in this table.
                    agent.reconcile_logged("slow start");
                    agent.slow_start.finish(Instant::now());
                }
                match agent.neighbours.refresh(&agent.netlink, &agent.config).await {
                    Ok(true) => agent.reconcile_logged("neighbour change"),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "neighbour refresh failed; will retry"),
                }
                agent.track().await;
            }
        }
    };
    agent.stop(reason, opts.keep_dataplane).await
}

impl Agent {
    fn new(
        config_path: PathBuf,
        config: Config,
        mut guard: StopGuard,
        maps: crate::dataplane::Maps,
        health_tx: mpsc::Sender<HealthEvent>,
    ) -> Result<Self, AgentError> {
        let reconciler = Reconciler::new(maps)?;
        let adopted = Ids::from_maps(
            &reconciler.current_vip_ids(),
            &reconciler.current_backends(),
        );
        if guard.dataplane().adopted_maps {
            tracing::info!(
                pin_dir = %config.agent.pin_dir.display(),
                vips = adopted.vips.len(),
                backends = adopted.backends.len(),
                "adopting the maps a previous agent left pinned (flow table included); converging them to the config"
            );
        }
        let ids = adopted.assign(&config)?;
        let netlink = Netlink::new()?;
        if let Some(logger) = guard.dataplane_mut().take_logger() {
            match flow_log::spawn_ebpf_logger(logger) {
                Ok(t) => guard.tasks.push(t),
                Err(e) => tracing::warn!(error = %e, "cannot read the program's debug log"),
            }
        }
        Ok(Self {
            config_path,
            config,
            loaded_at: SystemTime::now(),
            started_at: Instant::now(),
            guard,
            neighbours: Neighbours::adopted(&reconciler.current_backend_infos()),
            reconciler,
            ids,
            netlink,
            checker: Checker::new(health_tx),
            vips_without_backends: BTreeSet::new(),
            health_transitions: 0,
            vrrp: Vec::new(),
            local_mac: None,
            snat_address: SnatAddresses::default(),
            nat: NatExpiry::default(),
            slow_start: Default::default(),
            announcer: None,
            sync: None,
        })
    }

    /// Fills the maps, then attaches: the first packet already sees the whole config.
    async fn start(&mut self) -> Result<(), AgentError> {
        self.checker.sync(&self.config);
        let interface = self.config.agent.interface.clone();
        if let Some(ifindex) = netlink::ifindex(&interface) {
            self.local_mac = self
                .netlink
                .link_mac(ifindex)
                .await?
                .filter(|m| *m != [0; 6]);
        }
        self.snat_address = nat_setup::snat_address(&self.netlink, &self.config).await?;
        if self.snat_address.any() {
            nat_setup::check_sysctls(&self.config);
        }
        let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
        loop {
            self.neighbours.refresh(&self.netlink, &self.config).await?;
            if self.neighbours.all_resolved(&self.config) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.reconcile("start")?;
        self.guard.see_vlan_tags(&interface);
        let mode = match self.config.agent.xdp_mode {
            XdpMode::Auto => AttachMode::Auto,
            XdpMode::Driver => AttachMode::Driver,
            XdpMode::Generic => AttachMode::Generic,
        };
        let mode = self.guard.dataplane_mut().attach(&interface, mode)?;
        // With [sync], VRRP waits for a peer's snapshot before it may take the addresses
        // (bounded by sync.snapshot_wait): a node that starts or returns holds the flows first.
        let hold = self
            .config
            .sync
            .as_ref()
            .filter(|s| !s.snapshot_wait.is_zero())
            .map(|s| {
                format!(
                    "waiting for a sync snapshot from a peer (at most {})",
                    humantime::format_duration(s.snapshot_wait)
                )
            });
        for cfg in self.config.vrrp.clone() {
            self.vrrp
                .push(Instance::start(cfg, self.netlink.clone(), hold.clone()).await?);
        }
        if let Some(cfg) = self.config.announce.clone() {
            self.announcer = Some(Announcer::start(cfg, self.netlink.clone()).await);
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

    /// `agent.listen`: forwarding matters more than the pages, so a failure is logged and the
    /// agent runs on without them.
    async fn serve_http(&mut self, commands: mpsc::Sender<Command>) {
        let Some(addr) = self.config.agent.listen else {
            return;
        };
        let pin_dir = self.config.agent.pin_dir.clone();
        match crate::observe::http::serve(addr, pin_dir, commands).await {
            Ok(task) => {
                tracing::info!(%addr, "serving /metrics, /stats and /healthz");
                self.guard.tasks.push(task);
            }
            Err(err) => {
                tracing::error!(%addr, error = %err, "cannot serve /metrics and /stats (agent.listen)")
            }
        }
    }

    /// The routers first: announcements are withdrawn and the program keeps forwarding for
    /// `announce.grace`, so flows in flight move to the other nodes before this one stops
    /// (with `keep`, the next agent adopts the routes instead). Then VRRP (a master sends
    /// priority 0 so its peer takes over after Skew_Time only), then the data plane: detached
    /// and unpinned, or with `keep` left for the next agent.
    async fn stop(mut self, signal: &str, keep: bool) -> Result<(), AgentError> {
        if let Some(mut announcer) = self.announcer.take() {
            let grace = self.config.announce.as_ref().map(|a| a.grace);
            if !keep && announcer.withdraw_all(signal).await {
                let grace = grace.unwrap_or_default();
                tracing::info!(
                    ?grace,
                    "announce: withdrawn; forwarding for announce.grace before detaching"
                );
                tokio::time::sleep(grace).await;
            }
        }
        for instance in std::mem::take(&mut self.vrrp) {
            instance.shutdown().await;
        }
        self.log_counters();
        if keep {
            tracing::info!(
                signal,
                pin_dir = %self.config.agent.pin_dir.display(),
                "stopping with --keep-dataplane: the program stays attached and the maps pinned; the next `xdp-lb run` adopts them"
            );
        } else {
            tracing::info!(
                signal,
                "stopping: detaching the program and removing the pins"
            );
        }
        self.guard.finish(keep).map_err(AgentError::Cleanup)?;
        tracing::info!("stopped");
        Ok(())
    }

    fn on_health(&mut self, event: HealthEvent) {
        self.health_transitions += 1;
        let backend = event.key.1;
        if event.up {
            self.slow_start.came_up(&self.config, event.key.0, backend);
        }
        let cause = format!("health: {backend} {}", if event.up { "up" } else { "down" });
        // The maps first, then the line: when "backend DOWN" is in the log the backend takes
        // no new connections any more (a reader acting on the line, a test among them, would
        // otherwise race the table swap).
        self.reconcile_logged(&cause);
        let vip = &event.vip_name;
        if event.up {
            tracing::info!(vip = %vip, backend = %backend, reason = %event.reason, "backend UP");
        } else {
            tracing::warn!(vip = %vip, backend = %backend, reason = %event.reason, "backend DOWN");
        }
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Reload { config } => {
                let (ok, message) = match self.reload(config, "xdp-lb reload").await {
                    Ok(message) => (true, message),
                    Err(message) => (false, message),
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
            Request::Drain | Request::Undrain => {
                let on = request == Request::Drain;
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
    }

    fn log_counters(&self) {
        let maps = self.reconciler.maps();
        let parts: Vec<String> = Counter::ALL
            .iter()
            .filter_map(|c| match maps.counter(*c) {
                Ok(total) if total > 0 => Some(format!("{}={total}", c.name())),
                _ => None,
            })
            .collect();
        tracing::info!(counters = %parts.join(" "), "final counters");
    }
}

/// Whether `path` parses and validates (for `check-config`).
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}
