//! The sending side of the sync task: the flows the program reports, the ones this node's
//! expiry closed and the busy NAT flows of a refresh, queued (bounded) and sent in batches to
//! every peer within the rate.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use xdp_lb_common::{SYNC_EVENT_DSR, SYNC_EVENT_NAT, SYNC_EVENT_NAT_CLOSING, SyncEvent};

use super::{
    directory::Directory,
    stream::{REFRESH_INTERVAL, Task},
    wire::{self, FlowRecord, MessageKind, RecordKind},
};

impl Task {
    /// Moves the reported flows from the ring into the queue (beyond `queue`: dropped,
    /// counted).
    pub(super) fn take_reported(&mut self, events: &mut RingBuf<MapData>) {
        let dir = self.r.directory();
        let stats = &self.r.stats;
        while let Some(item) = events.next() {
            stats.flows_reported.fetch_add(1, Ordering::Relaxed);
            match record(&item, &dir) {
                Some(rec) if self.pending.len() < self.r.queue => self.pending.push(rec),
                Some(_) => {
                    stats.flows_dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    stats.flows_unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Flows this node's expiry closed, for the peers to drop their copies.
    pub(super) fn queue_closed(&mut self, records: Vec<FlowRecord>) {
        let room = self.r.queue.saturating_sub(self.pending.len());
        let n = records.len();
        self.pending.extend(records.into_iter().take(room));
        if n > room {
            self.r
                .stats
                .flows_dropped
                .fetch_add((n - room) as u64, Ordering::Relaxed);
        }
    }

    /// NAT flows with packets since the last refresh are sent again; the others age alike
    /// here and there.
    pub(super) fn queue_refreshed(&mut self, walked: Vec<FlowRecord>) {
        let busy = walked
            .into_iter()
            .filter(|f| f.kind == RecordKind::Nat && f.idle_s < REFRESH_INTERVAL.as_secs() as u32);
        for f in busy {
            if self.pending.len() >= self.r.queue {
                self.r.stats.flows_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.pending.push(f);
        }
    }

    /// Sends every full datagram's worth of queued flows.
    pub(super) fn send_full(&mut self) {
        while self.pending.len() >= wire::MAX_RECORDS {
            if !self.flush() {
                return;
            }
        }
    }

    /// Sends everything queued, as far as the rate allows.
    pub(super) fn send_all(&mut self) {
        while !self.pending.is_empty() {
            if !self.flush() {
                return;
            }
        }
    }

    /// Sends one datagram of up to MAX_RECORDS queued flows to every peer; false when the rate
    /// limit says wait (the flows stay queued).
    fn flush(&mut self) -> bool {
        let (start, sent) = &mut self.window;
        if start.elapsed() >= Duration::from_secs(1) {
            *start = Instant::now();
            *sent = 0;
        }
        if *sent >= self.r.rate {
            return false;
        }
        let n = self.pending.len().min(wire::MAX_RECORDS);
        let records: Vec<FlowRecord> = self.pending.drain(..n).collect();
        let datagram = self.r.sealer.seal(MessageKind::Flows, records);
        *sent += 1;
        let stats = &self.r.stats;
        for peer in &self.r.peers {
            // Never wait for a peer: a full socket buffer drops (UDP would lose it anyway).
            match self.r.socket.try_send_to(&datagram, *peer) {
                Ok(_) => {
                    stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                    stats.flows_sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.flows_dropped.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        true
    }

    /// A message without flows (a snapshot request) to every peer.
    pub(super) fn send_control(&self, kind: MessageKind) {
        let datagram = self.r.sealer.seal(kind, Vec::new());
        for peer in &self.r.peers {
            let _ = self.r.socket.try_send_to(&datagram, *peer);
        }
    }
}

/// A reported flow as the peers get it, or None if the directory does not know its backend.
pub(super) fn record(bytes: &[u8], dir: &Directory) -> Option<FlowRecord> {
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
