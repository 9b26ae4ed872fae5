//! How an IPv6 frame is handled: DSR or NAT66 to an IPv6 VIP's backend, a backend's reply to
//! a NAT66 flow, an ICMPv6 Packet Too Big about a DSR flow.
//!
//! The logic is the IPv4 path's (`balance.rs`, `nat.rs`, the same functions where they are
//! generic); what differs is the shape, for the verifier. A call chain may use 512 bytes of
//! stack in all, and LLVM overlaps few stack slots of inlined code, so the IPv6 path is a call
//! of its own (`frame`, called by `xdp_lb` beside the IPv4 path) and every step that needs
//! much stack is a call of its own below it, each writing its outcome into the caller's
//! [`Choice`]: the steps' frames are siblings, never nested, so the deepest chain is
//! `frame` plus one step. Steps return [`Step`]: done, or the counter that says why not.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use network_types::eth::EthHdr;
use xdp_lb_common::{Counter, FLOW_F_NAT, FlowKey6, FlowValue6, Settings, VIP_F_NAT, VipInfo};
use xdp_lb_ebpf::parse::{self, Packet6, Parsed6};

use self::nat66::{nat_backend, nat_reply, new_nat_flow, promote, route};
pub(super) use crate::calls::context;
use crate::{
    acl,
    balance::{self, Choice},
    capture, flow_log, forward, limit,
    maps::{BACKEND_STATS, FLOWS6, NAT_FLOWS6, SETTINGS, VIP_STATS},
    nat, nat_rewrite,
    stats::{add_traffic, count},
    tunnel,
};

mod nat66;

/// An IPv6 choice: the backend and, for NAT66, the rewrite.
pub(super) type Choice6 = Choice<[u8; 16]>;

/// How the steps below take the caller's `Choice6`: an untyped pointer. A step's signature
/// goes into the object's BTF, and the BTF of `Option<Rewrite>` (a Rust enum: a union whose
/// member starts past bit 0) is refused by the kernel ("Invalid member bits_offset"), which
/// then loads the program without any BTF and says so at every start.
pub(super) type ChoicePtr = *mut core::ffi::c_void;

/// A step's outcome across a call: 0, or `FAILED | counter`. (A `Result` does not cross a
/// BPF-to-BPF call: the backend returns one register.)
pub(super) type Step = u32;
pub(super) const DONE: Step = 0;
pub(super) const FAILED: Step = 1 << 31;
/// `flow_hit`: no usable flow entry (not a failure: the VIP decides).
const MISS: Step = 1 << 30;

#[inline(always)]
pub(super) fn step(result: Result<(), Counter>) -> Step {
    match result {
        Ok(()) => DONE,
        Err(reason) => FAILED | reason as u32,
    }
}

#[inline(always)]
pub(super) fn outcome(step: Step) -> Result<(), Counter> {
    if step == DONE {
        return Ok(());
    }
    Err(Counter::from_index(step & !FAILED).unwrap_or(Counter::DropBadBackend))
}

/// The IPv6 path: the IPv6 header at `l3_off` (14, or 18 behind a VLAN tag). Returns the
/// frame's verdict, its drops and passes counted.
#[inline(never)]
pub(crate) fn frame(ctx: *mut xdp_md, l3_off: u32) -> u32 {
    let ctx = context(ctx);
    // Not zeroed (LLVM would call a byte-wise memset): `parse` writes what is read after it.
    let mut packet = MaybeUninit::<Packet6>::uninit();
    let parsed = parse(ctx.ctx, l3_off, packet.as_mut_ptr());
    if parsed == TOO_BIG {
        // SAFETY: `parse` wrote the whole packet.
        return too_big(ctx.ctx, packet.as_ptr());
    }
    // SAFETY: on DONE `parse` wrote the whole packet.
    capture::verdict(
        &ctx,
        outcome(parsed).and_then(|()| tcp(&ctx, unsafe { packet.assume_init_ref() })),
    )
}

