//! The outer headers: what they say (`Outer`, decided before the frame grows) and how they are
//! written in front of the inner packet (`push`).
//!
//! Choices, each a header field: outer TTL / hop limit 64 (`OUTER_TTL`), a fresh hop count as
//! any host's packet has; DSCP and ECN copied from the inner header (RFC 6040 "normal mode":
//! congestion marks set on the way to the backend reach its decapsulator, RFC 2983 for
//! DSCP); IPv4 DF set and identification 0 (RFC 6864 §4.1: an atomic datagram needs no id),
//! because no one should fragment an outer packet (a backend's decapsulator would have to
//! reassemble it; `tunnel_mtu` and the ICMP errors of `mtu.rs` keep packets small enough
//! instead); the IPv6 flow label from the inner 5-tuple (RFC 6438). GUE's UDP source port is
//! the flow's hash too; its checksum is 0 over IPv4 (RFC 768 allows it; the inner L4
//! checksum still covers the payload) and over IPv6 computed without touching the payload
//! (`lco_sum`), else 0 as RFC 6935 allows tunnels.

use core::mem::MaybeUninit;

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use xdp_lb_common::{
    BackendInfo, Counter, GUE_UDP_LEN, IPPROTO_TCP, IPPROTO_UDP, OUTER_TTL, OUTER4_LEN, OUTER6_LEN,
    TunnelParams, csum::fold, flow_label, gue_source_port, ipv6_words,
};
use xdp_lb_ebpf::parse::{self, IPPROTO_ICMP};

use super::{Hop, Inner, KIND_GUE, KIND_V6};
use crate::forward::set_mac;

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_ICMPV6: u8 = 58;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];

/// The inner IP packet's length (its header's word, not the frame's: Ethernet pads short
/// frames) and its DSCP/ECN byte.
#[inline(always)]
pub(super) fn inner_len_tos(ctx: &XdpContext, inner: &Inner) -> Result<(u32, u8), Counter> {
    let ip: *const [u8; 8] = parse::ptr_at(ctx, l3(inner)).ok_or(Counter::DropTruncatedIp)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    Ok(if inner.v6 != 0 {
        (
            u16::from_be_bytes([b[4], b[5]]) as u32 + OUTER6_LEN as u32,
            (b[0] << 4) | (b[1] >> 4),
        )
    } else {
        (u16::from_be_bytes([b[2], b[3]]) as u32, b[1])
    })
}

/// The inner header's offset, shown to the verifier as one of its two values.
#[inline(always)]
pub(super) fn l3(inner: &Inner) -> usize {
    if inner.l3_off == 18 { 18 } else { 14 }
}

/// The outer headers of one packet, on `tunnel::forward`'s stack.
#[repr(C)]
pub(crate) struct Outer {
    pub(super) v6: bool,
    pub(super) gue: bool,
    /// Addresses: IPv4 (network order) and IPv6 (copied from the map values: a map value
    /// cannot hold a pointer the verifier would trust again).
    pub(super) src4: u32,
    pub(super) dst4: u32,
    pub(super) src6: [u32; 4],
    pub(super) dst6: [u32; 4],
    /// The outer IP packet's length.
    pub(super) tot_len: u32,
    pub(super) tos: u8,
    /// The outer IP header's protocol / next header: IPIP, IPv6 or UDP.
    pub(super) proto: u8,
    entropy: u32,
    pub(super) gue_port_be: u16,
    /// GUE over IPv6: the UDP checksum.
    udp_check: u16,
}

