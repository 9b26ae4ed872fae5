//! How a NAT packet is rewritten and sent (`nat.rs` decides the rewrite): addresses, ports and
//! checksums by the flow's precomputed deltas, then the next hop from the flow entry's cache or
//! the kernel's FIB (`bpf_fib_lookup`). Also the translation of ICMP "fragmentation needed" and
//! ICMPv6 Packet Too Big about a NAT flow's packet, for path-MTU discovery through NAT.

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::{Counter, FlowValueOf, IPPROTO_UDP, csum};

use crate::{
    maps::FIB6_PARAMS,
    nat::Rewrite,
    nat_slots::zero_words,
    parse::{self, Packet, Packet6},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Rewrites addresses, ports and both checksums (IPv4's and TCP's or UDP's), then sends the packet to the next hop the
/// kernel's FIB names: XDP_TX out of the ingress interface, or a redirect to another one.
#[inline(always)]
pub(crate) fn rewrite_and_route(
    ctx: &XdpContext,
    packet: &Packet,
    rw: &Rewrite<u32>,
) -> Result<u32, Counter> {
    let (eth, ip) = (packet.eth, packet.ip);
    let proto = packet.flow.proto;
    // SAFETY: the parser bounds-checked the Ethernet and IPv4 headers, the ports and the L4
    // checksum field, and the frame has not been resized since.
    let (tot_len, tos) = unsafe {
        (*ip).src_addr = rw.src_addr_be.to_ne_bytes();
        (*ip).dst_addr = rw.dst_addr_be.to_ne_bytes();
        (*ip).check = csum::apply(u16::from_ne_bytes((*ip).check), rw.ip_csum_delta).to_ne_bytes();
        let [p0, p1] = rw.src_port_be.to_ne_bytes();
        let [p2, p3] = rw.dst_port_be.to_ne_bytes();
        *packet.ports = [p0, p1, p2, p3];
        let check = u16::from_ne_bytes(*packet.l4_check);
        *packet.l4_check = l4_checksum(proto, check, rw.l4_csum_delta).to_ne_bytes();
        (u16::from_be_bytes((*ip).tot_len), (*ip).tos)
    };
    if let Some(action) = cached_next_hop(ctx, eth, rw) {
        return action;
    }
    let mut slot = MaybeUninit::<FibParams>::uninit();
    let fib = zeroed_fib(&mut slot);
    fib.family = AF_INET;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.__bindgen_anon_2.tos = tos;
    fib.__bindgen_anon_3.ipv4_src = rw.src_addr_be;
    fib.__bindgen_anon_4.ipv4_dst = rw.dst_addr_be;
    fib.l4_protocol = proto;
    route(ctx, eth, rw, fib)
}

/// The FIB's parameters on a stack slot, zeroed (`nat_slots::zero_words`: 52-64 byte-loop
/// iterations on each FIB lookup otherwise).
#[inline(always)]
fn zeroed_fib(slot: &mut MaybeUninit<FibParams>) -> &mut FibParams {
    zero_words(slot.as_mut_ptr());
    // SAFETY: every byte is written; all-zero is the struct's documented initial state.
    unsafe { slot.assume_init_mut() }
}

/// The L4 checksum after a rewrite by `delta`: UDP's has its own rules for 0
/// (`csum::apply_udp`).
#[inline(always)]
fn l4_checksum(proto: u8, check: u16, delta: u16) -> u16 {
    if proto == IPPROTO_UDP {
        csum::apply_udp(check, delta)
    } else {
        csum::apply(check, delta)
    }
}

/// NAT66, first half of what `rewrite_and_route` does for IPv4: rewrites addresses, ports and
/// the TCP or UDP checksum (whose delta covers the addresses through the pseudo-header; IPv6 has no
/// header checksum). Extension headers are kept as they came. `route6` sends the result; the
/// IPv6 path calls them apart, for its stack (see `ipv6.rs`).
#[inline(always)]
pub(crate) fn rewrite6(
    ctx: &XdpContext,
    packet: &Packet6,
    rw: &Rewrite<[u8; 16]>,
) -> Result<(), Counter> {
    // The headers are taken again here (see `Packet6` for why the parser keeps only offsets):
    // the same bounds the parser checked. The masks keep the offsets provably small for the
    // verifier, which does not follow scalars through the parser's return value.
    let ip6: *mut [u8; 40] =
        parse::ptr_at(ctx, (packet.l3_off & 0x3f) as usize).ok_or(Counter::DropTruncatedIp)?;
    let l4_off = (packet.l4_off & 0x3fff) as usize;
    let proto = packet.flow.proto;
    // The L4 header's ports (both protocols' first 4 bytes) and its checksum field: TCP's at
    // byte 16, UDP's at byte 6.
    let ports: *mut [u8; 4] = parse::ptr_at(ctx, l4_off).ok_or(Counter::DropBadTcpHeader)?;
    let check_at = if proto == IPPROTO_UDP { 6 } else { 16 };
    let check: *mut [u8; 2] =
        parse::ptr_at(ctx, l4_off + check_at).ok_or(Counter::DropBadTcpHeader)?;
    // SAFETY: the pointers were bounds-checked just above.
    unsafe {
        let b = ip6 as *mut u8;
        *(b.add(8) as *mut [u8; 16]) = rw.src_addr_be;
        *(b.add(24) as *mut [u8; 16]) = rw.dst_addr_be;
        let [p0, p1] = rw.src_port_be.to_ne_bytes();
        let [p2, p3] = rw.dst_port_be.to_ne_bytes();
        *ports = [p0, p1, p2, p3];
        let old = u16::from_ne_bytes(*check);
        *check = l4_checksum(proto, old, rw.l4_csum_delta).to_ne_bytes();
    }
    Ok(())
}

/// NAT66, second half: sends the rewritten packet to its next hop, the flow entry's cached one
/// or the kernel's FIB's.
#[inline(always)]
pub(crate) fn route6(
    ctx: &XdpContext,
    packet: &Packet6,
    rw: &Rewrite<[u8; 16]>,
) -> Result<u32, Counter> {
    let eth: *mut network_types::eth::EthHdr =
        parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    if let Some(action) = cached_next_hop(ctx, eth, rw) {
        return action;
    }
    let ip6: *const [u8; 8] =
        parse::ptr_at(ctx, (packet.l3_off & 0x3f) as usize).ok_or(Counter::DropTruncatedIp)?;
    // The FIB's parameters in this CPU's scratch slot rather than on the IPv6 path's tight
    // stack (see `ipv6.rs`).
    let fib = FIB6_PARAMS.get_ptr_mut(0).ok_or(Counter::DropNoSettings)?;
    // SAFETY: this CPU's slot, ours while this program runs; plain-integer C struct, for which
    // all-zero is its documented initial state. ip6 was bounds-checked above.
    let fib = unsafe {
        zero_words(fib);
        let fib = &mut *fib;
        fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([(*ip6)[4], (*ip6)[5]]).wrapping_add(40);
        // Traffic class and flow label: what the FIB's policy routing may match on.
        fib.__bindgen_anon_2.flowinfo =
            u32::from_ne_bytes([(*ip6)[0] & 0x0f, (*ip6)[1], (*ip6)[2], (*ip6)[3]]);
        fib
    };
    fib.family = AF_INET6;
    fib.__bindgen_anon_3.ipv6_src = xdp_lb_common::ipv6_words(&rw.src_addr_be);
    fib.__bindgen_anon_4.ipv6_dst = xdp_lb_common::ipv6_words(&rw.dst_addr_be);
    fib.l4_protocol = packet.flow.proto;
    route(ctx, eth, rw, fib)
}

/// The flow entry's cached next hop, if it has one and this packet need not ask the FIB.
#[inline(always)]
fn cached_next_hop<A>(
    ctx: &XdpContext,
    eth: *mut network_types::eth::EthHdr,
    rw: &Rewrite<A>,
) -> Option<Result<u32, Counter>> {
    if rw.refresh || rw.entry.is_null() {
        return None;
    }
    // SAFETY: a map value pointer from this packet's lookup.
    let (ifindex, dmac, smac) = unsafe {
        (
            (*rw.entry).nh_ifindex,
            (*rw.entry).nh_dmac,
            (*rw.entry).nh_smac,
        )
    };
    Some(send(eth, ctx.ingress_ifindex() as u32, ifindex, dmac, smac))
}

/// Asks the kernel's FIB for the rewritten packet's next hop (`fib` has its family, addresses
/// and length), caches the answer in the flow entry and sends the packet there.
#[inline(always)]
fn route<A>(
    ctx: &XdpContext,
    eth: *mut network_types::eth::EthHdr,
    rw: &Rewrite<A>,
    fib: &mut FibParams,
) -> Result<u32, Counter> {
    let ingress = ctx.ingress_ifindex() as u32;
    fib.sport = rw.src_port_be;
    fib.dport = rw.dst_port_be;
    fib.ifindex = ingress;
    // SAFETY: ctx is the program's context and fib a stack struct of the size passed.
    let rc =
        unsafe { bpf_fib_lookup(ctx.ctx as *mut _, fib, size_of::<FibParams>() as i32, 0) } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        // The kernel resolves the neighbour when it forwards this (already rewritten) packet.
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(Counter::PassNatNoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(Counter::PassNatMtu),
        BPF_FIB_LKUP_RET_FWD_DISABLED => return Err(Counter::DropNatForwardingDisabled),
        _ => return Err(Counter::DropNatNoRoute),
    }
    if !rw.entry.is_null() {
        // SAFETY: as above. Racing writers store the same answer.
        unsafe {
            (*rw.entry).nh_ifindex = fib.ifindex;
            (*rw.entry).nh_dmac = fib.dmac;
            (*rw.entry).nh_smac = fib.smac;
        }
    }
    send(eth, ingress, fib.ifindex, fib.dmac, fib.smac)
}

#[inline(always)]
fn send(
    eth: *mut network_types::eth::EthHdr,
    ingress: u32,
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
) -> Result<u32, Counter> {
    // SAFETY: bounds-checked by the parser; the frame was not resized.
    unsafe {
        crate::forward::set_mac(&raw mut (*eth).dst_addr, &dmac);
        crate::forward::set_mac(&raw mut (*eth).src_addr, &smac);
    }
    if ifindex == ingress {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: a helper call; an ifindex without XDP transmit support fails in the kernel's
    // redirect and is counted there (xdp_redirect_err).
    Ok(unsafe { bpf_redirect(ifindex, 0) } as u32)
}

/// Translates an ICMP "fragmentation needed" about a NAT flow's packet for the other side of
/// the translation, in place: `entry` is the flow entry of the direction `icmp.flow` names, and
/// the quoted packet went the other way (it is the LB's rewritten packet), so the quote gets
/// the addresses and ports that packet had before the rewrite, and the error goes to the host
/// that sent it: a backend (about the LB's reply to a client) or a client (about the LB's
/// packet to a backend). The next-hop MTU is kept: NAT44 does not change header sizes.
/// Checksums by delta: the outer and quoted IPv4 headers and the ICMP message
/// (`csum::quoted_ports_delta`). The kernel forwards the result (NAT needs forwarding on).
#[inline(always)]
pub(crate) fn translate_too_big(icmp: &crate::parse::TooBig, entry: *const FlowValueOf<u32>) {
    // SAFETY: a map value pointer from a successful lookup; the packet pointers were
    // bounds-checked by the parser and the frame has not been resized.
    unsafe {
        let v = &*entry;
        let (src, dst) = (
            u32::from_ne_bytes((*icmp.inner).src_addr),
            u32::from_ne_bytes((*icmp.inner).dst_addr),
        );
        let sport = u16::from_ne_bytes([(*icmp.ports)[0], (*icmp.ports)[1]]);
        let dport = u16::from_ne_bytes([(*icmp.ports)[2], (*icmp.ports)[3]]);
        let new = (
            v.nat_dst_addr_be,
            v.nat_src_addr_be,
            v.nat_dst_port_be,
            v.nat_src_port_be,
        );
        let (inner_ip_delta, _) = csum::nat_deltas((src, dst, sport, dport), new);
        (*icmp.inner).src_addr = new.0.to_ne_bytes();
        (*icmp.inner).dst_addr = new.1.to_ne_bytes();
        (*icmp.inner).check =
            csum::apply(u16::from_ne_bytes((*icmp.inner).check), inner_ip_delta).to_ne_bytes();
        let [a, b] = new.2.to_ne_bytes();
        let [c, d] = new.3.to_ne_bytes();
        (*icmp.ports)[0] = a;
        (*icmp.ports)[1] = b;
        (*icmp.ports)[2] = c;
        (*icmp.ports)[3] = d;
        let icmp_delta = csum::quoted_ports_delta((sport, dport), (new.2, new.3));
        let check = u16::from_ne_bytes([(*icmp.icmp)[2], (*icmp.icmp)[3]]);
        let [e, f] = csum::apply(check, icmp_delta).to_ne_bytes();
        (*icmp.icmp)[2] = e;
        (*icmp.icmp)[3] = f;
        // The error goes to the quoted packet's (new) source.
        let outer_dst = u32::from_ne_bytes((*icmp.ip).dst_addr);
        let outer_src = u32::from_ne_bytes((*icmp.ip).src_addr);
        let (outer_delta, _) =
            csum::nat_deltas((outer_src, outer_dst, 0, 0), (outer_src, new.0, 0, 0));
        (*icmp.ip).dst_addr = new.0.to_ne_bytes();
        (*icmp.ip).check =
            csum::apply(u16::from_ne_bytes((*icmp.ip).check), outer_delta).to_ne_bytes();
    }
}

/// NAT66: translates an ICMPv6 Packet Too Big about a NAT66 flow's packet for the other side
/// of the translation, in place, as `translate_too_big` does for IPv4: the quoted packet (the
/// LB's rewritten one) gets back the addresses and ports it had before the rewrite, and the
/// error goes to the host that sent it. The MTU is kept (NAT66 does not change header sizes).
/// IPv6 headers have no checksum; the ICMPv6 checksum covers the pseudo-header (so the outer
/// destination) and the whole quote, and is updated by the delta of every changed word.
#[inline(always)]
pub(crate) fn translate_too_big6(
    ctx: &XdpContext,
    packet: &Packet6,
    entry: *const FlowValueOf<[u8; 16]>,
) -> Result<(), Counter> {
    // Offsets as the parser found them; the masks show the verifier their bounds.
    let l3 = (packet.l3_off & 0x3f) as usize;
    let l4 = (packet.l4_off & 0x3fff) as usize;
    let ip6: *mut [u8; 40] = parse::ptr_at(ctx, l3).ok_or(Counter::PassIcmp)?;
    let icmp: *mut [u8; 8] = parse::ptr_at(ctx, l4).ok_or(Counter::PassIcmp)?;
    let inner: *mut [u8; 40] = parse::ptr_at(ctx, l4 + 8).ok_or(Counter::PassIcmp)?;
    let ports: *mut [u8; 4] = parse::ptr_at(ctx, l4 + 48).ok_or(Counter::PassIcmp)?;
    // SAFETY: a map value pointer from a successful lookup; the packet pointers were
    // bounds-checked just above and the frame is not resized.
    unsafe {
        let v = &*entry;
        let (new_src, new_dst) = (v.nat_dst_addr_be, v.nat_src_addr_be);
        let (new_sport, new_dport) = (v.nat_dst_port_be, v.nat_src_port_be);
        let inner_b = inner as *mut u8;
        let old_src = *(inner_b.add(8) as *const [u8; 16]);
        let old_dst = *(inner_b.add(24) as *const [u8; 16]);
        let old_sport = u16::from_ne_bytes([(*ports)[0], (*ports)[1]]);
        let old_dport = u16::from_ne_bytes([(*ports)[2], (*ports)[3]]);
        // The quote's two addresses, and the outer destination, which was the quote's source
        // (the parser checked) and becomes its new source: that change counts twice.
        let sum = csum::addr_sum6((&old_src, &old_dst), (&new_src, &new_dst))
            + csum::addr_sum6((&old_src, &old_dst), (&new_src, &old_dst));
        let delta = csum::with_ports(sum, (old_sport, old_dport), (new_sport, new_dport));
        *(inner_b.add(8) as *mut [u8; 16]) = new_src;
        *(inner_b.add(24) as *mut [u8; 16]) = new_dst;
        let [a, b] = new_sport.to_ne_bytes();
        let [c, d] = new_dport.to_ne_bytes();
        (*ports)[0] = a;
        (*ports)[1] = b;
        (*ports)[2] = c;
        (*ports)[3] = d;
        *((ip6 as *mut u8).add(24) as *mut [u8; 16]) = new_src;
        let check = u16::from_ne_bytes([(*icmp)[2], (*icmp)[3]]);
        let [e, f] = csum::apply(check, delta).to_ne_bytes();
        (*icmp)[2] = e;
        (*icmp)[3] = f;
    }
    Ok(())
}
