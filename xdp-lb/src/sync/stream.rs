//! The sync task: sends this node's new flows to its peers and hands theirs to the agent.
//!
//! - Out: the program reports each new flow (`SYNC_EVENTS`); the task turns the sender's ids
//!   into addresses ([`Directory`]), batches up to [`wire::MAX_RECORDS`] flows per datagram or
//!   `batch_interval`, whichever comes first, and sends each datagram to every peer, at most
//!   `max_datagrams_per_second` each. A full queue or socket drops, counted: a slow or dead
//!   peer never holds anything up.
//! - In: a datagram from an address that is not a peer, one that fails `wire::decode`, or one
//!   the replay window refuses changes nothing and is counted by reason. The flows of a good
//!   one go to the agent's loop (bounded channel; full: dropped, counted), which resolves them
//!   to its own ids and has the reconciler install them.
//! - Snapshot: a node that starts asks its peers for every flow they hold (`SnapshotRequest`,
//!   repeated each second until answered or `snapshot_wait` passes); a peer walks its flow
//!   tables and sends them paced (`SnapshotChunk`s, then `SnapshotEnd`). The first complete
//!   snapshot, or the wait running out, is reported to the agent, which then lets VRRP take
//!   the addresses (until then the node neither preempts nor takes over).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::UdpSocket,
    sync::mpsc,
    task::JoinHandle,
};
use xdp_lb_common::{SYNC_EVENT_DSR, SYNC_EVENT_NAT, SYNC_EVENT_NAT_CLOSING, SyncEvent};

use super::{
    replay::Replay,
    wire::{self, FlowRecord, Key, Message, MessageKind, RecordKind},
};
use crate::config::SyncConfig;

/// What the sender needs to turn the program's ids into addresses; the agent replaces it after
/// every reconcile.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// Backend id → its address and port.
    pub backends: HashMap<u32, (IpAddr, u16)>,
    pub snat_v4: Option<Ipv4Addr>,
    pub snat_v6: Option<Ipv6Addr>,
}

/// Counters, for `status` and `/metrics`.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub flows_reported: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub flows_sent: AtomicU64,
    /// Flows not sent: the queue was full, the rate limit or the socket refused.
    pub flows_dropped: AtomicU64,
    /// Reported flows whose backend the directory did not know (removed meanwhile).
    pub flows_unknown: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub flows_received: AtomicU64,
    /// Received flows not handed to the agent: its queue was full.
    pub flows_received_dropped: AtomicU64,
    /// Datagrams refused, by reason.
    pub rejected: Mutex<BTreeMap<String, u64>>,
}

impl SyncStats {
    fn reject(&self, reason: &'static str) {
        if let Ok(mut r) = self.rejected.lock() {
            *r.entry(reason.to_owned()).or_default() += 1;
        }
    }

    pub fn view(&self) -> SyncView {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncView {
            flows_reported: get(&self.flows_reported),
            datagrams_sent: get(&self.datagrams_sent),
            flows_sent: get(&self.flows_sent),
            flows_dropped: get(&self.flows_dropped),
            flows_unknown: get(&self.flows_unknown),
            datagrams_received: get(&self.datagrams_received),
            flows_received: get(&self.flows_received),
            flows_received_dropped: get(&self.flows_received_dropped),
            rejected: self.rejected.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }
}

/// [`SyncStats`] as `status` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncView {
    pub flows_reported: u64,
    pub datagrams_sent: u64,
    pub flows_sent: u64,
    pub flows_dropped: u64,
    pub flows_unknown: u64,
    pub datagrams_received: u64,
    pub flows_received: u64,
    pub flows_received_dropped: u64,
    pub rejected: BTreeMap<String, u64>,
}

