//! New flows reported to the agent's sync (`[sync]`), which sends them to the other LB nodes:
//! a DSR flow when it is recorded, a NAT flow when it is established. Only those two paths call
//! this, and only when the agent turned it on (`Settings::sync_events`); an established flow's
//! packets never do.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use xdp_lb_common::{
    Counter, FLOW_F_REPLY, FlowTuple, FlowValueOf, SYNC_EVENT_NAT_CLOSING, SyncEvent,
};

use crate::{
    maps::{SETTINGS, SYNC_EVENTS},
    stats::count,
};

/// Whether the agent asked for reports (`[sync]`), for callers without the settings at hand
/// (the DSR new-flow paths read `Settings::sync_events` from the settings they hold).
#[inline(always)]
pub(crate) fn enabled() -> bool {
    SETTINGS.get(0).is_some_and(|s| s.sync_events != 0)
}

/// Reports a flow (the caller checked that reports are on): `kind` is a `SYNC_EVENT_*`;
/// `snat_port_be` is NAT's. Written in place in the ring (no copy on the IPv6 path's tight
/// stack). A full ring (the agent is behind) loses the event, counted: the flow is forwarded
/// all the same.
#[inline(always)]
pub(crate) fn report<K: FlowTuple>(
    kind: u8,
    flow: &K,
    backend_id: u32,
    vip_id: u32,
    snat_port_be: u16,
) {
    let Some(mut entry) = SYNC_EVENTS.reserve::<SyncEvent>(0) else {
        count(Counter::SyncEventLost);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: a reserved ring-buffer record of this type's size, ours until submitted.
    unsafe {
        (*e).kind = kind;
        (*e).family = K::FAMILY;
        (*e).proto = flow.proto();
        (*e)._pad = 0;
        (*e).backend_id = backend_id;
        (*e).vip_id = vip_id;
        (*e).src_port_be = flow.src_port_be();
        (*e).dst_port_be = flow.dst_port_be();
        (*e).snat_port_be = snat_port_be;
        (*e)._pad2 = 0;
        (*e).src_addr = K::addr16(flow.src());
        (*e).dst_addr = K::addr16(flow.dst());
    }
    // No wakeup: waking the reader is most of a report's cost (the kernel's irq_work per
    // record); the agent drains the ring on its batch tick instead (`batch_interval`).
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}

/// A NAT flow that starts closing (the first FIN or RST its client's, or its backend's, entry
/// sees: at most twice a flow): reported so that the peers' copies expire by
/// `nat_closing_timeout` too. `key` is the packet's 5-tuple; from a
/// reply entry the client's is its rewrite's reverse. A call of its own: the rare path keeps
/// its stack out of the callers' (the IPv6 path's is tight).
#[inline(never)]
pub(crate) fn closing<K: FlowTuple>(entry: *const FlowValueOf<K::Addr>, key: &K) {
    if !enabled() {
        return;
    }
    // SAFETY: a map value pointer from a successful lookup, live while this program runs.
    let v = unsafe { &*entry };
    let (client, snat_port_be) = if v.flags & FLOW_F_REPLY != 0 {
        (
            K::tuple(
                v.nat_dst_addr_be,
                v.nat_src_addr_be,
                v.nat_dst_port_be,
                v.nat_src_port_be,
                key.proto(),
            ),
            key.dst_port_be(),
        )
    } else {
        (*key, v.nat_src_port_be)
    };
    report(
        SYNC_EVENT_NAT_CLOSING,
        &client,
        v.backend_id,
        v.vip_id,
        snat_port_be,
    );
}
