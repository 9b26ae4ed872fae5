//! The xdp-lb data plane: for each TCP or UDP frame to a VIP (IPv4 or IPv6), choose a backend
//! and forward the frame to it, by L2 DSR (`forward.rs`), through a tunnel (`tunnel/`: IPIP,
//! IP6IP6, GUE) or by full NAT (`nat.rs`, which also carries the backends' replies back).
//! Everything else goes on to the kernel untouched.
//!
//! Per packet: parse (`parse.rs`) → a NAT reply? (`nat.rs`) → choose a backend (`balance.rs`)
//! → rewrite and forward (`forward.rs`, `tunnel/`, `nat.rs`) → count (`stats.rs`) → offered to a running `xdp-lb capture` (`capture.rs`). IPv6 frames take the
//! same steps in `ipv6.rs`, a call of its own. Off that path, an ICMP "fragmentation needed"
//! about a DSR flow goes to the flow's backend (`too_big`). Everything that can be
//! precomputed — Maglev tables, backend MACs and egress interfaces, per-VIP seeds — is
//! precomputed by the agent.
// Built for BPF by xdp-lb's build.rs. On the host (`cargo clippy/test --workspace`) it builds
// as an ordinary program with an empty main, so workspace-wide tools need no special casing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod acl;
mod balance;
mod calls;
mod capture;
mod flow_log;
mod forward;
mod ipv6;
mod limit;
mod maps;
mod nat;
mod nat_rewrite;
mod nat_slots;
mod stats;
mod sync_events;
mod tunnel;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use xdp_lb_common::{Counter, FLOW_F_NAT, FlowKey, flow_entropy};
use xdp_lb_ebpf::parse::{self, Parsed, TCP_ACK, TCP_SYN};

use crate::{
    maps::{BACKEND_STATS, FLOWS, NAT_EMBRYONIC, NAT_FLOWS, SETTINGS, VIP_STATS},
    stats::{add_traffic, count},
};

/// `ipv4_frame`'s answer for an IPv6 frame: this bit, and the IPv6 header's offset below it.
const IPV6_AT: u32 = 1 << 8;

/// Each family's path is a function of its own (a BPF-to-BPF call): the verifier allows a
/// call chain 512 bytes of stack in all, and the two paths inlined into one frame needed more
/// than that (LLVM does not overlap their stack slots). This frame holds nothing, so each path
/// has nearly all 512 bytes, and IPv4 frames run the code they ran before IPv6, plus one call.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro hands the program its context by value"
)]
pub(crate) fn xdp_lb(ctx: XdpContext) -> u32 {
    let mut verdict = ipv4_frame(ctx.ctx);
    if verdict & IPV6_AT != 0 {
        verdict = ipv6::frame(ctx.ctx, verdict & 0xff);
    }
    if verdict == tunnel::PENDING {
        // A tunnel VIP's packet: encapsulated beside the paths, for the stack (`tunnel/`).
        return tunnel::forward(ctx.ctx);
    }
    verdict
}

/// An IPv4 frame (or any frame that is not IPv6): balanced, or passed or dropped and counted.
/// An IPv6 frame comes back as `IPV6_AT | offset` for `ipv6::frame`.
#[inline(never)]
fn ipv4_frame(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    capture::verdict(
        &ctx,
        match parse::parse(&ctx) {
            Ok(Parsed::V4(packet)) => ipv4(&ctx, &packet),
            // 14 or 18: below IPV6_AT.
            Ok(Parsed::Ipv6(l3_off)) => return IPV6_AT | (l3_off as u32 & 0xff),
            // Off the TCP path: ICMP errors about a VIP's packets.
            Err(Counter::PassNotTcp) => too_big(&ctx),
            Err(reason) => Err(reason),
        },
    )
}

