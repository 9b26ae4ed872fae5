//! The flow log: new flows and drops reported to the agent through a ring buffer, limited per
//! CPU per second so that a flood cannot turn logging into the bottleneck, and drops to the
//! first per source per second. Only the new-flow and
//! drop paths call this; an established flow's packets never do.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use xdp_lb_common::{Counter, FLOW_EVENT_DROP, FLOW_EVENT_NEW, FlowEvent, FlowKey};

use crate::maps::{FLOW_LOG, FLOW_LOG_BUDGET, FLOW_LOG_SOURCES, SETTINGS};

const SECOND_NS: u64 = 1_000_000_000;

/// `now`: the caller's reading of bpf_ktime_get_ns(), when it has one.
#[inline(always)]
fn report(kind: u32, reason: u32, flow: &FlowKey, backend_addr_be: u32, now: Option<u64>) {
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    let limit = settings.flow_log_per_cpu_per_sec;
    if limit == 0 {
        return;
    }
    let Some(budget) = FLOW_LOG_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a helper call without preconditions.
    let now = now.unwrap_or_else(|| unsafe { bpf_ktime_get_ns() });
    // SAFETY: this CPU's slot of a per-CPU array, while this program runs.
    unsafe {
        if now.wrapping_sub((*budget).window_start_ns) >= SECOND_NS {
            (*budget).window_start_ns = now;
            (*budget).used = 0;
        }
        if (*budget).used >= limit {
            (*budget).suppressed += 1;
            return;
        }
        (*budget).used += 1;
    }
    let event = FlowEvent {
        ts_ns: now,
        kind,
        reason,
        src_addr_be: flow.src_addr_be,
        dst_addr_be: flow.dst_addr_be,
        src_port_be: flow.src_port_be,
        dst_port_be: flow.dst_port_be,
        backend_addr_be,
    };
    // A full ring (the agent is not reading) loses the event, which is what a log may do.
    let _ = FLOW_LOG.output::<FlowEvent>(&event, 0);
}

#[inline(always)]
pub fn new_flow(flow: &FlowKey, backend_addr_be: u32, now: u64) {
    report(FLOW_EVENT_NEW, 0, flow, backend_addr_be, Some(now));
}

/// A dropped packet: logged for the first drop of its source in each second only, so that a
/// flood from a few sources cannot take the whole budget from the rest (a random-source flood
/// still can; the budget then bounds it).
#[inline(always)]
pub fn drop(flow: &FlowKey, reason: Counter) {
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    if settings.flow_log_per_cpu_per_sec == 0 {
        return;
    }
    // SAFETY: a helper call without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let second = (now / SECOND_NS) as u32;
    match FLOW_LOG_SOURCES.get_ptr_mut(flow.src_addr_be) {
        // SAFETY: a map value pointer from a successful lookup.
        Some(last) if unsafe { *last } == second => return,
        // SAFETY: as above. Racing CPUs may both log this second's first drop: harmless.
        Some(last) => unsafe { *last = second },
        None => {
            let _ = FLOW_LOG_SOURCES.insert(flow.src_addr_be, second, 0);
        }
    }
    report(FLOW_EVENT_DROP, reason as u32, flow, 0, Some(now));
}