impl Outer {
    /// The outer headers of a packet of `len` bytes with DSCP/ECN `tos` to `backend`,
    /// written into `slot`.
    #[inline(always)]
    #[expect(
        clippy::too_many_arguments,
        reason = "inlined: the arguments are the caller's locals"
    )]
    pub(super) fn fill<'a>(
        slot: &'a mut MaybeUninit<Self>,
        p: &TunnelParams,
        backend: *const BackendInfo,
        v6: bool,
        gue: bool,
        len: u32,
        tos: u8,
        inner: &Inner,
    ) -> Result<&'a mut Self, Counter> {
        if (v6 && p.src6 == [0; 16]) || (!v6 && p.src4_be == 0) {
            return Err(Counter::DropTunnelNoSource);
        }
        let ip_len = if v6 { OUTER6_LEN } else { OUTER4_LEN } as u32;
        let proto = if gue {
            IPPROTO_UDP
        } else if inner.v6 != 0 {
            IPPROTO_IPV6
        } else {
            IPPROTO_IPIP
        };
        // SAFETY: a map value pointer from the caller's lookup; plain integers.
        let (dst4, dst6) = unsafe { ((*backend).addr_be, &(*backend).addr6) };
        // Written whole (the IPv6 addresses only when used: they are read only then).
        Ok(slot.write(Self {
            v6,
            gue,
            src4: p.src4_be,
            dst4,
            src6: if v6 { ipv6_words(&p.src6) } else { [0; 4] },
            dst6: if v6 { ipv6_words(dst6) } else { [0; 4] },
            tot_len: len + ip_len + if gue { GUE_UDP_LEN as u32 } else { 0 },
            tos,
            proto,
            entropy: inner.entropy,
            gue_port_be: p.gue_port_be,
            udp_check: 0,
        }))
    }

    /// The outer headers' length.
    #[inline(always)]
    pub(super) fn overhead(&self) -> u16 {
        let ip = if self.v6 { OUTER6_LEN } else { OUTER4_LEN };
        if self.gue { ip + GUE_UDP_LEN } else { ip }
    }
}

/// GUE over IPv6: the UDP checksum must not be 0 unless the receiver allows it (RFC 6935), so
/// it is computed, but not over the payload: the inner packet's own checksums already make its
/// one's-complement sum known (local checksum offload, RFC 7348's trick, as Linux's
/// `lco_csum`). An IPv4 header with a valid checksum sums to 0; a TCP or UDP segment (or an
/// ICMPv6 message) with a valid checksum sums to the complement of its pseudo-header's sum;
/// an IPv6 header sums to its words. None where that does not hold (an IPv4 UDP datagram
/// without checksum, IPv6 extension headers): the checksum stays 0.
#[inline(always)]
pub(super) fn set_gue6_checksum(ctx: &XdpContext, inner: &Inner, outer: &mut Outer) {
    if !(outer.gue && outer.v6) {
        return;
    }
    let addrs = words16(&outer.src6) + words16(&outer.dst6);
    let udp_len = (outer.tot_len - OUTER6_LEN as u32) as u16;
    outer.udp_check = gue6_check(ctx, inner, addrs, outer.entropy, outer.gue_port_be, udp_len);
}

/// GUE over IPv6's UDP checksum (see `set_gue6_checksum`): `addrs` is the sum of the outer
/// addresses' 16-bit words; 0 where the inner packet's sum is not known.
#[inline(always)]
fn gue6_check(
    ctx: &XdpContext,
    inner: &Inner,
    addrs: u32,
    entropy: u32,
    dport_be: u16,
    udp_len: u16,
) -> u16 {
    let Some(inner_sum) = lco_sum(ctx, inner) else {
        return 0;
    };
    let len_word = u16::from_ne_bytes(udp_len.to_be_bytes()) as u32;
    let sum = addrs
        + len_word
        + u16::from_ne_bytes([0, IPPROTO_UDP]) as u32
        // The UDP header: ports, length, checksum 0.
        + u16::from_ne_bytes(gue_source_port(entropy).to_be_bytes()) as u32
        + dport_be as u32
        + len_word
        + inner_sum;
    let check = !fold(sum);
    if check == 0 { 0xffff } else { check }
}

