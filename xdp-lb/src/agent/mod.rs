//! `xdp-lb run`: load (or adopt) the data plane and keep its maps in step with the config,
//! the backends' health and the kernel's neighbour table.
//!
//! One task owns the `Reconciler`, the only writer of the maps. Everything else — SIGHUP and
//! `xdp-lb reload`, health transitions, neighbour changes, a peer's flows — arrives as an event
//! in its loop and produces new [`state::StateInputs`](crate::state::StateInputs), whose desired state is
//! applied as a diff. So reload, a backend going down and a restart that adopts the previous
//! agent's maps are all the same, tested path.
//!
//! Here: the agent's state and its start ([`start`] → [`Running`]). Beside it: `startup`
//! (fill the maps, attach, start VRRP and the announcer), `event_loop` (the loop and the stop),
//! `apply` (inputs → desired state → the reconciler), `health` (a transition into the agent's
//! table), `neighbours` (the backends' next hops), `sources` (SNAT and tunnel source addresses, kernel
//! settings), `slow_start`, `reload`, `commands` (the control socket's requests), `status`,
//! `tracking` (VRRP's and the announcer's view of the data plane), `sync` (the agent's side of
//! `[sync]`), `flow_log` (the program's flow log as log lines), and `guard` (what is undone
//! however `run` ends). The faces (`/metrics`, `/stats`) are started by the caller beside the
//! agent ([`Running::commands`], [`Running::hold`]); the agent never imports them.

mod apply;
mod commands;
mod event_loop;
mod flow_log;
mod guard;
mod health;
mod host_checks;
mod neighbours;
mod reload;
mod slow_start;
mod sources;
mod startup;
mod status;
mod sync;
mod tracking;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tokio::{sync::mpsc, task::JoinHandle};
use xdp_lb_common::AnyVipKey;

pub use self::host_checks::route_warnings;
use self::{event_loop::Inbox, guard::StopGuard, neighbours::Neighbours};
use crate::{
    config::{self, Config, ConfigError, FamilyAddresses},
    control::{self, Command, ControlError},
    dataplane::{DataplaneError, ReconcileError, Reconciler},
    health::{Checker, HealthTable},
    nat::Sweep,
    netlink::{Netlink, NetlinkError},
    route_announce::Announcer,
    state::{IdAssignment, StateError},
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
        "{role} needs a source address: {key} has no {family} address and {interface} has none either"
    )]
    NoSourceAddress {
        role: &'static str,
        key: &'static str,
        interface: String,
        family: &'static str,
    },
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("removing the pins: {0}")]
    Cleanup(#[source] std::io::Error),
    #[error("sync: UDP port {port}: {source}")]
    SyncPort {
        port: u16,
        #[source]
        source: std::io::Error,
    },
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
    ids: IdAssignment,
    netlink: Netlink,
    neighbours: Neighbours,
    /// Whether each backend passes its check: written from the checks' events (and config
    /// changes) only; the desired state's health input.
    health: HealthTable,
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
    snat_address: FamilyAddresses,
    /// Tunnel VIPs: the outer source addresses, per family (agent.tunnel_source, or the
    /// interface's).
    tunnel_source: FamilyAddresses,
    /// The MTU of agent.interface (read at start and on reload): the default `tunnel_mtu`.
    interface_mtu: u16,
    nat: NatExpiry,
    /// `[announce]`: the VIP routes the routing engine advertises.
    announcer: Option<Announcer>,
    /// `[sync]`: flows exchanged with the other LB nodes.
    sync: Option<sync::SyncRuntime>,
    /// The backends' names, for the flow log's reader.
    flow_names: flow_log::SharedNames,
}

/// What NAT expiry has seen, for `status` and `/metrics`.
#[derive(Debug, Default)]
struct NatExpiry {
    last: Sweep,
    reclaimed_total: u64,
}

/// An agent that forwards: its maps filled, its program attached, its control socket
/// answering. [`Running::run`] then serves its events until a signal stops it.
pub struct Running {
    agent: Agent,
    inbox: Inbox,
    commands: mpsc::Sender<Command>,
    keep_dataplane: bool,
}

impl Running {
    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.agent.config
    }

    /// The agent's command channel, the one the control socket uses: a face (the HTTP pages)
    /// asks for `status` through it.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// A task to abort when the agent stops (a face started beside it).
    pub fn hold(&mut self, task: JoinHandle<()>) {
        self.agent.guard.tasks.push(task);
    }

    /// Serves events until SIGTERM or SIGINT, then stops.
    pub async fn run(self) -> Result<(), AgentError> {
        let Running {
            mut agent,
            inbox,
            keep_dataplane,
            ..
        } = self;
        let reason = agent.serve(inbox).await;
        agent.stop(reason, keep_dataplane).await
    }
}

/// Loads the config and the data plane, fills the maps and attaches: the first packet already
/// sees the whole config.
pub async fn start(opts: RunOptions) -> Result<Running, AgentError> {
    let config = config::load(&opts.config_path)?;
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let (commands, command_rx) = mpsc::channel::<Command>(16);
    let (health_tx, health_rx) = mpsc::channel(64);
    let (sync_tx, sync_rx) = mpsc::channel(1024);
    let inbox = Inbox::new(command_rx, health_rx, sync_rx)?;
    // The control socket first: it refuses to start a second agent on the same socket.
    let control_task = control::serve(&config.agent.control_socket, commands.clone()).await?;
    let guard = StopGuard::new(config.agent.control_socket.clone(), control_task);
    let mut agent = startup::load(opts.config_path, config, guard, health_tx, sync_tx).await?;
    agent.start().await?;
    Ok(Running {
        agent,
        inbox,
        commands,
        keep_dataplane: opts.keep_dataplane,
    })
}

/// Whether `path` parses and validates (for `check-config`).
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}
