//! NAT66 on the IPv6 path: a new flow's half-open entries, the promotion of a half-open flow,
//! a backend's reply, and the rewrite and route steps — each a call of its own for the
//! verifier's stack (see `mod.rs`).

use aya_ebpf::{bindings::xdp_md, helpers::bpf_ktime_get_ns};
use xdp_lb_common::{Counter, Settings, VipInfo};
use xdp_lb_ebpf::parse::Packet6;

use super::{Choice6, ChoicePtr, DONE, FAILED, Step, admit_and_choose, context, outcome, step};
use crate::{
    maps::{NAT_EMBRYONIC6, NAT_FLOWS6, NAT6_SLOTS},
    nat, nat_rewrite,
    stats::count,
};

/// A client's SYN to a NAT66 VIP, first step: the VIP's Maglev choice (written into
/// `choice`) and the addresses' part of the new flow's checksum deltas, returned (below
/// `FAILED`: a sum of eight 17-bit words fits 21 bits).
#[inline(never)]
pub(super) fn nat_backend(
    packet: *const Packet6,
    vip: *const VipInfo,
    settings: *const Settings,
    choice: ChoicePtr,
) -> Step {
    // SAFETY: as in new_dsr_flow.
    let (packet, vip, choice) = unsafe { (&*packet, &*vip, &mut *choice.cast::<Choice6>()) };
    let flow = &packet.flow;
    let (_, backend_id, backend) = match admit_and_choose(vip, flow) {
        Ok(b) => b,
        Err(reason) => return step(Err(reason)),
    };
    choice.backend_id = backend_id;
    choice.backend = backend;
    // SAFETY: a map value pointer from a successful lookup.
    nat::reply_addr_sum(flow, unsafe { &(*backend).addr6 }, settings)
}

/// A client's SYN to a NAT66 VIP, second step: a half-open flow with its SNAT port to the
/// backend `nat_backend` chose (`nat::create`).
#[inline(never)]
pub(super) fn new_nat_flow(
    packet: *const Packet6,
    vip: *const VipInfo,
    settings: *const Settings,
    choice: ChoicePtr,
    reply_sum: u32,
) -> Step {
    // SAFETY: as in new_dsr_flow.
    let (packet, vip, choice) = unsafe { (&*packet, &*vip, &mut *choice.cast::<Choice6>()) };
    let flow = &packet.flow;
    let (backend_id, backend) = (choice.backend_id, choice.backend);
    // SAFETY: a helper call without preconditions; a map value pointer.
    let (now, backend_addr) = unsafe { (bpf_ktime_get_ns(), (*backend).addr6) };
    let Some(slots) = NAT6_SLOTS.get_ptr_mut(0) else {
        return step(Err(Counter::DropNoSettings));
    };
    let created = nat::create(
        // SAFETY: this CPU's slot, ours while this program runs.
        unsafe { &mut *slots },
        flow,
        vip.vip_id,
        backend_id,
        backend_addr,
        backend,
        settings,
        now,
        reply_sum,
    );
    let (rewrite, new_flow) = match created {
        Ok(r) => r,
        Err(reason) => return step(Err(reason)),
    };
    if new_flow {
        count(Counter::NewFlow);
    }
    choice.backend_id = backend_id;
    choice.backend = backend;
    choice.vip_id = vip.vip_id;
    choice.new_flow = new_flow;
    choice.nat = Some(rewrite);
    DONE
}

/// The client's ACK that completes a half-open NAT66 flow's handshake (`nat::promote`).
#[inline(never)]
pub(super) fn promote(packet: *const Packet6, vip: *const VipInfo, choice: ChoicePtr) -> Step {
    // SAFETY: as in new_dsr_flow.
    let (packet, choice) = unsafe { (&*packet, &mut *choice.cast::<Choice6>()) };
    let Some(slots) = NAT6_SLOTS.get_ptr_mut(0) else {
        return step(Err(Counter::DropNoSettings));
    };
    // SAFETY: this CPU's slot, ours while this program runs.
    match nat::promote(unsafe { &mut *slots }, &packet.flow) {
        Ok((rewrite, backend_id)) => {
            choice.backend_id = backend_id;
            choice.backend = core::ptr::null();
            // SAFETY: a map value pointer.
            choice.vip_id = unsafe { (*vip).vip_id };
            choice.new_flow = false;
            choice.nat = Some(rewrite);
            DONE
        }
        Err(reason) => step(Err(reason)),
    }
}

/// A backend's packet to the IPv6 SNAT address: its NAT66 flow's rewrite back to the client
/// (established, or half-open: the SYN-ACK). Not a flow's: the host's own connection (a
/// health check), for the kernel.
#[inline(never)]
pub(super) fn nat_reply(packet: *const Packet6, choice: ChoicePtr) -> Step {
    // SAFETY: the caller's stack values, live across this call.
    let (packet, choice) = unsafe { (&*packet, &mut *choice.cast::<Choice6>()) };
    let (rewrite, vip_id, backend_id) = if let Some(entry) = NAT_FLOWS6.get_ptr_mut(packet.flow) {
        // SAFETY: a map value pointer from a successful lookup.
        let ids = unsafe { ((*entry).vip_id, (*entry).backend_id) };
        (
            nat::touch(entry, packet.tcp_flags, &packet.flow),
            ids.0,
            ids.1,
        )
    } else if let Some(embryo) = NAT_EMBRYONIC6.get_ptr(packet.flow) {
        // SAFETY: as above.
        let ids = unsafe { ((*embryo).vip_id, (*embryo).backend_id) };
        let rewrite = nat::reply_half_open(&packet.flow, embryo, packet.tcp_flags);
        (rewrite, ids.0, ids.1)
    } else {
        return step(Err(Counter::PassNotVip));
    };
    choice.backend_id = backend_id;
    choice.backend = core::ptr::null();
    choice.vip_id = vip_id;
    choice.new_flow = false;
    choice.nat = Some(rewrite);
    DONE
}

/// NAT66's rewrite and next hop (`nat_rewrite::rewrite6`, `nat_rewrite::route6`), two calls of their own.
#[inline(always)]
pub(super) fn route(
    ctx: *mut xdp_md,
    packet: &Packet6,
    rewrite: &nat::Rewrite<[u8; 16]>,
) -> Result<u32, Counter> {
    outcome(rewrite_step(ctx, packet, rewrite))?;
    let action = route_step(ctx, packet, rewrite);
    if action & FAILED != 0 {
        outcome(action)?;
    }
    Ok(action)
}

#[inline(never)]
pub(super) fn rewrite_step(
    ctx: *mut xdp_md,
    packet: *const Packet6,
    rewrite: *const nat::Rewrite<[u8; 16]>,
) -> Step {
    let ctx = context(ctx);
    // SAFETY: the caller's stack values, live across this call.
    let (packet, rewrite) = unsafe { (&*packet, &*rewrite) };
    step(nat_rewrite::rewrite6(&ctx, packet, rewrite))
}

/// The verdict (an XDP action), or `FAILED | counter`.
#[inline(never)]
pub(super) fn route_step(
    ctx: *mut xdp_md,
    packet: *const Packet6,
    rewrite: *const nat::Rewrite<[u8; 16]>,
) -> u32 {
    let ctx = context(ctx);
    // SAFETY: the caller's stack values, live across this call.
    let (packet, rewrite) = unsafe { (&*packet, &*rewrite) };
    match nat_rewrite::route6(&ctx, packet, rewrite) {
        Ok(action) => action,
        Err(reason) => FAILED | reason as u32,
    }
}