/// The one's-complement sum of the whole inner packet (see `set_gue6_checksum`).
#[inline(always)]
fn lco_sum(ctx: &XdpContext, inner: &Inner) -> Option<u32> {
    let l3 = l3(inner);
    if inner.v6 == 0 {
        let ip: *const [u8; 20] = parse::ptr_at(ctx, l3)?;
        // SAFETY: bounds-checked just above.
        let b = unsafe { &*ip };
        if inner.proto == IPPROTO_ICMP {
            return Some(0);
        }
        let ihl = (b[0] & 0x0f) as u32 * 4;
        let l4_len = u16::from_be_bytes([b[2], b[3]]) as u32 - ihl;
        if inner.proto == IPPROTO_UDP {
            let check: *const [u8; 2] = parse::ptr_at(ctx, (inner.l4_off & 0x3ff) as usize + 6)?;
            // SAFETY: bounds-checked just above.
            if unsafe { *check } == [0, 0] {
                return None;
            }
        }
        let pseudo = words(&b[12..20])
            + u16::from_ne_bytes([0, inner.proto]) as u32
            + u16::from_ne_bytes((l4_len as u16).to_be_bytes()) as u32;
        return Some(!fold(pseudo) as u32);
    }
    if inner.l4_off != inner.l3_off + OUTER6_LEN as u32
        || !matches!(inner.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6)
    {
        return None;
    }
    let ip: *const [u8; 40] = parse::ptr_at(ctx, l3)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    let header = words(&b[..8]) + words(&b[8..40]);
    let pseudo = words(&b[8..40])
        + u16::from_ne_bytes([b[4], b[5]]) as u32
        + u16::from_ne_bytes([0, inner.proto]) as u32;
    Some(header + !fold(pseudo) as u32)
}

/// The sum of the 16-bit words of `b` as they sit in memory (see `xdp_lb_common::csum`).
#[inline(always)]
fn words(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_ne_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// The sum of an IPv6 address's 16-bit words, from its 32-bit ones.
#[inline(always)]
fn words16(a: &[u32; 4]) -> u32 {
    let mut sum = 0;
    for w in a {
        sum += (w & 0xffff) + (w >> 16);
    }
    sum
}

/// Grows the frame at its front by the outer headers and writes them, with the next hop's
/// MACs and the outer family's EtherType (a VLAN tag stays where it was).
#[inline(always)]
pub(super) fn push(
    ctx: &XdpContext,
    inner: &Inner,
    outer: &Outer,
    hop: &Hop,
) -> Result<(), Counter> {
    let l3 = l3(inner);
    let grow = outer.overhead() as i32;
    // SAFETY: the program's context; the helper checks the headroom (XDP gives 256 bytes).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Counter::DropTunnelNoRoute);
    }
    // Every packet pointer is void now: each header is taken afresh.
    let eth: *mut [u8; 18] = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    let old_tag: *const [u8; 4] =
        parse::ptr_at(ctx, grow as usize + 12).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: bounds-checked just above; the old Ethernet header lies `grow` bytes on.
    unsafe {
        let e = eth as *mut u8;
        set_mac(e as *mut [u8; 6], &hop.dmac);
        set_mac(e.add(6) as *mut [u8; 6], &hop.smac);
        let ethertype = if outer.v6 { ETH_P_IPV6 } else { ETH_P_IP };
        if l3 == 18 {
            // The 802.1Q tag (TPID and TCI) is kept; the EtherType after it is the outer one.
            let tag = *old_tag;
            *e.add(12) = tag[0];
            *e.add(13) = tag[1];
            *e.add(14) = tag[2];
            *e.add(15) = tag[3];
            *e.add(16) = ethertype[0];
            *e.add(17) = ethertype[1];
        } else {
            *e.add(12) = ethertype[0];
            *e.add(13) = ethertype[1];
        }
    }
    let udp_at = if outer.v6 {
        write_ipv6(ctx, l3, outer)?;
        l3 + OUTER6_LEN as usize
    } else {
        write_ipv4(ctx, l3, outer)?;
        l3 + OUTER4_LEN as usize
    };
    if outer.gue {
        let udp: *mut [u16; 4] = parse::ptr_at(ctx, udp_at).ok_or(Counter::DropTruncatedIp)?;
        let len = (outer.tot_len - (udp_at - l3) as u32) as u16;
        // SAFETY: bounds-checked just above.
        unsafe {
            let u = udp as *mut u16;
            u.write_unaligned(gue_source_port(outer.entropy).to_be());
            u.add(1).write_unaligned(outer.gue_port_be);
            u.add(2).write_unaligned(len.to_be());
            u.add(3).write_unaligned(outer.udp_check);
        }
    }
    Ok(())
}

