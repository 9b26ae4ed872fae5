//! IPv6 frames (RFC 8200): the fixed header, the extension headers walked before TCP or UDP,
//! and ICMPv6 Packet Too Big about a packet a VIP sent.

use aya_ebpf::programs::XdpContext;
use xdp_lb_common::{Counter, FlowKey6, IPPROTO_TCP, IPPROTO_UDP};

use super::{UDP_HDR_LEN, ptr_at};

/// A well-formed TCP or UDP over IPv6 frame. No header pointer is kept, only offsets: the caller takes
/// the headers it writes again with `ptr_at` (verifier constraint: a packet pointer in this
/// struct, copied out through the `Parsed` enum, was spilled as two 32-bit halves, which the
/// verifier refuses — "invalid size of register spill").
pub struct Packet6 {
    /// Offsets of the IPv6 header and of the TCP or UDP header (after any extension headers):
    /// for NAT66's rewrite.
    pub l3_off: u32,
    pub l4_off: u32,
    pub tcp_flags: u8,
    /// The 5-tuple, in network order as carried by the packet.
    pub flow: FlowKey6,
    pub len: u32,
}

/// An IPv6 frame the program balances.
pub enum Parsed6 {
    /// A TCP segment or a UDP datagram (`flow.proto`).
    Flow(Packet6),
    /// An ICMPv6 Packet Too Big about a packet a VIP (or, NAT66, the SNAT address) sent (see
    /// `too_big6`): `flow` is the flow it is about, as the client (or, NAT66, the backend)
    /// sent it; `l4_off` is the ICMPv6 header's offset, the quoted IPv6 header 8 bytes on.
    TooBig(Packet6),
}

/// IPv6 extension headers walked before the upper-layer header, at most. A chain this long
/// is already unusual (hop-by-hop, destination options, routing, destination options is the
/// longest RFC 8200 §4.1 recommends before a fragment header); longer ones go to the kernel.
pub const IPV6_MAX_EXT_HEADERS: usize = 4;
/// Next-header values (IANA): the extension headers walked, the fragment header, ICMPv6.
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_ICMPV6: u8 = 58;
const IPV6_HDR_LEN: usize = 40;
/// An IPv6 frame (RFC 8200): the header and the extension headers before the upper-layer one
/// are checked as IPv4's are — cut short or lying about its length: dropped; a fragment
/// header: passed (no TCP header to balance on, as for IPv4 fragments); hop-by-hop, routing
/// and destination options walked, at most `IPV6_MAX_EXT_HEADERS`. A well-formed TCP segment
/// is a [`Packet6`].
#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext, l3_off: usize) -> Result<Parsed6, Counter> {
    let ip6 = ptr_at::<[u8; IPV6_HDR_LEN]>(ctx, l3_off).ok_or(Counter::DropTruncatedIp)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let (version, payload_len, mut next) = unsafe {
        (
            (*ip6)[0] >> 4,
            u16::from_be_bytes([(*ip6)[4], (*ip6)[5]]) as usize,
            (*ip6)[6],
        )
    };
    // A zero payload length means a jumbogram (RFC 2675), which no Ethernet frame carries.
    if version != 6 || payload_len == 0 {
        return Err(Counter::DropBadIpHeader);
    }
    let frame_len = ctx.data_end() - ctx.data();
    let end = l3_off + IPV6_HDR_LEN + payload_len;
    if end > frame_len {
        return Err(Counter::DropTruncatedIp);
    }
    let mut off = l3_off + IPV6_HDR_LEN;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                // Next header, then the length in 8-octet units beyond the first 8.
                let ext = ptr_at::<[u8; 2]>(ctx, off).ok_or(Counter::DropTruncatedIp)?;
                // SAFETY: as above.
                let (n, len) = unsafe { ((*ext)[0], ((*ext)[1] as usize + 1) * 8) };
                next = n;
                off += len;
                if off > end {
                    return Err(Counter::DropTruncatedIp);
                }
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_TCP => {}
        IPPROTO_UDP => return parse_udp6(ctx, ip6, l3_off, off, end, frame_len),
        NEXTHDR_FRAGMENT => return Err(Counter::PassFragment),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => return Err(Counter::PassIpv6ExtLimit),
        NEXTHDR_ICMPV6 => return too_big6(ctx, ip6, l3_off, off, end),
        _ => return Err(Counter::PassNotTcp),
    }
    let tcp = ptr_at::<[u8; 20]>(ctx, off).ok_or(Counter::DropBadTcpHeader)?;
    // SAFETY: as above.
    let (doff, tcp_flags, sport, dport) = unsafe {
        (
            (*tcp)[12] >> 4,
            (*tcp)[13],
            u16::from_ne_bytes([(*tcp)[0], (*tcp)[1]]),
            u16::from_ne_bytes([(*tcp)[2], (*tcp)[3]]),
        )
    };
    if off + 20 > end || doff < 5 || off + (doff as usize) * 4 > end {
        return Err(Counter::DropBadTcpHeader);
    }
    // Source at bytes 8..24, destination at 24..40 of the fixed header.
    // SAFETY: the fixed header was bounds-checked above.
    let (src_addr, dst_addr) = unsafe {
        let b = ip6 as *const u8;
        (
            *(b.add(8) as *const [u8; 16]),
            *(b.add(24) as *const [u8; 16]),
        )
    };
    Ok(Parsed6::Flow(Packet6 {
        l3_off: l3_off as u32,
        l4_off: off as u32,
        tcp_flags,
        flow: FlowKey6::new(src_addr, dst_addr, sport, dport, IPPROTO_TCP),
        len: frame_len as u32,
    }))
}

