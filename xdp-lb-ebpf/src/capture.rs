//! `xdp-lb capture`: frames the program sent (after its rewrite) and frames it dropped, with the
//! verdict, copied into the `CAPTURE` ring buffer for the CLI to write as pcapng. tcpdump on the
//! interface cannot show them: XDP_TX and XDP_REDIRECT leave below the kernel's taps.
//!
//! Off (`CAPTURE_CONFIG[0].every == 0`), a forwarded frame pays one array read (inlined by the
//! verifier) and a branch; a dropped frame the same. On, a matching frame pays the filter, the
//! per-CPU sample count, and one in `every` a ring-buffer reserve and a copy of `snaplen` bytes —
//! in a call of its own, so the paths' code and stack stay as they are.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use xdp_lb_common::{
    CAPTURE_ANY, CAPTURE_MAX_SNAPLEN, CAPTURE_SENT, CAPTURE_WHAT_DROPS, CAPTURE_WHAT_SENT,
    CaptureRecord, Counter,
};

use crate::{
    maps::{CAPTURE, CAPTURE_CONFIG, CAPTURE_STATS},
    stats,
};

/// Whether a capture is on (one array read).
#[inline(always)]
fn on() -> bool {
    CAPTURE_CONFIG.get(0).is_some_and(|c| c.every != 0)
}

/// A frame sent to (or, for NAT replies, from) `backend_id` of `vip_id` with `action`.
#[inline(always)]
pub(crate) fn sent(ctx: &XdpContext, vip_id: u32, backend_id: u32, action: u32) {
    if on() {
        record(ctx.ctx, vip_id, backend_id, action, CAPTURE_SENT);
    }
}

/// A path's verdict, as `stats::verdict`, with a drop offered to the capture first.
#[inline(always)]
pub(crate) fn verdict(ctx: &XdpContext, result: Result<u32, Counter>) -> u32 {
    if let Err(reason) = result
        && !reason.passes()
        && on()
    {
        record(
            ctx.ctx,
            CAPTURE_ANY,
            CAPTURE_ANY,
            xdp_action::XDP_DROP,
            reason as u32,
        );
    }
    stats::verdict(result)
}

/// Records the frame if it matches the capture's filter and its turn in the sample has come.
#[inline(never)]
fn record(ctx: *mut xdp_md, vip_id: u32, backend_id: u32, action: u32, reason: u32) {
    let ctx = crate::calls::context(ctx);
    let Some(cfg) = CAPTURE_CONFIG.get(0) else {
        return;
    };
    let what = if reason == CAPTURE_SENT {
        CAPTURE_WHAT_SENT
    } else {
        CAPTURE_WHAT_DROPS
    };
    if cfg.every == 0
        || cfg.what & what == 0
        || (cfg.vip_id != CAPTURE_ANY && cfg.vip_id != vip_id)
        || (cfg.backend_id != CAPTURE_ANY && cfg.backend_id != backend_id)
    {
        return;
    }
    let Some(st) = CAPTURE_STATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, while this program runs.
    let matched = unsafe {
        (*st).matched += 1;
        (*st).matched
    };
    if matched % cfg.every as u64 != 0 {
        return;
    }
    // The clock only for the frames recorded (a helper call costs more than the rest).
    // SAFETY: a helper call without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now > cfg.until_ns {
        return;
    }
    let len = (ctx.data_end() - ctx.data()) as u32;
    let caplen = if len < cfg.snaplen { len } else { cfg.snaplen };
    // 1..=CAPTURE_MAX_SNAPLEN for the verifier, by arithmetic: a compare's bound is lost when
    // LLVM spills the value, a mask's is not. A frame is never empty, so this is `caplen`.
    let caplen = (caplen.wrapping_sub(1) & (CAPTURE_MAX_SNAPLEN - 1)) + 1;
    let Some(mut entry) = CAPTURE.reserve::<CaptureRecord>(0) else {
        // SAFETY: as above.
        unsafe { (*st).lost += 1 };
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved record of the ring (CaptureRecord's size); the copy's length
    // is within its `data` (checked above), and the helper checks it against the frame.
    let copied = unsafe {
        (*rec).ts_ns = now;
        (*rec).len = len;
        (*rec).caplen = caplen;
        (*rec).action = action;
        (*rec).reason = reason;
        (*rec).vip_id = vip_id;
        (*rec).backend_id = backend_id;
        bpf_xdp_load_bytes(ctx.ctx, 0, (*rec).data.as_mut_ptr().cast(), caplen)
    };
    if copied == 0 {
        entry.submit(0);
        // SAFETY: as above.
        unsafe { (*st).recorded += 1 };
    } else {
        entry.discard(0);
    }
}