/// What the running sync shares with the agent.
pub struct Sync {
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

/// Binds the sync port and starts the task (returned, for the agent to abort on stop).
/// `installs` carries peers' flows to the agent; `pin_dir` is where the flow tables are pinned
/// (read for the peers' snapshots).
pub async fn start(
    config: &SyncConfig,
    key: &[u8],
    events: RingBuf<MapData>,
    installs: mpsc::Sender<Inbound>,
    pin_dir: &std::path::Path,
) -> std::io::Result<(JoinHandle<()>, Sync)> {
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
    let epoch = crate::clock::unix_now_ns();
    let key = Arc::new(Key::new(key));
    let task = tokio::spawn(run(
        Runner {
            socket,
            peers: config
                .peers
                .iter()
                .map(|p| (*p, config.port).into())
                .collect(),
            key: key.clone(),
            sealer: Sealer {
                key,
                node: (epoch as u32) ^ std::process::id(),
                epoch,
                seq: Arc::new(AtomicU64::new(0)),
            },
            pin_dir: pin_dir.to_owned(),
            snapshot_wait: config.snapshot_wait,
            batch_interval: config.batch_interval,
            rate: config.max_datagrams_per_second,
            queue: config.queue as usize,
            stats: stats.clone(),
            directory: directory.clone(),
            installs,
        },
        ring,
        closed,
    ));
    Ok((
        task,
        Sync {
            stats,
            directory,
            closed: closed_tx,
        },
    ))
}

/// Makes this node's datagrams: its key, node id, epoch and the one sequence of the epoch
/// (shared with the snapshot senders).
#[derive(Clone)]
pub(super) struct Sealer {
    key: Arc<Key>,
    node: u32,
    epoch: u64,
    seq: Arc<AtomicU64>,
}

impl Sealer {
    /// The next datagram: `records` (at most `wire::MAX_RECORDS`) as `kind`, authenticated.
    pub(super) fn seal(&self, kind: MessageKind, records: Vec<FlowRecord>) -> Vec<u8> {
        wire::encode(
            &Message {
                kind,
                node: self.node,
                epoch: self.epoch,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                records,
            },
            &self.key,
        )
    }
}

struct Runner {
    socket: Arc<UdpSocket>,
    peers: Vec<SocketAddr>,
    /// The shared key, to verify the peers' datagrams.
    key: Arc<Key>,
    sealer: Sealer,
    pin_dir: std::path::PathBuf,
    /// Zero: no snapshot is asked for.
    snapshot_wait: Duration,
    batch_interval: Duration,
    rate: u32,
    queue: usize,
    stats: Arc<SyncStats>,
    directory: Arc<RwLock<Directory>>,
    installs: mpsc::Sender<Inbound>,
}

/// The snapshot this node waits for: since when, and the flows each peer sent for it.
struct Wanted {
    since: Instant,
    last_request: Option<Instant>,
    flows: HashMap<IpAddr, u64>,
}

/// How often live NAT flows are sent again, so that a peer's copy of a flow that stays busy
/// here does not expire there (its copy ages from the last time it was sent).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

async fn run(
    mut r: Runner,
    mut ring: AsyncFd<RingBuf<MapData>>,
    mut closed: mpsc::Receiver<Vec<FlowRecord>>,
) {
    let mut pending: Vec<FlowRecord> = Vec::new();
    let mut replay = Replay::default();
    let mut wanted = (!r.snapshot_wait.is_zero()).then(|| Wanted {
        since: Instant::now(),
        last_request: None,
        flows: HashMap::new(),
    });
    // Peers whose snapshot is being sent: one at a time each.
    let mut sending: HashMap<IpAddr, JoinHandle<()>> = HashMap::new();
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + REFRESH_INTERVAL,
        REFRESH_INTERVAL,
    );
    let mut refreshing: Option<JoinHandle<Result<Vec<FlowRecord>, String>>> = None;
    let mut tick = tokio::time::interval(r.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The per-second budget of datagrams per peer.
    let (mut window, mut sent_in_window) = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                drain(&r, guard.get_inner_mut(), &mut pending);
                guard.clear_ready();
                // Full datagrams go at once; a partial one waits for the tick.
                while pending.len() >= wire::MAX_RECORDS {
                    flush(&mut r, &mut pending, &mut window, &mut sent_in_window);
                }
            }
            Some(records) = closed.recv() => {
                let room = r.queue.saturating_sub(pending.len());
                let n = records.len();
                pending.extend(records.into_iter().take(room));
                if n > room {
                    r.stats.flows_dropped.fetch_add((n - room) as u64, Ordering::Relaxed);
                }
            }
            _ = refresh.tick() => {
                if refreshing.as_ref().is_none_or(|t| t.is_finished()) {
                    let (pin_dir, dir) = (r.pin_dir.clone(), r.directory.read().map(|d| d.clone()).unwrap_or_default());
                    refreshing = Some(tokio::task::spawn_blocking(move || super::snapshot::walk(&pin_dir, &dir)));
                }
            }
            walked = async { refreshing.as_mut().expect("guarded").await }, if refreshing.is_some() => {
                refreshing = None;
                // NAT flows with packets since the last refresh; the others age alike here
                // and there. (A failed walk is tried again at the next refresh.)
                let walked = walked.map_err(|e| e.to_string()).and_then(|w| w).unwrap_or_default();
                let busy = walked.into_iter().filter(|f| {
                    f.kind == RecordKind::Nat && f.idle_s < REFRESH_INTERVAL.as_secs() as u32
                });
                for f in busy {
                    if pending.len() >= r.queue {
                        r.stats.flows_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    pending.push(f);
                }
            }
            _ = tick.tick() => {
                // The program reports without waking us (see sync_events.rs): drain here.
                drain(&r, ring.get_mut(), &mut pending);
                while pending.len() >= wire::MAX_RECORDS {
                    flush(&mut r, &mut pending, &mut window, &mut sent_in_window);
                }
                while !pending.is_empty() {
                    if !flush(&mut r, &mut pending, &mut window, &mut sent_in_window) {
                        break;
                    }
                }
                if let Some(w) = wanted.as_mut() {
                    if w.since.elapsed() >= r.snapshot_wait {
                        wanted = None;
                        let _ = r.installs.send(Inbound::SnapshotTimeout).await;
                    } else if w.last_request.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        w.last_request = Some(Instant::now());
                        send_control(&r, MessageKind::SnapshotRequest);
                    }
                }
            }
            got = r.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let Some(msg) = receive(&r, &mut replay, &buf[..n], from) else { continue };
                match msg.kind {
                    MessageKind::Flows => forward(&r, msg.records),
                    MessageKind::SnapshotChunk => {
                        if let Some(w) = wanted.as_mut() {
                            *w.flows.entry(from.ip()).or_default() += msg.records.len() as u64;
                        }
                        // A snapshot is worth waiting for: backpressure rather than drops.
                        let n = msg.records.len() as u64;
                        r.stats.flows_received.fetch_add(n, Ordering::Relaxed);
                        let _ = r.installs.send(Inbound::Flows(msg.records)).await;
                    }
                    MessageKind::SnapshotEnd => {
                        if let Some(w) = wanted.take() {
                            let flows = w.flows.get(&from.ip()).copied().unwrap_or(0);
                            let took = w.since.elapsed();
                            let _ = r.installs.send(Inbound::SnapshotDone { from: from.ip(), flows, took }).await;
                        }
                    }
                    MessageKind::SnapshotRequest => {
                        let busy = sending.get(&from.ip()).is_some_and(|t| !t.is_finished());
                        if !busy {
                            let dir = r.directory.read().map(|d| d.clone()).unwrap_or_default();
                            sending.insert(from.ip(), tokio::spawn(super::snapshot::send(super::snapshot::Snapshot {
                                socket: r.socket.clone(),
                                to: SocketAddr::new(from.ip(), r.peers.iter().find(|p| p.ip() == from.ip()).map_or(from.port(), |p| p.port())),
                                sealer: r.sealer.clone(),
                                rate: r.rate,
                                pin_dir: r.pin_dir.clone(),
                                directory: dir,
                                stats: r.stats.clone(),
                            })));
                        }
                    }
                }
            }
        }
    }
}

