//! The reconciler's NAT expiry walk, for each family: reads `NAT_FLOWS` (`NAT_FLOWS6`) in bulk, decides each flow by the rules
//! in `crate::nat`, and deletes the expired flows' two entries (client side first); then the
//! half-open flows (`NAT_EMBRYONIC`, `NAT_EMBRYONIC_CLIENT`) older than `nat_syn_timeout`.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, MapData, MapError},
};
use xdp_lb_common::{FlowTuple, FlowValue, FlowValueOf, NatState};

use super::Maps;
use crate::nat::{ClosedFlow, Sweep, Timeouts, expired, other_direction, same_binding};

/// One family's NAT maps: client directions, reply directions, half-open flows and their
/// client directions.
struct Family<'a, K, A> {
    flows: &'a HashMap<MapData, K, FlowValueOf<A>>,
    nat_flows: &'a HashMap<MapData, K, FlowValueOf<A>>,
    embryonic: &'a HashMap<MapData, K, FlowValueOf<A>>,
    embryonic_client: &'a HashMap<MapData, K, FlowValueOf<A>>,
}

/// Reclaims expired NAT flows. Called by the reconciler (the maps' one writer).
///
/// Cost: the reply entries are read in bulk (BPF_MAP_LOOKUP_BATCH, thousands per syscall);
/// the client direction is looked up only for a flow whose reply side has been idle longer
/// than the shortest timeout (a fresher flow cannot be expired, whatever its state). At tens
/// of thousands of new flows a second the walk used to cost more CPU than the data plane
/// itself. An expired flow costs four syscalls (a fresh look at both entries, two deletes):
/// looked at and deleted one by one, so that no packet can reopen it in between (below).
pub(super) fn sweep(maps: &mut Maps, timeouts: &Timeouts, now_s: u32) -> Result<Sweep, MapError> {
    let mut out = Sweep::default();
    for state in [
        NatState::SynSent,
        NatState::Established,
        NatState::Closing,
        NatState::Udp,
    ] {
        out.live.insert(state.name(), 0);
    }
    let v4 = Family {
        flows: &maps.flows,
        nat_flows: &maps.nat_flows,
        embryonic: &maps.nat_embryonic,
        embryonic_client: &maps.nat_embryonic_client,
    };
    v4.sweep(timeouts, now_s, &mut out)?;
    let v6 = Family {
        flows: &maps.flows6,
        nat_flows: &maps.nat_flows6,
        embryonic: &maps.nat_embryonic6,
        embryonic_client: &maps.nat_embryonic_client6,
    };
    v6.sweep(timeouts, now_s, &mut out)?;
    Ok(out)
}

/// What became of one candidate for expiry.
enum Verdict {
    /// Still alive, with these flags.
    Live(u32),
    /// Expired: the client's 5-tuple, and how many reply entries were deleted (0: it went
    /// meanwhile).
    Reclaimed { closed: ClosedFlow, deleted: usize },
    /// Gone meanwhile (the program or another sweep removed it).
    Gone,
}

