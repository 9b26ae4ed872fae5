//! The xdp-lb data plane: for each TCP frame to a VIP (IPv4, or IPv6 in DSR), choose a backend and forward the
//! frame to it, by L2 DSR (`forward.rs`) or full NAT (`nat.rs`, which also carries the
//! backends' replies back). Everything else goes on to the kernel untouched.
//!
//! Per packet: parse (`parse.rs`) → a NAT reply? (`nat.rs`) → choose a backend (`balance.rs`)
//! → rewrite and forward (`forward.rs`, `nat.rs`) → count (`stats.rs`). Off that path, an ICMP
//! "fragmentation needed" about a DSR flow goes to the flow's backend (`too_big`). Everything that can be precomputed — Maglev tables,
//! backend MACs and egress interfaces, per-VIP seeds — is precomputed by the agent.
// Built for BPF by xdp-lb's build.rs. On the host (`cargo clippy/test --workspace`) it builds
// as an ordinary program with an empty main, so workspace-wide tools need no special casing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod acl;
mod balance;
mod flow_log;
mod forward;
mod limit;
mod maps;
mod nat;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use network_types::eth::EthHdr;
use xdp_lb_common::{Counter, FLOW_F_NAT};
use xdp_lb_ebpf::parse::{self, Packet6, Parsed};

use crate::{
    maps::{BACKEND_STATS, FLOWS, NAT_EMBRYONIC, NAT_FLOWS, SETTINGS, VIP_STATS},
    stats::{add_traffic, count},
};

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    match try_xdp_lb(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            verdict_for(reason)
        }
    }
}

