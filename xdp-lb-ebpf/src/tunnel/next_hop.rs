//! The outer packet's next hop: the kernel's FIB (`bpf_fib_lookup`) names the egress interface
//! and the MACs, exactly as for a packet this host sends to the backend; the answer is cached
//! per backend and CPU for a second, so a flow's packets cost one array lookup here, and a
//! route or neighbour change reaches the data path within a second. With the answer the cache
//! keeps the whole header a packet to that backend gets (Ethernet, outer IP, GUE's UDP), all
//! but its per-packet fields, so that the common packet copies it in a few stores
//! (`encap::push_cached`).

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_jiffies64, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::Counter;

use super::{
    encap::Outer,
    records::{HEADER_MAX, Hop, KIND_GUE, KIND_V6},
};
use crate::{
    maps::{FIB6_PARAMS, TUNNEL_NEXT_HOPS},
    nat_slots::zero_words,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// How long a next hop is used before the FIB is asked again, in jiffies: a second at HZ=250,
/// a quarter at HZ=1000.
const REFRESH_JIFFIES: u64 = 250;

/// Why there is no next hop.
pub(super) enum NoHop {
    /// The egress interface's MTU is smaller than the outer packet: the client is told.
    FragNeeded(u16),
    Counted(Counter),
}

/// This CPU's cache entry for backend `backend_id` (`addr_key`: `addr_key(backend)`), if it
/// holds a next hop for that backend found within the last second (or 16 packets, see
/// below): the common packet's only question. Else `Err` with the slot to refresh
/// (`refresh`) and the time.
#[inline(always)]
pub(super) fn cached(
    backend_id: u32,
    key: u32,
) -> Result<Result<*const Hop, (*mut Hop, u64)>, Counter> {
    let slot = TUNNEL_NEXT_HOPS
        .get_ptr_mut(backend_id)
        .ok_or(Counter::DropBadBackend)?;
    // SAFETY: this CPU's slot, ours while this program runs.
    let e = unsafe { &mut *slot };
    if e.ifindex != 0 && e.to_kernel == 0 && e.addr_key == key {
        // The clock is read on every 16th packet only: a helper call costs a tunnel packet
        // more than a tenth of its time here (`bpf_ktime_get_coarse_ns` a quarter: measured),
        // and a route or neighbour change still reaches a busy backend's packets within a
        // second, an idle one's within 16 packets.
        e.uses = e.uses.wrapping_add(1);
        if e.uses & 15 != 0 {
            return Ok(Ok(slot));
        }
    }
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_jiffies64() };
    let fresh = e.ifindex != 0
        && e.to_kernel == 0
        && e.addr_key == key
        && now.wrapping_sub(e.checked_jiffies) < REFRESH_JIFFIES;
    Ok(if fresh { Ok(slot) } else { Err((slot, now)) })
}

/// Asks the FIB for `outer`'s next hop, writes the answer and the header template into
/// `slot`, and returns it. Its `to_kernel` says the FIB knew the route but not the neighbour
/// (the entry is then not trusted next time).
#[inline(always)]
pub(super) fn refresh(
    ctx: &XdpContext,
    (slot, now): (*mut Hop, u64),
    key: u32,
    outer: &Outer,
    (max_inner, mss): (u16, u16),
) -> Result<*const Hop, NoHop> {
    // SAFETY: this CPU's slot, ours while this program runs.
    unsafe {
        lookup(ctx, outer, &mut *slot)?;
        (*slot).checked_jiffies = now;
        (*slot).addr_key = key;
        (*slot).max_inner = max_inner;
        (*slot).mss = mss;
        if (*slot).to_kernel == 0 {
            template(&mut *slot, outer);
        }
    }
    Ok(slot)
}

/// The key a cache entry is checked against: the backend's IPv4 address, or its IPv6 one's
/// words folded.
#[inline(always)]
pub(super) fn addr_key(backend: *const xdp_lb_common::BackendInfo) -> u32 {
    // SAFETY: a map value pointer from the caller's lookup; plain integers.
    let (a4, a6) = unsafe { ((*backend).addr_be, &(*backend).addr6) };
    if a4 != 0 {
        return a4;
    }
    let w = xdp_lb_common::ipv6_words(a6);
    w[0] ^ w[1] ^ w[2] ^ w[3]
}

