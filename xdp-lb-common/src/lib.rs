//! Types and pure logic shared by the XDP program (`xdp-lb-ebpf`) and the agent (`xdp-lb`).
//!
//! Every map key and value is defined here exactly once. They are `#[repr(C)]` with explicit
//! padding and only integer fields: no `bool`, `Option` or enums with niches, because the kernel
//! copies map values byte for byte and both sides must agree on every byte (including padding,
//! which the verifier treats as uninitialised stack if left implicit).
//!
//! Byte order: fields named `*_be` hold network byte order exactly as they appear in the packet
//! (so the XDP program compares them without swapping). Build them with [`ipv4_be`] and
//! [`port_be`].
#![no_std]

pub mod bench;
pub mod csum;
pub mod hash;
pub mod stats;

pub use hash::{flow_hash, flow_hash6};
pub use stats::{Counter, TrafficCounters};

/// Names of the maps in the eBPF object. The agent, `inspect` and the tests find maps by these.
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const MAGLEV: &str = "MAGLEV";
    pub const FLOWS: &str = "FLOWS";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const VIP_NAMES: &str = "VIP_NAMES";
    pub const SETTINGS: &str = "SETTINGS";
    pub const FLOW_LOG: &str = "FLOW_LOG";
    pub const FLOW_LOG_BUDGET: &str = "FLOW_LOG_BUDGET";
    pub const FLOW_LOG_SOURCES: &str = "FLOW_LOG_SOURCES";
    pub const NAT_FLOWS: &str = "NAT_FLOWS";
    pub const NAT_EMBRYONIC: &str = "NAT_EMBRYONIC";
    pub const NAT_EMBRYONIC_CLIENT: &str = "NAT_EMBRYONIC_CLIENT";
    pub const ACL: &str = "ACL";
    pub const VIP_LIMITS: &str = "VIP_LIMITS";
    pub const SOURCE_BUCKETS: &str = "SOURCE_BUCKETS";
    pub const INSERT_BUDGET: &str = "INSERT_BUDGET";
    pub const VIPS6: &str = "VIPS6";
    pub const FLOWS6: &str = "FLOWS6";
    pub const ACL6: &str = "ACL6";
    pub const SOURCE_BUCKETS6: &str = "SOURCE_BUCKETS6";
    pub const NAT_FLOWS6: &str = "NAT_FLOWS6";
    pub const NAT_EMBRYONIC6: &str = "NAT_EMBRYONIC6";
    pub const NAT_EMBRYONIC_CLIENT6: &str = "NAT_EMBRYONIC_CLIENT6";
    pub const SYNC_EVENTS: &str = "SYNC_EVENTS";
    pub const VIP_PORTS: &str = "VIP_PORTS";
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";

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

/// Default for `agent.max_vips`: sizes `VIPS`, `VIP_STATS` and `MAGLEV` at load time.
pub const DEFAULT_MAX_VIPS: u32 = 64;

/// Number of backend ids (`BACKENDS`, `BACKEND_STATS`). Ids are dense indexes the agent hands out.
pub const MAX_BACKENDS: u32 = 4096;

/// `FLOWS` size in the object; the agent overrides it with `agent.flow_table_size`.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;

/// Interfaces the program may redirect to (`TX_PORTS`, a devmap keyed by ifindex).
pub const MAX_TX_PORTS: u32 = 64;

/// IP protocol numbers used in keys.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

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

/// The value of `VIP_LIMITS` (indexed by VIP id): a per-source token bucket, in units the agent
/// chose so that the program neither divides nor overflows. A bucket holds `tokens` in
/// nanosecond-units: it gains `rate` of them per nanosecond, a new flow costs `token` of them
/// (the length of the rate's unit in nanoseconds: 1e9 for "/s", 60e9 for "/m"), and it holds
/// at most `burst` × `token`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipLimit {
    pub rate: u64,
    pub token: u64,
    /// `burst` × `token`.
    pub capacity: u64,
    /// After this long idle a bucket is full (`capacity` / `rate`): caps the refill so that
    /// elapsed × rate cannot overflow.
    pub fill_ns: u64,
    /// Sources in one prefix share a bucket (`limit_prefix_v4`), as it sits in the packet.
    pub prefix_mask_be: u32,
    /// IPv6 VIPs: the prefix length sources share a bucket by (`limit_prefix_v6`).
    pub prefix6_len: u32,
}