#[inline(always)]
fn try_xdp_lb(ctx: &XdpContext) -> Result<u32, Counter> {
    let packet = match parse::parse(ctx) {
        Ok(Parsed::V4(packet)) => packet,
        Ok(Parsed::V6(packet)) => return ipv6(ctx, &packet),
        Ok(Parsed::TooBig6(flow)) => return too_big6(ctx, &flow),
        // Off the TCP path: ICMP errors about a VIP's packets.
        Err(Counter::PassNotTcp) => return too_big(ctx),
        Err(reason) => return Err(reason),
    };
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
    if check_mac != 0 && unsafe { (*packet.eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    // A backend's reply to a NAT flow: addressed to the SNAT address and a port of its range.
    // Other packets to that address (the host's own connections) go on as usual.
    if snat != 0 && packet.flow.dst_addr_be == snat {
        let port = u16::from_be_bytes(packet.flow.dst_port_be.to_ne_bytes());
        if port >= port_min
            && port <= port_max
            && let Some(entry) = NAT_FLOWS.get_ptr_mut(packet.flow)
        {
            // SAFETY: a map value pointer from a successful lookup.
            let (vip_id, backend_id) = unsafe { ((*entry).vip_id, (*entry).backend_id) };
            let rewrite = nat::touch(entry, packet.tcp_flags);
            let action = nat::rewrite_and_route(ctx, &packet, &rewrite)?;
            let tx = action == xdp_action::XDP_TX;
            add_traffic(&VIP_STATS, vip_id, packet.len, false, tx);
            add_traffic(&BACKEND_STATS, backend_id, packet.len, false, tx);
            return Ok(action);
        }
        if port >= port_min
            && port <= port_max
            && let Some(embryo) = NAT_EMBRYONIC.get_ptr(packet.flow)
        {
            // SAFETY: as above.
            let (vip_id, backend_id) = unsafe { ((*embryo).vip_id, (*embryo).backend_id) };
            let rewrite = nat::reply_half_open(&packet.flow, embryo, packet.tcp_flags);
            let action = nat::rewrite_and_route(ctx, &packet, &rewrite)?;
            let tx = action == xdp_action::XDP_TX;
            add_traffic(&VIP_STATS, vip_id, packet.len, false, tx);
            add_traffic(&BACKEND_STATS, backend_id, packet.len, false, tx);
            return Ok(action);
        }
    }
    let forwarded = balance::choose_backend(&packet, settings).and_then(|choice| {
        let action = match &choice.nat {
            Some(rewrite) => nat::rewrite_and_route(ctx, &packet, rewrite),
            None => forward::forward_dsr(ctx, packet.eth, choice.backend),
        };
        action.map(|action| (choice, action))
    });
    let (choice, action) = match forwarded {
        Ok(v) => v,
        Err(reason) => {
            if !matches!(
                reason,
                Counter::PassNotVip
                    | Counter::PassNotLocalMac
                    | Counter::PassNatNoNeighbour
                    | Counter::PassNatMtu
            ) {
                // A VIP packet we could not forward: worth a line in the flow log.
                flow_log::drop(&packet.flow, reason);
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
            return Err(reason);
        }
    };
    // Counted after forwarding so the verdict is known; a failed redirect was counted as a drop.
    count_forwarded(&choice, packet.len, action);
    Ok(action)
}

/// An IPv6 TCP frame: DSR to the backend of its flow (`balance::choose_backend6`). Only the
/// MACs change, as for IPv4: the backend holds the VIP and answers the client itself.
#[inline(always)]
fn ipv6(ctx: &XdpContext, packet: &Packet6) -> Result<u32, Counter> {
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: as in try_xdp_lb.
    let (check_mac, local_mac) = unsafe { ((*settings).check_local_mac, (*settings).local_mac) };
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    if check_mac != 0 && unsafe { (*eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    let forwarded = balance::choose_backend6(packet, settings).and_then(|choice| {
        forward::forward_dsr(ctx, eth, choice.backend).map(|action| (choice, action))
    });
    let (choice, action) = forwarded.inspect_err(|reason| {
        if !matches!(reason, Counter::PassNotVip) {
            // An IPv6 VIP packet we could not forward.
            flow_log::drop6(&packet.flow, *reason);
        }
    })?;
    count_forwarded(&choice, packet.len, action);
    Ok(action)
}

/// The VIP's and the backend's traffic counters of a forwarded packet.
#[inline(always)]
fn count_forwarded(choice: &balance::Choice, len: u32, action: u32) {
    let tx = action == xdp_action::XDP_TX;
    add_traffic(&VIP_STATS, choice.vip_id, len, choice.new_flow, tx);
    add_traffic(&BACKEND_STATS, choice.backend_id, len, choice.new_flow, tx);
}

/// Path-MTU discovery through the balancer (RFC 1191): a "fragmentation needed" that a router
/// sent to the VIP about a packet a DSR backend sent from it goes on to that backend, unchanged
/// but for the MACs, so the backend's kernel lowers the path MTU of the connection. Without
/// this the error would end here and the connection stall on every full-size segment. For a
/// NAT flow the error is translated for the side that sent the packet and handed to the kernel
/// to forward (`nat::translate_too_big`).
#[inline(always)]
fn too_big(ctx: &XdpContext) -> Result<u32, Counter> {
    let icmp = parse::parse_too_big(ctx)?;
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: as in try_xdp_lb.
    let (check_mac, local_mac, snat) = unsafe {
        (
            (*settings).check_local_mac,
            (*settings).local_mac,
            (*settings).snat_addr_be,
        )
    };
    if check_mac != 0 && unsafe { (*icmp.eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    // NAT: about the LB's packet to a backend (sent from the SNAT address: the reply entry
    // names it), or about its reply to a client (sent from the VIP: the client's entry).
    let nat_entry = if snat != 0 && icmp.flow.dst_addr_be == snat {
        Some(NAT_FLOWS.get_ptr(icmp.flow).ok_or(Counter::PassIcmp)?)
    } else {
        FLOWS
            .get_ptr(icmp.flow)
            // SAFETY: a map value pointer from a successful lookup.
            .filter(|e| unsafe { (**e).flags } & FLOW_F_NAT != 0)
    };
    if let Some(entry) = nat_entry {
        nat::translate_too_big(&icmp, entry);
        count(Counter::IcmpTooBigTranslated);
        return Ok(xdp_action::XDP_PASS);
    }
    let backend = balance::owner(&icmp.flow)?;
    let action = forward::forward_dsr(ctx, icmp.eth, backend)?;
    count(Counter::IcmpTooBigToBackend);
    Ok(action)
}

/// Path-MTU discovery for IPv6 (RFC 8201): a Packet Too Big about a packet a DSR backend
/// sent from an IPv6 VIP goes on to that backend, unchanged but for the MACs (the ICMPv6
/// checksum covers no MAC). As for IPv4 (`too_big`), the backend is the flow's entry or its
/// Maglev choice.
#[inline(always)]
fn too_big6(ctx: &XdpContext, flow: &xdp_lb_common::FlowKey6) -> Result<u32, Counter> {
    let settings = SETTINGS.get_ptr(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: as in try_xdp_lb.
    let (check_mac, local_mac) = unsafe { ((*settings).check_local_mac, (*settings).local_mac) };
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    if check_mac != 0 && unsafe { (*eth).dst_addr } != local_mac {
        return Err(Counter::PassNotLocalMac);
    }
    let backend = balance::owner6(flow)?;
    let action = forward::forward_dsr(ctx, eth, backend)?;
    count(Counter::IcmpTooBigToBackend);
    Ok(action)
}

/// The verdict for a frame we do not forward: `Pass*` reasons go to the kernel, the rest drop.
#[inline(always)]
fn verdict_for(reason: Counter) -> u32 {
    if reason.passes() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