impl<K, A> Family<'_, K, A>
where
    K: FlowTuple<Addr = A> + Pod + Default,
    A: xdp_lb_common::Address,
    FlowValueOf<A>: Pod + Default,
{
    fn sweep(&self, timeouts: &Timeouts, now_s: u32, out: &mut Sweep) -> Result<(), MapError> {
        self.sweep_established(timeouts, now_s, out)?;
        self.sweep_half_open(timeouts, now_s, out)
    }

    /// The established flows, by their reply entries.
    fn sweep_established(
        &self,
        timeouts: &Timeouts,
        now_s: u32,
        out: &mut Sweep,
    ) -> Result<(), MapError> {
        let shortest = timeouts
            .syn
            .min(timeouts.established)
            .min(timeouts.closing)
            .min(timeouts.udp)
            .as_secs()
            .max(1);
        let entries: Vec<(K, FlowValueOf<A>)> = read_all(self.nat_flows.map())?;
        for (reply_key, snapshot) in entries {
            let live_flags = if (now_s.saturating_sub(snapshot.last_seen_s) as u64) <= shortest {
                // Alive whatever the client side says. Counted by the reply side's state.
                Some(snapshot.flags)
            } else {
                match self.reclaim(reply_key, timeouts, now_s) {
                    Verdict::Live(flags) => Some(flags),
                    Verdict::Reclaimed { closed, deleted } => {
                        out.reclaimed += deleted as u64;
                        out.closed.push(closed);
                        None
                    }
                    Verdict::Gone => None,
                }
            };
            if let Some(flags) = live_flags {
                *out.live
                    .entry(FlowValue::nat_state(flags).name())
                    .or_default() += 1;
                *out.live_by_backend.entry(snapshot.backend_id).or_default() += 1;
            }
        }
        Ok(())
    }

    /// One flow whose reply side has been idle longer than the shortest timeout: expired by both
    /// its entries, or alive.
    ///
    /// The bulk read is a snapshot, and the flow may have come back to life since: a client that
    /// reuses its port sends a SYN on its closing flow, which reopens it. Deleting it then would
    /// cut that new connection off mid-exchange (its SYN went out through the binding, its answer
    /// would find none: one connection in a few thousand when clients reuse ports as fast as the
    /// kernel hands them out). So a candidate is looked at again, alone, and its client direction
    /// is taken out in one step that returns what it held (`take`): if a packet reopened the flow
    /// between the look and the take, the entry goes straight back and the flow lives on.
    fn reclaim(&self, reply_key: K, timeouts: &Timeouts, now_s: u32) -> Verdict {
        let Ok(reply) = self.nat_flows.get(&reply_key, 0) else {
            return Verdict::Gone;
        };
        // The client entry, if it still belongs to this flow (a new connection from the same
        // client port may have a binding of its own by now).
        let client_key: K = other_direction(&reply);
        let client = self
            .flows
            .get(&client_key, 0)
            .ok()
            .filter(|c| same_binding(c, &reply_key));
        let (flags, last) = match &client {
            Some(c) => (reply.flags | c.flags, reply.last_seen_s.max(c.last_seen_s)),
            None => (reply.flags, reply.last_seen_s),
        };
        if !expired(flags, last, now_s, timeouts) {
            return Verdict::Live(flags);
        }
        // The client direction first: a packet racing the sweep then misses the flow (and is
        // reset by the kernel) rather than using a binding whose port is about to be reused.
        if client.is_some()
            && let Some(taken) = take::<K, FlowValueOf<A>>(self.flows.map(), &client_key)
        {
            let still_expired = same_binding(&taken, &reply_key)
                && expired(
                    reply.flags | taken.flags,
                    reply.last_seen_s.max(taken.last_seen_s),
                    now_s,
                    timeouts,
                );
            if !still_expired {
                // Insert-if-absent: should the reopened connection's next packet have made a flow
                // of its own in the microseconds between, that one stays.
                put_back(self.flows.map(), &client_key, &taken);
                return Verdict::Live(taken.flags);
            }
        }
        let deleted = delete_all(self.nat_flows.map(), &[reply_key]);
        // The client's 5-tuple from the reply entry's rewrite (its entry may be gone).
        Verdict::Reclaimed {
            closed: ClosedFlow::of(&client_key),
            deleted,
        }
    }

    /// Half-open flows (an LRU that a flood evicts from on its own): those the backend has not
    /// answered within `nat_syn_timeout` give their ports back now rather than at the next
    /// eviction; a UDP flow that the client never sent a second datagram on (a DNS query and its
    /// answer), `nat_udp_timeout` after its first.
    fn sweep_half_open(
        &self,
        timeouts: &Timeouts,
        now_s: u32,
        out: &mut Sweep,
    ) -> Result<(), MapError> {
        let embryos: Vec<(K, FlowValueOf<A>)> = read_all(self.embryonic.map())?;
        let mut stale = Vec::new();
        for (key, embryo) in embryos {
            if expired(embryo.flags, embryo.last_seen_s, now_s, timeouts) {
                stale.push(key);
            } else {
                // Half-open: a TCP flow's SYN, or a UDP flow's first datagram (by its flag).
                *out.live
                    .entry(FlowValue::nat_state(embryo.flags).name())
                    .or_default() += 1;
                *out.live_by_backend.entry(embryo.backend_id).or_default() += 1;
            }
        }
        out.reclaimed += delete_all(self.embryonic.map(), &stale) as u64;
        // Their client directions by the same rule (not counted again: one flow, two entries).
        let clients: Vec<(K, FlowValueOf<A>)> = read_all(self.embryonic_client.map())?;
        let stale: Vec<K> = clients
            .into_iter()
            .filter(|(_, c)| expired(c.flags, c.last_seen_s, now_s, timeouts))
            .map(|(k, _)| k)
            .collect();
        delete_all(self.embryonic_client.map(), &stale);
        Ok(())
    }
}

