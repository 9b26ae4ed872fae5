//! The maps the program reads (written only by the agent's reconciler) and the counters it
//! writes. Sizes here are defaults; the agent sets the real ones at load time from its config.
//! All are pinned by name under `agent.pin_dir` so that `xdp-lb inspect`, a restarted agent and
//! `bpftool` see the same state.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use xdp_lb_common::{
    AclData, AclData6, BackendInfo, Bucket, BucketKey, BucketKey6, CaptureConfig, CaptureStats,
    Counter, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_VIPS, FLOW_LOG_SOURCES_SIZE, FlowKey, FlowKey6,
    FlowLogBudget, FlowValue, FlowValue6, InsertBudget, MAGLEV_SLOT_ELEMS, MAX_ACL_ENTRIES,
    MAX_BACKENDS, MAX_TX_PORTS, ProbeReply, SOURCE_BUCKETS_SIZE, Settings, TrafficCounters,
    TunnelParams, VIP_PORTS_WORDS, VipInfo, VipKey, VipKey6, VipLimit, VipName,
};

#[map]
pub(crate) static VIPS: HashMap<VipKey, VipInfo> = HashMap::pinned(DEFAULT_MAX_VIPS, 0);

/// IPv6 VIPs. Their ids, Maglev slots, backends and counters share the IPv4 VIPs' arrays;
/// only the keyed maps are per family, so IPv4 keys stay small (see `VipKey6`).
#[map]
pub(crate) static VIPS6: HashMap<VipKey6, VipInfo> = HashMap::pinned(DEFAULT_MAX_VIPS, 0);

/// The ports VIPs listen on, a bit each (`xdp_lb_common::vip_port_bit`): the first test of a
/// client packet, before any hash.
#[map]
pub(crate) static VIP_PORTS: Array<u64> = Array::pinned(VIP_PORTS_WORDS, 0);

#[map]
pub(crate) static BACKENDS: Array<BackendInfo> = Array::pinned(MAX_BACKENDS, 0);

/// Two slots of `MAGLEV_SLOT_ELEMS` elements per VIP (double buffer), each element two packed
/// backend ids. Mmapable, so the agent writes a whole table with one memory copy instead of
/// one syscall per entry.
#[map]
pub(crate) static MAGLEV: Array<u64> =
    Array::pinned(DEFAULT_MAX_VIPS * 2 * MAGLEV_SLOT_ELEMS, BPF_F_MMAPABLE);

#[map]
pub(crate) static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// IPv6 flows, DSR and NAT66 client directions, as `FLOWS`. Sized by
/// `agent.flow_table_size_ipv6`; an LRU allocates its entries up front, so an IPv4-only node
/// pays its memory too (documented in README, "Memory").
#[map]
pub(crate) static FLOWS6: LruHashMap<FlowKey6, FlowValue6> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// NAT reply direction (backend → SNAT address:port), one entry per NAT flow; also the SNAT
/// port reservations (see `nat.rs`). A plain hash, never evicted behind our back; allocated on
/// demand so that DSR-only nodes pay nothing. The agent sizes it like `FLOWS`.
#[map]
pub(crate) static NAT_FLOWS: HashMap<FlowKey, FlowValue> =
    HashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, BPF_F_NO_PREALLOC);

/// Half-open NAT flows: the client's SYN went on to the backend, which has not answered yet.
/// Keyed and valued like `NAT_FLOWS` (the reply direction), and like it the SNAT port's
/// reservation while it lives. An LRU, so that a flood of spoofed SYNs evicts its own
/// half-open entries and can never crowd out an established flow or hold ports for long: an
/// evicted entry's port is free the moment it goes. The client's ACK promotes the flow to
/// `NAT_FLOWS` and `FLOWS` (`nat.rs`). The agent sizes it like `FLOWS`.
#[map]
pub(crate) static NAT_EMBRYONIC: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// The client direction of the half-open NAT flows (client 5-tuple → its rewrite): where the
/// client's ACK finds its flow to promote it, and a retransmitted SYN its port.
#[map]
pub(crate) static NAT_EMBRYONIC_CLIENT: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// NAT66: the reply directions, half-open flows and their client directions, as `NAT_FLOWS`,
/// `NAT_EMBRYONIC` and `NAT_EMBRYONIC_CLIENT` are for IPv4. Sized by
/// `agent.flow_table_size_ipv6`.
#[map]
pub(crate) static NAT_FLOWS6: HashMap<FlowKey6, FlowValue6> =
    HashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static NAT_EMBRYONIC6: LruHashMap<FlowKey6, FlowValue6> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

#[map]
pub(crate) static NAT_EMBRYONIC_CLIENT6: LruHashMap<FlowKey6, FlowValue6> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// NAT66's scratch keys and entries (see `nat_slots::NatSlots`): one per CPU, used within one
/// packet. Not pinned: nothing outside the program reads it.
#[map]
pub(crate) static NAT6_SLOTS: PerCpuArray<crate::nat_slots::NatSlots<FlowKey6>> =
    PerCpuArray::with_max_entries(1, 0);

/// NAT66's `bpf_fib_lookup` parameters, as `NAT6_SLOTS`.
#[map]
pub(crate) static FIB6_PARAMS: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// The VIPs' allow and deny lists (see `acl.rs`): `ACL_ALLOW` or `ACL_DENY` per prefix.
#[map]
pub(crate) static ACL: LpmTrie<AclData, u32> = LpmTrie::pinned(MAX_ACL_ENTRIES, 0);