#[inline(always)]
fn write_ipv4(ctx: &XdpContext, l3: usize, outer: &Outer) -> Result<(), Counter> {
    let ip: *mut [u8; 20] = parse::ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIp)?;
    let len = (outer.tot_len as u16).to_be_bytes();
    let (s, d) = (outer.src4, outer.dst4);
    // The header's words as they sit in memory (see `xdp_lb_common::csum`); the addresses'
    // two halves each.
    let sum = u16::from_ne_bytes([0x45, outer.tos]) as u32
        + u16::from_ne_bytes(len) as u32
        + u16::from_ne_bytes([0x40, 0]) as u32
        + u16::from_ne_bytes([OUTER_TTL, outer.proto]) as u32
        + (s & 0xffff)
        + (s >> 16)
        + (d & 0xffff)
        + (d >> 16);
    let check = (!fold(sum)).to_ne_bytes();
    // SAFETY: bounds-checked just above.
    unsafe {
        let b = ip as *mut u8;
        *b = 0x45;
        *b.add(1) = outer.tos;
        *b.add(2) = len[0];
        *b.add(3) = len[1];
        // Identification 0, DF, fragment offset 0 (see the module's comment).
        *(b.add(4) as *mut [u8; 4]) = [0, 0, 0x40, 0];
        *b.add(8) = OUTER_TTL;
        *b.add(9) = outer.proto;
        *b.add(10) = check[0];
        *b.add(11) = check[1];
        *(b.add(12) as *mut [u8; 4]) = s.to_ne_bytes();
        *(b.add(16) as *mut [u8; 4]) = d.to_ne_bytes();
    }
    Ok(())
}

#[inline(always)]
fn write_ipv6(ctx: &XdpContext, l3: usize, outer: &Outer) -> Result<(), Counter> {
    let ip: *mut [u8; 40] = parse::ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIp)?;
    let label = flow_label(outer.entropy);
    let payload = ((outer.tot_len - OUTER6_LEN as u32) as u16).to_be_bytes();
    // SAFETY: bounds-checked just above.
    unsafe {
        let b = ip as *mut u8;
        *b = 0x60 | (outer.tos >> 4);
        *b.add(1) = (outer.tos << 4) | (label >> 16) as u8;
        *b.add(2) = (label >> 8) as u8;
        *b.add(3) = label as u8;
        *b.add(4) = payload[0];
        *b.add(5) = payload[1];
        *b.add(6) = outer.proto;
        *b.add(7) = OUTER_TTL;
        let w = b.add(8) as *mut u32;
        for i in 0..4 {
            w.add(i).write_unaligned(outer.src6[i]);
            w.add(4 + i).write_unaligned(outer.dst6[i]);
        }
    }
    Ok(())
}

