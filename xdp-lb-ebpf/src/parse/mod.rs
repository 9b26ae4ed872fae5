//! How a packet is parsed: Ethernet (at most one 802.1Q/802.1ad tag), then IPv4 and TCP or
//! UDP (here), or IPv6, its extension headers and TCP or UDP (`ipv6.rs`), checked by the same
//! policy; and the ICMP errors about a VIP's packets (`icmp.rs`, and `ipv6.rs` for ICMPv6).
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
use xdp_lb_common::{Counter, FlowKey, IPPROTO_TCP, IPPROTO_UDP};

pub use self::{
    icmp::{ICMP_HDR_LEN, TooBig, parse_too_big},
    ipv6::{IPV6_MAX_EXT_HEADERS, Packet6, Parsed6, parse_ipv6},
};

mod icmp;
mod ipv6;

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

/// A frame the program balances: the two families take separate paths and maps.
pub enum Parsed {
    V4(Packet),
    /// An IPv6 frame, its IPv6 header at this offset: parsed by [`parse_ipv6`] on the IPv6
    /// path, which the program keeps out of line (a BPF-to-BPF call) so the IPv4 path's code
    /// and stack stay what they were before IPv6.
    Ipv6(usize),
}

const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;
const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
/// More-fragments flag and fragment offset of the IPv4 `frags` field (RFC 791 §3.1).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// TCP flag bits of byte 13 (RFC 9293 §3.1).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The IPv4 header of a frame, checked: where it is and what it says.
pub(super) struct L3 {
    pub(super) eth: *mut EthHdr,
    pub(super) ip: *mut Ipv4Hdr,
    pub(super) l3_off: usize,
    pub(super) ihl_bytes: usize,
    pub(super) proto: u8,
    pub(super) tot_len: u16,
    pub(super) src: u32,
    pub(super) dst: u32,
}

/// The IPv4 header, or why there is none: `Ipv6` (the IPv6 header's offset) for an IPv6
/// frame, which the caller parses (the TCP path) or leaves alone (the ICMP path).
pub(super) enum NotV4 {
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
pub(super) fn parse_l3(ctx: &XdpContext) -> Result<L3, NotV4> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3_off = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, l3_off).ok_or(Counter::DropTruncatedEth)?;
        // SAFETY: ptr_at checked that the tag lies inside the frame.
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
    // SAFETY: ptr_at checked that the header lies inside the frame.
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
    // SAFETY: ptr_at checked that the header lies inside the frame.
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
#[expect(
    clippy::too_many_arguments,
    reason = "inlined: the arguments are the parser's locals"
)]
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