/// The key of `SOURCE_BUCKETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub vip_id: u32,
    pub src_prefix_be: u32,
}

/// The key of `SOURCE_BUCKETS6`: an IPv6 VIP's source prefix (the address masked to
/// `limit_prefix_v6` bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketKey6 {
    pub vip_id: u32,
    pub src_prefix: [u8; 16],
}

/// A value of `SOURCE_BUCKETS` (an LRU hash: idle sources' buckets are evicted).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// Entries of `SOURCE_BUCKETS`, all VIPs together.
pub const SOURCE_BUCKETS_SIZE: u32 = 65_536;

/// Entries of `FLOW_LOG_SOURCES`: the sources whose drops the flow log dedupes per second.
pub const FLOW_LOG_SOURCES_SIZE: u32 = 16_384;

/// The data of an `ACL` key (an LPM trie): the VIP, then the client's source address. Every
/// entry's prefix length covers the whole VIP id (32 bits) plus its CIDR's prefix of the
/// address, so a lookup with all 64 bits finds the longest matching prefix among that VIP's
/// lists, and only that VIP's. (The trie compares bytes in order; since the VIP id is always
/// matched whole, its byte order does not matter.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclData {
    pub vip_id: u32,
    pub addr_be: u32,
}

/// The key data of `ACL6`: as [`AclData`], with the IPv6 source (prefix length 32 + the
/// source prefix's, up to 160).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclData6 {
    pub vip_id: u32,
    pub addr: [u8; 16],
}

/// `ACL` values: what the longest matching prefix says.
pub const ACL_ALLOW: u32 = 1;
pub const ACL_DENY: u32 = 2;
/// Entries of `ACL`, all VIPs together.
pub const MAX_ACL_ENTRIES: u32 = 65_536;

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

/// The key of `FLOWS`: the TCP 5-tuple as found in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of a 5-tuple, written as four 32-bit words. Field by field, the padding's three
    /// zero bytes compile for BPF to a call of the object's byte-loop `memset`, on every
    /// packet's parse (found by profiling, issue 18); as words they are part of one store.
    #[inline(always)]
    pub fn new(src: u32, dst: u32, src_port_be: u16, dst_port_be: u16, proto: u8) -> Self {
        #[cfg(target_endian = "little")]
        {
            let words: [u32; 4] = [
                src,
                dst,
                src_port_be as u32 | (dst_port_be as u32) << 16,
                proto as u32,
            ];
            // SAFETY: FlowKey is repr(C), 16 bytes of plain integers at these offsets (checked
            // by the layout test below); on a little-endian machine the ports and the protocol
            // are the words' low bytes, the padding their zero high bytes.
            unsafe { core::mem::transmute::<[u32; 4], FlowKey>(words) }
        }
        #[cfg(target_endian = "big")]
        FlowKey {
            src_addr_be: src,
            dst_addr_be: dst,
            src_port_be,
            dst_port_be,
            proto,
            _pad: [0; 3],
        }
    }
}

/// The key of `FLOWS6`: an IPv6 TCP 5-tuple as found in the packet (see `VipKey6` for why
/// IPv6 has maps of its own).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey6 {
    /// The key of an IPv6 5-tuple; its ports, protocol and padding written as two 32-bit
    /// words, for the reason given at `FlowKey::new`.
    #[inline(always)]
    pub fn new(
        src_addr: [u8; 16],
        dst_addr: [u8; 16],
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> Self {
        #[cfg(target_endian = "little")]
        {
            #[repr(C)]
            struct Words {
                src_addr: [u8; 16],
                dst_addr: [u8; 16],
                ports: u32,
                proto: u32,
            }
            let words = Words {
                src_addr,
                dst_addr,
                ports: src_port_be as u32 | (dst_port_be as u32) << 16,
                proto: proto as u32,
            };
            // SAFETY: both are repr(C), 40 bytes of plain integers at the same offsets (the
            // layout test below); little-endian puts the ports and the protocol in the words'
            // low bytes and the padding in their zero high bytes.
            unsafe { core::mem::transmute::<Words, FlowKey6>(words) }
        }
        #[cfg(target_endian = "big")]
        FlowKey6 {
            src_addr,
            dst_addr,
            src_port_be,
            dst_port_be,
            proto,
            _pad: [0; 3],
        }
    }
}