/// A UDP/IPv6 datagram: as over IPv4 (`parse_udp`), its length must be the payload's that
/// follows the extension headers; and a checksum of 0 is not allowed over IPv6 for ordinary
/// UDP (RFC 8200 §8.1), so such a datagram is never balanced — it goes to the kernel, which
/// knows whether a tunnel socket accepts it (RFC 6935).
#[inline(always)]
fn parse_udp6(
    ctx: &XdpContext,
    ip6: *const [u8; IPV6_HDR_LEN],
    l3_off: usize,
    off: usize,
    end: usize,
    frame_len: usize,
) -> Result<Parsed6, Counter> {
    let udp = ptr_at::<[u8; UDP_HDR_LEN]>(ctx, off).ok_or(Counter::DropBadUdpHeader)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let (sport, dport, ulen, check) = unsafe {
        (
            u16::from_ne_bytes([(*udp)[0], (*udp)[1]]),
            u16::from_ne_bytes([(*udp)[2], (*udp)[3]]),
            u16::from_be_bytes([(*udp)[4], (*udp)[5]]) as usize,
            u16::from_ne_bytes([(*udp)[6], (*udp)[7]]),
        )
    };
    if ulen < UDP_HDR_LEN || off + ulen != end {
        return Err(Counter::DropBadUdpHeader);
    }
    if check == 0 {
        return Err(Counter::PassUdp6ZeroChecksum);
    }
    // SAFETY: the fixed header was bounds-checked by the caller.
    let (src_addr, dst_addr) = unsafe {
        let b = ip6 as *const u8;
        (
            *(b.add(8) as *const [u8; 16]),
            *(b.add(24) as *const [u8; 16]),
        )
    };
    Ok(Parsed6::Flow(Packet6 {
        l3_off: l3_off as u32,
        l4_off: off as u32,
        tcp_flags: 0,
        flow: FlowKey6::new(src_addr, dst_addr, sport, dport, IPPROTO_UDP),
        len: frame_len as u32,
    }))
}

/// ICMPv6 "Packet Too Big" (type 2; RFC 4443 §3.2, RFC 8201).
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

/// An ICMPv6 Packet Too Big about a TCP segment a VIP sent: as for IPv4 (`parse_too_big`), in
/// DSR the backend answers from the VIP, so a router that finds its packet too big tells the
/// VIP — us — and the backend would never learn the path MTU. The embedded packet is the
/// backend's (VIP → client, without extension headers: a VIP's packets carry none); the flow
/// returned is the client's direction. Anything else ICMPv6 is `PassIcmp`: neighbour
/// discovery and echo go to the kernel as before.
#[inline(always)]
fn too_big6(
    ctx: &XdpContext,
    ip6: *const [u8; IPV6_HDR_LEN],
    l3_off: usize,
    off: usize,
    end: usize,
) -> Result<Parsed6, Counter> {
    // Type, code, checksum, MTU; then the invoking packet's IPv6 header and 8 bytes of TCP.
    let icmp = ptr_at::<[u8; 8]>(ctx, off).ok_or(Counter::PassIcmp)?;
    let inner = ptr_at::<[u8; IPV6_HDR_LEN]>(ctx, off + 8).ok_or(Counter::PassIcmp)?;
    let ports = ptr_at::<[u8; 4]>(ctx, off + 8 + IPV6_HDR_LEN).ok_or(Counter::PassIcmp)?;
    // SAFETY: each pointer was bounds-checked by ptr_at.
    let (kind, next, sport, dport) = unsafe {
        (
            (*icmp)[0],
            (*inner)[6],
            u16::from_ne_bytes([(*ports)[0], (*ports)[1]]),
            u16::from_ne_bytes([(*ports)[2], (*ports)[3]]),
        )
    };
    if kind != ICMPV6_PACKET_TOO_BIG || next != IPPROTO_TCP || off + 8 + IPV6_HDR_LEN + 8 > end {
        return Err(Counter::PassIcmp);
    }
    // SAFETY: both headers were bounds-checked above.
    let (outer_dst, inner_src, inner_dst) = unsafe {
        let (o, i) = (ip6 as *const u8, inner as *const u8);
        (
            *(o.add(24) as *const [u8; 16]),
            *(i.add(8) as *const [u8; 16]),
            *(i.add(24) as *const [u8; 16]),
        )
    };
    // The error goes to the packet's source: the VIP that sent it.
    if inner_src != outer_dst {
        return Err(Counter::PassIcmp);
    }
    Ok(Parsed6::TooBig(Packet6 {
        l3_off: l3_off as u32,
        l4_off: off as u32,
        tcp_flags: 0,
        flow: FlowKey6::new(inner_dst, inner_src, dport, sport, IPPROTO_TCP),
        len: (ctx.data_end() - ctx.data()) as u32,
    }))
}
