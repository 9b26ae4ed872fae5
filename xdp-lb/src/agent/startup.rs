//! How the agent starts: the data plane loaded (or adopted), the flow-log and sync tasks
//! started, the maps filled, and only then the program attached, VRRP and the announcer
//! started.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::{
    Agent, AgentError, INITIAL_RESOLVE_WAIT, NatExpiry, flow_log, guard::StopGuard,
    neighbours::Neighbours, sources, sync::SyncRuntime,
};
use crate::{
    config::{Config, FamilyAddresses, XdpMode},
    dataplane::{AttachMode, Dataplane, MapSizes, Maps, Reconciler},
    health::{Checker, HealthEvent, HealthTable},
    netlink::{self, Netlink},
    route_announce::Announcer,
    state::IdAssignment,
    sync::stream::{self, Inbound},
    vrrp::instance::Instance,
};

/// Loads (or adopts) the data plane, starts the flow log and `[sync]`, and builds the agent
/// around its reconciler; nothing is attached yet.
pub(super) async fn load(
    config_path: PathBuf,
    config: Config,
    mut guard: StopGuard,
    health_events: mpsc::Sender<HealthEvent>,
    sync_inbound: mpsc::Sender<Inbound>,
) -> Result<Agent, AgentError> {
    let sizes = MapSizes {
        flow_table_size: config.agent.flow_table_size,
        flow_table_size_ipv6: config.agent.flow_table_size_ipv6,
        max_vips: config.agent.max_vips,
    };
    let (dataplane, mut maps) = Dataplane::load(&config.agent.pin_dir, sizes)?;
    let flow_names = flow_log::SharedNames::default();
    if let Some(ring) = maps.take_flow_log() {
        // The reader runs always; the program only reports when agent.flow_log is on
        // (SETTINGS), so a reload can switch it.
        match flow_log::spawn(ring, flow_names.clone()) {
            Ok(t) => guard.tasks.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot read the flow log"),
        }
    }
    // [sync]: the task binds its port now, so that a port in use stops the start here.
    let sync = match (&config.sync, maps.take_sync_events()) {
        (Some(cfg), Some(ring)) => {
            let (task, handle) = stream::start(cfg, ring, sync_inbound, &config.agent.pin_dir)
                .await
                .map_err(|source| AgentError::SyncPort {
                    port: cfg.port,
                    source,
                })?;
            tracing::info!(peers = ?cfg.peers, port = cfg.port, "sync: exchanging flows with the peers");
            guard.tasks.push(task);
            Some(SyncRuntime::new(handle, cfg))
        }
        _ => None,
    };
    guard.hold(dataplane);
    let mut agent = Agent::new(config_path, config, guard, maps, health_events)?;
    agent.sync = sync;
    agent.flow_names = flow_names;
    Ok(agent)
}

impl Agent {
    fn new(
        config_path: PathBuf,
        config: Config,
        mut guard: StopGuard,
        maps: Maps,
        health_events: mpsc::Sender<HealthEvent>,
    ) -> Result<Self, AgentError> {
        let reconciler = Reconciler::new(maps)?;
        let adopted = IdAssignment::from_maps(
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
            health: HealthTable::default(),
            checker: Checker::new(health_events),
            vips_without_backends: Default::default(),
            health_transitions: 0,
            vrrp: Vec::new(),
            local_mac: None,
            snat_address: FamilyAddresses::default(),
            tunnel_source: FamilyAddresses::default(),
            interface_mtu: 0,
            nat: NatExpiry::default(),
            slow_start: Default::default(),
            announcer: None,
            sync: None,
            flow_names: Default::default(),
        })
    }

    /// Fills the maps, then attaches: the first packet already sees the whole config.
    pub(super) async fn start(&mut self) -> Result<(), AgentError> {
        let interface = self.config.agent.interface.clone();
        if let Some(ifindex) = netlink::ifindex(&interface) {
            self.local_mac = self
                .netlink
                .link_mac(ifindex)
                .await?
                .filter(|m| *m != [0; 6]);
        }
        self.snat_address =
            sources::source_addresses(&self.netlink, &self.config, sources::Role::Snat).await?;
        self.tunnel_source =
            sources::source_addresses(&self.netlink, &self.config, sources::Role::Tunnel).await?;
        self.interface_mtu = sources::interface_mtu(&self.netlink, &self.config).await;
        if self.snat_address.any() || self.tunnel_source.any() {
            sources::check_sysctls(&self.config);
        }
        // The table before the first desired state; the checks once the program is attached
        // (below): a check through a tunnel needs the program to catch its answer.
        self.health.follow(&self.config, crate::clock::unix_now());
        self.resolve_neighbours(Duration::from_millis(100)).await?;
        self.reconcile("start")?;
        self.guard.see_vlan_tags(&interface);
        let mode = match self.config.agent.xdp_mode {
            XdpMode::Auto => AttachMode::Auto,
            XdpMode::Driver => AttachMode::Driver,
            XdpMode::Generic => AttachMode::Generic,
        };
        let mode = self.guard.dataplane_mut().attach(&interface, mode)?;
        self.follow_checks();
        self.start_failover().await?;
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

    /// Looks the backends' neighbours up until all are resolved or `INITIAL_RESOLVE_WAIT`
    /// passes (polling every `poll`), so that they take new connections from the first table.
    pub(super) async fn resolve_neighbours(&mut self, poll: Duration) -> Result<(), AgentError> {
        let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
        loop {
            self.neighbours.refresh(&self.netlink, &self.config).await?;
            if self.neighbours.all_resolved(&self.config) || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// VRRP instances and the announcer. With `[sync]`, VRRP waits for a peer's snapshot
    /// before it may take the addresses (bounded by sync.snapshot_wait): a node that starts or
    /// returns holds the flows first.
    async fn start_failover(&mut self) -> Result<(), AgentError> {
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
        Ok(())
    }
}
