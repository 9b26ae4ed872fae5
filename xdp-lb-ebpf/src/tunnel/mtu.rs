//! MTU through a tunnel: the outer headers make every packet longer, so a client packet that
//! fit its path to us may not fit ours to the backend once encapsulated. XDP cannot fragment,
//! so such a packet is answered, in place, with what a router on the path would have sent:
//! ICMP "fragmentation needed" (RFC 1191; IPv4 with DF) or ICMPv6 "packet too big" (RFC 8201),
//! naming the largest inner packet that fits, from the VIP. The client's stack lowers its path
//! MTU and resends. Rate-limited per CPU as the kernel limits its own ICMP errors.
//!
//! `mss_clamp` avoids most of those errors: a SYN's MSS option is lowered to what fits, so the
//! client's TCP never sends a segment too big (the backend's answers go to the client
//! directly and are not ours to clamp).

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use xdp_lb_common::{Counter, csum};
use xdp_lb_ebpf::parse::{self, IPPROTO_ICMP};

use super::{Inner, encap::l3};
use crate::{maps::TUNNEL_ICMP_BUDGET, stats::count};

/// ICMP errors each CPU may send per second (the kernel's own default limit is 1000 a second
/// host-wide, `net.ipv4.icmp_msgs_per_sec`, burst 50; per CPU we allow 100).
const ICMP_PER_CPU_PER_SEC: u32 = 100;
/// ICMPv4: the error quotes the offending packet's IPv4 header (20 bytes: only packets without
/// options are answered) and its first 8 bytes beyond (RFC 792: the ports, TCP's sequence).
const QUOTE4: usize = 28;
/// ICMPv6: the error quotes 128 bytes, the IPv6 header and 88 more, room for the usual
/// extension headers before the ports (RFC 4443 §3.2 allows up to the minimum MTU; the
/// packet is longer than 1280, so all of it is there).
const QUOTE6: usize = 128;
const IPPROTO_ICMPV6: u8 = 58;

/// Answers the frame (an inner packet larger than `mtu`) with an ICMP error to its sender,
/// built in place: XDP_TX.
#[inline(always)]
pub(super) fn too_big(ctx: &XdpContext, inner: &Inner, len: u32, mtu: u16) -> Result<u32, Counter> {
    if inner.proto == IPPROTO_ICMP || inner.proto == IPPROTO_ICMPV6 {
        // Never an ICMP error about an ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
        return Err(Counter::DropTunnelTooBig);
    }
    let l3 = l3(inner);
    if inner.v6 != 0 {
        check_budget()?;
        too_big6(ctx, l3, l3 as u32 + 48 + len, mtu)?;
    } else {
        let ip: *const [u8; 20] = parse::ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIp)?;
        // SAFETY: bounds-checked just above.
        let (vihl, df) = unsafe { ((*ip)[0], (*ip)[6] & 0x40 != 0) };
        if vihl != 0x45 || !df {
            // Without DF the sender allows fragmentation, which XDP cannot do; with IP
            // options the quote would need more than 28 bytes (never seen from real clients).
            return Err(Counter::DropTunnelTooBig);
        }
        check_budget()?;
        frag_needed4(ctx, l3, l3 as u32 + 28 + len, mtu)?;
    }
    count(Counter::TunnelIcmpTooBig);
    Ok(xdp_action::XDP_TX)
}

#[inline(always)]
fn check_budget() -> Result<(), Counter> {
    let budget = TUNNEL_ICMP_BUDGET
        .get_ptr_mut(0)
        .ok_or(Counter::DropNoSettings)?;
    // SAFETY: a helper without preconditions; this CPU's slot of a per-CPU array.
    unsafe {
        let now = bpf_ktime_get_coarse_ns();
        if now.wrapping_sub((*budget).window_start_ns) >= 1_000_000_000 {
            (*budget).window_start_ns = now;
            (*budget).used = 0;
        }
        if (*budget).used >= ICMP_PER_CPU_PER_SEC {
            return Err(Counter::DropTunnelIcmpRateLimited);
        }
        (*budget).used += 1;
    }
    Ok(())
}

/// Swaps the MACs of the Ethernet header now at 0, taken from where it was (`grow` bytes on);
/// a VLAN tag and the EtherType (the family does not change) are copied as they were.
#[inline(always)]
fn reply_eth(ctx: &XdpContext, grow: usize) -> Result<(), Counter> {
    let eth: *mut [u8; 18] = parse::ptr_at(ctx, 0).ok_or(Counter::DropTruncatedEth)?;
    let old: *const [u8; 18] = parse::ptr_at(ctx, grow).ok_or(Counter::DropTruncatedEth)?;
    // SAFETY: both bounds-checked just above; disjoint, as `grow` (28 or 48) exceeds 18.
    unsafe {
        let (e, o) = (eth as *mut u8, old as *const u8);
        for i in 0..6 {
            *e.add(i) = *o.add(6 + i);
            *e.add(6 + i) = *o.add(i);
        }
        for i in 12..18 {
            *e.add(i) = *o.add(i);
        }
    }
    Ok(())
}

