//! The checks of a tunnel frame, outer then inner, before anything is stripped: the frame is a
//! tunnel packet to this host, and every length it claims holds.

use aya_ebpf::programs::XdpContext;
use network_types::eth::{EthHdr, EtherType};
use xdp_lb_common::{DecapCounter, DecapSettings, IPPROTO_TCP, IPPROTO_UDP};
use xdp_lb_ebpf::parse::ptr_at;

use super::{DECAP_LOCAL4, DECAP_LOCAL6, DECAP_SETTINGS};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
/// More-fragments flag and fragment offset of the IPv4 `frags` field (RFC 791 §3.1).
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
const IPV6_FRAGMENT: u8 = 44;
const UDP_LEN: usize = 8;

/// Which tunnel a frame carries.
pub(super) enum Tunnel {
    Ipip,
    Ip6ip6,
    Ip4in6,
    Gue,
}

/// A checked tunnel frame: how many bytes after the Ethernet header go (the outer IP header,
/// and GUE's UDP header), and the inner family.
pub(super) struct Found {
    pub(super) tunnel: Tunnel,
    /// From the frame's start to the inner packet, minus the Ethernet header's 14: the
    /// length of the outer headers.
    pub(super) outer_len: u32,
    pub(super) inner_v6: bool,
    /// The frame's destination and source MACs, for the Ethernet header the stripped frame
    /// gets (read while the header is known to be there).
    pub(super) macs: [u8; 12],
}

/// The frame's tunnel, checked, or what to do with it instead.
#[inline(always)]
pub(super) fn tunnel(ctx: &XdpContext) -> Result<Found, DecapCounter> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(DecapCounter::PassNotTunnel)?;
    // SAFETY: bounds-checked just above.
    let (ether_type, macs) = unsafe { ((*eth).ether_type, *(eth as *const [u8; 12])) };
    let settings = DECAP_SETTINGS
        .get_ptr(0)
        .ok_or(DecapCounter::PassNotTunnel)?;
    // SAFETY: a map value pointer (array lookups never fail in range); plain integers.
    let settings = unsafe { &*settings };
    let gue_port_be = settings.gue_port_be;
    let (tunnel, outer_len, inner_len, inner_v6) = if ether_type == ETH_P_IPV4 {
        outer4(ctx, settings)?
    } else if ether_type == ETH_P_IPV6 {
        outer6(ctx, settings)?
    } else {
        return Err(DecapCounter::PassNotTunnel);
    };
    let inner_at = EthHdr::LEN + outer_len as usize;
    if inner_v6 {
        inner6(ctx, inner_at, inner_len, gue_port_be)?;
    } else {
        inner4(ctx, inner_at, inner_len, gue_port_be)?;
    }
    Ok(Found {
        tunnel,
        outer_len,
        inner_v6,
        macs,
    })
}

/// The frame's length, measured as the verifier allows: the end pointer's distance is
/// compared, never computed (see `fits`).
#[inline(always)]
fn fits(ctx: &XdpContext, end: usize) -> bool {
    ctx.data() + end <= ctx.data_end()
}

/// Whether `dst` is one of this host's IPv4 addresses: the settings' first few, else the
/// hash of all of them.
#[inline(always)]
fn local4(settings: &DecapSettings, dst: u32) -> bool {
    settings.local4.contains(&dst) || DECAP_LOCAL4.get_ptr(dst).is_some()
}

#[inline(always)]
fn local6(settings: &DecapSettings, dst: &[u8; 16]) -> bool {
    settings.local6.iter().any(|a| a == dst) || DECAP_LOCAL6.get_ptr(*dst).is_some()
}

