//! `xdp-lb decap`: the decapsulation program for backends of tunnel VIPs. What it and its
//! command share: map names, settings, counters.

/// Name of the decapsulation program in its object.
pub const DECAP_PROGRAM_NAME: &str = "xdp_lb_decap";
/// Name of its TC egress companion (the MSS mirror: the backend's SYN-ACK offers no more than
/// the tunnelled SYN did).
pub const DECAP_MSS_PROGRAM_NAME: &str = "xdp_lb_decap_mss";

/// Its maps (pinned under `xdp-lb decap --pin-dir`).
pub mod decap_map_names {
    /// This host's addresses, IPv4 (network order) → 1: only tunnels to them are opened.
    pub const LOCAL4: &str = "DECAP_LOCAL4";
    /// This host's IPv6 addresses → 1.
    pub const LOCAL6: &str = "DECAP_LOCAL6";
    pub const SETTINGS: &str = "DECAP_SETTINGS";
    pub const COUNTERS: &str = "DECAP_COUNTERS";
}

/// How many local addresses of each family the program knows at most.
pub const DECAP_MAX_LOCAL: u32 = 1024;

/// How many local addresses of each family `DecapSettings` carries itself: a host's one or
/// two are compared there, without a hash lookup per packet; more are in the hash maps too.
pub const DECAP_FAST_LOCAL: usize = 4;

/// The value of `DECAP_SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapSettings {
    /// GUE's UDP port (network order); 0: GUE is not decapsulated.
    pub gue_port_be: u16,
    pub _pad: u16,
    /// The first local IPv4 addresses (network order; 0: unused slot).
    pub local4: [u32; DECAP_FAST_LOCAL],
    /// The first local IPv6 addresses (all zero: unused slot).
    pub local6: [[u8; 16]; DECAP_FAST_LOCAL],
}

/// What the decapsulation program did with a frame (`DECAP_COUNTERS`, per CPU). `Pass*`
/// frames go to the kernel untouched, `Drop*` frames are dropped, the rest were decapsulated
/// and handed up.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// IPv4 in IPv4 (protocol 4), stripped.
    Ipip = 0,
    /// IPv6 in IPv6 (next header 41), stripped.
    Ip6ip6,
    /// IPv4 in IPv6 (next header 4), stripped.
    Ip4in6,
    /// GUE variant 1 (UDP to the GUE port, the inner IP packet right after the UDP header),
    /// over either family, stripped.
    Gue,
    /// Not a tunnel packet (or not IP at all): passed.
    PassNotTunnel,
    /// A tunnel packet to an address this host does not hold: passed (the kernel routes or
    /// drops it as any other).
    PassNotLocal,
    /// A fragment of a tunnel packet: passed (XDP cannot reassemble; the kernel's own tunnel
    /// modules can, if loaded). The LB never fragments (DF, `tunnel_mtu`).
    PassFragment,
    /// The outer headers are cut short: dropped.
    DropTruncatedOuter,
    /// The outer headers lie (IHL, total or payload length, UDP length): dropped.
    DropBadOuter,
    /// The inner packet is cut short: dropped.
    DropTruncatedInner,
    /// The inner packet lies (version, IHL, length against the outer, TCP data offset, UDP
    /// length): dropped, never handed up as something else.
    DropBadInner,
    /// Encapsulation inside encapsulation (an inner IPIP, IPv6-in-IP or GUE packet): dropped.
    DropNested,
    /// The kernel refused to move the frame's start: dropped.
    DropAdjust,
}

impl DecapCounter {
    pub const COUNT: u32 = DecapCounter::DropAdjust as u32 + 1;

    pub const ALL: [DecapCounter; Self::COUNT as usize] = [
        DecapCounter::Ipip,
        DecapCounter::Ip6ip6,
        DecapCounter::Ip4in6,
        DecapCounter::Gue,
        DecapCounter::PassNotTunnel,
        DecapCounter::PassNotLocal,
        DecapCounter::PassFragment,
        DecapCounter::DropTruncatedOuter,
        DecapCounter::DropBadOuter,
        DecapCounter::DropTruncatedInner,
        DecapCounter::DropBadInner,
        DecapCounter::DropNested,
        DecapCounter::DropAdjust,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DecapCounter::Ipip => "decap_ipip",
            DecapCounter::Ip6ip6 => "decap_ip6ip6",
            DecapCounter::Ip4in6 => "decap_ip4in6",
            DecapCounter::Gue => "decap_gue",
            DecapCounter::PassNotTunnel => "pass_not_tunnel",
            DecapCounter::PassNotLocal => "pass_not_local",
            DecapCounter::PassFragment => "pass_fragment",
            DecapCounter::DropTruncatedOuter => "drop_truncated_outer",
            DecapCounter::DropBadOuter => "drop_bad_outer",
            DecapCounter::DropTruncatedInner => "drop_truncated_inner",
            DecapCounter::DropBadInner => "drop_bad_inner",
            DecapCounter::DropNested => "drop_nested",
            DecapCounter::DropAdjust => "drop_adjust",
        }
    }

    /// Whether the frame goes on to the kernel (decapsulated, or untouched).
    pub const fn passes(self) -> bool {
        !matches!(
            self,
            DecapCounter::DropTruncatedOuter
                | DecapCounter::DropBadOuter
                | DecapCounter::DropTruncatedInner
                | DecapCounter::DropBadInner
                | DecapCounter::DropNested
                | DecapCounter::DropAdjust
        )
    }
}