/// Cuts the frame from `now` bytes to `len`. Its length is passed, not measured: the verifier
/// refuses arithmetic on the frame's end pointer. `now` is what the IP header says (bytes
/// past it, if any, stay behind the new packet, which its own length field ignores).
#[inline(always)]
fn truncate(ctx: &XdpContext, now: u32, len: usize) -> Result<(), Counter> {
    // SAFETY: the program's context; the helper refuses a length it cannot take.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - now as i32) } != 0 {
        return Err(Counter::DropTunnelTooBig);
    }
    Ok(())
}

/// The one's-complement sum of `N` bytes of packet memory at `p` (the kernel's csum_diff with
/// nothing removed), 32 bits wide as the helper returns it.
#[inline(always)]
fn sum_of<const N: usize>(p: *mut [u8; N]) -> u32 {
    // SAFETY: `p` is bounds-checked packet memory of N bytes (a multiple of 4, at most 512).
    unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, 0) as u32 }
}

/// ICMP type 3 code 4 (RFC 792, RFC 1191: the next-hop MTU in the second word): a new IPv4
/// and ICMP header in front of the packet's first 28 bytes, from the VIP to the client.
#[inline(always)]
fn frag_needed4(ctx: &XdpContext, l3: usize, grown: u32, mtu: u16) -> Result<(), Counter> {
    const GROW: usize = 28;
    // SAFETY: the program's context; the helper checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return Err(Counter::DropTunnelTooBig);
    }
    reply_eth(ctx, GROW)?;
    let hdr: *mut [u8; 28] = parse::ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIp)?;
    let quote: *const [u8; 20] = parse::ptr_at(ctx, l3 + GROW).ok_or(Counter::DropTruncatedIp)?;
    let len = ((20 + 8 + QUOTE4) as u16).to_be_bytes();
    // SAFETY: bounds-checked just above; disjoint (28 bytes apart).
    unsafe {
        let (h, q) = (hdr as *mut u8, quote as *const u8);
        // From the quoted packet's destination (the VIP) to its source (the client).
        let src = (q.add(16) as *const u32).read_unaligned();
        let dst = (q.add(12) as *const u32).read_unaligned();
        // IPv4: precedence "internetwork control" as the kernel's ICMP errors; DF; TTL 64.
        *h = 0x45;
        *h.add(1) = 0xc0;
        *h.add(2) = len[0];
        *h.add(3) = len[1];
        *(h.add(4) as *mut [u8; 4]) = [0, 0, 0x40, 0];
        *h.add(8) = 64;
        *h.add(9) = IPPROTO_ICMP;
        let sum = u16::from_ne_bytes([0x45, 0xc0]) as u32
            + u16::from_ne_bytes(len) as u32
            + u16::from_ne_bytes([0x40, 0]) as u32
            + u16::from_ne_bytes([64, IPPROTO_ICMP]) as u32
            + (src & 0xffff)
            + (src >> 16)
            + (dst & 0xffff)
            + (dst >> 16);
        let check = (!csum::fold(sum)).to_ne_bytes();
        *h.add(10) = check[0];
        *h.add(11) = check[1];
        (h.add(12) as *mut u32).write_unaligned(src);
        (h.add(16) as *mut u32).write_unaligned(dst);
        // ICMP: type, code, checksum (below), unused, next-hop MTU.
        let m = mtu.to_be_bytes();
        *(h.add(20) as *mut [u8; 4]) = [3, 4, 0, 0];
        *(h.add(24) as *mut [u8; 4]) = [0, 0, m[0], m[1]];
    }
    // The ICMP checksum covers the message: its header and the quote, 36 bytes.
    let msg: *mut [u8; 8 + QUOTE4] = parse::ptr_at(ctx, l3 + 20).ok_or(Counter::DropTruncatedIp)?;
    let check = (!csum::fold(sum_of(msg))).to_ne_bytes();
    // SAFETY: bounds-checked just above.
    unsafe {
        (*msg)[2] = check[0];
        (*msg)[3] = check[1];
    }
    truncate(ctx, grown, l3 + 20 + 8 + QUOTE4)
}

