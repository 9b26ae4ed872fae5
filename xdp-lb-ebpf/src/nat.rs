//! Full NAT: the client's packet leaves as SNAT-address:port → backend:port, and the backend's
//! reply, addressed to SNAT-address:port, leaves as VIP:port → client. Backends need nothing:
//! no VIP on a loopback, no shared L2 segment, any port.
//!
//! Both directions are flow-table entries keyed by the 5-tuple the packet carries: the client's
//! direction in `FLOWS` (looked up first for every packet, as for DSR), the reply direction in
//! `NAT_FLOWS`. The reply entry is also the SNAT port's reservation: it is inserted with
//! BPF_NOEXIST, which the kernel performs atomically under the bucket lock, so two flows on any
//! CPUs can never hold the same (SNAT address, port, backend address, backend port). It lives in
//! a plain hash map, not an LRU, because silently evicting a live reservation would hand its
//! port to a second flow; the agent reclaims entries by TCP state and idle time instead
//! (`xdp-lb/src/nat.rs`).
//!
//! A flow starts half-open: the client's SYN reserves its port in `NAT_EMBRYONIC` (reply key)
//! and `NAT_EMBRYONIC_CLIENT` (client key), two LRUs, and nothing else. The backend's SYN-ACK
//! comes back through the LB whoever the source was (it is addressed to the SNAT address), so
//! it proves nothing; only the client's ACK of it, which a spoofed source never sends, moves
//! the flow into `NAT_FLOWS` and `FLOWS`. So a random-source SYN flood churns only the half-open LRU: it
//! cannot fill `NAT_FLOWS`, evict an established flow, or hold SNAT ports longer than its own
//! turnover (issue 13; measured in `tests/tests/flood.rs`). A legitimate half-open flow lives
//! one round trip to the backend, far shorter than a flood takes to cycle the LRU.
//!
//! Each entry carries its direction's rewrite and the checksum deltas of that rewrite,
//! computed once at flow creation (RFC 1624), so a packet costs a few stores, two adds and one
//! `bpf_fib_lookup` for the next hop (the kernel's routes and neighbours): `nat_rewrite.rs`.

#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the slots are passed to map calls by reference on purpose: by value (as they are \
              `Copy`) they would be copied onto the stack, which the IPv6 path has no room for"
)]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
    maps::{HashMap, LruHashMap},
};
use xdp_lb_common::{
    BackendInfo, Counter, FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_REPLY, FlowKey, FlowKey6,
    FlowTuple, FlowValueOf, IPPROTO_UDP, NAT_PORT_PROBES, NatStamp, Settings, nat_forward_sum,
    nat_proto_flags,
};

use crate::{
    maps::{
        FLOWS, FLOWS6, NAT_EMBRYONIC, NAT_EMBRYONIC_CLIENT, NAT_EMBRYONIC_CLIENT6, NAT_EMBRYONIC6,
        NAT_FLOWS, NAT_FLOWS6,
    },
    nat_slots::NatSlots,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const EEXIST: i32 = 17;

/// A family's NAT maps and SNAT address: the NAT flow logic below is written once over this,
/// for `FlowKey` (IPv4: `FLOWS`, `NAT_FLOWS`, …) and `FlowKey6` (NAT66: `FLOWS6`,
/// `NAT_FLOWS6`, …). Monomorphised and inlined, the IPv4 code is what it was before IPv6.
pub(crate) trait NatFamily: FlowTuple + 'static {
    /// Client directions of established flows (and DSR flows).
    fn flows() -> &'static LruHashMap<Self, FlowValueOf<Self::Addr>>;
    /// Reply directions of established NAT flows: the SNAT port reservations.
    fn nat_flows() -> &'static HashMap<Self, FlowValueOf<Self::Addr>>;
    /// Half-open flows, reply direction (the port reservation while half-open).
    fn embryonic() -> &'static LruHashMap<Self, FlowValueOf<Self::Addr>>;
    /// Half-open flows, client direction.
    fn embryonic_client() -> &'static LruHashMap<Self, FlowValueOf<Self::Addr>>;
    /// This family's SNAT address (`Default`, i.e. zero: none configured).
    fn snat(settings: *const Settings) -> Self::Addr;
}

