//! Tunnel forwarding (`forwarding = "ipip"` or `"gue"`): the client's packet, unchanged, goes
//! to its backend inside an outer IPv4 or IPv6 header (and, for GUE, a UDP header), routed by
//! the kernel's FIB like any packet of this host, so the backend may sit in any subnet. The
//! backend strips the outer headers (`xdp-lb decap`, or the kernel's ipip/ip6tnl/fou) and
//! answers the client directly from the VIP, as with L2 DSR.
//!
//! Per packet: the VIP's parameters (`VIP_TUNNELS`, precomputed by the agent), the MTU check
//! (`mtu.rs`: an ICMP error to the client when the packet would not fit), the MSS clamp of a
//! SYN, the next hop (`next_hop.rs`: cached per backend and CPU, refreshed from the FIB once a
//! second), then the outer headers (`encap.rs`) and the send. The flow table, Maglev choice,
//! health, protection and sync are the DSR path's: a tunnel flow is a DSR flow whose backend
//! carries `BACKEND_F_TUNNEL`. `probe.rs` records the answers to the agent's health probes
//! through the tunnel.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    programs::XdpContext,
};
use xdp_lb_common::{BACKEND_F_GUE, BACKEND_F_TUNNEL, BackendInfo, Counter};

pub(crate) use self::records::{Hop, Inner, KIND_GUE, KIND_V6, Request};
use crate::{
    capture, flow_log,
    maps::{BACKEND_STATS, BACKENDS, TUNNEL_REQUEST, VIP_STATS, VIP_TUNNELS},
    stats::{add_traffic, count},
};

pub(crate) mod encap;
mod mtu;
pub(crate) mod next_hop;
pub(crate) mod probe;
pub(crate) mod records;

/// The verdict a path returns when it handed the packet to the tunnel: not an XDP action.
pub(crate) const PENDING: u32 = 1 << 10;

/// The request's slot, for a path to fill (every field it reads is written: `forward` reads
/// the flow of `inner.v6`'s family only).
#[inline(always)]
pub(crate) fn request() -> Result<&'static mut Request, Counter> {
    let slot = TUNNEL_REQUEST
        .get_ptr_mut(0)
        .ok_or(Counter::DropNoSettings)?;
    // SAFETY: this CPU's slot, ours while this program runs.
    Ok(unsafe { &mut *slot })
}

/// Whether `backend` is a tunnel VIP's (its flows are encapsulated).
#[inline(always)]
pub(crate) fn carries(backend: *const BackendInfo) -> bool {
    // SAFETY: a map value pointer from the caller's lookup (never null on the DSR path).
    unsafe { (*backend).flags & BACKEND_F_TUNNEL != 0 }
}

/// `forward_cached4`'s answer when the packet needs the full path: not an XDP action.
pub(crate) const NOT_CACHED: u32 = 1 << 11;

/// The common IPv4 packet's encapsulation, called by the IPv4 path itself: an untagged frame,
/// not a SYN, to a backend whose header this CPU has cached, within the MTU (GUE over IPv6
/// apart: its checksum reads the inner headers). Sends and counts it: the verdict, or
/// `NOT_CACHED` with the frame untouched. Small, so that it fits below the IPv4 path's frame
/// (the full path, `forward`, does not): the request and the second call are spared.
/// `meta`: the flow's entropy (bits 32-63), the frame's length (16-31), a new flow (8), the
/// L4 protocol (0-7).
#[inline(never)]
pub(crate) fn forward_cached4(
    ctx: *mut xdp_md,
    backend_id: u32,
    backend: *const BackendInfo,
    meta: u64,
    vip_id: u32,
) -> u32 {
    let ctx = crate::calls::context(ctx);
    let Ok(Ok(hop)) = next_hop::cached(backend_id, next_hop::addr_key(backend)) else {
        return NOT_CACHED;
    };
    // SAFETY: a map value pointer (this CPU's cache entry).
    let hop = unsafe { &*hop };
    if hop.kind == KIND_V6 | KIND_GUE {
        return NOT_CACHED;
    }
    let inner = Inner {
        l3_off: 14,
        l4_off: 0,
        entropy: (meta >> 32) as u32,
        v6: 0,
        proto: meta as u8,
        syn: 0,
        _pad: 0,
    };
    let Ok((len, tos)) = encap::inner_len_tos(&ctx, &inner) else {
        return NOT_CACHED;
    };
    if len > hop.max_inner as u32 {
        return NOT_CACHED;
    }
    let sent =
        encap::push_cached(&ctx, &inner, hop, len, tos).and_then(|()| next_hop::send(&ctx, hop));
    match sent {
        Ok(action) => {
            let (frame_len, new_flow) = ((meta >> 16) as u32 & 0xffff, meta & 0x100 != 0);
            let tx = action == xdp_action::XDP_TX;
            add_traffic(&VIP_STATS, vip_id, frame_len, new_flow, tx);
            add_traffic(&BACKEND_STATS, backend_id, frame_len, new_flow, tx);
            capture::sent(&ctx, vip_id, backend_id, action);
            action
        }
        Err(reason) => capture::verdict(&ctx, Err(reason)),
    }
}

