//! How a packet is parsed: Ethernet (at most one 802.1Q/802.1ad tag), then IPv4 and TCP or
//! UDP, or IPv6, its extension headers and TCP or UDP, checked by the same policy.
//!
//! Every header is reached through [`ptr_at`], the one bounds check the verifier needs to see
//! before each access. The outcome is either a [`Parsed`] frame (a well-formed TCP or UDP over
//! IPv4 [`Packet`], or over IPv6 [`Packet6`]) or the [`Counter`] that says why it is not one; `Pass*` counters go to the kernel untouched and
//! `Drop*` counters are dropped (see `xdp_lb_common::Counter` for the policy).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    vlan::VlanHdr,
};
use xdp_lb_common::{Counter, FlowKey, FlowKey6, IPPROTO_TCP, IPPROTO_UDP};

/// ICMP's protocol number (RFC 792).
pub const IPPROTO_ICMP: u8 = 1;

/// A pointer to a `T` at `offset` bytes into the frame, or `None` if the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A well-formed TCP or UDP over IPv4 frame (`flow.proto` says which).
pub struct Packet {
    pub eth: *mut EthHdr,
    /// For NAT's rewrite (bounds-checked for the whole header).
    pub ip: *mut Ipv4Hdr,
    /// For NAT's rewrite: the L4 header's two ports, and its checksum field (TCP's at byte 16,
    /// UDP's at byte 6), each bounds-checked.
    pub ports: *mut [u8; 4],
    pub l4_check: *mut [u8; 2],
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN); 0 for UDP, which has none.
    pub tcp_flags: u8,
    /// The 5-tuple, in network order as carried by the packet.
    pub flow: FlowKey,
    /// Frame length in bytes (for the byte counters).
    pub len: u32,
}

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