impl NatFamily for FlowKey {
    #[inline(always)]
    fn flows() -> &'static LruHashMap<Self, FlowValueOf<u32>> {
        &FLOWS
    }
    #[inline(always)]
    fn nat_flows() -> &'static HashMap<Self, FlowValueOf<u32>> {
        &NAT_FLOWS
    }
    #[inline(always)]
    fn embryonic() -> &'static LruHashMap<Self, FlowValueOf<u32>> {
        &NAT_EMBRYONIC
    }
    #[inline(always)]
    fn embryonic_client() -> &'static LruHashMap<Self, FlowValueOf<u32>> {
        &NAT_EMBRYONIC_CLIENT
    }
    #[inline(always)]
    fn snat(settings: *const Settings) -> u32 {
        // SAFETY: the settings map value, valid while this program runs.
        unsafe { (*settings).snat_addr_be }
    }
}

impl NatFamily for FlowKey6 {
    #[inline(always)]
    fn flows() -> &'static LruHashMap<Self, FlowValueOf<[u8; 16]>> {
        &FLOWS6
    }
    #[inline(always)]
    fn nat_flows() -> &'static HashMap<Self, FlowValueOf<[u8; 16]>> {
        &NAT_FLOWS6
    }
    #[inline(always)]
    fn embryonic() -> &'static LruHashMap<Self, FlowValueOf<[u8; 16]>> {
        &NAT_EMBRYONIC6
    }
    #[inline(always)]
    fn embryonic_client() -> &'static LruHashMap<Self, FlowValueOf<[u8; 16]>> {
        &NAT_EMBRYONIC_CLIENT6
    }
    #[inline(always)]
    fn snat(settings: *const Settings) -> [u8; 16] {
        // SAFETY: as above.
        unsafe { (*settings).snat_addr6 }
    }
}

/// One direction's rewrite, copied out of its flow entry.
#[derive(Clone, Copy)]
pub(crate) struct Rewrite<A> {
    pub src_addr_be: A,
    pub dst_addr_be: A,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub ip_csum_delta: u16,
    pub l4_csum_delta: u16,
    /// The flow entry, to use and refresh its cached next hop (null for a flow's first packet).
    pub(crate) entry: *mut FlowValueOf<A>,
    /// Ask the FIB even if the entry has a next hop (once a second per flow).
    pub(crate) refresh: bool,
}

