//! The answers to the agent's health probes through the tunnel (`xdp-lb/src/health/tunnel.rs`).
//! The agent sends a backend an encapsulated SYN to the VIP from its tunnel source address and
//! port `PROBE_PORT_BASE + backend id`; the backend, having decapsulated it, answers from the
//! VIP straight back to that address. That SYN-ACK (or a RST, if nothing listens) is recorded
//! here and dropped: no socket of
//! this host waits for it (the kernel would answer it with a RST). The agent reads the
//! record, checks its acknowledgement number against its SYN's sequence number, and resets the
//! backend's half-open connection itself.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use xdp_lb_common::{Counter, IPPROTO_TCP, MAX_BACKENDS, PROBE_PORT_BASE, VipKey, VipKey6};
use xdp_lb_ebpf::parse::{self, Packet, Packet6, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

use crate::maps::{TUNNEL_PROBES, VIPS, VIPS6};

/// The probe a TCP segment answers, if it is a SYN-ACK (open), a RST (refused) or a bare ACK
/// (the backend still holds an earlier probe's half-open connection and acknowledges that
/// one: the agent resets it) to a probe port: its backend id.
#[inline(always)]
fn probe_id(proto: u8, tcp_flags: u8, dst_port_be: u16) -> Option<u32> {
    let port = u16::from_be(dst_port_be);
    let flags = tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    (proto == IPPROTO_TCP
        && (flags == TCP_SYN | TCP_ACK || flags == TCP_ACK || flags & TCP_RST != 0)
        && port >= PROBE_PORT_BASE)
        .then(|| (port - PROBE_PORT_BASE) as u32)
        .filter(|id| *id < MAX_BACKENDS)
}

/// Records an IPv4 SYN-ACK from a VIP to a probe port (then `Err(TunnelProbeReply)`: counted
/// and dropped); `Err(PassNotVip)` for anything else, which goes on to the kernel as before.
#[inline(always)]
pub(crate) fn record(packet: &Packet) -> Result<u32, Counter> {
    let flow = &packet.flow;
    let id = probe_id(flow.proto, packet.tcp_flags, flow.dst_port_be).ok_or(Counter::PassNotVip)?;
    let key = VipKey {
        addr_be: flow.src_addr,
        port_be: flow.src_port_be,
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    if VIPS.get_ptr(key).is_none() {
        return Err(Counter::PassNotVip);
    }
    // SAFETY: the parser bounds-checked the whole 20-byte TCP header at `ports`.
    let ack = unsafe { *(packet.ports.cast::<u8>().add(8) as *const [u8; 4]) };
    store(id, ack, flow.src_port_be, packet.tcp_flags)
}

/// As `record`, for IPv6.
#[inline(always)]
pub(crate) fn record6(
    ctx: &aya_ebpf::programs::XdpContext,
    packet: &Packet6,
) -> Result<u32, Counter> {
    let flow = &packet.flow;
    let id = probe_id(flow.proto, packet.tcp_flags, flow.dst_port_be).ok_or(Counter::PassNotVip)?;
    let key = VipKey6 {
        addr: flow.src_addr,
        port_be: flow.src_port_be,
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    if VIPS6.get_ptr(key).is_none() {
        return Err(Counter::PassNotVip);
    }
    let ack: *const [u8; 4] = parse::ptr_at(ctx, (packet.l4_off & 0x3fff) as usize + 8)
        .ok_or(Counter::DropBadTcpHeader)?;
    // SAFETY: bounds-checked just above.
    store(id, unsafe { *ack }, flow.src_port_be, packet.tcp_flags)
}

#[inline(always)]
fn store(id: u32, ack: [u8; 4], sport_be: u16, tcp_flags: u8) -> Result<u32, Counter> {
    let slot = TUNNEL_PROBES.get_ptr_mut(id).ok_or(Counter::PassNotVip)?;
    // SAFETY: a map value pointer; a helper without preconditions. A racing probe answer for
    // the same backend may interleave: the agent checks the acknowledgement number.
    unsafe {
        (*slot).ack_be = u32::from_ne_bytes(ack);
        (*slot).sport_be = sport_be;
        (*slot).tcp_flags = tcp_flags;
        (*slot).seen_ns = bpf_ktime_get_ns();
    }
    // Counted and dropped as the verdict.
    Err(Counter::TunnelProbeReply)
}