/// A frame the program balances: the two families take separate paths and maps.
pub enum Parsed {
    V4(Packet),
    /// An IPv6 frame, its IPv6 header at this offset: parsed by [`parse_ipv6`] on the IPv6
    /// path, which the program keeps out of line (a BPF-to-BPF call) so the IPv4 path's code
    /// and stack stay what they were before IPv6.
    Ipv6(usize),
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

const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;
const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
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
/// More-fragments flag and fragment offset of the IPv4 `frags` field (RFC 791 §3.1).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// TCP flag bits of byte 13 (RFC 9293 §3.1).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The IPv4 header of a frame, checked: where it is and what it says.
struct L3 {
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    l3_off: usize,
    ihl_bytes: usize,
    proto: u8,
    tot_len: u16,
    src: u32,
    dst: u32,
}

/// The IPv4 header, or why there is none: `Ipv6` (the IPv6 header's offset) for an IPv6
/// frame, which the caller parses (the TCP path) or leaves alone (the ICMP path).
enum NotV4 {
    Ipv6(usize),
    Verdict(Counter),
}

impl From<Counter> for NotV4 {
    #[inline(always)]
    fn from(c: Counter) -> Self {
        NotV4::Verdict(c)
    }
}

#[inline(always)]
fn parse_l3(ctx: &XdpContext) -> Result<L3, NotV4> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3_off = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, l3_off).ok_or(Counter::DropTruncatedEth)?;
        ether_type = unsafe { (*vlan).ether_type };
        l3_off += VlanHdr::LEN;
    }
    if ether_type != ETH_P_IPV4 {
        // IPv6 after the IPv4 test: IPv4 frames pay no compare for it.
        if ether_type == ETH_P_IPV6 {
            return Err(NotV4::Ipv6(l3_off));
        }
        // Includes a second VLAN tag: we forward at most one (documented limit).
        return Err(Counter::PassNotIp.into());
    }

    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3_off).ok_or(Counter::DropTruncatedIp)?;
    let (vihl, proto, tot_len, frags, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            u16::from_be_bytes((*ip).tot_len),
            u16::from_be_bytes((*ip).frags),
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    // Masking keeps the offset provably in 20..=60 for the verifier.
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN || (tot_len as usize) < ihl_bytes {
        return Err(Counter::DropBadIpHeader.into());
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP {
        return Err(Counter::PassNotTcp.into());
    }
    if frags & IP_MF_OFFSET_MASK != 0 {
        return Err(Counter::PassFragment.into());
    }
    Ok(L3 {
        eth,
        ip,
        l3_off,
        ihl_bytes,
        proto,
        tot_len,
        src,
        dst,
    })
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Counter> {
    let L3 {
        eth,
        ip,
        l3_off,
        ihl_bytes,
        proto,
        tot_len,
        src,
        dst,
    } = match parse_l3(ctx) {
        Ok(l3) => l3,
        Err(NotV4::Ipv6(l3_off)) => return Ok(Parsed::Ipv6(l3_off)),
        Err(NotV4::Verdict(c)) => return Err(c),
    };
    if proto == IPPROTO_UDP {
        return parse_udp(ctx, eth, ip, l3_off, ihl_bytes, tot_len, src, dst);
    }
    if proto != IPPROTO_TCP {
        // ICMP: see `parse_too_big`.
        return Err(Counter::PassNotTcp);
    }
    // Verifier constraint: this pointer check must come before the length checks below.
    // Otherwise LLVM proves it redundant from them (frame_len is data_end - data) and drops
    // it, and the verifier, which does not follow that arithmetic, rejects the TCP access.
    let l4_off = l3_off + ihl_bytes;
    let tcp: *mut TcpHdr = ptr_at(ctx, l4_off).ok_or(Counter::DropBadTcpHeader)?;
    let frame_len = ctx.data_end() - ctx.data();
    if l3_off + tot_len as usize > frame_len {
        return Err(Counter::DropTruncatedIp);
    }
    if (tot_len as usize) < ihl_bytes + TcpHdr::LEN {
        return Err(Counter::DropBadTcpHeader);
    }
    let (sport, dport, doff, tcp_flags) = unsafe {
        (
            u16::from_ne_bytes((*tcp).source),
            u16::from_ne_bytes((*tcp).dest),
            // Data offset: the high 4 bits of byte 12 of the TCP header (RFC 9293 §3.1).
            *((tcp as *const u8).add(12)) >> 4,
            *((tcp as *const u8).add(13)),
        )
    };
    // The header must fit in the IP payload: a data offset that claims more (up to 60 bytes)
    // than the packet carries is a malformed segment, never forwarded (RFC 9293 §3.1).
    if doff < 5 || (doff as usize) * 4 > tot_len as usize - ihl_bytes {
        return Err(Counter::DropBadTcpHeader);
    }

    Ok(Parsed::V4(Packet {
        eth,
        ip,
        ports: tcp.cast(),
        // SAFETY: inside the 20 bytes ptr_at checked.
        l4_check: unsafe { (tcp as *mut u8).add(16) }.cast(),
        tcp_flags,
        flow: FlowKey::new(src, dst, sport, dport, proto),
        len: frame_len as u32,
    }))
}

/// UDP's header length (RFC 768): ports, length, checksum.
pub const UDP_HDR_LEN: usize = 8;

/// A UDP/IPv4 datagram (RFC 768): its length field must be the IP payload's length, exactly.
/// Shorter would leave bytes past the datagram that a backend's stack trims and we would
/// forward anyway; longer is a datagram cut short. Either is a lie we do not pass on. A
/// checksum of 0 ("none", allowed over IPv4) is fine: NAT keeps it 0 (`csum::apply_udp`).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // inlined: the parser's locals
fn parse_udp(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    l3_off: usize,
    ihl_bytes: usize,
    tot_len: u16,
    src: u32,
    dst: u32,
) -> Result<Parsed, Counter> {
    // Verifier constraint: the pointer check first, as for TCP (see `parse`).
    let udp: *mut [u8; UDP_HDR_LEN] =
        ptr_at(ctx, l3_off + ihl_bytes).ok_or(Counter::DropBadUdpHeader)?;
    let frame_len = ctx.data_end() - ctx.data();
    if l3_off + tot_len as usize > frame_len {
        return Err(Counter::DropTruncatedIp);
    }
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let (sport, dport, ulen) = unsafe {
        (
            u16::from_ne_bytes([(*udp)[0], (*udp)[1]]),
            u16::from_ne_bytes([(*udp)[2], (*udp)[3]]),
            u16::from_be_bytes([(*udp)[4], (*udp)[5]]) as usize,
        )
    };
    if ulen < UDP_HDR_LEN || ulen != tot_len as usize - ihl_bytes {
        return Err(Counter::DropBadUdpHeader);
    }
    Ok(Parsed::V4(Packet {
        eth,
        ip,
        ports: udp.cast(),
        // SAFETY: inside the 8 bytes ptr_at checked.
        l4_check: unsafe { (udp as *mut u8).add(6) }.cast(),
        tcp_flags: 0,
        flow: FlowKey::new(src, dst, sport, dport, IPPROTO_UDP),
        len: frame_len as u32,
    }))
}

/// An ICMP "fragmentation needed" (type 3, code 4; RFC 792, RFC 1191) about a packet a VIP
/// sent: in DSR the backend answers clients from the VIP, so a router on the way back that
/// finds a packet too big reports it to the VIP — to us, not to the backend, which would never
/// learn the path MTU. `flow` is the flow the error is about, as the client sent it
/// (client → VIP), so it finds that flow's backend.
pub struct TooBig {
    pub eth: *mut EthHdr,
    pub flow: FlowKey,
    /// For NAT's translation (each bounds-checked): the outer IPv4 header, the ICMP header, the
    /// embedded IPv4 header and the first 8 bytes of the embedded TCP header.
    pub ip: *mut Ipv4Hdr,
    pub icmp: *mut [u8; ICMP_HDR_LEN],
    pub inner: *mut Ipv4Hdr,
    pub ports: *mut [u8; 8],
}

/// ICMP type 3 "destination unreachable", code 4 "fragmentation needed and DF set".
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// Type, code, checksum, unused, next-hop MTU (RFC 1191 §4): the embedded header follows.
pub const ICMP_HDR_LEN: usize = 8;

/// Parses a frame the TCP parser passed as not TCP: a "fragmentation needed" about a VIP's TCP
/// packet, or the reason it is not one. Called only for non-TCP frames, so the TCP path pays
/// nothing for it. Anything else (echo, other errors, cut-short or odd embedded headers) is
/// `PassIcmp`: the kernel answers or ignores it as before.
#[inline(always)]
pub fn parse_too_big(ctx: &XdpContext) -> Result<TooBig, Counter> {
    let l3 = match parse_l3(ctx) {
        Ok(l3) => l3,
        Err(NotV4::Ipv6(..)) => return Err(Counter::PassNotTcp),
        Err(NotV4::Verdict(c)) => return Err(c),
    };
    if l3.proto != IPPROTO_ICMP {
        return Err(Counter::PassNotTcp);
    }
    let l4_off = l3.l3_off + l3.ihl_bytes;
    // The embedded IPv4 header (without options: a VIP's packets carry none) and the first 8
    // bytes of its TCP header, which RFC 792 guarantees and which hold the ports.
    let icmp: *mut [u8; ICMP_HDR_LEN] = ptr_at(ctx, l4_off).ok_or(Counter::PassIcmp)?;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, l4_off + ICMP_HDR_LEN).ok_or(Counter::PassIcmp)?;
    let ports: *mut [u8; 8] =
        ptr_at(ctx, l4_off + ICMP_HDR_LEN + Ipv4Hdr::LEN).ok_or(Counter::PassIcmp)?;
    // SAFETY: each pointer was bounds-checked by ptr_at.
    let (kind, code, vihl, proto, inner_src, inner_dst, sport, dport) = unsafe {
        (
            (*icmp)[0],
            (*icmp)[1],
            (*inner).vihl,
            (*inner).proto,
            u32::from_ne_bytes((*inner).src_addr),
            u32::from_ne_bytes((*inner).dst_addr),
            u16::from_ne_bytes([(*ports)[0], (*ports)[1]]),
            u16::from_ne_bytes([(*ports)[2], (*ports)[3]]),
        )
    };
    if kind != ICMP_DEST_UNREACH
        || code != ICMP_FRAG_NEEDED
        || vihl != 0x45
        || proto != IPPROTO_TCP
        // The error goes to the packet's source: the VIP that sent it.
        || inner_src != l3.dst
        || (l3.tot_len as usize) < l3.ihl_bytes + ICMP_HDR_LEN + Ipv4Hdr::LEN + 8
    {
        return Err(Counter::PassIcmp);
    }
    Ok(TooBig {
        eth: l3.eth,
        ip: l3.ip,
        icmp,
        inner,
        ports,
        flow: FlowKey::new(inner_dst, inner_src, dport, sport, IPPROTO_TCP),
    })
}

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