impl<A: Copy> Rewrite<A> {
    #[inline(always)]
    fn of(v: &FlowValueOf<A>, entry: *mut FlowValueOf<A>, refresh: bool) -> Self {
        Self {
            src_addr_be: v.nat_src_addr_be,
            dst_addr_be: v.nat_dst_addr_be,
            src_port_be: v.nat_src_port_be,
            dst_port_be: v.nat_dst_port_be,
            ip_csum_delta: v.ip_csum_delta,
            l4_csum_delta: v.l4_csum_delta,
            entry,
            refresh: refresh || v.nh_ifindex == 0,
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in seconds: the clock of `last_seen_s` (the agent reads the same).
#[inline(always)]
fn now_s() -> u32 {
    // SAFETY: a helper call without preconditions.
    (unsafe { bpf_ktime_get_coarse_ns() } / 1_000_000_000) as u32
}

/// Records this packet in its flow entry (TCP state and last-seen second) and returns the
/// entry's rewrite. Writes only when something changed, at most once a second per flow.
/// `key` is the packet's own 5-tuple (the client's, or the backend's reply): a flow that
/// starts closing is reported to the sync by its client's (`sync_events::closing`).
#[inline(always)]
pub(crate) fn touch<K: FlowTuple>(
    entry: *mut FlowValueOf<K::Addr>,
    tcp_flags: u8,
    key: &K,
) -> Rewrite<K::Addr> {
    // SAFETY: a map value pointer from a successful lookup.
    let v = unsafe { &mut *entry };
    let mut flags = v.flags;
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        flags |= FLOW_F_CLOSING;
    } else if tcp_flags & TCP_SYN != 0 {
        // A SYN (or the backend's SYN-ACK) on a closed 4-tuple opens a new connection on the
        // same binding (a client reusing its port after TIME_WAIT): closing no longer applies.
        flags &= !FLOW_F_CLOSING;
    }
    if flags & FLOW_F_REPLY != 0 {
        flags |= FLOW_F_ESTABLISHED;
    }
    let now = now_s();
    let new_second = now != v.last_seen_s;
    if flags != v.flags || new_second {
        if flags & FLOW_F_CLOSING != 0 && v.flags & FLOW_F_CLOSING == 0 {
            crate::sync_events::closing(entry, key);
        }
        v.flags = flags;
        v.last_seen_s = now;
    }
    Rewrite::of(v, entry, new_second)
}

/// Whether a client packet without a flow entry should try `promote` first: TCP without SYN
/// (see `opens_flow`); any UDP datagram, since UDP has no handshake: a flow is half-open after
/// its first datagram, and the client's second one promotes it (a random-source flood, one
/// datagram per source, churns only the half-open LRU, as SYNs do). If there is no half-open
/// flow, a UDP datagram opens one.
#[inline(always)]
pub(crate) fn may_promote(proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_UDP || !opens_flow(tcp_flags)
}

/// Whether a packet with these flags may open a NAT flow: a SYN without ACK. Anything else
/// without a flow belongs to a connection we do not know; the kernel answers it with a RST.
#[inline(always)]
pub(crate) fn opens_flow(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// Opens a half-open NAT flow for a client's SYN: reserves an SNAT port for the backend (the
/// reply entry in `NAT_EMBRYONIC`, insert-if-absent) and records the client's direction in
/// `NAT_EMBRYONIC_CLIENT`. Nothing goes into `FLOWS` or `NAT_FLOWS` yet: the client's ACK
/// promotes the flow (`promote`), so spoofed SYNs, which never get that far, never touch the
/// established flows' tables. Returns the client direction's rewrite, and
/// false when this SYN is a retransmission of a flow already half-open.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined: the arguments are the caller's values"
)]
pub(crate) fn create<K: NatFamily>(
    slots: &mut NatSlots<K>,
    flow: &K,
    vip_id: u32,
    backend_id: u32,
    backend_addr: K::Addr,
    backend: *const BackendInfo,
    settings: *const Settings,
    now_ns: u64,
    reply_sum: u32,
) -> Result<(Rewrite<K::Addr>, bool), Counter> {
    // SAFETY: map value pointers from successful lookups.
    let backend_port = unsafe { (*backend).port_be };
    let snat = K::snat(settings);
    let mut ports = PortProbe::new(settings, flow)?;
    if snat == K::Addr::default() {
        // The agent always sets it when a NAT VIP of this family exists: the maps are
        // inconsistent.
        return Err(Counter::DropBadBackend);
    }
    // A retransmitted SYN of a half-open flow goes on through the port its first SYN took. (If
    // a flood evicted that reservation meanwhile and another flow took the port, the client's
    // ACK fails `promote`'s check and the kernel resets the client, which reconnects.)
    // SAFETY: a map lookup; the value is copied out at once.
    if let Some(forward) = unsafe { K::embryonic_client().get(flow) } {
        return Ok((Rewrite::of(forward, core::ptr::null_mut(), true), false));
    }
    let (client_addr, vip_addr) = (flow.src(), flow.dst());
    let (client_port_be, vip_port_be) = (flow.src_port_be(), flow.dst_port_be());
    // Everything of both entries but the SNAT port, written once (the entries' shared
    // constructors, which the agent's installs of a peer's flows use too): the probes below
    // change only ports and the checksum deltas' port part (which also keeps the 128-bit
    // addresses of IPv6 out of the loop's registers).
    let forward_sum = nat_forward_sum(reply_sum);
    slots.key = K::tuple(backend_addr, snat, backend_port, 0, flow.proto());
    let stamp = NatStamp {
        backend_id,
        vip_id,
        created_ns: now_ns,
        last_seen_s: now_s(),
    };
    let udp = nat_proto_flags(flow.proto());
    slots.reply = FlowValueOf::nat_reply(
        stamp,
        udp,
        (vip_addr, vip_port_be),
        (client_addr, client_port_be),
        reply_sum,
    );
    slots.forward =
        FlowValueOf::nat_forward(stamp, udp, snat, (backend_addr, backend_port), forward_sum);
    for i in 0..NAT_PORT_PROBES {
        let snat_port_be = ports.next(i);
        slots.key.set_dst_port_be(snat_port_be);
        slots.reply.set_reply_ports(
            reply_sum,
            (backend_port, snat_port_be),
            (vip_port_be, client_port_be),
        );
        if !reserve(slots)? {
            continue;
        }
        slots.forward.set_forward_ports(
            forward_sum,
            (client_port_be, vip_port_be),
            (snat_port_be, backend_port),
        );
        if K::embryonic_client()
            .insert(flow, &slots.forward, 0)
            .is_err()
        {
            let _ = K::embryonic().remove(&slots.key);
            return Err(Counter::DropNatTableFull);
        }
        return Ok((
            Rewrite::of(&slots.forward, core::ptr::null_mut(), true),
            true,
        ));
    }
    Err(Counter::DropNatPortsExhausted)
}

/// Reserves the SNAT port of `slots.key` with the reply entry (insert-if-absent into the
/// half-open table); false when the port is taken, by a half-open flow or an established one.
#[inline(always)]
fn reserve<K: NatFamily>(slots: &NatSlots<K>) -> Result<bool, Counter> {
    match K::embryonic().insert(&slots.key, &slots.reply, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => return Ok(false),
        // An LRU insert fails only when the kernel has no memory for the element.
        Err(_) => return Err(Counter::DropNatTableFull),
    }
    // A port an established flow holds is taken too. Checked after our insert: a promotion on
    // another CPU inserts into NAT_FLOWS before it deletes its half-open entry, so one of the
    // two inserts always sees the other.
    // SAFETY: a map lookup; only its presence is used.
    if unsafe { K::nat_flows().get(&slots.key) }.is_some() {
        let _ = K::embryonic().remove(&slots.key);
        return Ok(false);
    }
    Ok(true)
}

/// The SNAT ports a new flow tries, in order (`NAT_PORT_PROBES` of them).
///
/// The first try keeps the client's own source port when the range has it, as the kernel's
/// NAT does: the client chose it so that it is not in TIME_WAIT with this peer, and the
/// backend then sees one consistent history per port (sequence numbers and timestamps of the
/// same client connection). A port last used by another client's connection can still be in
/// TIME_WAIT on the backend, which answers the new SYN with the old connection's ACK; the
/// client resets and retries a second later (measured: 1 900 SYN retransmissions in 40 000
/// connections with random ports only, none with this). The next tries are independent random
/// ports: unlike linear probing they build no clusters of taken ports, so a try fails with
/// probability = the range's occupancy. The last half walks on from the last random port, so
/// a small range is searched completely.
struct PortProbe {
    port_min: u32,
    port_max: u32,
    span: u32,
    client_port: u32,
    start: u32,
}

impl PortProbe {
    /// The range of `settings`; a range the agent would never set means inconsistent maps.
    #[inline(always)]
    fn new<K: FlowTuple>(settings: *const Settings, flow: &K) -> Result<Self, Counter> {
        // SAFETY: the settings map value, live while this program runs.
        let (port_min, port_max) = unsafe {
            (
                (*settings).snat_port_min as u32,
                (*settings).snat_port_max as u32,
            )
        };
        if port_max < port_min {
            return Err(Counter::DropBadBackend);
        }
        Ok(Self {
            port_min,
            port_max,
            span: port_max - port_min + 1,
            client_port: u16::from_be_bytes(flow.src_port_be().to_ne_bytes()) as u32,
            start: 0,
        })
    }

