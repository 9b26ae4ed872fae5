//! The outer packet's next hop: the kernel's FIB (`bpf_fib_lookup`) names the egress interface
//! and the MACs, exactly as for a packet this host sends to the backend; the answer is cached
//! per backend and CPU for a second, so a flow's packets cost one array lookup here, and a
//! route or neighbour change reaches the data path within a second.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::Counter;

use super::encap::Outer;
use crate::{
    maps::{FIB6_PARAMS, TUNNEL_NEXT_HOPS},
    nat_slots::zero_words,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// How long a next hop is used before the FIB is asked again.
const REFRESH_NS: u64 = 1_000_000_000;

/// A backend's next hop, as this CPU last found it (`TUNNEL_NEXT_HOPS`, per CPU: no torn
/// MACs when CPUs refresh it at once).
#[repr(C)]
pub(crate) struct Hop {
    pub(crate) checked_ns: u64,
    /// The backend's address it was found for (IPv6: its words folded): an id reused for
    /// another backend within the second is not sent the old one's way.
    pub(crate) addr_key: u32,
    /// 0: not found yet.
    pub(crate) ifindex: u32,
    pub(crate) dmac: [u8; 6],
    pub(crate) smac: [u8; 6],
    /// 1: the FIB knows the route but not the neighbour's MAC: the packet goes to the
    /// kernel, which resolves it (not cached).
    pub(crate) to_kernel: u8,
    pub(crate) _pad: [u8; 3],
}

/// Why there is no next hop.
pub(super) enum NoHop {
    /// The egress interface's MTU is smaller than the outer packet: the client is told.
    FragNeeded(u16),
    Counted(Counter),
}

/// The next hop of `outer`'s packet to backend `backend_id`: a pointer to this CPU's cache
/// entry for it, refreshed first if it is older than a second or not this backend's. Its
/// `to_kernel` says the FIB knew the route but not the neighbour (the entry is then not
/// trusted next time).
#[inline(always)]
pub(super) fn find(ctx: &XdpContext, backend_id: u32, outer: &Outer) -> Result<*const Hop, NoHop> {
    let slot = TUNNEL_NEXT_HOPS
        .get_ptr_mut(backend_id)
        .ok_or(NoHop::Counted(Counter::DropBadBackend))?;
    let key = addr_key(outer);
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: this CPU's slot, ours while this program runs.
    unsafe {
        if (*slot).ifindex != 0
            && (*slot).to_kernel == 0
            && (*slot).addr_key == key
            && now.wrapping_sub((*slot).checked_ns) < REFRESH_NS
        {
            return Ok(slot);
        }
        lookup(ctx, outer, &mut *slot)?;
        (*slot).checked_ns = now;
        (*slot).addr_key = key;
    }
    Ok(slot)
}

#[inline(always)]
fn addr_key(outer: &Outer) -> u32 {
    if !outer.v6 {
        return outer.dst4;
    }
    let w = &outer.dst6;
    w[0] ^ w[1] ^ w[2] ^ w[3]
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
