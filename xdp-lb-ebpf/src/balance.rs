//! How a backend is chosen: the flow table first, so a flow keeps its backend while the backend
//! set changes; on a miss, the VIP's Maglev table, indexed by a seeded hash of the 5-tuple.
//! The tables are built in userspace (`xdp-lb/src/maglev.rs`); here we only index them.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::bpf_ktime_get_ns;
use xdp_lb_common::{
    BACKEND_F_FORWARD, BackendInfo, Counter, FLOW_F_NAT, FlowKey, FlowKey6, FlowValue, IPPROTO_UDP,
    SYNC_EVENT_DSR, Settings, VIP_F_NAT, VipInfo, VipKey, VipKey6, flow_hash, flow_hash6,
    maglev_elem, maglev_unpack, vip_port_bit,
};

use crate::{
    acl, limit,
    maps::{BACKENDS, FLOWS, FLOWS6, INSERT_BUDGET, MAGLEV, VIP_PORTS, VIPS, VIPS6},
    nat::{self, Rewrite},
    nat_slots::NatSlots,
    parse::Packet,
    stats::count,
};

// MAGLEV packs two u32 entries per u64 with the even entry in the low half, which is also how
// the agent's u32 view of the mapping lays them out: true on little-endian BPF only.
#[cfg(target_endian = "big")]
compile_error!("xdp-lb's Maglev table layout assumes little-endian BPF (bpfel)");

/// The backend chosen for a packet; `A` is its family's address (`u32` or `[u8; 16]`).
pub(crate) struct Choice<A> {
    pub backend_id: u32,
    pub backend: *const BackendInfo,
    pub vip_id: u32,
    pub new_flow: bool,
    /// NAT flows: the rewrite of this packet (None: DSR).
    pub nat: Option<Rewrite<A>>,
}