/// ICMPv6 type 2 (RFC 4443 §3.2: the MTU in the second word): a new IPv6 and ICMPv6 header in
/// front of the packet's first 128 bytes, from the VIP to the client.
#[inline(always)]
fn too_big6(ctx: &XdpContext, l3: usize, grown: u32, mtu: u16) -> Result<(), Counter> {
    const GROW: usize = 48;
    // SAFETY: as in frag_needed4.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return Err(Counter::DropTunnelTooBig);
    }
    reply_eth(ctx, GROW)?;
    let hdr: *mut [u8; 48] = parse::ptr_at(ctx, l3).ok_or(Counter::DropTruncatedIp)?;
    let quote: *const [u8; 40] = parse::ptr_at(ctx, l3 + GROW).ok_or(Counter::DropTruncatedIp)?;
    let len = ((8 + QUOTE6) as u16).to_be_bytes();
    let m = (mtu as u32).to_be_bytes();
    // SAFETY: bounds-checked just above; disjoint.
    let pseudo = unsafe {
        let (h, q) = (hdr as *mut u8, &*quote);
        *h = 0x60;
        *h.add(1) = 0;
        *h.add(2) = 0;
        *h.add(3) = 0;
        *h.add(4) = len[0];
        *h.add(5) = len[1];
        *h.add(6) = IPPROTO_ICMPV6;
        *h.add(7) = 64;
        // From the quoted packet's destination (the VIP) to its source (the client).
        for i in 0..16 {
            *h.add(8 + i) = q[24 + i];
            *h.add(24 + i) = q[8 + i];
        }
        let icmp = [2u8, 0, 0, 0, m[0], m[1], m[2], m[3]];
        for (i, b) in icmp.iter().enumerate() {
            *h.add(40 + i) = *b;
        }
        // The pseudo-header (RFC 8200 §8.1): both addresses, the length, the next header.
        words(&q[8..40])
            + u16::from_ne_bytes(len) as u32
            + u16::from_ne_bytes([0, IPPROTO_ICMPV6]) as u32
    };
    let msg: *mut [u8; 8 + QUOTE6] = parse::ptr_at(ctx, l3 + 40).ok_or(Counter::DropTruncatedIp)?;
    let sum = pseudo as u64 + sum_of(msg) as u64;
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let check = (!csum::fold(sum as u32)).to_ne_bytes();
    // SAFETY: bounds-checked just above.
    unsafe {
        (*msg)[2] = check[0];
        (*msg)[3] = check[1];
    }
    truncate(ctx, grown, l3 + 40 + 8 + QUOTE6)
}

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

/// TCP option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Options visited at most: a SYN's options are MSS, window scale, SACK permitted and a
/// timestamp, with NOPs between (Linux sends MSS first).
const MAX_OPTIONS: usize = 10;

/// Lowers the MSS option of the TCP SYN at `l4_off` to `mss`, if it offers more, and updates
/// the TCP checksum (RFC 1624). A SYN without the option is left alone: its peer assumes 536
/// (RFC 9293 §3.7.1), which fits any tunnel MTU we allow.
#[inline(always)]
pub(super) fn clamp_mss(ctx: &XdpContext, l4_off: u32, mss: u16) {
    let l4 = (l4_off & 0x3ff) as usize;
    let Some(tcp) = parse::ptr_at::<[u8; 20]>(ctx, l4) else {
        return;
    };
    // SAFETY: bounds-checked just above.
    let doff = unsafe { ((*tcp)[12] >> 4) as usize * 4 };
    let mut off = 20usize;
    for _ in 0..MAX_OPTIONS {
        // The mask shows the verifier the bound the test above it implies.
        off &= 0x3f;
        if off + 4 > doff {
            return;
        }
        let Some(opt) = parse::ptr_at::<[u8; 4]>(ctx, l4 + off) else {
            return;
        };
        // SAFETY: bounds-checked just above.
        let o = unsafe { &mut *opt };
        match o[0] {
            OPT_END => return,
            OPT_NOP => off += 1,
            OPT_MSS if o[1] == 4 => {
                if u16::from_be_bytes([o[2], o[3]]) > mss {
                    let (old, new) = ([o[2], o[3]], mss.to_be_bytes());
                    o[2] = new[0];
                    o[3] = new[1];
                    update_check(ctx, l4, off + 2, old, new);
                    count(Counter::TunnelMssClamped);
                }
                return;
            }
            _ if o[1] < 2 => return,
            _ => off += o[1] as usize,
        }
    }
}

/// The TCP checksum after the two bytes at `at` (from the TCP header's start) changed.
#[inline(always)]
fn update_check(ctx: &XdpContext, l4: usize, at: usize, old: [u8; 2], new: [u8; 2]) {
    let Some(check) = parse::ptr_at::<[u8; 2]>(ctx, l4 + 16) else {
        return;
    };
    // At an odd offset the two bytes straddle two checksum words: their sum's bytes swap
    // (RFC 1071 §2(B)).
    let (old, new) = if at & 1 == 0 {
        (u16::from_ne_bytes(old), u16::from_ne_bytes(new))
    } else {
        (
            u16::from_ne_bytes([old[1], old[0]]),
            u16::from_ne_bytes([new[1], new[0]]),
        )
    };
    let delta = csum::fold(!old as u32 + new as u32);
    // SAFETY: bounds-checked just above.
    unsafe { *check = csum::apply(u16::from_ne_bytes(*check), delta).to_ne_bytes() };
}
