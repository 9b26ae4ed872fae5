//! The MSS mirror: the LB's `mss_clamp` lowers the MSS option of a client's SYN to what fits
//! its tunnel, but the size of the client's own segments is set by the MSS the *backend*
//! offers in its SYN-ACK, which goes to the client directly and never passes the LB (that is
//! direct return). So the decapsulation remembers the MSS of each tunnelled SYN (`remember`,
//! in XDP) and a TC egress program on the same interface lowers the backend's SYN-ACK of that
//! connection to it (`clamp_syn_ack`): the client then never sends a segment too big for the
//! tunnel, and the LB never has to answer one with ICMP. Only SYN-ACKs of tunnelled SYNs are
//! touched; an entry lives until its SYN-ACK (or the LRU's eviction).

use aya_ebpf::{
    bindings::TC_ACT_PIPE,
    macros::{classifier, map},
    maps::LruHashMap,
    programs::{TcContext, XdpContext},
};
use xdp_lb_common::IPPROTO_TCP;
use xdp_lb_ebpf::parse::ptr_at;

/// IPv4 connections: (local address, remote address, local port << 16 | remote port) in
/// network order as the SYN-ACK carries them → the MSS the tunnelled SYN offered.
#[map]
static DECAP_MSS4: LruHashMap<[u32; 3], u16> = LruHashMap::with_max_entries(16384, 0);

/// IPv6 connections, as `DECAP_MSS4`: both addresses' words, then the ports.
#[map]
static DECAP_MSS6: LruHashMap<[u32; 9], u16> = LruHashMap::with_max_entries(16384, 0);

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_RST: u8 = 0x04;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Options visited at most (a SYN's usual four, NOPs between).
const MAX_OPTIONS: usize = 10;

/// The MSS option of the TCP SYN at `l4` in an XDP frame (its header `doff` bytes long).
#[inline(always)]
fn syn_mss(ctx: &XdpContext, l4: usize) -> Option<u16> {
    let tcp: *const [u8; 20] = ptr_at(ctx, l4 & 0x1ff)?;
    // SAFETY: bounds-checked just above.
    let (flags, doff) = unsafe { ((*tcp)[13], ((*tcp)[12] >> 4) as usize * 4) };
    if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
        return None;
    }
    let mut off = 20usize;
    for _ in 0..MAX_OPTIONS {
        off &= 0x3f;
        if off + 4 > doff {
            return None;
        }
        let opt: *const [u8; 4] = ptr_at(ctx, (l4 & 0x1ff) + off)?;
        // SAFETY: bounds-checked just above.
        let o = unsafe { *opt };
        match o[0] {
            OPT_END => return None,
            OPT_NOP => off += 1,
            OPT_MSS if o[1] == 4 => return Some(u16::from_be_bytes([o[2], o[3]])),
            _ if o[1] < 2 => return None,
            _ => off += o[1] as usize,
        }
    }
    None
}

/// A tunnelled IPv4 SYN (its IP header at `l3`, TCP at `l4`): its MSS, remembered for the
/// backend's SYN-ACK.
#[inline(always)]
pub(super) fn remember4(ctx: &XdpContext, l3: usize, l4: usize) {
    let Some(mss) = syn_mss(ctx, l4) else {
        return;
    };
    let (Some(ip), Some(ports)) = (
        ptr_at::<[u32; 5]>(ctx, l3 & 0xff),
        ptr_at::<[u16; 2]>(ctx, l4 & 0x1ff),
    ) else {
        return;
    };
    // SAFETY: bounds-checked just above.
    let (ip, ports) = unsafe { (*ip, *ports) };
    // The SYN-ACK's view: from the SYN's destination to its source.
    let key = [ip[4], ip[3], (ports[1] as u32) << 16 | ports[0] as u32];
    let _ = DECAP_MSS4.insert(key, mss, 0);
}