/// Whether some VIP, of either family, listens on this protocol and destination port
/// (`VIP_PORTS`, kept by the agent). If none does, the packet belongs to no VIP and no flow:
/// it is passed without hashing its 5-tuple twice (a flow-table miss, then a VIP miss).
#[inline(always)]
pub(crate) fn vip_port(proto: u8, port_be: u16) -> bool {
    let (word, bit) = vip_port_bit(proto, port_be);
    // An array lookup, inlined by the verifier: a bounds check and a load.
    VIP_PORTS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Flow table first: for an established flow this is the only hash lookup on the packet's
/// path (the VIP lookup is only needed to choose a backend for a new flow). A flow entry is
/// honoured only while its backend may carry flows and still belongs to the flow's VIP; the
/// agent clears a backend's entry before it removes it or reuses its id, so a flow of a removed
/// VIP or backend falls through to the VIP lookup below (and is passed if the VIP is gone).
///
/// A NAT flow whose backend may no longer carry flows is not re-hashed (a new backend would
/// answer a mid-connection packet with a RST anyway): it falls through to the VIP, where only
/// a SYN opens a flow and anything else is passed to the kernel, which resets the connection.
#[inline(always)]
pub(crate) fn choose_backend(
    packet: &Packet,
    settings: *const Settings,
) -> Result<Choice<u32>, Counter> {
    let flow = &packet.flow;
    if !vip_port(flow.proto, flow.dst_port_be) {
        return Err(Counter::PassNotVip);
    }
    if let Some(choice) = flow_hit(packet)? {
        return Ok(choice);
    }
    let vip_key = VipKey {
        addr_be: flow.dst_addr,
        port_be: flow.dst_port_be,
        proto: flow.proto,
        _pad: 0,
    };
    let vip: *const VipInfo = VIPS.get_ptr(vip_key).ok_or(Counter::PassNotVip)?;
    // SAFETY: a map value pointer from a successful lookup; plain integers.
    let vip = unsafe { &*vip };
    let is_nat = vip.flags & VIP_F_NAT != 0;
    if is_nat
        && nat::may_promote(flow.proto, packet.tcp_flags)
        && let Some(choice) = promote(packet, vip.vip_id)?
    {
        return Ok(choice);
    }
    acl::admits(vip, flow.src_addr)?;
    // SAFETY: a helper call without preconditions. Read once for the limit and the new flow.
    let now = unsafe { bpf_ktime_get_ns() };
    limit::admits(vip, flow.src_addr, now)?;
    if vip.backend_count == 0 {
        return Err(Counter::DropNoBackend);
    }
    let (backend_id, backend) = maglev_choice(vip, maglev_hash(vip, flow))?;
    let (nat, new_flow) = if is_nat {
        // SAFETY: a map value pointer from a successful lookup.
        let backend_addr = unsafe { (*backend).addr_be };
        let (rewrite, fresh) = nat::create(
            NatSlots::zeroed_in(&mut MaybeUninit::uninit()),
            flow,
            vip.vip_id,
            backend_id,
            backend_addr,
            backend,
            settings,
            now,
            nat::reply_addr_sum(flow, &backend_addr, settings),
        )?;
        (Some(rewrite), fresh)
    } else {
        record_dsr_flow(flow, backend_id, vip.vip_id, now, settings);
        (None, true)
    };
    if new_flow {
        count(Counter::NewFlow);
        crate::flow_log::new_flow(flow, backend, is_nat, now);
    }
    Ok(Choice {
        backend_id,
        backend,
        vip_id: vip.vip_id,
        new_flow,
        nat,
    })
}

/// The flow table's choice, if the packet's flow has an entry whose backend may still carry
/// it (see `choose_backend`).
#[inline(always)]
fn flow_hit(packet: &Packet) -> Result<Option<Choice<u32>>, Counter> {
    let flow = &packet.flow;
    let Some(entry) = FLOWS.get_ptr_mut(flow) else {
        return Ok(None);
    };
    // SAFETY: a map value pointer from a successful lookup; FlowValue is plain integers.
    let (backend_id, flow_vip, flow_flags) =
        unsafe { ((*entry).backend_id, (*entry).vip_id, (*entry).flags) };
    if let Some(backend) = live_backend(backend_id, flow_vip)? {
        let nat = if flow_flags & FLOW_F_NAT != 0 {
            Some(nat::touch(entry, packet.tcp_flags, flow))
        } else {
            None
        };
        return Ok(Some(Choice {
            backend_id,
            backend,
            vip_id: flow_vip,
            new_flow: false,
            nat,
        }));
    }
    if flow_flags & FLOW_F_NAT == 0 {
        // The backend went down, was disabled or removed: re-hash this flow to a live one
        // rather than let the client time out.
        count(Counter::FlowRehashed);
    }
    Ok(None)
}

/// A NAT VIP's packet that may complete a half-open flow (TCP, not a SYN: the ACK that
/// completes its handshake, or a packet of a connection we do not know; UDP: a client's next
/// datagram of a half-open flow, or its first, then a new flow). Before the lists and limits:
/// the first packet passed them. None: a UDP datagram that opens a flow.
#[inline(always)]
fn promote(packet: &Packet, vip_id: u32) -> Result<Option<Choice<u32>>, Counter> {
    let flow = &packet.flow;
    match nat::promote(NatSlots::zeroed_in(&mut MaybeUninit::uninit()), flow) {
        Ok((rewrite, backend_id)) => Ok(Some(Choice {
            backend_id,
            backend: core::ptr::null(),
            vip_id,
            new_flow: false,
            nat: Some(rewrite),
        })),
        Err(Counter::PassNatNoFlow) if flow.proto == IPPROTO_UDP => Ok(None),
        Err(reason) => Err(reason),
    }
}

/// A new DSR flow's entry, within the per-CPU insert budget (beyond it the flow is forwarded
/// by its Maglev choice alone, counted). An LRU insert only fails on allocation failure under
/// memory pressure; the packet is still forwarded and the flow's next packet picks the same
/// backend from the same table.
#[inline(always)]
fn record_dsr_flow(
    flow: &FlowKey,
    backend_id: u32,
    vip_id: u32,
    now: u64,
    settings: *const Settings,
) {
    if !may_insert(settings, now) {
        count(Counter::FlowNotRecorded);
        return;
    }
    let value = FlowValue::dsr(backend_id, vip_id, now);
    // SAFETY: the settings map value, live while this program runs.
    if FLOWS.insert(flow, value, 0).is_ok() && unsafe { (*settings).sync_events } != 0 {
        crate::sync_events::report(SYNC_EVENT_DSR, flow, backend_id, vip_id, 0);
    }
}

/// A flow entry's backend, if it may still carry the flow: it forwards and still belongs to
/// the flow's VIP. An id outside `BACKENDS` is a corrupted entry.
#[inline(always)]
pub(crate) fn live_backend(
    backend_id: u32,
    flow_vip: u32,
) -> Result<Option<*const BackendInfo>, Counter> {
    let backend = BACKENDS
        .get_ptr(backend_id)
        .ok_or(Counter::DropBadBackend)?;
    // SAFETY: a map value pointer from a successful lookup; plain integers.
    let (flags, backend_vip) = unsafe { ((*backend).flags, (*backend).vip_id) };
    Ok((flags & BACKEND_F_FORWARD != 0 && backend_vip == flow_vip).then_some(backend))
}

/// Whether this CPU may insert one more DSR flow this second (`agent.flow_insert_rate`, as
/// Katran caps its LRU inserts): under a SYN flood each spoofed SYN would otherwise cost an
/// insert and churn established flows out of the LRU. A flow not recorded still goes to its
/// Maglev choice, as do its next packets while the table is unchanged.
#[inline(always)]
pub(crate) fn may_insert(settings: *const Settings, now: u64) -> bool {
    // SAFETY: the settings map value, valid while this program runs.
    let limit = unsafe { (*settings).flow_inserts_per_cpu_per_sec };
    if limit == 0 {
        return true;
    }
    let Some(budget) = INSERT_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot of a per-CPU array, while this program runs.
    unsafe {
        if now.wrapping_sub((*budget).window_start_ns) >= 1_000_000_000 {
            (*budget).window_start_ns = now;
            (*budget).used = 0;
        }
        if (*budget).used >= limit {
            return false;
        }
        (*budget).used += 1;
    }
    true
}

/// The seeded hash of an IPv4 flow that indexes its VIP's Maglev table.
#[inline(always)]
fn maglev_hash(vip: &VipInfo, flow: &FlowKey) -> u32 {
    flow_hash(
        flow.src_addr,
        flow.dst_addr,
        flow.src_port_be,
        flow.dst_port_be,
        flow.proto,
        vip.hash_seed,
    )
}

/// The seeded hash of an IPv6 flow: all 128 bits of both addresses count, so clients that
/// differ only in their interface identifier (the low 64 bits) still spread. A call of its
/// own: its spills would otherwise land in its callers' tight stack (see `ipv6.rs`).
#[inline(never)]
pub(crate) fn maglev_hash6(vip: &VipInfo, flow: &FlowKey6) -> u32 {
    flow_hash6(
        &xdp_lb_common::ipv6_words(&flow.src_addr),
        &xdp_lb_common::ipv6_words(&flow.dst_addr),
        flow.src_port_be,
        flow.dst_port_be,
        flow.proto,
        vip.hash_seed,
    )
}

/// The VIP's Maglev choice for a flow of this `hash`: the backend every node with the same
/// backends picks.
#[inline(always)]
pub(crate) fn maglev_choice(
    vip: &VipInfo,
    hash: u32,
) -> Result<(u32, *const BackendInfo), Counter> {
    // table_size is never 0 when backend_count is not (the agent writes both in one update);
    // the check is for the verifier and for a corrupted map.
    if vip.table_size == 0 {
        return Err(Counter::DropNoBackend);
    }
    let index = hash % vip.table_size;
    let elem = *MAGLEV
        .get(maglev_elem(vip.maglev_slot, index))
        .ok_or(Counter::DropBadBackend)?;
    let backend_id = maglev_unpack(elem, index);
    let backend = BACKENDS
        .get_ptr(backend_id)
        .ok_or(Counter::DropBadBackend)?;
    // SAFETY: a map value pointer from a successful lookup.
    if unsafe { (*backend).flags } & BACKEND_F_FORWARD == 0 {
        return Err(Counter::DropBadBackend);
    }
    Ok((backend_id, backend))
}

/// The backend that owns `flow` of a DSR VIP, without changing any state: its flow entry, else
/// its Maglev choice (what its next packet would get). For an ICMP error about the flow
/// (`parse::TooBig`); anything that is not a DSR VIP's flow is `PassIcmp`, for the kernel.
/// A tunnel VIP's flow is a DSR flow here. Returns the backend's id and entry.
#[inline(always)]
pub(crate) fn owner(flow: &FlowKey) -> Result<(u32, *const BackendInfo), Counter> {
    if let Some(entry) = FLOWS.get_ptr(flow) {
        // SAFETY: map value pointers from successful lookups; plain integers.
        let (backend_id, flow_vip, flow_flags) =
            unsafe { ((*entry).backend_id, (*entry).vip_id, (*entry).flags) };
        if flow_flags & FLOW_F_NAT != 0 {
            return Err(Counter::PassIcmp);
        }
        if let Some(backend) = BACKENDS.get_ptr(backend_id)
            // SAFETY: a map value pointer from a successful lookup; plain integers.
            && unsafe { (*backend).flags } & BACKEND_F_FORWARD != 0
            // SAFETY: as above.
            && unsafe { (*backend).vip_id } == flow_vip
        {
            return Ok((backend_id, backend));
        }
    }
    let vip_key = VipKey {
        addr_be: flow.dst_addr,
        port_be: flow.dst_port_be,
        proto: flow.proto,
        _pad: 0,
    };
    let vip: *const VipInfo = VIPS.get_ptr(vip_key).ok_or(Counter::PassIcmp)?;
    // SAFETY: as above.
    let vip = unsafe { &*vip };
    if vip.flags & VIP_F_NAT != 0 || vip.backend_count == 0 {
        return Err(Counter::PassIcmp);
    }
    maglev_choice(vip, maglev_hash(vip, flow)).map_err(|_| Counter::PassIcmp)
}

/// The backend that owns IPv6 `flow` of a DSR VIP, without changing any state (as `owner`;
/// a NAT66 flow's error is the kernel's: `PassIcmp`).
#[inline(always)]
pub(crate) fn owner6(flow: &FlowKey6) -> Result<(u32, *const BackendInfo), Counter> {
    if let Some(entry) = FLOWS6.get_ptr(flow) {
        // SAFETY: a map value pointer from a successful lookup; plain integers.
        let (backend_id, flow_vip, flow_flags) =
            unsafe { ((*entry).backend_id, (*entry).vip_id, (*entry).flags) };
        if flow_flags & FLOW_F_NAT != 0 {
            return Err(Counter::PassIcmp);
        }
        if let Ok(Some(backend)) = live_backend(backend_id, flow_vip) {
            return Ok((backend_id, backend));
        }
    }
    let vip = vip6(flow).ok_or(Counter::PassIcmp)?;
    // SAFETY: as above.
    let vip = unsafe { &*vip };
    if vip.flags & VIP_F_NAT != 0 || vip.backend_count == 0 {
        return Err(Counter::PassIcmp);
    }
    maglev_choice(vip, maglev_hash6(vip, flow)).map_err(|_| Counter::PassIcmp)
}

/// The IPv6 VIP an IPv6 flow is addressed to, if any.
#[inline(always)]
pub(crate) fn vip6(flow: &FlowKey6) -> Option<*const VipInfo> {
    let key = VipKey6 {
        addr: flow.dst_addr,
        port_be: flow.dst_port_be,
        proto: flow.proto,
        _pad: 0,
    };
    VIPS6.get_ptr(key)
}