/// The IPv6 VIPs' lists, as `ACL`.
#[map]
pub(crate) static ACL6: LpmTrie<AclData6, u32> = LpmTrie::pinned(MAX_ACL_ENTRIES, 0);

/// Per-source new-flow limits by VIP id (see `limit.rs`).
#[map]
pub(crate) static VIP_LIMITS: Array<VipLimit> = Array::pinned(DEFAULT_MAX_VIPS, 0);

/// Token buckets of the sources of limited VIPs. An LRU: a source idle long enough to be
/// evicted had a full bucket anyway.
#[map]
pub(crate) static SOURCE_BUCKETS: LruHashMap<BucketKey, Bucket> =
    LruHashMap::pinned(SOURCE_BUCKETS_SIZE, 0);

/// The IPv6 VIPs' source buckets, as `SOURCE_BUCKETS`.
#[map]
pub(crate) static SOURCE_BUCKETS6: LruHashMap<BucketKey6, Bucket> =
    LruHashMap::pinned(SOURCE_BUCKETS_SIZE, 0);

/// This second's DSR flow-table inserts, per CPU (`agent.flow_insert_rate`).
#[map]
pub(crate) static INSERT_BUDGET: PerCpuArray<InsertBudget> = PerCpuArray::pinned(1, 0);

/// Tunnel VIPs' parameters by VIP id (`tunnel/`): outer sources, GUE port, MTU, MSS clamp.
/// Read only for backends flagged `BACKEND_F_TUNNEL`; written by the agent before them.
#[map]
pub(crate) static VIP_TUNNELS: Array<TunnelParams> = Array::pinned(DEFAULT_MAX_VIPS, 0);

/// The backends' answers to the agent's health probes through the tunnel, by backend id
/// (`tunnel/probe.rs`): the one map the program writes for the agent to read.
#[map]
pub(crate) static TUNNEL_PROBES: Array<ProbeReply> = Array::pinned(MAX_BACKENDS, 0);

/// Each tunnel backend's next hop as this CPU last found it (`tunnel/next_hop.rs`). Not
/// pinned: a cache, rebuilt within a second.
#[map]
pub(crate) static TUNNEL_NEXT_HOPS: PerCpuArray<crate::tunnel::records::Hop> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// The packet a path hands to the tunnel (`tunnel::Request`), per CPU. Not pinned.
#[map]
pub(crate) static TUNNEL_REQUEST: PerCpuArray<crate::tunnel::records::Request> =
    PerCpuArray::with_max_entries(1, 0);

/// This second's ICMP errors to clients, per CPU (`tunnel/mtu.rs`). Not pinned.
#[map]
pub(crate) static TUNNEL_ICMP_BUDGET: PerCpuArray<InsertBudget> =
    PerCpuArray::with_max_entries(1, 0);

/// Egress interfaces other than the ingress one, keyed by ifindex.
#[map]
pub(crate) static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_TX_PORTS, 0);

#[map]
pub(crate) static VIP_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::pinned(DEFAULT_MAX_VIPS, 0);

#[map]
pub(crate) static BACKEND_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Written by the agent, never read here: lets `xdp-lb inspect` name VIPs from the pins alone.
#[map]
pub(crate) static VIP_NAMES: Array<VipName> = Array::pinned(DEFAULT_MAX_VIPS, 0);

/// Written by the agent, never read here: the backends' names (`name`, or the address), for
/// `xdp-lb inspect`.
#[map]
pub(crate) static BACKEND_NAMES: Array<VipName> = Array::pinned(MAX_BACKENDS, 0);

#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// New flows and drops, for the agent's flow log (`agent.flow_log`).
#[map]
pub(crate) static FLOW_LOG: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// `xdp-lb capture`'s session (`capture.rs`): written by the CLI while it runs, never by the
/// agent.
#[map]
pub(crate) static CAPTURE_CONFIG: Array<CaptureConfig> = Array::pinned(1, 0);

/// The frames a capture recorded: 4 MiB, about 2 500 full-size records, which the CLI drains
/// every few milliseconds.
#[map]
pub(crate) static CAPTURE: RingBuf = RingBuf::pinned(4 * 1024 * 1024, 0);

/// What a capture matched, recorded and lost (ring full), per CPU.
#[map]
pub(crate) static CAPTURE_STATS: PerCpuArray<CaptureStats> = PerCpuArray::pinned(1, 0);

/// New flows for the agent's sync to send to the other LB nodes (`sync_events.rs`): 1 MiB,
/// about 20 000 events of 52 bytes, a second of new flows at a busy node's rate, which the
/// agent drains in batches every few milliseconds.
#[map]
pub(crate) static SYNC_EVENTS: RingBuf = RingBuf::pinned(1024 * 1024, 0);

/// The second in which each source's last drop was logged (`flow_log.rs`): one line per
/// source per second. An LRU: a source evicted has not been logged for a while.
#[map]
pub(crate) static FLOW_LOG_SOURCES: LruHashMap<u32, u32> =
    LruHashMap::pinned(FLOW_LOG_SOURCES_SIZE, 0);

#[map]
pub(crate) static FLOW_LOG_BUDGET: PerCpuArray<FlowLogBudget> = PerCpuArray::pinned(1, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);
