//! NAT flow expiry: what reclaims a NAT flow's two entries and its SNAT port.
//!
//! The program creates NAT flows and keeps their TCP state (`FLOW_F_ESTABLISHED`,
//! `FLOW_F_CLOSING`) and last-seen second in both entries (`xdp-lb-ebpf/src/nat.rs`). The
//! reply entries live in `NAT_FLOWS`, a plain hash map that nothing evicts: a port reservation
//! must not vanish while its flow may still send. So the agent walks `NAT_FLOWS` every second
//! and, for each flow idle longer than the timeout of its state, deletes the client direction
//! (`FLOWS`) and then the reply direction — after which the port is free again.
//!
//! Timeouts, from the flow's last packet in either direction (like conntrack's):
//! half-open (SYN seen, no answer yet) `agent.nat_syn_timeout`, established
//! `agent.nat_established_timeout`, closing (FIN or RST seen) `agent.nat_closing_timeout`.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya::maps::{IterableMap as _, MapData, MapError};
use xdp_lb_common::{FLOW_F_NAT, FlowKey, FlowValue, IPPROTO_TCP, NatState};

use crate::{config::AgentConfig, dataplane::Maps};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub syn: Duration,
    pub established: Duration,
    pub closing: Duration,
}

impl Timeouts {
    pub fn of(agent: &AgentConfig) -> Self {
        Self {
            syn: agent.nat_syn_timeout,
            established: agent.nat_established_timeout,
            closing: agent.nat_closing_timeout,
        }
    }

    pub fn for_state(&self, state: NatState) -> Duration {
        match state {
            NatState::SynSent => self.syn,
            NatState::Established => self.established,
            NatState::Closing => self.closing,
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in seconds: the clock of `FlowValue::last_seen_s`
/// (`bpf_ktime_get_coarse_ns`).
pub fn coarse_now_s() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// Whether a NAT flow whose two directions say `flags` and `last_seen_s` has expired at
/// `now_s`. Both are whole seconds, so the whole-second idle time can read up to one second
/// more than the true idle time; requiring one second more than the timeout makes a flow live
/// at least its timeout (and at most its timeout plus two seconds plus the sweep period).
pub fn expired(flags: u32, last_seen_s: u32, now_s: u32, timeouts: &Timeouts) -> bool {
    let idle = now_s.saturating_sub(last_seen_s) as u64;
    idle > timeouts
        .for_state(FlowValue::nat_state(flags))
        .as_secs()
        .max(1)
}

/// The client-direction key of the flow whose reply entry is (`reply_key`, `reply`).
pub fn client_key(reply: &FlowValue) -> FlowKey {
    FlowKey {
        src_addr_be: reply.nat_dst_addr_be,
        dst_addr_be: reply.nat_src_addr_be,
        src_port_be: reply.nat_dst_port_be,
        dst_port_be: reply.nat_src_port_be,
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    }
}

/// Whether the client-direction entry `client` belongs to the binding of `reply_key` (a later
/// flow of the same client may have replaced it with another port or backend).
fn same_binding(client: &FlowValue, reply_key: &FlowKey) -> bool {
    client.flags & FLOW_F_NAT != 0
        && client.nat_src_port_be == reply_key.dst_port_be
        && client.nat_dst_addr_be == reply_key.src_addr_be
        && client.nat_dst_port_be == reply_key.src_port_be
}

/// What one sweep saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Live NAT flows after the sweep, by state name.
    pub live: BTreeMap<&'static str, u64>,
    /// Flows reclaimed by this sweep.
    pub reclaimed: u64,
}

/// Reclaims expired NAT flows. Called by the reconciler (the maps' one writer).
///
/// Cost: the reply entries are read in bulk (BPF_MAP_LOOKUP_BATCH, thousands per syscall);
/// the client direction is looked up only for a flow whose reply side has been idle longer
/// than the shortest timeout (a fresher flow cannot be expired, whatever its state); expired
/// entries are deleted in bulk too. At tens of thousands of new flows a second the walk
/// used to cost more CPU than the data plane itself.
pub fn sweep(maps: &mut Maps, timeouts: &Timeouts, now_s: u32) -> Result<Sweep, MapError> {
    let mut out = Sweep::default();
    for state in [NatState::SynSent, NatState::Established, NatState::Closing] {
        out.live.insert(state.name(), 0);
    }
    let shortest = timeouts
        .syn
        .min(timeouts.established)
        .min(timeouts.closing)
        .as_secs()
        .max(1);
    let entries = lookup_all(maps.nat_flows.map()).map_err(|io_error| {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        })
    })?;
    let mut doomed: Vec<(FlowKey, Option<FlowKey>)> = Vec::new();
    for (reply_key, reply) in entries {
        if (now_s.saturating_sub(reply.last_seen_s) as u64) <= shortest {
            // Alive whatever the client side says. Counted by the reply side's state.
            *out.live
                .entry(FlowValue::nat_state(reply.flags).name())
                .or_default() += 1;
            continue;
        }
        let client_key = client_key(&reply);
        let client = maps
            .flows
            .get(&client_key, 0)
            .ok()
            .filter(|c| same_binding(c, &reply_key));
        let (flags, last) = match &client {
            Some(c) => (reply.flags | c.flags, reply.last_seen_s.max(c.last_seen_s)),
            None => (reply.flags, reply.last_seen_s),
        };
        if expired(flags, last, now_s, timeouts) {
            doomed.push((reply_key, client.map(|_| client_key)));
        } else {
            *out.live
                .entry(FlowValue::nat_state(flags).name())
                .or_default() += 1;
        }
    }
    // The client directions first: a packet racing the sweep then misses the flow (and is
    // reset by the kernel) rather than using a binding whose port is about to be reused.
    let clients: Vec<FlowKey> = doomed.iter().filter_map(|(_, c)| *c).collect();
    delete_all(maps.flows.map(), &clients);
    let replies: Vec<FlowKey> = doomed.iter().map(|(r, _)| *r).collect();
    out.reclaimed = delete_all(maps.nat_flows.map(), &replies) as u64;
    Ok(out)
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

fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: attr and the buffers it points to are live and sized as it says.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every entry of a flow hash map, a few thousand per syscall.
fn lookup_all(map: &MapData) -> std::io::Result<Vec<(FlowKey, FlowValue)>> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut chunk = 4096usize;
    let mut out = Vec::new();
    // The kernel's cursor for hash maps is a bucket index (u32); room for more is harmless.
    let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys = vec![FlowKey::default(); chunk];
        let mut values = vec![FlowValue::default(); chunk];
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
        let result = bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr);
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