/// An outer IPv4 header: (tunnel, outer length, inner length, inner is IPv6).
#[inline(always)]
fn outer4(
    ctx: &XdpContext,
    settings: &DecapSettings,
) -> Result<(Tunnel, u32, u32, bool), DecapCounter> {
    let gue_port_be = settings.gue_port_be;
    let ip: *const [u8; 20] = ptr_at(ctx, EthHdr::LEN).ok_or(DecapCounter::PassNotTunnel)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    let proto = b[9];
    let ihl = (b[0] & 0x0f) as usize * 4;
    let tot_len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let gue = proto == IPPROTO_UDP && gue_port_be != 0 && {
        // The UDP header right after a 20-byte header; a GUE packet with IPv4 options is
        // taken for what it is below (its UDP header is further on).
        let udp: Option<*mut [u8; 4]> = ptr_at(ctx, EthHdr::LEN + (ihl & 0x3c));
        // SAFETY: bounds-checked by ptr_at.
        udp.is_some_and(|u| u16::from_ne_bytes(unsafe { [(*u)[2], (*u)[3]] }) == gue_port_be)
    };
    if proto != IPPROTO_IPIP && proto != IPPROTO_IPV6 && !gue {
        return Err(DecapCounter::PassNotTunnel);
    }
    let dst = u32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
    // Zero never matches an unused slot: 0.0.0.0 is no unicast destination.
    if dst == 0 || !local4(settings, dst) {
        return Err(DecapCounter::PassNotLocal);
    }
    if b[0] >> 4 != 4 || ihl < 20 || tot_len < ihl {
        return Err(DecapCounter::DropBadOuter);
    }
    if !fits(ctx, EthHdr::LEN + tot_len) {
        return Err(DecapCounter::DropTruncatedOuter);
    }
    if u16::from_be_bytes([b[6], b[7]]) & IP_MF_OFFSET_MASK != 0 {
        return Err(DecapCounter::PassFragment);
    }
    let payload = (tot_len - ihl) as u32;
    if gue {
        let (inner_len, inner_v6) = gue_inner(ctx, EthHdr::LEN + (ihl & 0x3c), payload)?;
        return Ok((Tunnel::Gue, (ihl + UDP_LEN) as u32, inner_len, inner_v6));
    }
    if proto == IPPROTO_IPV6 {
        // IPv6 in IPv4 (6in4, "sit"): not a tunnel the LB sends.
        return Err(DecapCounter::PassNotTunnel);
    }
    Ok((Tunnel::Ipip, ihl as u32, payload, false))
}

/// An outer IPv6 header (no extension headers: the LB sends none).
#[inline(always)]
fn outer6(
    ctx: &XdpContext,
    settings: &DecapSettings,
) -> Result<(Tunnel, u32, u32, bool), DecapCounter> {
    let gue_port_be = settings.gue_port_be;
    let ip: *const [u8; 40] = ptr_at(ctx, EthHdr::LEN).ok_or(DecapCounter::PassNotTunnel)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    let next = b[6];
    let gue = next == IPPROTO_UDP && gue_port_be != 0 && {
        let udp: Option<*mut [u8; 4]> = ptr_at(ctx, EthHdr::LEN + 40);
        // SAFETY: bounds-checked by ptr_at.
        udp.is_some_and(|u| u16::from_ne_bytes(unsafe { [(*u)[2], (*u)[3]] }) == gue_port_be)
    };
    if next != IPPROTO_IPIP && next != IPPROTO_IPV6 && next != IPV6_FRAGMENT && !gue {
        return Err(DecapCounter::PassNotTunnel);
    }
    // SAFETY: bounds-checked above; 16 bytes inside the 40.
    let dst = unsafe { *(b.as_ptr().add(24) as *const [u8; 16]) };
    if dst == [0; 16] || !local6(settings, &dst) {
        return Err(DecapCounter::PassNotLocal);
    }
    if next == IPV6_FRAGMENT {
        // Maybe a fragment of a tunnel packet; the kernel's business either way.
        return Err(DecapCounter::PassFragment);
    }
    if b[0] >> 4 != 6 {
        return Err(DecapCounter::DropBadOuter);
    }
    let payload = u16::from_be_bytes([b[4], b[5]]) as u32;
    if !fits(ctx, EthHdr::LEN + 40 + payload as usize) {
        return Err(DecapCounter::DropTruncatedOuter);
    }
    if gue {
        let (inner_len, inner_v6) = gue_inner(ctx, EthHdr::LEN + 40, payload)?;
        return Ok((Tunnel::Gue, 40 + UDP_LEN as u32, inner_len, inner_v6));
    }
    if next == IPPROTO_IPV6 {
        Ok((Tunnel::Ip6ip6, 40, payload, true))
    } else {
        Ok((Tunnel::Ip4in6, 40, payload, false))
    }
}