/// A tunnelled IPv6 SYN, as `remember4`.
#[inline(always)]
pub(super) fn remember6(ctx: &XdpContext, l3: usize, l4: usize) {
    let Some(mss) = syn_mss(ctx, l4) else {
        return;
    };
    let (Some(ip), Some(ports)) = (
        ptr_at::<[u32; 10]>(ctx, l3 & 0xff),
        ptr_at::<[u16; 2]>(ctx, l4 & 0x1ff),
    ) else {
        return;
    };
    // SAFETY: bounds-checked just above.
    let (ip, ports) = unsafe { (*ip, *ports) };
    let key = [
        ip[6],
        ip[7],
        ip[8],
        ip[9],
        ip[2],
        ip[3],
        ip[4],
        ip[5],
        (ports[1] as u32) << 16 | ports[0] as u32,
    ];
    let _ = DECAP_MSS6.insert(key, mss, 0);
}

/// TC egress on the decapsulating interface: a SYN-ACK of a tunnelled SYN offers at most the
/// MSS that SYN offered. Every packet goes on (`TC_ACT_PIPE`).
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[classifier] macro hands the program its context by value"
)]
pub(crate) fn xdp_lb_decap_mss(ctx: TcContext) -> i32 {
    let _ = clamp_syn_ack(&ctx);
    TC_ACT_PIPE
}

#[inline(always)]
fn clamp_syn_ack(ctx: &TcContext) -> Option<()> {
    let ether_type = u16::from_be(ctx.load::<u16>(12).ok()?);
    let (l4, mss) = match ether_type {
        0x0800 => {
            let ip: [u32; 5] = ctx.load(14).ok()?;
            let b = ip[0].to_ne_bytes();
            if b[0] >> 4 != 4 || ip[2].to_ne_bytes()[1] != IPPROTO_TCP {
                return None;
            }
            let l4 = 14 + (b[0] & 0x0f) as usize * 4;
            let ports: [u16; 2] = ctx.load(l4).ok()?;
            let key = [ip[3], ip[4], (ports[0] as u32) << 16 | ports[1] as u32];
            (l4, take(&DECAP_MSS4, &key)?)
        }
        0x86dd => {
            let ip: [u32; 10] = ctx.load(14).ok()?;
            if ip[1].to_ne_bytes()[2] != IPPROTO_TCP {
                return None;
            }
            let l4 = 54;
            let ports: [u16; 2] = ctx.load(l4).ok()?;
            let key = [
                ip[2],
                ip[3],
                ip[4],
                ip[5],
                ip[6],
                ip[7],
                ip[8],
                ip[9],
                (ports[0] as u32) << 16 | ports[1] as u32,
            ];
            (l4, take(&DECAP_MSS6, &key)?)
        }
        _ => return None,
    };
    let head: [u8; 20] = ctx.load(l4).ok()?;
    if head[13] & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN | TCP_ACK {
        return None;
    }
    let doff = (head[12] >> 4) as usize * 4;
    let mut off = 20usize;
    for _ in 0..MAX_OPTIONS {
        off &= 0x3f;
        if off + 4 > doff {
            return None;
        }
        let o: [u8; 4] = ctx.load(l4 + off).ok()?;
        match o[0] {
            OPT_END => return None,
            OPT_NOP => off += 1,
            OPT_MSS if o[1] == 4 => {
                let offered = u16::from_be_bytes([o[2], o[3]]);
                if offered <= mss {
                    return None;
                }
                let new = mss.to_be_bytes();
                ctx.store(l4 + off + 2, &new, 0).ok()?;
                // The checksum by the kernel's own helper: it knows whether the segment still
                // has its checksum to be completed by the device (CHECKSUM_PARTIAL).
                let (old16, new16) = if (off + 2) & 1 == 0 {
                    (u16::from_ne_bytes([o[2], o[3]]), u16::from_ne_bytes(new))
                } else {
                    (
                        u16::from_ne_bytes([o[3], o[2]]),
                        u16::from_ne_bytes([new[1], new[0]]),
                    )
                };
                ctx.l4_csum_replace(l4 + 16, old16 as u64, new16 as u64, 2)
                    .ok()?;
                return Some(());
            }
            _ if o[1] < 2 => return None,
            _ => off += o[1] as usize,
        }
    }
    None
}

/// The remembered MSS of a connection, forgotten once used.
#[inline(always)]
fn take<K>(map: &LruHashMap<K, u16>, key: &K) -> Option<u16> {
    // SAFETY: a map value pointer from a successful lookup; a plain integer.
    let mss = unsafe { *map.get(key)? };
    let _ = map.remove(key);
    Some(mss)
}
