//! A tunnel VIP's parameters as `inspect vips` shows them (read from `VIP_TUNNELS`).

use serde::Serialize;

/// A tunnel VIP's parameters as the program reads them (`VIP_TUNNELS`).
#[derive(Debug, Clone, Serialize)]
pub struct TunnelView {
    /// The outer source addresses (None: no backend of that family).
    pub source_ipv4: Option<std::net::Ipv4Addr>,
    pub source_ipv6: Option<std::net::Ipv6Addr>,
    /// GUE's port (None: IPIP / IP6IP6).
    pub gue_port: Option<u16>,
    /// The largest inner packet that fits `tunnel_mtu`, to an IPv4 and an IPv6 backend.
    pub max_inner_ipv4: u16,
    pub max_inner_ipv6: u16,
    /// `mss_clamp`: the MSS a SYN may offer (None: no clamping).
    pub mss_ipv4: Option<u16>,
    pub mss_ipv6: Option<u16>,
}

impl From<xdp_lb_common::TunnelParams> for TunnelView {
    fn from(p: xdp_lb_common::TunnelParams) -> Self {
        let nonzero = |v: u16| (v != 0).then_some(v);
        Self {
            source_ipv4: (p.src4_be != 0).then(|| p.src4_be.to_ne_bytes().into()),
            source_ipv6: (p.src6 != [0; 16]).then(|| p.src6.into()),
            gue_port: nonzero(u16::from_be(p.gue_port_be)),
            max_inner_ipv4: p.max_inner4,
            max_inner_ipv6: p.max_inner6,
            mss_ipv4: nonzero(p.mss4),
            mss_ipv6: nonzero(p.mss6),
        }
    }
}