/// A TCP/IPv4 frame: a backend's reply to a NAT flow, or a client's packet to a VIP.
#[inline(always)]
fn ipv4(ctx: &XdpContext, packet: &parse::Packet) -> Result<u32, Counter> {
    // Array lookups are inlined by the verifier: a few instructions.
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: a map value pointer (array lookups never fail in range); eth bounds-checked.
    let (check_mac, local_mac, snat, port_min, port_max) = unsafe {
        (
            (*settings).check_local_mac,
            (*settings).local_mac,
            (*settings).snat_addr_be,
            (*settings).snat_port_min,
            (*settings).snat_port_max,
        )
    };
    // SAFETY: the Ethernet header was bounds-checked by the parser.
    if check_mac != 0 && unsafe { (*packet.eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    // A backend's reply to a NAT flow: addressed to the SNAT address and a port of its range.
    // Other packets to that address (the host's own connections) go on as usual.
    if snat != 0 && packet.flow.dst_addr == snat {
        let port = u16::from_be_bytes(packet.flow.dst_port_be.to_ne_bytes());
        if port >= port_min
            && port <= port_max
            && let Some(action) = nat_reply(ctx, packet)?
        {
            return Ok(action);
        }
    }
    let choice = match balance::choose_backend(packet, settings) {
        Ok(choice) => choice,
        // A SYN-ACK, ACK or RST to no VIP: maybe a backend's answer to a tunnel health probe.
        Err(Counter::PassNotVip) if packet.tcp_flags & (TCP_ACK | parse::TCP_RST) != 0 => {
            return tunnel::probe::record(packet);
        }
        Err(reason) => return Err(logged(ctx, &packet.flow, reason)),
    };
    let action = match &choice.nat {
        Some(rewrite) => nat_rewrite::rewrite_and_route(ctx, packet, rewrite),
        // Encapsulated, sent and counted by `tunnel::forward`.
        None if tunnel::carries(choice.backend) => return tunnel_v4(ctx, packet, &choice),
        None => forward::forward_dsr(ctx, packet.eth, choice.backend),
    }
    .map_err(|reason| logged(ctx, &packet.flow, reason))?;
    // Counted after forwarding so the verdict is known; a failed redirect was counted as a drop.
    count_forwarded(&choice, packet.len, action);
    capture::sent(ctx, choice.vip_id, choice.backend_id, action);
    Ok(action)
}

/// Why a packet was not forwarded, logged in the flow log when it was a VIP's packet we had to
/// drop (not one merely passed to the kernel).
#[inline(always)]
fn logged(ctx: &XdpContext, flow: &FlowKey, reason: Counter) -> Counter {
    if !matches!(
        reason,
        Counter::PassNotVip
            | Counter::PassNotLocalMac
            | Counter::PassNatNoNeighbour
            | Counter::PassNatMtu
    ) {
        flow_log::drop(flow, reason);
        if matches!(
            reason,
            Counter::DropBadBackend | Counter::DropRedirectFailed
        ) {
            // Should not happen: the agent's maps are inconsistent or an interface left.
            debug!(
                ctx,
                "xdp-lb: dropped a VIP packet, reason {}", reason as u32
            );
        }
    }
    reason
}

/// A packet of a tunnel VIP's flow: encapsulated, sent and counted right here when its
/// backend's header is cached (`tunnel::forward_cached4`), else handed to the tunnel's full
/// path (`PENDING` for `xdp_lb`, which calls `tunnel::forward`).
#[inline(always)]
fn tunnel_v4<A>(
    ctx: &XdpContext,
    packet: &parse::Packet,
    choice: &balance::Choice<A>,
) -> Result<u32, Counter> {
    let flow = &packet.flow;
    // SAFETY: the parser bounds-checked both headers.
    let (l3_off, ihl) = unsafe { (l3_offset(packet.eth), ((*packet.ip).vihl & 0x0f) as u32 * 4) };
    let syn = packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if l3_off == 14 && !syn {
        // The common packet first, right here (see `tunnel::forward_cached4`).
        let entropy = flow_entropy(
            flow.src_addr,
            flow.dst_addr,
            (flow.src_port_be as u32) << 16 | flow.dst_port_be as u32,
            flow.proto,
        );
        let done = tunnel::forward_cached4(
            ctx.ctx,
            choice.backend_id,
            choice.backend,
            (entropy as u64) << 32
                | ((packet.len & 0xffff) as u64) << 16
                | (choice.new_flow as u64) << 8
                | flow.proto as u64,
            choice.vip_id,
        );
        if done != tunnel::NOT_CACHED {
            return Ok(done);
        }
    }
    let req = tunnel::request()?;
    fill_inner(&mut req.inner, flow, l3_off, l3_off + ihl);
    req.inner.proto = flow.proto;
    req.inner.syn = syn as u8;
    req.backend_id = choice.backend_id;
    req.vip_id = choice.vip_id;
    req.len = packet.len;
    req.new_flow = choice.new_flow as u8;
    req.icmp = 0;
    req.flow4 = *flow;
    Ok(tunnel::PENDING)
}

/// The inner packet's offsets and the flow's entropy, of an IPv4 flow.
#[inline(always)]
fn fill_inner(inner: &mut tunnel::Inner, flow: &FlowKey, l3_off: u32, l4_off: u32) {
    inner.l3_off = l3_off;
    inner.l4_off = l4_off;
    inner.entropy = flow_entropy(
        flow.src_addr,
        flow.dst_addr,
        (flow.src_port_be as u32) << 16 | flow.dst_port_be as u32,
        flow.proto,
    );
    inner.v6 = 0;
}

/// The IP header's offset: 14, or 18 behind an 802.1Q/802.1ad tag (the parser takes one).
///
/// # Safety
/// `eth` must be a bounds-checked Ethernet header.
#[inline(always)]
unsafe fn l3_offset(eth: *const network_types::eth::EthHdr) -> u32 {
    // SAFETY: the caller's promise.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == network_types::eth::EtherType::Ieee8021q as u16
        || ether_type == network_types::eth::EtherType::Ieee8021ad as u16
    {
        18
    } else {
        14
    }
}

/// A backend's reply to a NAT flow (established, or half-open: the backend's answer to the
/// client's SYN), rewritten and sent back to the client; None when the packet is no NAT flow's.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, packet: &parse::Packet) -> Result<Option<u32>, Counter> {
    let (vip_id, backend_id, rewrite) = if let Some(entry) = NAT_FLOWS.get_ptr_mut(packet.flow) {
        // SAFETY: a map value pointer from a successful lookup.
        let (vip_id, backend_id) = unsafe { ((*entry).vip_id, (*entry).backend_id) };
        let rewrite = nat::touch(entry, packet.tcp_flags, &packet.flow);
        (vip_id, backend_id, rewrite)
    } else if let Some(embryo) = NAT_EMBRYONIC.get_ptr(packet.flow) {
        // SAFETY: as above.
        let (vip_id, backend_id) = unsafe { ((*embryo).vip_id, (*embryo).backend_id) };
        let rewrite = nat::reply_half_open(&packet.flow, embryo, packet.tcp_flags);
        (vip_id, backend_id, rewrite)
    } else {
        return Ok(None);
    };
    let action = nat_rewrite::rewrite_and_route(ctx, packet, &rewrite)?;
    let tx = action == xdp_action::XDP_TX;
    add_traffic(&VIP_STATS, vip_id, packet.len, false, tx);
    add_traffic(&BACKEND_STATS, backend_id, packet.len, false, tx);
    capture::sent(ctx, vip_id, backend_id, action);
    Ok(Some(action))
}

/// The VIP's and the backend's traffic counters of a forwarded packet.
#[inline(always)]
fn count_forwarded<A>(choice: &balance::Choice<A>, len: u32, action: u32) {
    let tx = action == xdp_action::XDP_TX;
    add_traffic(&VIP_STATS, choice.vip_id, len, choice.new_flow, tx);
    add_traffic(&BACKEND_STATS, choice.backend_id, len, choice.new_flow, tx);
}

/// Path-MTU discovery through the balancer (RFC 1191): a "fragmentation needed" that a router
/// sent to the VIP about a packet a DSR backend sent from it goes on to that backend, unchanged
/// but for the MACs, so the backend's kernel lowers the path MTU of the connection. Without
/// this the error would end here and the connection stall on every full-size segment. For a
/// NAT flow the error is translated for the side that sent the packet and handed to the kernel
/// to forward (`nat_rewrite::translate_too_big`).
#[inline(always)]
fn too_big(ctx: &XdpContext) -> Result<u32, Counter> {
    let icmp = parse::parse_too_big(ctx)?;
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: as in ipv4.
    let (check_mac, local_mac, snat) = unsafe {
        (
            (*settings).check_local_mac,
            (*settings).local_mac,
            (*settings).snat_addr_be,
        )
    };
    // SAFETY: the Ethernet header was bounds-checked by the parser.
    if check_mac != 0 && unsafe { (*icmp.eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    // NAT: about the LB's packet to a backend (sent from the SNAT address: the reply entry
    // names it), or about its reply to a client (sent from the VIP: the client's entry).
    let nat_entry = if snat != 0 && icmp.flow.dst_addr == snat {
        Some(NAT_FLOWS.get_ptr(icmp.flow).ok_or(Counter::PassIcmp)?)
    } else {
        FLOWS
            .get_ptr(icmp.flow)
            // SAFETY: a map value pointer from a successful lookup.
            .filter(|e| unsafe { (**e).flags } & FLOW_F_NAT != 0)
    };
    if let Some(entry) = nat_entry {
        nat_rewrite::translate_too_big(&icmp, entry);
        count(Counter::IcmpTooBigTranslated);
        return Ok(xdp_action::XDP_PASS);
    }
    let (backend_id, backend) = balance::owner(&icmp.flow)?;
    if tunnel::carries(backend) {
        // SAFETY: bounds-checked by the parser; a map value pointer.
        let (l3_off, vip_id) = unsafe { (l3_offset(icmp.eth), (*backend).vip_id) };
        let req = tunnel::request()?;
        // The quoted flow's entropy: the error takes the flow's outer path and label.
        fill_inner(&mut req.inner, &icmp.flow, l3_off, l3_off + 20);
        req.inner.proto = parse::IPPROTO_ICMP;
        req.inner.syn = 0;
        req.backend_id = backend_id;
        req.vip_id = vip_id;
        req.len = 0;
        req.new_flow = 0;
        req.icmp = 1;
        return Ok(tunnel::PENDING);
    }
    let action = forward::forward_dsr(ctx, icmp.eth, backend)?;
    count(Counter::IcmpTooBigToBackend);
    Ok(action)
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
