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

//!
//! Where each kind lives: `vip.rs` (VIP keys and entries, names, the port bitmap, the Maglev
//! array's packing), `backend.rs`, `flow.rs` (flow keys and values of both families, NAT
//! entries), `protection.rs` (limits, allow/deny lists, the insert cap), `settings.rs`,
//! `events.rs` (what the program reports through ring buffers), `decap.rs` (the backends'
//! decapsulation program's settings and counters), `tunnel.rs` (tunnel
//! forwarding's per-VIP parameters, the health probes' replies), `stats.rs` (counters), and
//! the pure logic both sides run: `hash.rs` (the flow hash), `csum.rs` (checksums).

mod backend;
mod capture;
pub mod csum;
mod decap;
mod events;
mod flow;
pub mod hash;
mod protection;
mod settings;
pub mod stats;
mod tunnel;
mod vip;

pub use self::{
    backend::*,
    capture::*,
    decap::*,
    events::*,
    flow::*,
    hash::{flow_hash, flow_hash6},
    protection::*,
    settings::*,
    stats::{Counter, TrafficCounters},
    tunnel::*,
    vip::*,
};

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
    pub const BACKEND_NAMES: &str = "BACKEND_NAMES";
    pub const CAPTURE: &str = "CAPTURE";
    pub const CAPTURE_CONFIG: &str = "CAPTURE_CONFIG";
    pub const CAPTURE_STATS: &str = "CAPTURE_STATS";
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
    pub const VIP_TUNNELS: &str = "VIP_TUNNELS";
    pub const TUNNEL_PROBES: &str = "TUNNEL_PROBES";
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";

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

#[cfg(feature = "user")]
mod pod {
    // Every type here is repr(C), made only of integers, with explicit padding fields, so every
    // bit pattern is valid and there are no implicit padding bytes (the layout test below).
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::VipKey6 {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowKey6 {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::AclData {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::AclData6 {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::VipLimit {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::InsertBudget {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::BucketKey {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::BucketKey6 {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::Bucket {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::VipInfo {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::BackendInfo {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowValue6 {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::TrafficCounters {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::VipName {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::FlowLogBudget {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::TunnelParams {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::ProbeReply {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::DecapSettings {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::CaptureConfig {}
    // SAFETY: as said above.
    unsafe impl aya::Pod for super::CaptureStats {}
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
                src_addr: 0x0a0b_0c0d,
                dst_addr: 0x1a1b_1c1d,
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
        assert_eq!(
            size_of::<CaptureRecord>() % 8,
            0,
            "ring buffer records are 8-aligned"
        );
        assert_eq!(size_of::<CaptureConfig>(), 32);
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
        assert_eq!(size_of::<TunnelParams>(), 32);
        assert_eq!(size_of::<ProbeReply>(), 16);
    }

    #[test]
    fn network_order_helpers() {
        assert_eq!(ipv4_be([198, 18, 0, 100]).to_ne_bytes(), [198, 18, 0, 100]);
        assert_eq!(port_be(6443).to_ne_bytes(), [0x19, 0x2b]);
    }
}