/// An IPv6 address as four 32-bit words in memory order (what `flow_hash6` mixes and
/// `bpf_fib_lookup` takes).
#[inline(always)]
pub const fn ipv6_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// A flow key of either family, as the NAT code sees it: two addresses, two ports. Lets the
/// NAT flow logic (the program's `nat.rs`, the agent's expiry) be written once for IPv4 and
/// IPv6; each family keeps its own key type and maps (IPv4 keys stay 16 bytes).
pub trait FlowTuple: Copy {
    /// An address in network order: `u32` or `[u8; 16]`.
    type Addr: Copy + PartialEq + Default;
    fn tuple(
        src: Self::Addr,
        dst: Self::Addr,
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> Self;
    /// `IPPROTO_TCP` or `IPPROTO_UDP`: both directions of a flow carry the same.
    fn proto(&self) -> u8;
    fn src(&self) -> Self::Addr;
    fn dst(&self) -> Self::Addr;
    fn src_port_be(&self) -> u16;
    fn dst_port_be(&self) -> u16;
    fn set_dst_port_be(&mut self, port_be: u16);
    /// The unfolded checksum sum of rewriting the addresses (src, dst) from `old` to `new`
    /// (`csum::addr_sum`, `csum::addr_sum6`): folded, the IPv4 header checksum's delta (IPv6
    /// has no header checksum: unused); with the ports (`csum::with_ports`), the TCP
    /// checksum's (the pseudo-header covers the addresses).
    fn addr_sum(old: (&Self::Addr, &Self::Addr), new: (&Self::Addr, &Self::Addr)) -> u32;
    /// Whether this family has an IP header checksum (IPv4) to update by the folded addr_sum.
    const IP_CHECKSUM: bool;
    /// 4 or 6 (`SyncEvent::family`).
    const FAMILY: u8;
    /// An address in 16 bytes, as `SyncEvent` carries it (IPv4: the first four).
    fn addr16(a: Self::Addr) -> [u8; 16];
}

impl FlowTuple for FlowKey {
    type Addr = u32;
    #[inline(always)]
    fn tuple(src: u32, dst: u32, src_port_be: u16, dst_port_be: u16, proto: u8) -> Self {
        FlowKey::new(src, dst, src_port_be, dst_port_be, proto)
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn src(&self) -> u32 {
        self.src_addr_be
    }
    #[inline(always)]
    fn dst(&self) -> u32 {
        self.dst_addr_be
    }
    #[inline(always)]
    fn src_port_be(&self) -> u16 {
        self.src_port_be
    }
    #[inline(always)]
    fn dst_port_be(&self) -> u16 {
        self.dst_port_be
    }
    #[inline(always)]
    fn set_dst_port_be(&mut self, port_be: u16) {
        self.dst_port_be = port_be;
    }
    #[inline(always)]
    fn addr_sum(old: (&u32, &u32), new: (&u32, &u32)) -> u32 {
        csum::addr_sum((*old.0, *old.1), (*new.0, *new.1))
    }
    const IP_CHECKSUM: bool = true;
    const FAMILY: u8 = 4;
    #[inline(always)]
    fn addr16(a: u32) -> [u8; 16] {
        let b = a.to_ne_bytes();
        [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }
}

impl FlowTuple for FlowKey6 {
    type Addr = [u8; 16];
    #[inline(always)]
    fn tuple(src: [u8; 16], dst: [u8; 16], src_port_be: u16, dst_port_be: u16, proto: u8) -> Self {
        FlowKey6::new(src, dst, src_port_be, dst_port_be, proto)
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn src(&self) -> [u8; 16] {
        self.src_addr
    }
    #[inline(always)]
    fn dst(&self) -> [u8; 16] {
        self.dst_addr
    }
    #[inline(always)]
    fn src_port_be(&self) -> u16 {
        self.src_port_be
    }
    #[inline(always)]
    fn dst_port_be(&self) -> u16 {
        self.dst_port_be
    }
    #[inline(always)]
    fn set_dst_port_be(&mut self, port_be: u16) {
        self.dst_port_be = port_be;
    }
    #[inline(always)]
    fn addr_sum(old: (&[u8; 16], &[u8; 16]), new: (&[u8; 16], &[u8; 16])) -> u32 {
        csum::addr_sum6(old, new)
    }
    const IP_CHECKSUM: bool = false;
    const FAMILY: u8 = 6;
    #[inline(always)]
    fn addr16(a: [u8; 16]) -> [u8; 16] {
        a
    }
}

/// The value of `FLOWS` (keyed by the client's 5-tuple) and of `NAT_FLOWS` (keyed by the
/// backend's reply 5-tuple: backend → SNAT address and port); with IPv6 addresses, of `FLOWS6`
/// and `NAT_FLOWS6` ([`FlowValue6`]).
///
/// A DSR flow only names its backend. A NAT flow (`FLOW_F_NAT`) also carries the rewrite of
/// its direction: the packet's new source and destination, and the checksum deltas of that
/// rewrite, computed once when the flow is created (see [`csum`]).
///
/// Generic over the address (`u32` for IPv4, `[u8; 16]` for IPv6, both in network order) so
/// the NAT code is written once for both families; the IPv4 layout is the one it always had.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValueOf<A> {
    pub backend_id: u32,
    pub vip_id: u32,
    /// `bpf_ktime_get_ns()` when the flow was created (CLOCK_MONOTONIC).
    pub created_ns: u64,
    /// `FLOW_F_*`.
    pub flags: u32,
    /// NAT: CLOCK_MONOTONIC_COARSE seconds of the last packet in this direction, refreshed at
    /// most once a second (a write per packet would bounce the cache line between CPUs).
    pub last_seen_s: u32,
    pub nat_src_addr_be: A,
    pub nat_dst_addr_be: A,
    pub nat_src_port_be: u16,
    pub nat_dst_port_be: u16,
    /// [`csum::nat_deltas`] of this direction's rewrite (IPv6 has no header checksum: 0).
    pub ip_csum_delta: u16,
    pub l4_csum_delta: u16,
    /// NAT: this direction's next hop as `bpf_fib_lookup` last gave it (0: not looked up yet).
    /// The program asks the FIB again when `last_seen_s` moves on, so a flow follows a route
    /// or neighbour change within a second while its other packets skip the lookup.
    pub nh_ifindex: u32,
    pub nh_dmac: [u8; 6],
    pub nh_smac: [u8; 6],
}

/// An IPv4 flow entry (56 bytes).
pub type FlowValue = FlowValueOf<u32>;
/// An IPv6 flow entry (80 bytes): the NAT66 rewrite needs the 128-bit addresses.
pub type FlowValue6 = FlowValueOf<[u8; 16]>;

/// A NAT flow: rewrite addresses and ports (else DSR: MACs only).
pub const FLOW_F_NAT: u32 = 1 << 0;
/// The entry of the reply direction (in `NAT_FLOWS`).
pub const FLOW_F_REPLY: u32 = 1 << 1;
/// The backend has answered: the connection is past its SYN.
pub const FLOW_F_ESTABLISHED: u32 = 1 << 2;
/// A FIN or RST was seen: the connection is closing and expires after the short timeout.
pub const FLOW_F_CLOSING: u32 = 1 << 3;
/// A UDP NAT flow: no TCP state; it expires after `agent.nat_udp_timeout` of silence in both
/// directions, whatever else its flags say.
pub const FLOW_F_UDP: u32 = 1 << 4;

/// How many SNAT ports the program tries for a new NAT flow before it gives up and counts
/// `drop_nat_ports_exhausted`. Each try is an atomic insert-if-absent of the reply entry, so
/// two CPUs can never take the same (SNAT address, port, backend) tuple.
pub const NAT_PORT_PROBES: u32 = 16;

impl<A> FlowValueOf<A> {
    /// Which timeout applies to this NAT flow, given both directions' flags.
    pub const fn nat_state(flags: u32) -> NatState {
        if flags & FLOW_F_UDP != 0 {
            NatState::Udp
        } else if flags & FLOW_F_CLOSING != 0 {
            NatState::Closing
        } else if flags & FLOW_F_ESTABLISHED != 0 {
            NatState::Established
        } else {
            NatState::SynSent
        }
    }
}

/// The TCP states NAT expiry distinguishes (each has its own `agent.nat_*_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatState {
    /// Only the client's SYN seen (half-open).
    SynSent,
    Established,
    /// FIN or RST seen in either direction.
    Closing,
    /// A UDP flow (no states: one timeout).
    Udp,
}

impl NatState {
    pub const fn name(self) -> &'static str {
        match self {
            NatState::SynSent => "syn_sent",
            NatState::Established => "established",
            NatState::Closing => "closing",
            NatState::Udp => "udp",
        }
    }
}

/// The value of `VIP_NAMES[vip_id]`: the VIP's configured name, NUL-padded. The program never
/// reads it; it is there so that `xdp-lb inspect` can name VIPs from the pinned maps alone.
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

/// `SETTINGS[0]`: data-plane switches the agent sets from `[agent]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Flow-log events (new flows, drops) each CPU may report per second; 0 = flow log off.
    pub flow_log_per_cpu_per_sec: u32,
    /// Non-zero: only frames addressed to `local_mac` are balanced. A switch floods frames for
    /// a MAC it has not learnt (yet) to every port; without this check every LB node with the
    /// program attached — the VRRP backup too — would forward them, duplicating traffic.
    pub check_local_mac: u32,
    /// The MAC of the interface the program is attached to.
    pub local_mac: [u8; 6],
    /// Non-zero: new flows are reported to the agent's sync (`SYNC_EVENTS`, `[sync]`).
    pub sync_events: u8,
    pub _pad: u8,
    /// NAT: the source address of connections to backends (0: no NAT VIP configured).
    pub snat_addr_be: u32,
    /// NAT: the SNAT port range, inclusive, host order.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// DSR flow-table inserts each CPU may make per second (`agent.flow_insert_rate`); above
    /// it a new flow is forwarded by its Maglev choice without an entry. 0: no cap.
    pub flow_inserts_per_cpu_per_sec: u32,
    /// NAT66: the IPv6 source address of connections to backends (all zero: no IPv6 NAT VIP).
    pub snat_addr6: [u8; 16],
}