/// Moves the reported flows from the ring into `pending` (beyond `queue`: dropped, counted).
fn drain(r: &Runner, events: &mut RingBuf<MapData>, pending: &mut Vec<FlowRecord>) {
    let dir = r.directory.read().map(|d| d.clone()).unwrap_or_default();
    while let Some(item) = events.next() {
        r.stats.flows_reported.fetch_add(1, Ordering::Relaxed);
        match record(&item, &dir) {
            Some(rec) if pending.len() < r.queue => pending.push(rec),
            Some(_) => {
                r.stats.flows_dropped.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                r.stats.flows_unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends one datagram of up to MAX_RECORDS pending flows to every peer; false when the rate
/// limit says wait (the flows stay queued).
fn flush(
    r: &mut Runner,
    pending: &mut Vec<FlowRecord>,
    window: &mut Instant,
    sent_in_window: &mut u32,
) -> bool {
    if window.elapsed() >= Duration::from_secs(1) {
        *window = Instant::now();
        *sent_in_window = 0;
    }
    if *sent_in_window >= r.rate {
        return false;
    }
    let n = pending.len().min(wire::MAX_RECORDS);
    let records: Vec<FlowRecord> = pending.drain(..n).collect();
    let datagram = r.sealer.seal(MessageKind::Flows, records);
    *sent_in_window += 1;
    for peer in &r.peers {
        // Never wait for a peer: a full socket buffer drops (UDP would lose it anyway).
        match r.socket.try_send_to(&datagram, *peer) {
            Ok(_) => {
                r.stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                r.stats.flows_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                r.stats.flows_dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    true
}

/// A datagram from a peer, authenticated and not a replay; None (counted) otherwise.
fn receive(r: &Runner, replay: &mut Replay, datagram: &[u8], from: SocketAddr) -> Option<Message> {
    let stats = &r.stats;
    stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
    if !r.peers.iter().any(|p| p.ip() == from.ip()) {
        stats.reject("unknown_peer");
        return None;
    }
    let msg = match wire::decode(datagram, &r.key) {
        Ok(m) => m,
        Err(e) => {
            stats.reject(e.name());
            return None;
        }
    };
    if let Err(e) = replay.accept(from.ip(), msg.epoch, msg.seq) {
        stats.reject(e.name());
        return None;
    }
    Some(msg)
}

/// Live flows to the agent: never waited for (a full queue drops, counted).
fn forward(r: &Runner, records: Vec<FlowRecord>) {
    if records.is_empty() {
        return;
    }
    let n = records.len() as u64;
    r.stats.flows_received.fetch_add(n, Ordering::Relaxed);
    if r.installs.try_send(Inbound::Flows(records)).is_err() {
        r.stats
            .flows_received_dropped
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// A message without flows (a snapshot request) to every peer.
fn send_control(r: &Runner, kind: MessageKind) {
    let datagram = r.sealer.seal(kind, Vec::new());
    for peer in &r.peers {
        let _ = r.socket.try_send_to(&datagram, *peer);
    }
}

/// A reported flow as the peers get it, or None if the directory does not know its backend.
fn record(bytes: &[u8], dir: &Directory) -> Option<FlowRecord> {
    if bytes.len() < size_of::<SyncEvent>() {
        return None;
    }
    // SAFETY: length checked; SyncEvent is plain integers, read unaligned.
    let e: SyncEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let addr = |b: [u8; 16]| -> IpAddr {
        if e.family == 4 {
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
        } else {
            Ipv6Addr::from(b).into()
        }
    };
    let (backend, backend_port) = *dir.backends.get(&e.backend_id)?;
    let kind = match e.kind {
        SYNC_EVENT_DSR => RecordKind::Dsr,
        SYNC_EVENT_NAT | SYNC_EVENT_NAT_CLOSING => RecordKind::Nat,
        _ => return None,
    };
    let snat = match kind {
        RecordKind::Nat => {
            let a: IpAddr = if e.family == 4 {
                dir.snat_v4?.into()
            } else {
                dir.snat_v6?.into()
            };
            Some(SocketAddr::new(a, u16::from_be(e.snat_port_be)))
        }
        _ => None,
    };
    Some(FlowRecord {
        kind,
        proto: e.proto,
        state: match e.kind {
            SYNC_EVENT_NAT => wire::STATE_ESTABLISHED,
            SYNC_EVENT_NAT_CLOSING => wire::STATE_ESTABLISHED | wire::STATE_CLOSING,
            _ => 0,
        },
        client: SocketAddr::new(addr(e.src_addr), u16::from_be(e.src_port_be)),
        vip: SocketAddr::new(addr(e.dst_addr), u16::from_be(e.dst_port_be)),
        backend: SocketAddr::new(backend, backend_port),
        snat,
        idle_s: 0,
    })
}