/// Writes the header every packet of `outer`'s kind to this backend gets, all but its
/// per-packet fields (DSCP/ECN, lengths, the flow label, GUE's source port and checksum, the
/// IPv4 checksum, whose fixed part goes into `csum_base`).
#[inline(always)]
fn template(hop: &mut Hop, outer: &Outer) {
    let h = &mut hop.header;
    *h = [0; HEADER_MAX];
    h[..6].copy_from_slice(&hop.dmac);
    h[6..12].copy_from_slice(&hop.smac);
    let ip_len = if outer.v6 {
        h[12] = 0x86;
        h[13] = 0xdd;
        h[14] = 0x60;
        h[20] = outer.proto;
        h[21] = xdp_lb_common::OUTER_TTL;
        for i in 0..4 {
            h[22 + 4 * i..26 + 4 * i].copy_from_slice(&outer.src6[i].to_ne_bytes());
            h[38 + 4 * i..42 + 4 * i].copy_from_slice(&outer.dst6[i].to_ne_bytes());
        }
        hop.csum_base = 0;
        40
    } else {
        h[12] = 0x08;
        h[13] = 0x00;
        h[14] = 0x45;
        // Identification 0, DF (see `encap.rs`).
        h[20] = 0x40;
        h[22] = xdp_lb_common::OUTER_TTL;
        h[23] = outer.proto;
        h[26..30].copy_from_slice(&outer.src4.to_ne_bytes());
        h[30..34].copy_from_slice(&outer.dst4.to_ne_bytes());
        let word = |at: usize| u16::from_ne_bytes([h[at], h[at + 1]]) as u32;
        hop.csum_base = (0..10).map(|i| word(14 + 2 * i)).sum();
        20
    };
    let mut len = 14 + ip_len;
    hop.kind = if outer.v6 { KIND_V6 } else { 0 };
    if outer.gue {
        let dport = outer.gue_port_be.to_ne_bytes();
        h[len + 2] = dport[0];
        h[len + 3] = dport[1];
        len += 8;
        hop.kind |= KIND_GUE;
    }
    hop.header_len = len as u8;
}

/// Asks the FIB, and writes its answer into `hop`. Its parameters live in this CPU's scratch
/// slot (`FIB6_PARAMS`), not on the stack of the paths that call the tunnel.
#[inline(always)]
fn lookup(ctx: &XdpContext, outer: &Outer, hop: &mut Hop) -> Result<(), NoHop> {
    let fib = FIB6_PARAMS
        .get_ptr_mut(0)
        .ok_or(NoHop::Counted(Counter::DropNoSettings))?;
    // SAFETY: this CPU's slot; a plain-integer C struct, all-zero its initial state.
    let fib = unsafe {
        zero_words(fib);
        &mut *fib
    };
    fib.__bindgen_anon_1.tot_len = outer.tot_len as u16;
    if outer.v6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = outer.src6;
        fib.__bindgen_anon_4.ipv6_dst = outer.dst6;
        fib.__bindgen_anon_2.flowinfo = u32::from_ne_bytes([outer.tos >> 4, outer.tos << 4, 0, 0]);
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = outer.tos;
        fib.__bindgen_anon_3.ipv4_src = outer.src4;
        fib.__bindgen_anon_4.ipv4_dst = outer.dst4;
    }
    fib.l4_protocol = outer.proto;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: ctx is the program's context and fib a struct of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib,
            size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32,
            0,
        )
    } as u32;
    hop.ifindex = 0;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            hop.to_kernel = 0;
            hop.ifindex = fib.ifindex;
            crate::forward::set_mac(&raw mut hop.dmac, &fib.dmac);
            crate::forward::set_mac(&raw mut hop.smac, &fib.smac);
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            hop.to_kernel = 1;
            hop.ifindex = fib.ifindex;
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: the FIB writes the MTU on this answer (a union of plain integers).
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
            return Err(NoHop::FragNeeded(mtu));
        }
        BPF_FIB_LKUP_RET_FWD_DISABLED => {
            return Err(NoHop::Counted(Counter::DropTunnelForwardingDisabled));
        }
        _ => return Err(NoHop::Counted(Counter::DropTunnelNoRoute)),
    }
    Ok(())
}

/// Sends the encapsulated frame: out of the ingress interface (XDP_TX) or another one
/// (redirect), or to the kernel when the neighbour is not resolved yet.
#[inline(always)]
pub(super) fn send(ctx: &XdpContext, hop: &Hop) -> Result<u32, Counter> {
    if hop.to_kernel != 0 {
        return Err(Counter::PassTunnelNoNeighbour);
    }
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: a helper call; a failed redirect is counted by the kernel (xdp_redirect_err).
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}
