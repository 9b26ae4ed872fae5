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
//! `bpf_fib_lookup` for the next hop (the kernel's routes and neighbours).

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::{
    BackendInfo, Counter, FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_NAT, FLOW_F_REPLY, FlowKey,
    FlowValue, IPPROTO_TCP, NAT_PORT_PROBES, Settings, csum,
};

use crate::{
    maps::{FLOWS, NAT_EMBRYONIC, NAT_EMBRYONIC_CLIENT, NAT_FLOWS},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const AF_INET: u8 = 2;
const EEXIST: i32 = 17;

/// One direction's rewrite, copied out of its flow entry.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub ip_csum_delta: u16,
    pub l4_csum_delta: u16,
    /// The flow entry, to use and refresh its cached next hop (null for a flow's first packet).
    entry: *mut FlowValue,
    /// Ask the FIB even if the entry has a next hop (once a second per flow).
    refresh: bool,
}

impl Rewrite {
    #[inline(always)]
    fn of(v: &FlowValue, entry: *mut FlowValue, refresh: bool) -> Self {
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
#[inline(always)]
pub fn touch(entry: *mut FlowValue, tcp_flags: u8) -> Rewrite {
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
        v.flags = flags;
        v.last_seen_s = now;
    }
    Rewrite::of(v, entry, new_second)
}

/// Whether a packet with these flags may open a NAT flow: a SYN without ACK. Anything else
/// without a flow belongs to a connection we do not know; the kernel answers it with a RST.
#[inline(always)]
pub fn opens_flow(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// Opens a half-open NAT flow for a client's SYN: reserves an SNAT port for the backend (the
/// reply entry in `NAT_EMBRYONIC`, insert-if-absent) and records the client's direction in
/// `NAT_EMBRYONIC_CLIENT`. Nothing goes into `FLOWS` or `NAT_FLOWS` yet: the client's ACK
/// promotes the flow (`promote`), so spoofed SYNs, which never get that far, never touch the
/// established flows' tables. Returns the client direction's rewrite, and
/// false when this SYN is a retransmission of a flow already half-open.
#[inline(always)]
pub fn create(
    flow: &FlowKey,
    vip_id: u32,
    backend_id: u32,
    backend: *const BackendInfo,
    settings: *const Settings,
    now_ns: u64,
) -> Result<(Rewrite, bool), Counter> {
    // SAFETY: map value pointers from successful lookups.
    let (backend_addr, backend_port) = unsafe { ((*backend).addr_be, (*backend).port_be) };
    let (snat, port_min, port_max) = unsafe {
        (
            (*settings).snat_addr_be,
            (*settings).snat_port_min as u32,
            (*settings).snat_port_max as u32,
        )
    };
    if snat == 0 || port_max < port_min {
        // The agent always sets these when a NAT VIP exists: the maps are inconsistent.
        return Err(Counter::DropBadBackend);
    }
    let span = port_max - port_min + 1;
    let last_seen_s = now_s();
    // The first try keeps the client's own source port when the range has it, as the kernel's
    // NAT does: the client chose it so that it is not in TIME_WAIT with this peer, and the
    // backend then sees one consistent history per port (sequence numbers and timestamps of
    // the same client connection). A port last used by another client's connection can still
    // be in TIME_WAIT on the backend, which answers the new SYN with the old connection's ACK;
    // the client resets and retries a second later (measured: 1 900 SYN retransmissions in
    // 40 000 connections with random ports only, none with this).
    // The next tries are independent random ports: unlike linear probing they build no
    // clusters of taken ports, so a try fails with probability = the range's occupancy.
    // The last half walks on from the last random port, so a small range is searched
    // completely.
    // A retransmitted SYN of a half-open flow goes on through the port its first SYN took. (If
    // a flood evicted that reservation meanwhile and another flow took the port, the client's
    // ACK fails `promote`'s check and the kernel resets the client, which reconnects.)
    // SAFETY: a map lookup; the value is copied out at once.
    if let Some(forward) = unsafe { NAT_EMBRYONIC_CLIENT.get(flow) }.copied() {
        return Ok((Rewrite::of(&forward, core::ptr::null_mut(), true), false));
    }
    let half = NAT_PORT_PROBES / 2;
    let client_port = u16::from_be_bytes(flow.src_port_be.to_ne_bytes()) as u32;
    let mut start = 0;
    let client = (
        flow.src_addr_be,
        flow.dst_addr_be,
        flow.src_port_be,
        flow.dst_port_be,
    );
    for i in 0..NAT_PORT_PROBES {
        let offset = if i == 0 && client_port >= port_min && client_port <= port_max {
            start = client_port - port_min;
            start
        } else if i < half {
            // SAFETY: a helper call without preconditions.
            start = unsafe { bpf_get_prandom_u32() } % span;
            start
        } else {
            (start + 1 + i - half) % span
        };
        let port = (port_min + offset) as u16;
        let snat_port_be = u16::from_ne_bytes(port.to_be_bytes());
        let reply_key = FlowKey {
            src_addr_be: backend_addr,
            dst_addr_be: snat,
            src_port_be: backend_port,
            dst_port_be: snat_port_be,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        // The reply leaves as VIP:port → client:port.
        let (ip_delta, l4_delta) = csum::nat_deltas(
            (backend_addr, snat, backend_port, snat_port_be),
            (
                flow.dst_addr_be,
                flow.src_addr_be,
                flow.dst_port_be,
                flow.src_port_be,
            ),
        );
        let reply = FlowValue {
            backend_id,
            vip_id,
            created_ns: now_ns,
            flags: FLOW_F_NAT | FLOW_F_REPLY,
            last_seen_s,
            nat_src_addr_be: flow.dst_addr_be,
            nat_dst_addr_be: flow.src_addr_be,
            nat_src_port_be: flow.dst_port_be,
            nat_dst_port_be: flow.src_port_be,
            ip_csum_delta: ip_delta,
            l4_csum_delta: l4_delta,
            nh_ifindex: 0,
            nh_dmac: [0; 6],
            nh_smac: [0; 6],
        };
        match NAT_EMBRYONIC.insert(reply_key, reply, BPF_NOEXIST as u64) {
            Ok(()) => {}
            Err(e) if e == -EEXIST => continue,
            // An LRU insert fails only when the kernel has no memory for the element.
            Err(_) => return Err(Counter::DropNatTableFull),
        }
        // A port an established flow holds is taken too. Checked after our insert: a promotion
        // on another CPU inserts into NAT_FLOWS before it deletes its half-open entry, so one
        // of the two inserts always sees the other.
        // SAFETY: a map lookup; only its presence is used.
        if unsafe { NAT_FLOWS.get(reply_key) }.is_some() {
            let _ = NAT_EMBRYONIC.remove(reply_key);
            continue;
        }
        let forward = forward_entry(client, &reply_key, backend_id, vip_id, now_ns);
        if NAT_EMBRYONIC_CLIENT.insert(flow, forward, 0).is_err() {
            let _ = NAT_EMBRYONIC.remove(reply_key);
            return Err(Counter::DropNatTableFull);
        }
        return Ok((Rewrite::of(&forward, core::ptr::null_mut(), true), true));
    }
    Err(Counter::DropNatPortsExhausted)
}

/// The client direction's entry of a NAT flow (client → VIP becomes SNAT:port → backend),
/// from the client's 4-tuple and the flow's reply key.
#[inline(always)]
fn forward_entry(
    client: (u32, u32, u16, u16),
    reply_key: &FlowKey,
    backend_id: u32,
    vip_id: u32,
    created_ns: u64,
) -> FlowValue {
    let out = (
        reply_key.dst_addr_be,
        reply_key.src_addr_be,
        reply_key.dst_port_be,
        reply_key.src_port_be,
    );
    let (ip_delta, l4_delta) = csum::nat_deltas(client, out);
    FlowValue {
        backend_id,
        vip_id,
        created_ns,
        flags: FLOW_F_NAT,
        last_seen_s: now_s(),
        nat_src_addr_be: out.0,
        nat_dst_addr_be: out.1,
        nat_src_port_be: out.2,
        nat_dst_port_be: out.3,
        ip_csum_delta: ip_delta,
        l4_csum_delta: l4_delta,
        nh_ifindex: 0,
        nh_dmac: [0; 6],
        nh_smac: [0; 6],
    }
}

/// A backend's packet for a half-open flow (its SYN-ACK, or a RST when nothing listens): on
/// to the client, rewritten. A RST ends the half-open flow.
#[inline(always)]
pub fn reply_half_open(reply_key: &FlowKey, embryo: *const FlowValue, tcp_flags: u8) -> Rewrite {
    // SAFETY: a map value pointer from a successful lookup, copied out at once.
    let e = unsafe { *embryo };
    if tcp_flags & TCP_RST != 0 {
        let _ = NAT_EMBRYONIC.remove(reply_key);
    }
    Rewrite::of(&e, core::ptr::null_mut(), true)
}

/// A client's packet without SYN and without a flow, to a NAT VIP: the ACK that completes a
/// half-open flow's handshake promotes it. The reply entry moves to `NAT_FLOWS` (inserted
/// before the half-open one is deleted, so the port is never free in between) and the
/// client's direction to `FLOWS`. Returns the rewrite and the backend id. A spoofed SYN never gets here: its source never sees the
/// backend's SYN-ACK, so it cannot ACK it.
#[inline(always)]
pub fn promote(flow: &FlowKey) -> Result<(Rewrite, u32), Counter> {
    // SAFETY: a map lookup; the value is copied out at once.
    let Some(forward) = (unsafe { NAT_EMBRYONIC_CLIENT.get(flow) }).copied() else {
        // A connection we do not know (e.g. made on another LB node before a failover): the
        // kernel answers it with a RST. Unless another CPU promoted this very flow between our
        // `FLOWS` miss and here (the client's ACK and its first data race): then it is in
        // `FLOWS` now. The same holds for each early return below.
        return promoted_meanwhile(flow).ok_or(Counter::PassNatNoFlow);
    };
    let reply_key = FlowKey {
        src_addr_be: forward.nat_dst_addr_be,
        dst_addr_be: forward.nat_src_addr_be,
        src_port_be: forward.nat_dst_port_be,
        dst_port_be: forward.nat_src_port_be,
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    // The port's reservation must still be this flow's: the LRU may have evicted it (a flood)
    // and another flow taken the port since.
    // SAFETY: as above.
    let Some(reply) = (unsafe { NAT_EMBRYONIC.get(reply_key) }).copied() else {
        return promoted_meanwhile(flow).ok_or(Counter::PassNatNoFlow);
    };
    if (
        reply.nat_dst_addr_be,
        reply.nat_dst_port_be,
        reply.nat_src_port_be,
    ) != (flow.src_addr_be, flow.src_port_be, flow.dst_port_be)
    {
        let _ = NAT_EMBRYONIC_CLIENT.remove(flow);
        return Err(Counter::PassNatNoFlow);
    }
    let now = now_s();
    let reply = FlowValue {
        flags: reply.flags | FLOW_F_ESTABLISHED,
        last_seen_s: now,
        ..reply
    };
    match NAT_FLOWS.insert(reply_key, reply, BPF_NOEXIST as u64) {
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
    let forward = FlowValue {
        last_seen_s: now,
        ..forward
    };
    if FLOWS.insert(flow, forward, 0).is_err() {
        // An LRU insert fails only without memory: undo, the client's next ACK tries again.
        let _ = NAT_FLOWS.remove(reply_key);
        return Err(Counter::DropNatTableFull);
    }
    let _ = NAT_EMBRYONIC.remove(reply_key);
    let _ = NAT_EMBRYONIC_CLIENT.remove(flow);
    Ok((
        Rewrite::of(&forward, core::ptr::null_mut(), true),
        forward.backend_id,
    ))
}

/// The flow's client-direction entry, if another CPU's promotion has put it in `FLOWS`.
#[inline(always)]
fn promoted_meanwhile(flow: &FlowKey) -> Option<(Rewrite, u32)> {
    // SAFETY: a map lookup; the value is copied out at once.
    let forward = unsafe { FLOWS.get(flow) }.copied()?;
    Some((
        Rewrite::of(&forward, core::ptr::null_mut(), true),
        forward.backend_id,
    ))
}

/// Rewrites addresses, ports and both checksums, then sends the packet to the next hop the
/// kernel's FIB names: XDP_TX out of the ingress interface, or a redirect to another one.
#[inline(always)]
pub fn rewrite_and_route(ctx: &XdpContext, packet: &Packet, rw: &Rewrite) -> Result<u32, Counter> {
    let (eth, ip, tcp) = (packet.eth, packet.ip, packet.tcp);
    // SAFETY: the parser bounds-checked the whole Ethernet, IPv4 and TCP headers and the frame
    // has not been resized since.
    let (tot_len, tos) = unsafe {
        (*ip).src_addr = rw.src_addr_be.to_ne_bytes();
        (*ip).dst_addr = rw.dst_addr_be.to_ne_bytes();
        (*ip).check = csum::apply(u16::from_ne_bytes((*ip).check), rw.ip_csum_delta).to_ne_bytes();
        (*tcp).source = rw.src_port_be.to_ne_bytes();
        (*tcp).dest = rw.dst_port_be.to_ne_bytes();
        (*tcp).check =
            csum::apply(u16::from_ne_bytes((*tcp).check), rw.l4_csum_delta).to_ne_bytes();
        (u16::from_be_bytes((*ip).tot_len), (*ip).tos)
    };

    let ingress = ctx.ingress_ifindex() as u32;
    if !rw.refresh && !rw.entry.is_null() {
        // SAFETY: a map value pointer from this packet's lookup.
        let (ifindex, dmac, smac) = unsafe {
            (
                (*rw.entry).nh_ifindex,
                (*rw.entry).nh_dmac,
                (*rw.entry).nh_smac,
            )
        };
        return send(eth, ingress, ifindex, dmac, smac);
    }
    // SAFETY: plain-integer C struct; all-zero is its documented initial state.
    let mut fib: FibParams = unsafe { zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_TCP;
    fib.sport = rw.src_port_be;
    fib.dport = rw.dst_port_be;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.ifindex = ingress;
    fib.__bindgen_anon_2.tos = tos;
    fib.__bindgen_anon_3.ipv4_src = rw.src_addr_be;
    fib.__bindgen_anon_4.ipv4_dst = rw.dst_addr_be;
    // SAFETY: ctx is the program's context and fib a stack struct of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut fib,
            size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        // The kernel resolves the neighbour when it forwards this (already rewritten) packet.
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(Counter::PassNatNoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(Counter::PassNatMtu),
        BPF_FIB_LKUP_RET_FWD_DISABLED => return Err(Counter::DropNatForwardingDisabled),
        _ => return Err(Counter::DropNatNoRoute),
    }
    if !rw.entry.is_null() {
        // SAFETY: as above. Racing writers store the same answer.
        unsafe {
            (*rw.entry).nh_ifindex = fib.ifindex;
            (*rw.entry).nh_dmac = fib.dmac;
            (*rw.entry).nh_smac = fib.smac;
        }
    }
    send(eth, ingress, fib.ifindex, fib.dmac, fib.smac)
}

#[inline(always)]
fn send(
    eth: *mut network_types::eth::EthHdr,
    ingress: u32,
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
) -> Result<u32, Counter> {
    // SAFETY: bounds-checked by the parser; the frame was not resized.
    unsafe {
        (*eth).dst_addr = dmac;
        (*eth).src_addr = smac;
    }
    if ifindex == ingress {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: a helper call; an ifindex without XDP transmit support fails in the kernel's
    // redirect and is counted there (xdp_redirect_err).
    Ok(unsafe { bpf_redirect(ifindex, 0) } as u32)
}

/// Translates an ICMP "fragmentation needed" about a NAT flow's packet for the other side of
/// the translation, in place: `entry` is the flow entry of the direction `icmp.flow` names, and
/// the quoted packet went the other way (it is the LB's rewritten packet), so the quote gets
/// the addresses and ports that packet had before the rewrite, and the error goes to the host
/// that sent it: a backend (about the LB's reply to a client) or a client (about the LB's
/// packet to a backend). The next-hop MTU is kept: NAT44 does not change header sizes.
/// Checksums by delta: the outer and quoted IPv4 headers and the ICMP message
/// (`csum::quoted_ports_delta`). The kernel forwards the result (NAT needs forwarding on).
#[inline(always)]
pub fn translate_too_big(icmp: &crate::parse::TooBig, entry: *const FlowValue) {
    // SAFETY: a map value pointer from a successful lookup; the packet pointers were
    // bounds-checked by the parser and the frame has not been resized.
    unsafe {
        let v = &*entry;
        let (src, dst) = (
            u32::from_ne_bytes((*icmp.inner).src_addr),
            u32::from_ne_bytes((*icmp.inner).dst_addr),
        );
        let sport = u16::from_ne_bytes([(*icmp.ports)[0], (*icmp.ports)[1]]);
        let dport = u16::from_ne_bytes([(*icmp.ports)[2], (*icmp.ports)[3]]);
        let new = (
            v.nat_dst_addr_be,
            v.nat_src_addr_be,
            v.nat_dst_port_be,
            v.nat_src_port_be,
        );
        let (inner_ip_delta, _) = csum::nat_deltas((src, dst, sport, dport), new);
        (*icmp.inner).src_addr = new.0.to_ne_bytes();
        (*icmp.inner).dst_addr = new.1.to_ne_bytes();
        (*icmp.inner).check =
            csum::apply(u16::from_ne_bytes((*icmp.inner).check), inner_ip_delta).to_ne_bytes();
        let [a, b] = new.2.to_ne_bytes();
        let [c, d] = new.3.to_ne_bytes();
        (*icmp.ports)[0] = a;
        (*icmp.ports)[1] = b;
        (*icmp.ports)[2] = c;
        (*icmp.ports)[3] = d;
        let icmp_delta = csum::quoted_ports_delta((sport, dport), (new.2, new.3));
        let check = u16::from_ne_bytes([(*icmp.icmp)[2], (*icmp.icmp)[3]]);
        let [e, f] = csum::apply(check, icmp_delta).to_ne_bytes();
        (*icmp.icmp)[2] = e;
        (*icmp.icmp)[3] = f;
        // The error goes to the quoted packet's (new) source.
        let outer_dst = u32::from_ne_bytes((*icmp.ip).dst_addr);
        let outer_src = u32::from_ne_bytes((*icmp.ip).src_addr);
        let (outer_delta, _) =
            csum::nat_deltas((outer_src, outer_dst, 0, 0), (outer_src, new.0, 0, 0));
        (*icmp.ip).dst_addr = new.0.to_ne_bytes();
        (*icmp.ip).check =
            csum::apply(u16::from_ne_bytes((*icmp.ip).check), outer_delta).to_ne_bytes();
    }
}
