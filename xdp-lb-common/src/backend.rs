//! A backend as the program knows it (`BACKENDS`, by id): its address, next hop and flags.

/// The value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendInfo {
    pub addr_be: u32,
    /// Egress interface; XDP_TX when it is the ingress interface, else redirect via `TX_PORTS`.
    pub ifindex: u32,
    /// The backend's MAC (from the kernel's neighbour table).
    pub mac: [u8; 6],
    /// The egress interface's MAC: the new source MAC of forwarded frames.
    pub src_mac: [u8; 6],
    /// `BACKEND_F_*`.
    pub flags: u32,
    /// The VIP this backend serves (a backend id belongs to one VIP). Lets `inspect` and a
    /// restarted agent map ids back to the configuration.
    pub vip_id: u32,
    /// The configured weight (for `inspect`; the program uses the Maglev table).
    pub weight: u32,
    /// NAT VIPs: the backend's port (network order). DSR keeps the VIP's port.
    pub port_be: u16,
    pub _pad: u16,
    /// An IPv6 backend's address (then `addr_be` is 0); all zero for an IPv4 backend.
    pub addr6: [u8; 16],
}

/// The backend may keep carrying the flows already pinned to it (active or draining). When a
/// flow's backend lacks this flag the program re-hashes the flow through the Maglev table.
pub const BACKEND_F_FORWARD: u32 = 1 << 0;

impl BackendInfo {
    /// The backend's address: `addr6` when it is IPv6, else `addr_be`.
    pub fn address(&self) -> core::net::IpAddr {
        if self.addr_be == 0 && self.addr6 != [0; 16] {
            core::net::IpAddr::from(self.addr6)
        } else {
            core::net::IpAddr::from(self.addr_be.to_ne_bytes())
        }
    }
}