/// The value of `INSERT_BUDGET` (per CPU): this second's DSR flow-table inserts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertBudget {
    pub window_start_ns: u64,
    pub used: u32,
    pub _pad: u32,
}

impl Settings {
    /// Turns the destination-MAC check on for `mac` (None: off).
    pub fn with_local_mac(self, mac: Option<[u8; 6]>) -> Self {
        match mac {
            Some(local_mac) => Self {
                check_local_mac: 1,
                local_mac,
                ..self
            },
            None => Self {
                check_local_mac: 0,
                local_mac: [0; 6],
                ..self
            },
        }
    }
}

/// A flow the agent's sync sends to its peers (`[sync]`), reported through the `SYNC_EVENTS`
/// ring buffer when it is made: a DSR flow when it is recorded, a NAT flow when it is
/// established (the client's second packet). Both families: an IPv4 address fills the first
/// four bytes (network order) of its 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    /// `SYNC_EVENT_*`.
    pub kind: u8,
    /// 4 or 6.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
    /// The sender's own ids; its agent turns them into addresses before they leave the node.
    pub backend_id: u32,
    pub vip_id: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// NAT: the SNAT port (the SNAT address is the agent's `snat_address`).
    pub snat_port_be: u16,
    pub _pad2: u16,
    /// The client's address and the VIP's.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
}

