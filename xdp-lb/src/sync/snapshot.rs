//! A snapshot for a peer: every flow this node holds, read from the pinned flow tables (the
//! reconciler stays their one writer; this only reads, like `xdp-lb inspect`), and sent paced.
//!
//! Each client-direction entry of `FLOWS` and `FLOWS6` is one flow: a DSR entry names its
//! backend by id (turned into an address by the directory), a NAT entry carries its own
//! rewrite (backend and SNAT source). Half-open NAT flows are not sent: a failover resets them
//! anyway (the client's SYN is retried).

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use thiserror::Error;
use tokio::net::UdpSocket;
use xdp_lb_common::{
    FLOW_F_CLOSING, FLOW_F_NAT, FLOW_F_REPLY, FlowKey, FlowKey6, FlowTuple, FlowValueOf, map_names,
};

use super::{
    directory::Directory,
    sealer::Sealer,
    stats::SyncStats,
    wire::{self, FlowRecord, MessageKind, RecordKind, STATE_CLOSING, STATE_ESTABLISHED},
};
use crate::nat::ip_of;

/// Why the flow tables could not be read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("{map}: {source}")]
    Map {
        map: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the walk did not finish: {0}")]
    Walk(#[from] tokio::task::JoinError),
}

/// Every flow of both families, as records.
pub fn walk(pin_dir: &Path, dir: &Directory) -> Result<Vec<FlowRecord>, SnapshotError> {
    let now_s = crate::clock::coarse_now_s();
    let mut out = Vec::new();
    family::<FlowKey, u32>(pin_dir, map_names::FLOWS, dir, now_s, &mut out)?;
    family::<FlowKey6, [u8; 16]>(pin_dir, map_names::FLOWS6, dir, now_s, &mut out)?;
    Ok(out)
}

/// One family's flow table, read entry by entry.
fn family<K, A>(
    pin_dir: &Path,
    name: &str,
    dir: &Directory,
    now_s: u32,
    out: &mut Vec<FlowRecord>,
) -> Result<(), SnapshotError>
where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: xdp_lb_common::Address,
    FlowValueOf<A>: aya::Pod,
{
    let map_err = |source| SnapshotError::Map {
        map: name.to_owned(),
        source,
    };
    let data = MapData::from_pin(pin_dir.join(name)).map_err(map_err)?;
    let flows: HashMap<MapData, K, FlowValueOf<A>> =
        Map::LruHashMap(data).try_into().map_err(map_err)?;
    for (k, v) in flows.iter().filter_map(Result::ok) {
        let c = crate::nat::ClosedFlow::of(&k);
        let sock = |a: A, port_be: u16| SocketAddr::new(ip_of::<K>(a), u16::from_be(port_be));
        let entry = Entry {
            proto: c.proto,
            client: c.client,
            vip: c.vip,
            nat: (
                sock(v.nat_dst_addr_be, v.nat_dst_port_be),
                sock(v.nat_src_addr_be, v.nat_src_port_be),
            ),
            backend_id: v.backend_id,
            flags: v.flags,
            last_seen_s: v.last_seen_s,
        };
        out.extend(entry.record(dir, now_s));
    }
    Ok(())
}

/// One client-direction entry, of either family.
struct Entry {
    proto: u8,
    client: SocketAddr,
    vip: SocketAddr,
    /// NAT: (backend, SNAT source) from the entry's rewrite.
    nat: (SocketAddr, SocketAddr),
    backend_id: u32,
    flags: u32,
    last_seen_s: u32,
}

impl Entry {
    fn record(&self, dir: &Directory, now_s: u32) -> Option<FlowRecord> {
        if self.flags & FLOW_F_REPLY != 0 {
            return None;
        }
        if self.flags & FLOW_F_NAT != 0 {
            // A NAT flow's client direction is in FLOWS only once established (half-open
            // flows live in NAT_EMBRYONIC_CLIENT); its ESTABLISHED bit is on the reply side.
            let mut state = STATE_ESTABLISHED;
            if self.flags & FLOW_F_CLOSING != 0 {
                state |= STATE_CLOSING;
            }
            return Some(FlowRecord {
                kind: RecordKind::Nat,
                proto: self.proto,
                state,
                client: self.client,
                vip: self.vip,
                backend: self.nat.0,
                snat: Some(self.nat.1),
                idle_s: now_s.saturating_sub(self.last_seen_s),
            });
        }
        let (addr, port) = *dir.backends.get(&self.backend_id)?;
        Some(FlowRecord {
            kind: RecordKind::Dsr,
            proto: self.proto,
            state: 0,
            client: self.client,
            vip: self.vip,
            backend: SocketAddr::new(addr, port),
            snat: None,
            idle_s: 0,
        })
    }
}

/// A snapshot on its way to one peer: what its sender needs, cloned out of the sync task.
pub(super) struct SnapshotSend {
    pub(super) socket: Arc<UdpSocket>,
    pub(super) to: SocketAddr,
    pub(super) sealer: Sealer,
    pub(super) rate: u32,
    pub(super) pin_dir: std::path::PathBuf,
    pub(super) directory: Directory,
    pub(super) stats: Arc<SyncStats>,
}

/// Walks the flow tables (on a blocking thread) and sends every flow to one peer, paced at
/// the datagram rate, then `SnapshotEnd`.
pub(super) async fn send(s: SnapshotSend) {
    let (pin_dir, dir) = (s.pin_dir.clone(), s.directory.clone());
    let records = tokio::task::spawn_blocking(move || walk(&pin_dir, &dir))
        .await
        .unwrap_or_else(|e| Err(e.into()));
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = %s.to, error = %e, "sync: reading the flow tables for a snapshot failed");
            Vec::new()
        }
    };
    tracing::info!(peer = %s.to, flows = records.len(), "sync: sending a snapshot");
    // Paced: at most `rate` datagrams a second, in slices of a millisecond.
    let per_ms = (s.rate / 1000).max(1) as usize;
    for (i, chunk) in records.chunks(wire::MAX_RECORDS).enumerate() {
        send_one(&s, MessageKind::SnapshotChunk, chunk.to_vec()).await;
        if (i + 1) % per_ms == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    send_one(&s, MessageKind::SnapshotEnd, Vec::new()).await;
}

/// One snapshot datagram. A snapshot should not lose datagrams to a full socket buffer: a
/// refused send is retried for up to 100 ms before it is dropped (counted).
async fn send_one(s: &SnapshotSend, kind: MessageKind, records: Vec<FlowRecord>) {
    let n = records.len() as u64;
    let datagram = s.sealer.seal(kind, records);
    for _ in 0..100 {
        if s.socket.try_send_to(&datagram, s.to).is_ok() {
            s.stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            s.stats.flows_sent.fetch_add(n, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.stats.flows_dropped.fetch_add(n, Ordering::Relaxed);
}
