//! Tunnel forwarding (`forwarding = "ipip"` or `"gue"`): a VIP's packet goes to its backend
//! inside an outer IP header (IPIP, IP6IP6, IPv4 in IPv6), or an outer IP and UDP header (GUE
//! variant 1: the inner IP packet directly after UDP), so that backends may sit anywhere in the
//! routed network and still answer clients directly. What the program needs per VIP, computed
//! by the agent; and the health probes' replies the program records.

/// The VIP forwards through a tunnel to its backends (with `VIP_F_GUE`: in UDP; else IPIP or
/// IP6IP6, by the backend's family).
pub const VIP_F_TUNNEL: u32 = 1 << 4;
/// With `VIP_F_TUNNEL`: GUE (UDP to `TunnelParams::gue_port_be`).
pub const VIP_F_GUE: u32 = 1 << 5;

/// A backend of a tunnel VIP: the program encapsulates what it forwards to it (by its
/// address's family: an outer IPv4 header when `BackendInfo::addr_be` is set, else IPv6).
/// A flow entry names a backend, so a flow-table hit knows its mode without the VIP; the
/// entry itself is a DSR one.
pub const BACKEND_F_TUNNEL: u32 = 1 << 1;
/// With `BACKEND_F_TUNNEL`: GUE, UDP to the VIP's `TunnelParams::gue_port_be`.
pub const BACKEND_F_GUE: u32 = 1 << 2;

/// A flow's entropy for the outer headers: a hash of its 5-tuple (IPv6 addresses folded to 32
/// bits first), the same for every packet of the flow. Cheap (a multiply) because it runs per
/// packet. It gives the GUE source port (`gue_source_port`) and the outer IPv6 flow label
/// (RFC 6438: routers and NICs spread tunnelled flows by it, each flow on one path).
#[inline(always)]
pub const fn flow_entropy(src: u32, dst: u32, ports: u32, proto: u8) -> u32 {
    (src ^ dst.rotate_left(16) ^ ports ^ proto as u32).wrapping_mul(0x9e37_79b1)
}

/// The GUE source port of a flow of this entropy: in the dynamic range (RFC 6335,
/// 49152-65535), so that the backend's NIC spreads flows over its queues (RSS hashes the outer
/// UDP ports) while each flow keeps one port.
#[inline(always)]
pub const fn gue_source_port(entropy: u32) -> u16 {
    0xc000 | (entropy >> 18) as u16
}

/// The outer IPv6 header's flow label for a flow of this entropy (20 bits).
#[inline(always)]
pub const fn flow_label(entropy: u32) -> u32 {
    entropy & 0x000f_ffff
}

/// The outer IPv4 header's length (no options).
pub const OUTER4_LEN: u16 = 20;
/// The outer IPv6 header's length (no extension headers).
pub const OUTER6_LEN: u16 = 40;
/// The UDP header GUE adds.
pub const GUE_UDP_LEN: u16 = 8;
/// The outer header's time to live / hop limit.
pub const OUTER_TTL: u8 = 64;
/// The default `gue_port` (IANA's port for GUE, RFC draft-ietf-intarea-gue).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// The value of `VIP_TUNNELS[vip_id]` (an array, read only for tunnel VIPs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelParams {
    /// The outer source of packets to IPv4 backends (network order; 0: none configured).
    pub src4_be: u32,
    /// The outer source of packets to IPv6 backends (all zero: none configured).
    pub src6: [u8; 16],
    /// GUE: the backends' UDP port (network order); 0 for IPIP and IP6IP6.
    pub gue_port_be: u16,
    /// The largest inner packet (its IP header included) that fits `tunnel_mtu` once
    /// encapsulated for an IPv4 backend, and for an IPv6 one.
    /// A larger one is answered with an ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet
    /// too big" that names this as the MTU to use.
    pub max_inner4: u16,
    pub max_inner6: u16,
    /// `mss_clamp`: the largest MSS a SYN to this VIP may offer, for an IPv4 backend and for
    /// an IPv6 one (0: no clamping).
    pub mss4: u16,
    pub mss6: u16,
    pub _pad: u16,
}

impl TunnelParams {
    /// The outer headers' length for a backend of this family (IPv6: `true`).
    pub const fn overhead(&self, outer6: bool) -> u16 {
        let ip = if outer6 { OUTER6_LEN } else { OUTER4_LEN };
        if self.gue_port_be != 0 {
            ip + GUE_UDP_LEN
        } else {
            ip
        }
    }
}

/// The first TCP port of the tunnel health probes: a probe of backend id `n` is sent from
/// port `PROBE_PORT_BASE + n` (backend ids are below `MAX_BACKENDS`, 4096), above the
/// kernel's default ephemeral range (32768-60999), so the host's own connections never use it.
pub const PROBE_PORT_BASE: u16 = 61440;

/// A value of `TUNNEL_PROBES[backend_id]`: the last answer (SYN-ACK, or RST) a backend sent to
/// a tunnel health probe, recorded by the program (which then drops it: no socket of the host
/// waits for it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeReply {
    /// `bpf_ktime_get_ns()` when it arrived (0: never).
    pub seen_ns: u64,
    /// Its acknowledgement number (network order): the probe's RST takes it as its sequence.
    pub ack_be: u32,
    /// Its source port (network order): the VIP's port.
    pub sport_be: u16,
    /// Its TCP flags: SYN|ACK (the port is open), or RST (refused).
    pub tcp_flags: u8,
    pub _pad: u8,
}
