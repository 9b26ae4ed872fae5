//! The sync task: sends this node's new flows to its peers and hands theirs to the agent.
//!
//! - Out (`outbound.rs`): the program reports each new flow (`SYNC_EVENTS`); the task turns
//!   the sender's ids into addresses ([`Directory`]), batches up to [`wire::MAX_RECORDS`]
//!   flows per datagram or `batch_interval`, whichever comes first, and sends each datagram to
//!   every peer, at most `max_datagrams_per_second` each. A full queue or socket drops,
//!   counted: a slow or dead peer never holds anything up.
//! - In (`inbound.rs`): a datagram from an address that is not a peer, one that fails
//!   `wire::decode`, or one the replay window refuses changes nothing and is counted by reason.
//!   The flows of a good one go to the agent's loop (bounded channel; full: dropped, counted),
//!   which resolves them to its own ids and has the reconciler install them.
//! - Snapshot: a node that starts asks its peers for every flow they hold (`SnapshotRequest`,
//!   repeated each second until answered or `snapshot_wait` passes); a peer walks its flow
//!   tables and sends them paced (`SnapshotChunk`s, then `SnapshotEnd`). The first complete
//!   snapshot, or the wait running out, is reported to the agent, which then lets VRRP take
//!   the addresses (until then the node neither preempts nor takes over).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::UdpSocket,
    sync::mpsc,
    task::JoinHandle,
};

use super::{
    directory::Directory,
    replay::Replay,
    sealer::Sealer,
    snapshot::SnapshotError,
    stats::SyncStats,
    wire::{self, FlowRecord, Key},
};
use crate::config::SyncConfig;

/// What the running sync shares with the agent.
pub struct SyncHandle {
    pub stats: Arc<SyncStats>,
    /// Flows this node's expiry reclaimed, for the peers to drop their copies.
    pub closed: mpsc::Sender<Vec<FlowRecord>>,
    pub directory: Arc<RwLock<Directory>>,
}

/// What the task tells the agent.
#[derive(Debug)]
pub enum Inbound {
    /// A peer's flows, to install.
    Flows(Vec<FlowRecord>),
    /// A complete snapshot arrived from `from` (its flows came before, as `Flows`), `took`
    /// after the first request.
    SnapshotDone {
        from: IpAddr,
        flows: u64,
        took: Duration,
    },
    /// No peer completed a snapshot within `snapshot_wait`.
    SnapshotTimeout,
}

/// How often live NAT flows are sent again, so that a peer's copy of a flow that stays busy
/// here does not expire there (its copy ages from the last time it was sent).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Binds the sync port and starts the task (returned, for the agent to abort on stop).
/// `installs` carries peers' flows to the agent; `pin_dir` is where the flow tables are pinned
/// (read for the peers' snapshots).
pub async fn start(
    config: &SyncConfig,
    events: RingBuf<MapData>,
    installs: mpsc::Sender<Inbound>,
    pin_dir: &Path,
) -> std::io::Result<(JoinHandle<()>, SyncHandle)> {
    let (closed_tx, closed) = mpsc::channel(64);
    let local: SocketAddr = match (config.source, config.peers.first()) {
        (Some(a), _) => (a, config.port).into(),
        (None, Some(IpAddr::V6(_))) => (Ipv6Addr::UNSPECIFIED, config.port).into(),
        (None, _) => (Ipv4Addr::UNSPECIFIED, config.port).into(),
    };
    let socket = Arc::new(UdpSocket::bind(local).await?);
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns the ring buffer.
    let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let stats = Arc::new(SyncStats::default());
    let directory = Arc::new(RwLock::new(Directory::default()));
    let key = Arc::new(Key::new(config.key.bytes()));
    let runner = Runner {
        socket,
        peers: config
            .peers
            .iter()
            .map(|p| (*p, config.port).into())
            .collect(),
        sealer: Sealer::new(key.clone()),
        key,
        pin_dir: pin_dir.to_owned(),
        snapshot_wait: config.snapshot_wait,
        batch_interval: config.batch_interval,
        rate: config.max_datagrams_per_second,
        queue: config.queue as usize,
        stats: stats.clone(),
        directory: directory.clone(),
        installs,
    };
    let task = tokio::spawn(run(Task::new(runner), ring, closed));
    let handle = SyncHandle {
        stats,
        directory,
        closed: closed_tx,
    };
    Ok((task, handle))
}

