//! The flow log: new flows and drops reported to the agent through a ring buffer, limited per
//! CPU per second so that a flood cannot turn logging into the bottleneck, and drops to the
//! first per source per second. Only the new-flow and
//! drop paths call this; an established flow's packets never do.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use xdp_lb_common::{
    BackendInfo, Counter, FLOW_EVENT_DROP, FLOW_EVENT_DROP6, FLOW_EVENT_NEW, FLOW_EVENT_NEW6,
    FlowEvent, FlowEvent6, FlowKey, FlowKey6, flow_mode,
};

use crate::maps::{FLOW_LOG, FLOW_LOG_BUDGET, FLOW_LOG_SOURCES, SETTINGS};

const SECOND_NS: u64 = 1_000_000_000;

/// Whether this CPU may report one more event this second (the flow log on, its budget not
/// spent); `now` is the caller's reading of bpf_ktime_get_ns().
#[inline(always)]
fn within_budget(now: u64) -> bool {
    let Some(settings) = SETTINGS.get(0) else {
        return false;
    };
    let limit = settings.flow_log_per_cpu_per_sec;
    if limit == 0 {
        return false;
    }
    let Some(budget) = FLOW_LOG_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array, while this program runs.
    unsafe {
        if now.wrapping_sub((*budget).window_start_ns) >= SECOND_NS {
            (*budget).window_start_ns = now;
            (*budget).used = 0;
        }
        if (*budget).used >= limit {
            (*budget).suppressed += 1;
            return false;
        }
        (*budget).used += 1;
    }
    true
}

#[inline(always)]
fn report(kind: u32, reason: u32, flow: &FlowKey, (backend_addr_be, mode): (u32, u8), now: u64) {
    if !within_budget(now) {
        return;
    }
    let event = FlowEvent {
        ts_ns: now,
        kind,
        reason,
        src_addr_be: flow.src_addr,
        dst_addr_be: flow.dst_addr,
        src_port_be: flow.src_port_be,
        dst_port_be: flow.dst_port_be,
        backend_addr_be,
        proto: flow.proto,
        mode,
        _pad: [0; 6],
    };
    // A full ring (the agent is not reading) loses the event, which is what a log may do.
    let _ = FLOW_LOG.output::<FlowEvent>(&event, 0);
}

/// A new flow to `backend` (`nat`: its VIP forwards by NAT). An IPv4 flow to an IPv6 backend
/// (a tunnel VIP's IPv4 in IPv6) is reported as an IPv6 event with the flow's addresses
/// IPv4-mapped, which the agent prints as IPv4.
#[inline(always)]
pub(crate) fn new_flow(flow: &FlowKey, backend: *const BackendInfo, nat: bool, now: u64) {
    // SAFETY: a map value pointer from the caller's lookup; plain integers.
    let (addr_be, flags) = unsafe { ((*backend).addr_be, (*backend).flags) };
    let mode = flow_mode(nat, flags);
    if addr_be == 0 && !nat {
        // SAFETY: as above.
        new_flow_4in6(flow, unsafe { &(*backend).addr6 }, mode, now);
        return;
    }
    report(FLOW_EVENT_NEW, 0, flow, (addr_be, mode), now);
}

/// `new_flow` of an IPv4 flow to an IPv6 backend: a call of its own, off the IPv4 path's
/// stack.
#[inline(never)]
fn new_flow_4in6(flow: &FlowKey, backend_addr: &[u8; 16], mode: u8, now: u64) {
    let mapped = |a: u32| {
        let b = a.to_ne_bytes();
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
        ]
    };
    let flow6 = FlowKey6 {
        src_addr: mapped(flow.src_addr),
        dst_addr: mapped(flow.dst_addr),
        src_port_be: flow.src_port_be,
        dst_port_be: flow.dst_port_be,
        proto: flow.proto,
        _pad: [0; 3],
    };
    report6(FLOW_EVENT_NEW6, 0, &flow6, (*backend_addr, mode), now);
}

/// A dropped packet: logged for the first drop of its source in each second only, so that a
/// flood from a few sources cannot take the whole budget from the rest (a random-source flood
/// still can; the budget then bounds it).
#[inline(always)]
pub(crate) fn drop(flow: &FlowKey, reason: Counter) {
    if let Some(now) = first_drop_this_second(flow.src_addr) {
        report(FLOW_EVENT_DROP, reason as u32, flow, (0, 0), now);
    }
}

/// The time, if the flow log is on and `source` has not had a drop logged this second.
/// `source` is an IPv4 address, or an IPv6 one folded to 32 bits (a collision only merges two
/// sources' one-line-per-second allowance).
#[inline(always)]
fn first_drop_this_second(source: u32) -> Option<u64> {
    let settings = SETTINGS.get(0)?;
    if settings.flow_log_per_cpu_per_sec == 0 {
        return None;
    }
    // SAFETY: a helper call without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let second = (now / SECOND_NS) as u32;
    match FLOW_LOG_SOURCES.get_ptr_mut(source) {
        // SAFETY: a map value pointer from a successful lookup.
        Some(last) if unsafe { *last } == second => return None,
        // SAFETY: as above. Racing CPUs may both log this second's first drop: harmless.
        Some(last) => unsafe { *last = second },
        None => {
            let _ = FLOW_LOG_SOURCES.insert(source, second, 0);
        }
    }
    Some(now)
}

#[inline(always)]
fn report6(
    kind: u32,
    reason: u32,
    flow: &FlowKey6,
    (backend_addr, mode): ([u8; 16], u8),
    now: u64,
) {
    if !within_budget(now) {
        return;
    }
    // Written in place in the ring (no 72-byte copy on the IPv6 path's tight stack). A full
    // ring (the agent is not reading) loses the event, which is what a log may do.
    let Some(mut entry) = FLOW_LOG.reserve::<FlowEvent6>(0) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: a reserved ring-buffer record of this type's size, ours until submitted.
    unsafe {
        (*event).ts_ns = now;
        (*event).kind = kind;
        (*event).reason = reason;
        (*event).src_addr = flow.src_addr;
        (*event).dst_addr = flow.dst_addr;
        (*event).backend_addr = backend_addr;
        (*event).src_port_be = flow.src_port_be;
        (*event).dst_port_be = flow.dst_port_be;
        (*event).proto = flow.proto;
        (*event).mode = mode;
        (*event)._pad = [0; 2];
    }
    entry.submit(0);
}

/// A new IPv6 flow, as `new_flow` (`mode`: `xdp_lb_common::flow_mode`). A call of its own,
/// for the IPv6 path's stack (`ipv6.rs`).
#[inline(never)]
pub(crate) fn new_flow6(flow: &FlowKey6, backend_addr: &[u8; 16], mode: u8, now: u64) {
    report6(FLOW_EVENT_NEW6, 0, flow, (*backend_addr, mode), now);
}

/// A dropped IPv6 packet, as `drop`. A call of its own, as `new_flow6`.
#[inline(never)]
pub(crate) fn drop6(flow: &FlowKey6, reason: Counter) {
    let a = &flow.src_addr;
    let folded = u32::from_ne_bytes([a[0], a[1], a[2], a[3]])
        ^ u32::from_ne_bytes([a[4], a[5], a[6], a[7]])
        ^ u32::from_ne_bytes([a[8], a[9], a[10], a[11]])
        ^ u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
    if let Some(now) = first_drop_this_second(folded) {
        report6(FLOW_EVENT_DROP6, reason as u32, flow, ([0; 16], 0), now);
    }
}