/// `parse`: an ICMPv6 Packet Too Big about the flow now in `packet.flow` (`Parsed6::TooBig`).
const TOO_BIG: Step = 1;

/// Parses the frame into `packet` (`parse::parse_ipv6`): DONE for a TCP segment, TOO_BIG for
/// a Packet Too Big (as `Parsed6::TooBig` says), else why not.
#[inline(never)]
fn parse(ctx: *mut xdp_md, l3_off: u32, packet: *mut Packet6) -> Step {
    let ctx = context(ctx);
    // The mask shows the verifier the offset's bound.
    match parse::parse_ipv6(&ctx, (l3_off & 0x3f) as usize) {
        Ok(Parsed6::Flow(p)) => {
            // SAFETY: the caller's stack value, live across this call; written whole.
            unsafe { packet.write(p) };
            DONE
        }
        Ok(Parsed6::TooBig(p)) => {
            // SAFETY: as above.
            unsafe { packet.write(p) };
            TOO_BIG
        }
        Err(reason) => step(Err(reason)),
    }
}

/// A TCP/IPv6 frame: a backend's reply to a NAT66 flow, or a client's packet to an IPv6 VIP.
#[inline(always)]
fn tcp(ctx: &XdpContext, packet: &Packet6) -> Result<u32, Counter> {
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: a map value pointer (array lookups never fail in range).
    let (check_mac, local_mac, snat6, port_min, port_max) = unsafe {
        (
            (*settings).check_local_mac,
            (*settings).local_mac,
            (*settings).snat_addr6,
            (*settings).snat_port_min,
            (*settings).snat_port_max,
        )
    };
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: bounds-checked just above.
    if check_mac != 0 && unsafe { (*eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    // Field by field, the scalars by volatile stores: written as one literal, LLVM merges their
    // zeros into a call of the object's byte-loop memset (17 bytes, on every IPv6 packet).
    let mut slot = MaybeUninit::<Choice6>::uninit();
    let p = slot.as_mut_ptr();
    // SAFETY: writes into our own stack slot; every field is written before the reference
    // below is made.
    let choice = unsafe {
        (&raw mut (*p).backend_id).write_volatile(0);
        (&raw mut (*p).backend).write_volatile(core::ptr::null());
        (&raw mut (*p).vip_id).write_volatile(0);
        (&raw mut (*p).new_flow).write_volatile(false);
        (&raw mut (*p).nat).write(None);
        slot.assume_init_mut()
    };
    // A backend's reply to a NAT66 flow: addressed to the SNAT address and a port of its
    // range, as for IPv4. Other packets to that address (the host's own) go on as usual.
    let port = u16::from_be_bytes(packet.flow.dst_port_be.to_ne_bytes());
    if snat6 != [0; 16] && packet.flow.dst_addr == snat6 && port >= port_min && port <= port_max {
        outcome(nat_reply(packet, (choice as *mut Choice6).cast()))?;
    } else {
        match outcome(to_vip(packet, settings, choice)) {
            Ok(()) => {}
            // A SYN-ACK, ACK or RST to no VIP: maybe a backend's answer to a tunnel health
            // probe.
            Err(Counter::PassNotVip)
                if packet.tcp_flags & (parse::TCP_ACK | parse::TCP_RST) != 0 =>
            {
                return tunnel::probe::record6(ctx, packet);
            }
            Err(Counter::PassNotVip) => return Err(Counter::PassNotVip),
            Err(reason) => {
                // An IPv6 VIP packet we could not forward.
                flow_log::drop6(&packet.flow, reason);
                return Err(reason);
            }
        }
    }
    let sent = match &choice.nat {
        Some(rewrite) => route(ctx.ctx, packet, rewrite),
        // Encapsulated, sent and counted by `tunnel::forward`.
        None if tunnel::carries(choice.backend) => {
            return tunnel6(packet, choice, Proto::Flow);
        }
        None => forward::forward_dsr(ctx, eth, choice.backend),
    };
    let action = sent.inspect_err(|reason| {
        if !matches!(reason, Counter::PassNatNoNeighbour | Counter::PassNatMtu) {
            flow_log::drop6(&packet.flow, *reason);
        }
    })?;
    count_forwarded6(packet, choice, action);
    capture::sent(ctx, choice.vip_id, choice.backend_id, action);
    Ok(action)
}

/// A forwarded IPv6 packet's traffic counters, and a new flow's line in the flow log (here
/// rather than where the flow is made: that call's stack is the deepest).
#[inline(always)]
fn count_forwarded6(packet: &Packet6, choice: &Choice6, action: u32) {
    if choice.new_flow {
        // SAFETY: a map value pointer (new flows always name their backend); a helper call.
        let (backend_addr, flags, now) = unsafe {
            (
                &(*choice.backend).addr6,
                (*choice.backend).flags,
                bpf_ktime_get_ns(),
            )
        };
        let mode = xdp_lb_common::flow_mode(choice.nat.is_some(), flags);
        flow_log::new_flow6(&packet.flow, backend_addr, mode, now);
    }
    let tx = action == xdp_action::XDP_TX;
    add_traffic(&VIP_STATS, choice.vip_id, packet.len, choice.new_flow, tx);
    add_traffic(
        &BACKEND_STATS,
        choice.backend_id,
        packet.len,
        choice.new_flow,
        tx,
    );
}

/// A client's packet to an IPv6 VIP: its flow's backend (`FLOWS6`), else a new flow or the
/// promotion of a half-open NAT66 flow, as `balance::choose_backend` does for IPv4 (the allow
/// and deny lists and the per-source limit in the new-flow steps).
#[inline(always)]
fn to_vip(packet: &Packet6, settings: *const Settings, choice: &mut Choice6) -> Step {
    if !balance::vip_port(packet.flow.proto, packet.flow.dst_port_be) {
        return step(Err(Counter::PassNotVip));
    }
    let choice: ChoicePtr = (choice as *mut Choice6).cast();
    let hit = flow_hit(packet, choice);
    if hit != MISS {
        return hit;
    }
    let Some(vip) = balance::vip6(&packet.flow) else {
        return step(Err(Counter::PassNotVip));
    };
    // SAFETY: a map value pointer from a successful lookup.
    let (flags, backend_count) = unsafe { ((*vip).flags, (*vip).backend_count) };
    let is_nat = flags & VIP_F_NAT != 0;
    if is_nat && nat::may_promote(packet.flow.proto, packet.tcp_flags) {
        // TCP, not a SYN: the ACK that completes a half-open flow's handshake, or a packet of
        // a connection we do not know. UDP: the client's next datagram (or its first: then a
        // new flow below), as for IPv4.
        let promoted = promote(packet, vip, choice);
        if promoted != FAILED | Counter::PassNatNoFlow as u32
            || packet.flow.proto != xdp_lb_common::IPPROTO_UDP
        {
            return promoted;
        }
    }
    if backend_count == 0 {
        return step(Err(Counter::DropNoBackend));
    }
    if is_nat {
        // Two calls, for the stack: the backend and the checksum sums, then the flow.
        let reply_sum = nat_backend(packet, vip, settings, choice);
        if reply_sum & FAILED != 0 {
            return reply_sum;
        }
        new_nat_flow(packet, vip, settings, choice, reply_sum)
    } else {
        new_dsr_flow(packet, vip, settings, choice)
    }
}

/// The flow's entry in `FLOWS6`, if it has one whose backend may still carry it. DONE with
/// `choice` written, else MISS (a DSR flow whose backend went is counted `flow_rehashed`).
#[inline(never)]
fn flow_hit(packet: *const Packet6, choice: ChoicePtr) -> Step {
    // SAFETY: the caller's stack values, live across this call.
    let (packet, choice) = unsafe { (&*packet, &mut *choice.cast::<Choice6>()) };
    let Some(entry) = FLOWS6.get_ptr_mut(packet.flow) else {
        return MISS;
    };
    // SAFETY: a map value pointer from a successful lookup; plain integers.
    let (backend_id, flow_vip, flow_flags) =
        unsafe { ((*entry).backend_id, (*entry).vip_id, (*entry).flags) };
    match balance::live_backend(backend_id, flow_vip) {
        Ok(Some(backend)) => {
            choice.backend_id = backend_id;
            choice.backend = backend;
            choice.vip_id = flow_vip;
            choice.new_flow = false;
            // Field by field, and `nat` only when Some: a whole `Option` stored through a
            // pointer may copy its undefined payload from registers never written, which
            // the verifier refuses (`!read_ok`). `frame` starts with None.
            if flow_flags & FLOW_F_NAT != 0 {
                choice.nat = Some(nat::touch(entry, packet.tcp_flags, &packet.flow));
            }
            DONE
        }
        Ok(None) => {
            if flow_flags & FLOW_F_NAT == 0 {
                // The backend went down, was disabled or removed: re-hash this flow.
                count(Counter::FlowRehashed);
            }
            MISS
        }
        Err(reason) => step(Err(reason)),
    }
}

/// A new flow's first decisions, in either mode: the VIP's allow and deny lists and
/// per-source limit, before any state is made (as for IPv4), then its Maglev choice. Returns
/// the time they were made at, and the backend.
#[inline(always)]
pub(super) fn admit_and_choose(
    vip: &VipInfo,
    flow: &FlowKey6,
) -> Result<(u64, u32, *const xdp_lb_common::BackendInfo), Counter> {
    // SAFETY: a helper call without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    acl::admits6(vip, &flow.src_addr)?;
    limit::admits6(vip, &flow.src_addr, now)?;
    let (backend_id, backend) = balance::maglev_choice(vip, balance::maglev_hash6(vip, flow))?;
    Ok((now, backend_id, backend))
}

/// A new DSR flow: the VIP's Maglev choice, recorded in `FLOWS6`.
#[inline(never)]
fn new_dsr_flow(
    packet: *const Packet6,
    vip: *const VipInfo,
    settings: *const Settings,
    choice: ChoicePtr,
) -> Step {
    // SAFETY: the caller's stack values and map value pointers, live across this call.
    let (packet, vip, choice) = unsafe { (&*packet, &*vip, &mut *choice.cast::<Choice6>()) };
    let flow = &packet.flow;
    let (now, backend_id, backend) = match admit_and_choose(vip, flow) {
        Ok(b) => b,
        Err(reason) => return step(Err(reason)),
    };
    if balance::may_insert(settings, now) {
        let value = FlowValue6::dsr(backend_id, vip.vip_id, now);
        // As for IPv4: a failed LRU insert still forwards by the same Maglev choice.
        // SAFETY: the settings map value, live while this program runs.
        if FLOWS6.insert(flow, value, 0).is_ok() && unsafe { (*settings).sync_events } != 0 {
            crate::sync_events::report(
                xdp_lb_common::SYNC_EVENT_DSR,
                flow,
                backend_id,
                vip.vip_id,
                0,
            );
        }
    } else {
        count(Counter::FlowNotRecorded);
    }
    count(Counter::NewFlow);
    choice.backend_id = backend_id;
    choice.backend = backend;
    choice.vip_id = vip.vip_id;
    choice.new_flow = true;
    DONE
}

/// Path-MTU discovery for IPv6 (RFC 8201): a Packet Too Big about a packet a DSR backend
/// sent from an IPv6 VIP goes on to that backend, unchanged but for the MACs (the ICMPv6
/// checksum covers no MAC). As for IPv4 (`too_big` in main.rs), the backend is the flow's
/// entry or its Maglev choice. One about a NAT66 flow's packet is translated for the side
/// that sent it (`nat_rewrite::translate_too_big6`) and handed to the kernel to forward.
#[inline(never)]
fn too_big(ctx: *mut xdp_md, packet: *const Packet6) -> u32 {
    let ctx = context(ctx);
    // SAFETY: the caller's stack value, live across this call.
    let packet = unsafe { &*packet };
    capture::verdict(&ctx, too_big_to_sender(&ctx, packet))
}

#[inline(always)]
fn too_big_to_sender(ctx: &XdpContext, packet: &Packet6) -> Result<u32, Counter> {
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: a map value pointer.
    let (check_mac, local_mac, snat6) = unsafe {
        (
            (*settings).check_local_mac,
            (*settings).local_mac,
            (*settings).snat_addr6,
        )
    };
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: bounds-checked just above.
    if check_mac != 0 && unsafe { (*eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    let flow = &packet.flow;
    // NAT66: about the LB's packet to a backend (sent from the SNAT address: the reply entry
    // names it), or about its reply to a client (sent from the VIP: the client's entry).
    let nat_entry = if snat6 != [0; 16] && flow.dst_addr == snat6 {
        Some(NAT_FLOWS6.get_ptr(flow).ok_or(Counter::PassIcmp)?)
    } else {
        FLOWS6
            .get_ptr(flow)
            // SAFETY: a map value pointer from a successful lookup.
            .filter(|e| unsafe { (**e).flags } & FLOW_F_NAT != 0)
    };
    if let Some(entry) = nat_entry {
        nat_rewrite::translate_too_big6(ctx, packet, entry)?;
        count(Counter::IcmpTooBigTranslated);
        return Ok(xdp_action::XDP_PASS);
    }
    let (backend_id, backend) = balance::owner6(flow)?;
    if tunnel::carries(backend) {
        let choice = Choice6 {
            backend_id,
            backend,
            // SAFETY: a map value pointer.
            vip_id: unsafe { (*backend).vip_id },
            new_flow: false,
            nat: None,
        };
        return tunnel6(packet, &choice, Proto::Icmp);
    }
    let action = forward::forward_dsr(ctx, eth, backend)?;
    count(Counter::IcmpTooBigToBackend);
    Ok(action)
}

/// What `tunnel6` carries: a flow's packet, or an ICMPv6 error about one (its `flow` the
/// quoted one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Flow,
    Icmp,
}

/// A packet of a tunnel VIP's IPv6 flow (or an ICMPv6 error about one), handed to the tunnel
/// (`tunnel/`), which encapsulates, sends and counts it: `PENDING` for `xdp_lb`.
#[inline(always)]
fn tunnel6(packet: &Packet6, choice: &Choice6, what: Proto) -> Result<u32, Counter> {
    let flow = &packet.flow;
    let fold = |a: &[u8; 16]| {
        let w = xdp_lb_common::ipv6_words(a);
        w[0] ^ w[1] ^ w[2] ^ w[3]
    };
    let req = tunnel::request()?;
    req.inner.l3_off = packet.l3_off;
    req.inner.l4_off = packet.l4_off;
    req.inner.entropy = xdp_lb_common::flow_entropy(
        fold(&flow.src_addr),
        fold(&flow.dst_addr),
        (flow.src_port_be as u32) << 16 | flow.dst_port_be as u32,
        flow.proto,
    );
    req.inner.v6 = 1;
    req.inner.proto = if what == Proto::Icmp { 58 } else { flow.proto };
    req.inner.syn = (what == Proto::Flow
        && packet.tcp_flags & (parse::TCP_SYN | parse::TCP_ACK) == parse::TCP_SYN)
        as u8;
    req.backend_id = choice.backend_id;
    req.vip_id = choice.vip_id;
    req.len = packet.len;
    req.new_flow = choice.new_flow as u8;
    req.icmp = (what == Proto::Icmp) as u8;
    req.flow6 = *flow;
    Ok(tunnel::PENDING)
}