/// The common packet's encapsulation (an untagged frame, its backend's next hop cached): the
/// frame grows by the outer headers and the cached header is copied in front of the inner
/// packet in 8-byte stores, then its per-packet fields are set. XDP runs at speed only where
/// unaligned stores are cheap and allowed (x86-64, arm64: the verifier checks alignment only
/// where they are not), so the stores do not wait for alignment.
#[inline(always)]
pub(super) fn push_cached(
    ctx: &XdpContext,
    inner: &Inner,
    hop: &Hop,
    len: u32,
    tos: u8,
) -> Result<(), Counter> {
    let gue6 = hop.kind == KIND_V6 | KIND_GUE;
    // Before the frame moves: GUE over IPv6's checksum reads the inner headers.
    let udp_check = if gue6 {
        let h = &hop.header;
        let addrs = words(&h[22..54]);
        let dport = u16::from_ne_bytes([h[56], h[57]]);
        gue6_check(ctx, inner, addrs, inner.entropy, dport, (len + 8) as u16)
    } else {
        0
    };
    let grow = hop.header_len as i32 - 14;
    // SAFETY: the program's context; the helper checks the headroom (XDP gives 256 bytes).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Counter::DropTunnelNoRoute);
    }
    match hop.kind {
        0 => {
            let h = copy_header::<34>(ctx, hop)?;
            finish_ipv4(h, hop, len + 20, tos);
        }
        KIND_GUE => {
            let h = copy_header::<42>(ctx, hop)?;
            finish_ipv4(h, hop, len + 28, tos);
            finish_udp(h, 34, inner.entropy, len + 8, 0);
        }
        KIND_V6 => {
            let h = copy_header::<54>(ctx, hop)?;
            finish_ipv6(h, len, tos, inner.entropy);
        }
        _ => {
            let h = copy_header::<62>(ctx, hop)?;
            finish_ipv6(h, len + 8, tos, inner.entropy);
            finish_udp(h, 54, inner.entropy, len + 8, udp_check);
        }
    }
    Ok(())
}

/// Copies the first `N` bytes of the cached header to the frame's start: 8 bytes at a time,
/// then 2 (`N` is even).
#[inline(always)]
fn copy_header<const N: usize>(ctx: &XdpContext, hop: &Hop) -> Result<*mut u8, Counter> {
    let dst: *mut [u8; N] = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    let (d, s) = (dst as *mut u8, hop.header.as_ptr());
    // SAFETY: `N` bytes of frame, bounds-checked just above, and of the cache entry's header
    // (N ≤ HEADER_MAX); the entry's header is 8-aligned in its map value (see `Hop`).
    unsafe {
        for i in 0..N / 8 {
            let v = (s.add(8 * i) as *const u64).read();
            (d.add(8 * i) as *mut u64).write_volatile(v);
        }
        for i in (N / 8 * 8..N).step_by(2) {
            let v = (s.add(i) as *const u16).read();
            (d.add(i) as *mut u16).write_volatile(v);
        }
    }
    Ok(d)
}

/// The outer IPv4 header's per-packet fields: DSCP/ECN, the total length, the checksum.
#[inline(always)]
fn finish_ipv4(h: *mut u8, hop: &Hop, tot_len: u32, tos: u8) {
    let len = (tot_len as u16).to_be_bytes();
    let sum = hop.csum_base + u16::from_ne_bytes([0, tos]) as u32 + u16::from_ne_bytes(len) as u32;
    // SAFETY: inside the header the caller bounds-checked.
    unsafe {
        *h.add(15) = tos;
        (h.add(16) as *mut [u8; 2]).write(len);
        (h.add(24) as *mut u16).write_volatile(!fold(sum));
    }
}

/// The outer IPv6 header's per-packet fields: traffic class, flow label, payload length.
#[inline(always)]
fn finish_ipv6(h: *mut u8, payload: u32, tclass: u8, entropy: u32) {
    let word = 0x6000_0000 | (tclass as u32) << 20 | flow_label(entropy);
    // SAFETY: inside the header the caller bounds-checked.
    unsafe {
        (h.add(14) as *mut u32).write_volatile(word.to_be());
        (h.add(18) as *mut u16).write_volatile((payload as u16).to_be());
    }
}

/// GUE's UDP header at `at`: the flow's source port, the length, the checksum.
#[inline(always)]
fn finish_udp(h: *mut u8, at: usize, entropy: u32, udp_len: u32, check: u16) {
    // SAFETY: inside the header the caller bounds-checked.
    unsafe {
        (h.add(at) as *mut u16).write_volatile(gue_source_port(entropy).to_be());
        (h.add(at + 4) as *mut u16).write_volatile((udp_len as u16).to_be());
        (h.add(at + 6) as *mut u16).write_volatile(check);
    }
}
