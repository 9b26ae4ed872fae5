//! The tunnel's records, apart from its code: what a path hands it (`Request`, `Inner`) and
//! what its next-hop cache holds (`Hop`). `maps.rs` declares the maps of these types, and the
//! tunnel's code reads those maps: the types live here so that neither imports the other
//! both ways.

use xdp_lb_common::{FlowKey, FlowKey6};

/// What the tunnel needs to know of the packet it carries, as its path parsed it.
#[repr(C)]
pub(crate) struct Inner {
    /// Where the inner IP header starts (14, or 18 behind a VLAN tag) and its L4 header.
    pub l3_off: u32,
    pub l4_off: u32,
    /// `xdp_lb_common::flow_entropy` of the 5-tuple: the GUE source port, the flow label.
    pub entropy: u32,
    /// 1: the inner packet is IPv6.
    pub v6: u8,
    /// The inner L4 protocol (TCP, UDP; ICMP for an error about a flow).
    pub proto: u8,
    /// 1: a TCP SYN without ACK (its MSS option may be clamped).
    pub syn: u8,
    pub _pad: u8,
}

/// A packet the paths hand to the tunnel: written into this CPU's `TUNNEL_REQUEST` slot,
/// then the path returns [`PENDING`] and `xdp_lb` calls [`forward`]. The tunnel's work runs
/// beside the paths, not below them: a call chain has 512 bytes of stack in all, and the IPv4
/// path's frame alone takes 392.
#[repr(C)]
pub(crate) struct Request {
    pub inner: Inner,
    pub backend_id: u32,
    pub vip_id: u32,
    /// The frame's length, for the traffic counters.
    pub len: u32,
    pub new_flow: u8,
    /// 1: an ICMP error about a flow, for its backend (counted `icmp_too_big_to_backend`).
    pub icmp: u8,
    pub _pad: u16,
    /// The flow, for the flow log if the packet is dropped (the one of `inner.v6`'s family).
    pub flow4: FlowKey,
    pub flow6: FlowKey6,
}

/// A backend's next hop, as this CPU last found it (`TUNNEL_NEXT_HOPS`, per CPU: no torn
/// MACs when CPUs refresh it at once).
#[repr(C)]
pub(crate) struct Hop {
    /// When it was found (`bpf_jiffies64`).
    pub(crate) checked_jiffies: u64,
    /// The backend's address it was found for (IPv6: its words folded): an id reused for
    /// another backend within the second is not sent the old one's way.
    pub(crate) addr_key: u32,
    /// 0: not found yet.
    pub(crate) ifindex: u32,
    pub(crate) dmac: [u8; 6],
    pub(crate) smac: [u8; 6],
    /// 1: the FIB knows the route but not the neighbour's MAC: the packet goes to the
    /// kernel, which resolves it (not cached).
    pub(crate) to_kernel: u8,
    /// How the header is laid out (`KIND_*`), and its length (Ethernet, outer IP, UDP).
    pub(crate) kind: u8,
    pub(crate) header_len: u8,
    /// Packets sent by this entry since its clock was last read (`cached`).
    pub(crate) uses: u8,
    /// IPv4: the one's-complement sum of the header's fixed words (DSCP and the total length
    /// taken as 0), the checksum's starting point.
    pub(crate) csum_base: u32,
    /// The VIP's largest inner packet for this backend's family, and its MSS clamp (0: none),
    /// as when the entry was refreshed: a reload's change reaches the cache within its
    /// refresh.
    pub(crate) max_inner: u16,
    pub(crate) mss: u16,
    /// The header: untagged Ethernet (the next hop's MACs, the outer family's EtherType),
    /// the outer IP header and GUE's UDP header, per-packet fields zero.
    pub(crate) header: [u8; HEADER_MAX],
}

/// The longest header: Ethernet 14, IPv6 40, UDP 8.
pub(crate) const HEADER_MAX: usize = 64;
/// `Hop::kind`: the outer family and GUE.
pub(crate) const KIND_V6: u8 = 1;
pub(crate) const KIND_GUE: u8 = 2;