/// The task's fixed parts.
pub(super) struct Runner {
    pub(super) socket: Arc<UdpSocket>,
    pub(super) peers: Vec<SocketAddr>,
    /// The shared key, to verify the peers' datagrams.
    pub(super) key: Arc<Key>,
    pub(super) sealer: Sealer,
    pub(super) pin_dir: PathBuf,
    /// Zero: no snapshot is asked for.
    pub(super) snapshot_wait: Duration,
    pub(super) batch_interval: Duration,
    pub(super) rate: u32,
    pub(super) queue: usize,
    pub(super) stats: Arc<SyncStats>,
    pub(super) directory: Arc<RwLock<Directory>>,
    pub(super) installs: mpsc::Sender<Inbound>,
}

impl Runner {
    /// The directory as the agent last wrote it.
    pub(super) fn directory(&self) -> Directory {
        self.directory.read().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The snapshot this node waits for: since when, and the flows each peer sent for it.
pub(super) struct Wanted {
    pub(super) since: Instant,
    pub(super) last_request: Option<Instant>,
    pub(super) flows: HashMap<IpAddr, u64>,
}

/// The task's state between two events.
pub(super) struct Task {
    pub(super) r: Runner,
    /// Flows waiting for a datagram.
    pub(super) pending: Vec<FlowRecord>,
    pub(super) replay: Replay,
    pub(super) wanted: Option<Wanted>,
    /// Peers whose snapshot is being sent: one at a time each.
    pub(super) sending: HashMap<IpAddr, JoinHandle<()>>,
    /// The per-second budget of datagrams per peer: the second's start, datagrams sent in it.
    pub(super) window: (Instant, u32),
}

impl Task {
    fn new(r: Runner) -> Self {
        let wanted = (!r.snapshot_wait.is_zero()).then(|| Wanted {
            since: Instant::now(),
            last_request: None,
            flows: HashMap::new(),
        });
        Self {
            r,
            pending: Vec::new(),
            replay: Replay::default(),
            wanted,
            sending: HashMap::new(),
            window: (Instant::now(), 0),
        }
    }
}

/// A walk of the flow tables for the refresh, on a blocking thread.
type Walk = JoinHandle<Result<Vec<FlowRecord>, SnapshotError>>;

async fn run(
    mut t: Task,
    mut ring: AsyncFd<RingBuf<MapData>>,
    mut closed: mpsc::Receiver<Vec<FlowRecord>>,
) {
    let socket = t.r.socket.clone();
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + REFRESH_INTERVAL,
        REFRESH_INTERVAL,
    );
    let mut refreshing: Option<Walk> = None;
    let mut tick = tokio::time::interval(t.r.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                t.take_reported(guard.get_inner_mut());
                guard.clear_ready();
                // Full datagrams go at once; a partial one waits for the tick.
                t.send_full();
            }
            Some(records) = closed.recv() => t.queue_closed(records),
            _ = refresh.tick() => {
                if refreshing.as_ref().is_none_or(JoinHandle::is_finished) {
                    let (pin_dir, dir) = (t.r.pin_dir.clone(), t.r.directory());
                    refreshing = Some(tokio::task::spawn_blocking(move || super::snapshot::walk(&pin_dir, &dir)));
                }
            }
            walked = async { refreshing.as_mut().expect("guarded").await }, if refreshing.is_some() => {
                refreshing = None;
                // A failed walk is tried again at the next refresh.
                t.queue_refreshed(walked.ok().and_then(Result::ok).unwrap_or_default());
            }
            _ = tick.tick() => {
                // The program reports without waking us (see sync_events.rs): drain here.
                t.take_reported(ring.get_mut());
                t.send_all();
                t.ask_for_snapshot().await;
            }
            got = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                t.on_datagram(&buf[..n], from).await;
            }
        }
    }
}
