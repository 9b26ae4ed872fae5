//! Counting. Per-CPU arrays only: a plain add on this CPU's copy, no atomics, no contention.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray};
use xdp_lb_common::{Counter, TrafficCounters};

use crate::maps::{COUNTERS, VIP_STATS};

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, written only by this CPU while this program runs.
        unsafe { *slot += 1 };
    }
}

/// Counts a forwarded packet; `tx` says whether the verdict was XDP_TX (else XDP_REDIRECT).
#[inline(always)]
pub(crate) fn add_traffic(
    map: &PerCpuArray<TrafficCounters>,
    index: u32,
    bytes: u32,
    new_flow: bool,
    tx: bool,
) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
            if new_flow {
                (*c).new_flows += 1;
            }
            if tx {
                (*c).tx += 1;
            } else {
                (*c).redirect += 1;
            }
        }
    }
}

/// Counts a new flow a VIP's lists or limit refused, on the VIP (the global counter is the verdict's).
#[inline(always)]
pub(crate) fn count_refused(vip_id: u32, reason: Counter) {
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: as above.
        unsafe {
            match reason {
                Counter::DropDenied => (*c).denied += 1,
                Counter::DropNotAllowed => (*c).not_allowed += 1,
                _ => (*c).rate_limited += 1,
            }
        }
    }
}

/// The verdict of a path: its action, or its reason counted and turned into one.
#[inline(always)]
pub(crate) fn verdict(result: Result<u32, Counter>) -> u32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            verdict_for(reason)
        }
    }
}

/// The verdict for a frame we do not forward: `Pass*` reasons go to the kernel, the rest drop.
#[inline(always)]
pub(crate) fn verdict_for(reason: Counter) -> u32 {
    if reason.passes() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