pub const SYNC_EVENT_DSR: u8 = 1;
pub const SYNC_EVENT_NAT: u8 = 2;
/// A NAT flow that started closing (FIN or RST seen).
pub const SYNC_EVENT_NAT_CLOSING: u8 = 3;

/// A flow-log event, sent through the `FLOW_LOG` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub ts_ns: u64,
    /// `FLOW_EVENT_*`.
    pub kind: u32,
    /// For drops: the `Counter` that counted it.
    pub reason: u32,
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub backend_addr_be: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP` (a TCP and a UDP VIP may share an address and port).
    pub proto: u8,
    pub _pad: [u8; 7],
}

pub const FLOW_EVENT_NEW: u32 = 1;
pub const FLOW_EVENT_DROP: u32 = 2;
/// The same events about IPv6 flows, carried as [`FlowEvent6`].
pub const FLOW_EVENT_NEW6: u32 = 3;
pub const FLOW_EVENT_DROP6: u32 = 4;

/// A flow-log event about an IPv6 flow. Starts like [`FlowEvent`] (`ts_ns`, then `kind`), so
/// the reader tells the two apart by `kind` before it reads the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent6 {
    pub ts_ns: u64,
    /// `FLOW_EVENT_NEW6` or `FLOW_EVENT_DROP6`.
    pub kind: u32,
    pub reason: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub backend_addr: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// As [`FlowEvent::proto`].
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Per-CPU rate limiter of the flow log: a one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogBudget {
    pub window_start_ns: u64,
    pub used: u32,
    /// Events not reported because the budget was spent (cumulative).
    pub suppressed: u32,
}

/// An IPv4 address as the packet carries it (network order in memory).
#[inline]
pub const fn ipv4_be(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// A port as the packet carries it (network order in memory).
#[inline]
pub const fn port_be(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers, with explicit padding fields,
    // so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipKey6 {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::AclData {}
    unsafe impl aya::Pod for super::AclData6 {}
    unsafe impl aya::Pod for super::VipLimit {}
    unsafe impl aya::Pod for super::InsertBudget {}
    unsafe impl aya::Pod for super::BucketKey {}
    unsafe impl aya::Pod for super::BucketKey6 {}
    unsafe impl aya::Pod for super::Bucket {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::BackendInfo {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::FlowValue6 {}
    unsafe impl aya::Pod for super::TrafficCounters {}
    unsafe impl aya::Pod for super::VipName {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::FlowLogBudget {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn a_flow_key_made_of_words_is_the_key_made_field_by_field() {
        let key = FlowKey::new(0x0a0b_0c0d, 0x1a1b_1c1d, 0x1234, 0xabcd, IPPROTO_UDP);
        assert_eq!(
            key,
            FlowKey {
                src_addr_be: 0x0a0b_0c0d,
                dst_addr_be: 0x1a1b_1c1d,
                src_port_be: 0x1234,
                dst_port_be: 0xabcd,
                proto: IPPROTO_UDP,
                _pad: [0; 3],
            }
        );
    }

    #[test]
    fn an_ipv6_flow_key_made_of_words_is_the_key_made_field_by_field() {
        let (src, dst) = ([1u8; 16], [2u8; 16]);
        let key = FlowKey6::new(src, dst, 0x1234, 0xabcd, IPPROTO_TCP);
        assert_eq!(
            key,
            FlowKey6 {
                src_addr: src,
                dst_addr: dst,
                src_port_be: 0x1234,
                dst_port_be: 0xabcd,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            }
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 8);
        assert_eq!(size_of::<VipInfo>(), 24);
        assert_eq!(size_of::<BackendInfo>(), 52);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<VipKey6>(), 20);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<FlowValue>(), 56);
        assert_eq!(size_of::<FlowValue6>(), 80);
        assert_eq!(size_of::<TrafficCounters>(), 64);
        assert_eq!(size_of::<FlowEvent>(), 40);
        assert_eq!(size_of::<FlowEvent6>(), 72);
        assert_eq!(size_of::<FlowLogBudget>(), 16);
        assert_eq!(size_of::<Settings>(), 44);
        assert_eq!(size_of::<AclData>(), 8);
        assert_eq!(size_of::<AclData6>(), 20);
        assert_eq!(size_of::<VipLimit>(), 40);
        assert_eq!(size_of::<BucketKey>(), 8);
        assert_eq!(size_of::<BucketKey6>(), 20);
        assert_eq!(size_of::<Bucket>(), 16);
        assert_eq!(size_of::<InsertBudget>(), 16);
        assert_eq!(size_of::<SyncEvent>(), 52);
    }

    #[test]
    fn network_order_helpers() {
        assert_eq!(ipv4_be([198, 18, 0, 100]).to_ne_bytes(), [198, 18, 0, 100]);
        assert_eq!(port_be(6443).to_ne_bytes(), [0x19, 0x2b]);
    }
}