/// Encapsulates the frame as this CPU's request says, sends it on and counts it: the frame's
/// verdict. A call of its own, beside the families' paths (see [`Request`]).
#[inline(never)]
pub(crate) fn forward(ctx: *mut xdp_md) -> u32 {
    let ctx = crate::calls::context(ctx);
    let Ok(req) = request() else {
        return capture::verdict(&ctx, Err(Counter::DropNoSettings));
    };
    let sent = BACKENDS
        .get_ptr(req.backend_id)
        .ok_or(Counter::DropBadBackend)
        .and_then(|backend| encapsulate(&ctx, &req.inner, req.backend_id, backend, req.vip_id));
    match sent {
        Ok((action, true)) => {
            if req.icmp != 0 {
                count(Counter::IcmpTooBigToBackend);
            } else {
                if req.new_flow != 0 && req.inner.v6 != 0 {
                    // An IPv6 path's new flow is logged once forwarded (an IPv4 one was
                    // when it was made, in `balance.rs`).
                    log_new_flow6(req);
                }
                let tx = action == xdp_action::XDP_TX;
                add_traffic(&VIP_STATS, req.vip_id, req.len, req.new_flow != 0, tx);
                add_traffic(
                    &BACKEND_STATS,
                    req.backend_id,
                    req.len,
                    req.new_flow != 0,
                    tx,
                );
                capture::sent(&ctx, req.vip_id, req.backend_id, action);
            }
            action
        }
        // Answered with an ICMP error to the client: not the backend's traffic.
        Ok((action, false)) => action,
        Err(reason) => {
            if reason != Counter::PassTunnelNoNeighbour && req.icmp == 0 {
                if req.inner.v6 != 0 {
                    flow_log::drop6(&req.flow6, reason);
                } else {
                    flow_log::drop(&req.flow4, reason);
                }
            }
            capture::verdict(&ctx, Err(reason))
        }
    }
}

/// A new IPv6 tunnel flow in the flow log.
#[inline(always)]
fn log_new_flow6(req: &Request) {
    if let Some(backend) = BACKENDS.get_ptr(req.backend_id) {
        // SAFETY: a map value pointer; plain integers. A helper call without preconditions.
        let (addr6, flags, now) = unsafe {
            (
                &(*backend).addr6,
                (*backend).flags,
                aya_ebpf::helpers::bpf_ktime_get_ns(),
            )
        };
        flow_log::new_flow6(
            &req.flow6,
            addr6,
            xdp_lb_common::flow_mode(false, flags),
            now,
        );
    }
}

/// The action, and whether the packet was forwarded (else answered with an ICMP error).
#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    inner: &Inner,
    backend_id: u32,
    backend: *const BackendInfo,
    vip_id: u32,
) -> Result<(u32, bool), Counter> {
    let (len, tos) = encap::inner_len_tos(ctx, inner)?;
    let key = next_hop::addr_key(backend);
    let cached = next_hop::cached(backend_id, key)?;
    if let Ok(hop) = cached
        && inner.l3_off == 14
    {
        // SAFETY: a map value pointer (this CPU's cache entry).
        let hop = unsafe { &*hop };
        // The common packet: untagged, to a backend whose next hop (and its VIP's MTU and MSS
        // clamp) this CPU knows, within the MTU, not a SYN to clamp.
        if len <= hop.max_inner as u32 && (inner.syn == 0 || hop.mss == 0) {
            encap::push_cached(ctx, inner, hop, len, tos)?;
            return next_hop::send(ctx, hop).map(|action| (action, true));
        }
    }
    let params = VIP_TUNNELS.get_ptr(vip_id).ok_or(Counter::DropBadBackend)?;
    // SAFETY: map value pointers (the backend's from the caller's lookup); plain integers.
    let (addr4, flags, p) = unsafe { ((*backend).addr_be, (*backend).flags, &*params) };
    let outer6 = addr4 == 0;
    let gue = flags & BACKEND_F_GUE != 0;
    let (max_inner, mss) = if outer6 {
        (p.max_inner6, p.mss6)
    } else {
        (p.max_inner4, p.mss4)
    };
    if len > max_inner as u32 {
        return mtu::too_big(ctx, inner, len, max_inner).map(|action| (action, false));
    }
    if inner.syn != 0 && mss != 0 {
        mtu::clamp_mss(ctx, inner.l4_off, mss);
    }
    // On this call's own stack: it runs beside the paths (see `Request`), with room.
    let mut slot = core::mem::MaybeUninit::<encap::Outer>::uninit();
    let outer = encap::Outer::fill(&mut slot, p, backend, outer6, gue, len, tos, inner)?;
    encap::set_gue6_checksum(ctx, inner, outer);
    let hop = match cached {
        Ok(hop) => hop,
        Err(stale) => match next_hop::refresh(ctx, stale, key, outer, (max_inner, mss)) {
            Ok(hop) => hop,
            Err(next_hop::NoHop::FragNeeded(mtu)) => {
                let mtu = mtu.saturating_sub(outer.overhead());
                return mtu::too_big(ctx, inner, len, mtu).map(|action| (action, false));
            }
            Err(next_hop::NoHop::Counted(reason)) => return Err(reason),
        },
    };
    // SAFETY: a map value pointer (this CPU's cache entry).
    let hop = unsafe { &*hop };
    encap::push(ctx, inner, outer, hop)?;
    next_hop::send(ctx, hop).map(|action| (action, true))
}