/// GUE's UDP header at `at` (the IP payload, `payload` bytes): its length must be the whole
/// payload, and the inner packet's first nibble says its family (GUE variant 1: 0100 IPv4,
/// 0110 IPv6; variant 0, a GUE header, we do not send and do not take).
#[inline(always)]
fn gue_inner(ctx: &XdpContext, at: usize, payload: u32) -> Result<(u32, bool), DecapCounter> {
    let udp: *const [u8; 9] = ptr_at(ctx, at & 0x7f).ok_or(DecapCounter::DropTruncatedOuter)?;
    // SAFETY: bounds-checked just above.
    let u = unsafe { &*udp };
    let len = u16::from_be_bytes([u[4], u[5]]) as u32;
    if len != payload || len < UDP_LEN as u32 {
        return Err(DecapCounter::DropBadOuter);
    }
    let v6 = match u[8] >> 4 {
        4 => false,
        6 => true,
        _ => return Err(DecapCounter::DropBadInner),
    };
    Ok((len - UDP_LEN as u32, v6))
}

/// The inner IPv4 packet at `at`, `len` bytes by the outer headers' count.
#[inline(always)]
fn inner4(ctx: &XdpContext, at: usize, len: u32, gue_port_be: u16) -> Result<(), DecapCounter> {
    let ip: *const [u8; 20] = ptr_at(ctx, at & 0xff).ok_or(DecapCounter::DropTruncatedInner)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    let ihl = (b[0] & 0x0f) as u32 * 4;
    let tot_len = u16::from_be_bytes([b[2], b[3]]) as u32;
    if b[0] >> 4 != 4 || ihl < 20 || tot_len != len || tot_len < ihl {
        return Err(DecapCounter::DropBadInner);
    }
    let proto = b[9];
    if proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 {
        return Err(DecapCounter::DropNested);
    }
    if u16::from_be_bytes([b[6], b[7]]) & IP_MF_OFFSET_MASK != 0 {
        // An inner fragment: no L4 header to check (or only part of one); the stack
        // reassembles it and checks that.
        return Ok(());
    }
    let l4_at = (at & 0xff) + (ihl as usize & 0x3c);
    l4(ctx, l4_at, proto, tot_len - ihl, gue_port_be)?;
    if proto == IPPROTO_TCP {
        super::mss::remember4(ctx, at, l4_at);
    }
    Ok(())
}

/// The inner IPv6 packet at `at`, `len` bytes by the outer headers' count.
#[inline(always)]
fn inner6(ctx: &XdpContext, at: usize, len: u32, gue_port_be: u16) -> Result<(), DecapCounter> {
    let ip: *const [u8; 40] = ptr_at(ctx, at & 0xff).ok_or(DecapCounter::DropTruncatedInner)?;
    // SAFETY: bounds-checked just above.
    let b = unsafe { &*ip };
    let payload = u16::from_be_bytes([b[4], b[5]]) as u32;
    if b[0] >> 4 != 6 || payload + 40 != len {
        return Err(DecapCounter::DropBadInner);
    }
    let next = b[6];
    if next == IPPROTO_IPIP || next == IPPROTO_IPV6 {
        return Err(DecapCounter::DropNested);
    }
    // Extension headers are the stack's to walk; TCP and UDP right after the header are
    // checked here, as the LB's own parser does.
    l4(ctx, (at & 0xff) + 40, next, payload, gue_port_be)?;
    if next == IPPROTO_TCP {
        super::mss::remember6(ctx, at, (at & 0xff) + 40);
    }
    Ok(())
}

/// The inner TCP or UDP header at `at` of a segment `len` bytes long: TCP's data offset and
/// UDP's length must hold; a UDP datagram to the GUE port would be a tunnel in a tunnel.
#[inline(always)]
fn l4(
    ctx: &XdpContext,
    at: usize,
    proto: u8,
    len: u32,
    gue_port_be: u16,
) -> Result<(), DecapCounter> {
    if proto == IPPROTO_TCP {
        let tcp: *const [u8; 20] =
            ptr_at(ctx, at & 0x1ff).ok_or(DecapCounter::DropTruncatedInner)?;
        // SAFETY: bounds-checked just above.
        let doff = unsafe { (*tcp)[12] >> 4 } as u32 * 4;
        if doff < 20 || doff > len {
            return Err(DecapCounter::DropBadInner);
        }
    } else if proto == IPPROTO_UDP {
        let udp: *const [u8; 8] =
            ptr_at(ctx, at & 0x1ff).ok_or(DecapCounter::DropTruncatedInner)?;
        // SAFETY: bounds-checked just above.
        let u = unsafe { &*udp };
        if u16::from_be_bytes([u[4], u[5]]) as u32 != len || len < UDP_LEN as u32 {
            return Err(DecapCounter::DropBadInner);
        }
        if gue_port_be != 0 && u16::from_ne_bytes([u[2], u[3]]) == gue_port_be {
            return Err(DecapCounter::DropNested);
        }
    }
    Ok(())
}
