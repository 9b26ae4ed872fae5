//! VIPs as the maps know them: their keys (one map per family), their entry (the Maglev slot
//! and size, the hash seed, the flags), their names for `inspect`, the port bitmap of the
//! first test, and the Maglev array's packing.

use crate::IPPROTO_UDP;

/// Largest Maglev table a VIP may use. Each VIP owns two slots of this many entries in the
/// `MAGLEV` array (double buffering, see [`VipInfo::maglev_slot`]). 65537 is the Maglev paper's
/// and Katran's default and keeps the per-backend imbalance under 1% up to ~650 backends.
pub const MAGLEV_MAX_TABLE_SIZE: u32 = 65_537;

/// `VIP_PORTS`: one bit per (protocol, destination port) that some VIP of either family
/// listens on, TCP's 65 536 bits in words 0..1024 and UDP's in 1024..2048. The program tests
/// it before any hash lookup, so traffic to no VIP's port (the host's own SSH, BGP, the
/// backends' answers to health checks) is passed after one array load instead of a
/// flow-table miss and a VIP miss, two hashes of the 5-tuple.
pub const VIP_PORTS_WORDS: u32 = 2048;

/// The `VIP_PORTS` word and bit of a protocol and port (network order, as in packets and keys).
#[inline(always)]
pub fn vip_port_bit(proto: u8, port_be: u16) -> (u32, u64) {
    let port = u16::from_be(port_be) as u32;
    let half = if proto == IPPROTO_UDP { 1024 } else { 0 };
    (half + (port >> 6), 1u64 << (port & 63))
}

/// The key of `VIPS`: (address, port, protocol) as found in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The key of `VIPS6`: an IPv6 VIP's (address, port, protocol) as found in the packet. IPv6
/// VIPs have maps of their own (`VIPS6`, `FLOWS6`) so that the IPv4 keys stay 8 and 16 bytes:
/// hashing and comparing 128-bit addresses would cost every IPv4 packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey6 {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A VIP's kernel key in either family: which map it lives in and its key there. The agent's
/// identity of a VIP (ids, health, slow start) across both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnyVipKey {
    V4(VipKey),
    V6(VipKey6),
}

impl AnyVipKey {
    /// The VIP's address.
    pub fn address(&self) -> core::net::IpAddr {
        match self {
            AnyVipKey::V4(k) => core::net::IpAddr::from(k.addr_be.to_ne_bytes()),
            AnyVipKey::V6(k) => core::net::IpAddr::from(k.addr),
        }
    }

    /// The VIP's port, in network order.
    pub fn port_be(&self) -> u16 {
        match self {
            AnyVipKey::V4(k) => k.port_be,
            AnyVipKey::V6(k) => k.port_be,
        }
    }

    /// The VIP's protocol (`IPPROTO_TCP` or `IPPROTO_UDP`).
    pub fn proto(&self) -> u8 {
        match self {
            AnyVipKey::V4(k) => k.proto,
            AnyVipKey::V6(k) => k.proto,
        }
    }
}

/// The value of `VIPS`: everything the program needs to pick a backend for this VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipInfo {
    /// Dense index of the VIP: `VIP_STATS[vip_id]`, Maglev slots `2*vip_id` and `2*vip_id+1`.
    pub vip_id: u32,
    /// The live Maglev slot (absolute, `2*vip_id` or `2*vip_id+1`). The agent fills the other
    /// slot, then replaces this whole value in one map update: a hash-map update is an RCU swap
    /// of the element, so a packet sees either the old slot or the new one, never a mix.
    pub maglev_slot: u32,
    /// The prime size of this VIP's table (≤ [`MAGLEV_MAX_TABLE_SIZE`]).
    pub table_size: u32,
    /// Seed of [`flow_hash`]. Derived from the VIP, so LB nodes with the same config pick the
    /// same backend for a flow and a VRRP failover keeps flows on their backends.
    pub hash_seed: u32,
    /// Backends in the live table; 0 means no usable backend: new flows are dropped and counted.
    pub backend_count: u32,
    /// `VIP_F_*`.
    pub flags: u32,
}

/// The VIP forwards by full NAT (`forwarding = "nat"`) instead of L2 DSR.
pub const VIP_F_NAT: u32 = 1 << 0;
/// The VIP has an allow or a deny list: a new flow's source is looked up in `ACL`.
pub const VIP_F_ACL: u32 = 1 << 1;
/// The VIP has an allow list: a source that matches no entry of its lists is refused.
pub const VIP_F_ALLOWLIST: u32 = 1 << 2;

/// The VIP limits new flows per source (`VIP_LIMITS[vip_id]`, buckets in `SOURCE_BUCKETS`).
pub const VIP_F_LIMIT: u32 = 1 << 3;

/// The forwarding mode a VIP's flags say, as the config spells it: "dsr", "nat", "ipip" or
/// "gue" (for `inspect`, `/metrics` and `/stats`, which read the maps alone).
pub const fn forwarding_name(vip_flags: u32) -> &'static str {
    if vip_flags & VIP_F_NAT != 0 {
        "nat"
    } else if vip_flags & crate::VIP_F_GUE != 0 {
        "gue"
    } else if vip_flags & crate::VIP_F_TUNNEL != 0 {
        "ipip"
    } else {
        "dsr"
    }
}

/// Every forwarding mode, in the order reports list them.
pub const FORWARDING_MODES: [&str; 4] = ["dsr", "nat", "ipip", "gue"];

/// The value of `VIP_NAMES[vip_id]` and of `BACKEND_NAMES[backend_id]`: the configured name,
/// NUL-padded. The program never reads them; they are there so that `xdp-lb inspect` can name
/// VIPs and backends from the pinned maps alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipName {
    pub bytes: [u8; 64],
}

impl Default for VipName {
    fn default() -> Self {
        Self { bytes: [0; 64] }
    }
}

impl VipName {
    /// Names are validated to at most 64 ASCII characters.
    pub fn new(name: &str) -> Self {
        let mut bytes = [0; 64];
        let n = name.len().min(64);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        Self { bytes }
    }

    pub fn as_str(&self) -> &str {
        let end = self.bytes.iter().position(|&b| b == 0).unwrap_or(64);
        core::str::from_utf8(&self.bytes[..end]).unwrap_or("?")
    }
}

/// `MAGLEV` elements per slot. The kernel stores array elements at an 8-byte stride
/// (`round_up(value_size, 8)` in kernel/bpf/arraymap.c), so a `u32` array would waste half its
/// memory and its mmap would not be a plain `u32` table. The array holds `u64`s instead, each
/// packing two consecutive table entries (little-endian: the even entry in the low half), so the
/// mapped memory *is* a contiguous `u32` table and nothing is wasted.
pub const MAGLEV_SLOT_ELEMS: u32 = MAGLEV_MAX_TABLE_SIZE.div_ceil(2);

/// The `MAGLEV` element (u64) holding entry `index` of Maglev slot `slot`.
#[inline(always)]
pub const fn maglev_elem(slot: u32, index: u32) -> u32 {
    slot * MAGLEV_SLOT_ELEMS + index / 2
}

/// Entry `index` out of its packed element (see [`MAGLEV_SLOT_ELEMS`]).
#[inline(always)]
pub const fn maglev_unpack(elem: u64, index: u32) -> u32 {
    (elem >> ((index & 1) * 32)) as u32
}
