//! ICMP "fragmentation needed" about a packet a VIP sent, parsed off the TCP path.

use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use xdp_lb_common::{Counter, FlowKey, IPPROTO_TCP};

use super::{IPPROTO_ICMP, NotV4, parse_l3, ptr_at};

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
        // An IPv4 length beyond the frame: not sent on (it would reach the backend malformed;
        // found by `cargo xtask fuzz`), left to the kernel, which drops it.
        || l3.l3_off + l3.tot_len as usize > ctx.data_end() - ctx.data()
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