    /// The `i`-th port to try, in network order.
    #[inline(always)]
    fn next(&mut self, i: u32) -> u16 {
        let half = NAT_PORT_PROBES / 2;
        let offset =
            if i == 0 && self.client_port >= self.port_min && self.client_port <= self.port_max {
                self.start = self.client_port - self.port_min;
                self.start
            } else if i < half {
                // SAFETY: a helper call without preconditions.
                self.start = unsafe { bpf_get_prandom_u32() } % self.span;
                self.start
            } else {
                (self.start + 1 + i - half) % self.span
            };
        let port = (self.port_min + offset) as u16;
        u16::from_ne_bytes(port.to_be_bytes())
    }
}

/// The addresses' part of a new NAT flow's reply checksum deltas (`create`'s `reply_sum`):
/// the reply leaves as VIP → client instead of backend → SNAT address. Apart from `create`
/// for the IPv6 path's stack (see `ipv6.rs`).
#[inline(always)]
pub(crate) fn reply_addr_sum<K: NatFamily>(
    flow: &K,
    backend_addr: &K::Addr,
    settings: *const Settings,
) -> u32 {
    K::addr_sum(
        (backend_addr, &K::snat(settings)),
        (&flow.dst(), &flow.src()),
    )
}

/// A backend's packet for a half-open flow (its SYN-ACK, or a RST when nothing listens): on
/// to the client, rewritten. A RST ends the half-open flow.
#[inline(always)]
pub(crate) fn reply_half_open<K: NatFamily>(
    reply_key: &K,
    embryo: *const FlowValueOf<K::Addr>,
    tcp_flags: u8,
) -> Rewrite<K::Addr> {
    // SAFETY: a map value pointer from a successful lookup, copied out at once.
    let e = unsafe { *embryo };
    if tcp_flags & TCP_RST != 0 {
        let _ = K::embryonic().remove(reply_key);
    }
    Rewrite::of(&e, core::ptr::null_mut(), true)
}

/// A client's packet without SYN and without a flow, to a NAT VIP: the ACK that completes a
/// half-open flow's handshake promotes it. The reply entry moves to `NAT_FLOWS` (inserted
/// before the half-open one is deleted, so the port is never free in between) and the
/// client's direction to `FLOWS`. Returns the rewrite and the backend id. A spoofed SYN never gets here: its source never sees the
/// backend's SYN-ACK, so it cannot ACK it.
#[inline(always)]
pub(crate) fn promote<K: NatFamily>(
    slots: &mut NatSlots<K>,
    flow: &K,
) -> Result<(Rewrite<K::Addr>, u32), Counter> {
    // SAFETY: a map lookup; the value is copied out at once.
    let Some(forward) = (unsafe { K::embryonic_client().get(flow) }) else {
        // A connection we do not know (e.g. made on another LB node before a failover): the
        // kernel answers it with a RST. Unless another CPU promoted this very flow between our
        // `FLOWS` miss and here (the client's ACK and its first data race): then it is in
        // `FLOWS` now. The same holds for each early return below.
        return promoted_meanwhile(flow).ok_or(Counter::PassNatNoFlow);
    };
    slots.forward = *forward;
    slots.key = K::tuple(
        slots.forward.nat_dst_addr_be,
        slots.forward.nat_src_addr_be,
        slots.forward.nat_dst_port_be,
        slots.forward.nat_src_port_be,
        flow.proto(),
    );
    // The port's reservation must still be this flow's: the LRU may have evicted it (a flood)
    // and another flow taken the port since.
    // SAFETY: as above.
    let Some(reply) = (unsafe { K::embryonic().get(&slots.key) }) else {
        return promoted_meanwhile(flow).ok_or(Counter::PassNatNoFlow);
    };
    slots.reply = *reply;
    if slots.reply.nat_dst_addr_be != flow.src()
        || slots.reply.nat_dst_port_be != flow.src_port_be()
        || slots.reply.nat_src_port_be != flow.dst_port_be()
    {
        let _ = K::embryonic_client().remove(flow);
        return Err(Counter::PassNatNoFlow);
    }
    let now = now_s();
    slots.reply.flags |= FLOW_F_ESTABLISHED;
    slots.reply.last_seen_s = now;
    match K::nat_flows().insert(&slots.key, &slots.reply, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU is promoting this flow right now (its `FLOWS` entry may not be there
        // yet: then this packet is dropped and the client sends it again).
        Err(e) if e == -EEXIST => {
            return promoted_meanwhile(flow).ok_or(Counter::DropNatDuplicateReply);
        }
        // E2BIG: `flow_table_size` established NAT flows; ENOMEM: no memory for the element.
        // The half-open flow stays: the client's next ACK tries again.
        Err(_) => return Err(Counter::DropNatTableFull),
    }
    slots.forward.last_seen_s = now;
    if K::flows().insert(flow, &slots.forward, 0).is_err() {
        // An LRU insert fails only without memory: undo, the client's next ACK tries again.
        let _ = K::nat_flows().remove(&slots.key);
        return Err(Counter::DropNatTableFull);
    }
    let _ = K::embryonic().remove(&slots.key);
    let _ = K::embryonic_client().remove(flow);
    // Established: worth keeping across a failover.
    if crate::sync_events::enabled() {
        crate::sync_events::report(
            xdp_lb_common::SYNC_EVENT_NAT,
            flow,
            slots.forward.backend_id,
            slots.forward.vip_id,
            slots.forward.nat_src_port_be,
        );
    }
    Ok((
        Rewrite::of(&slots.forward, core::ptr::null_mut(), true),
        slots.forward.backend_id,
    ))
}

/// The flow's client-direction entry, if another CPU's promotion has put it in `FLOWS`.
#[inline(always)]
fn promoted_meanwhile<K: NatFamily>(flow: &K) -> Option<(Rewrite<K::Addr>, u32)> {
    // SAFETY: a map lookup; the value is copied out at once.
    let forward = unsafe { K::flows().get(flow) }?;
    Some((
        Rewrite::of(forward, core::ptr::null_mut(), true),
        forward.backend_id,
    ))
}