/// Deletes `keys` (a few thousand per syscall); keys already gone are skipped. Returns how many
/// were deleted.
fn delete_all(map: &MapData, keys: &[FlowKey]) -> usize {
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
        let result = bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr);
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

#[cfg(test)]
mod tests {
    use xdp_lb_common::{FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_REPLY};

    use super::*;

    const T: Timeouts = Timeouts {
        syn: Duration::from_secs(10),
        established: Duration::from_secs(3600),
        closing: Duration::from_secs(5),
    };

    #[test]
    fn each_state_has_its_own_timeout() {
        let nat = FLOW_F_NAT | FLOW_F_REPLY;
        // Half-open: only the SYN.
        assert!(!expired(nat, 100, 110, &T));
        assert!(expired(nat, 100, 111, &T));
        // Established: long.
        let est = nat | FLOW_F_ESTABLISHED;
        assert!(!expired(est, 100, 100 + 3600, &T));
        assert!(expired(est, 100, 100 + 3601, &T));
        // Closing wins over established: short.
        let closing = est | FLOW_F_CLOSING;
        assert!(!expired(closing, 100, 105, &T));
        assert!(expired(closing, 100, 106, &T));
        // A clock that went backwards (never, but) does not expire anything.
        assert!(!expired(closing, 100, 50, &T));
    }

    #[test]
    fn client_key_inverts_the_reply_rewrite() {
        let reply = FlowValue {
            nat_src_addr_be: 1,
            nat_dst_addr_be: 2,
            nat_src_port_be: 3,
            nat_dst_port_be: 4,
            ..Default::default()
        };
        let k = client_key(&reply);
        assert_eq!(
            (k.src_addr_be, k.dst_addr_be, k.src_port_be, k.dst_port_be),
            (2, 1, 4, 3)
        );
    }
}