/// `bpf_attr` for the BPF_MAP_*_BATCH commands (include/uapi/linux/bpf.h, `batch`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The bpf(2) syscall with `attr`, one of the `bpf_attr` layouts of this file.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<()> {
    // SAFETY: attr and the buffers it points to are live and sized as it says.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn read_all<K: Pod + Default, V: Pod + Default>(map: &MapData) -> Result<Vec<(K, V)>, MapError> {
    lookup_all(map).map_err(|io_error| {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        })
    })
}

/// Every entry of a flow hash map, a few thousand per syscall.
fn lookup_all<K: Pod + Default, V: Pod + Default>(map: &MapData) -> std::io::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut chunk = 4096usize;
    let mut out = Vec::new();
    // The kernel's cursor for hash maps is a bucket index (u32); room for more is harmless.
    let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys = vec![K::default(); chunk];
        let mut values = vec![V::default(); chunk];
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &cursor_in as *const u64 as u64
            },
            out_batch: &mut cursor_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(chunk);
        out.extend(keys.into_iter().zip(values).take(n));
        match result {
            Ok(()) => {
                cursor_in = cursor_out;
                first = false;
            }
            // The end of the map.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // One bucket holds more entries than the buffer: retry it with a bigger one.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < 1 << 20 => chunk *= 2,
            Err(e) => return Err(e),
        }
    }
}

/// `bpf_attr` for the BPF_MAP_*_ELEM commands (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_NOEXIST: u64 = 1;

fn bpf_elem<K, V>(cmd: libc::c_long, map: &MapData, key: &K, value: *mut V, flags: u64) -> bool {
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as u64,
        flags,
        ..Default::default()
    };
    bpf(cmd, &mut attr).is_ok()
}

/// Deletes `key` and returns the value it held at that instant (BPF_MAP_LOOKUP_AND_DELETE_ELEM,
/// hash and LRU maps since Linux 5.14): atomic under the bucket lock, unlike a lookup followed
/// by a delete. None if the key was gone.
fn take<K: Pod, V: Pod + Default>(map: &MapData, key: &K) -> Option<V> {
    let mut value = V::default();
    bpf_elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, map, key, &mut value, 0).then_some(value)
}

/// Inserts `key` → `value` unless the key exists.
fn put_back<K: Pod, V: Pod>(map: &MapData, key: &K, value: &V) {
    let _ = bpf_elem(
        BPF_MAP_UPDATE_ELEM,
        map,
        key,
        value as *const V as *mut V,
        BPF_NOEXIST,
    );
}

/// Deletes `keys` (a few thousand per syscall); keys already gone are skipped. Returns how many
/// were deleted.
fn delete_all<K: Pod>(map: &MapData, keys: &[K]) -> usize {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = (attr.count as usize).min(rest.len());
        deleted += done;
        match result {
            Ok(()) => break,
            // The kernel stops at the first key it cannot delete (gone already, or an LRU
            // eviction): skip it and go on.
            Err(_) => rest = &rest[done + 1..],
        }
    }
    deleted
}
