//! The maps the program reads (written only by the agent's reconciler) and the counters it
//! writes. Sizes here are defaults; the agent sets the real ones at load time from its config.
//! All are pinned by name under `agent.pin_dir` so that `xdp-lb inspect`, a restarted agent and
//! `bpftool` see the same state.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use xdp_lb_common::{
    BackendInfo, Counter, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_VIPS, FlowKey, FlowValue,
    MAGLEV_MAX_TABLE_SIZE, MAX_BACKENDS, MAX_TX_PORTS, TrafficCounters, VipInfo, VipKey,
};

#[map]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::pinned(DEFAULT_MAX_VIPS, 0);

#[map]
pub static BACKENDS: Array<BackendInfo> = Array::pinned(MAX_BACKENDS, 0);

/// Two slots of `MAGLEV_MAX_TABLE_SIZE` backend ids per VIP (double buffer).
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(DEFAULT_MAX_VIPS * 2 * MAGLEV_MAX_TABLE_SIZE, 0);

#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// Egress interfaces other than the ingress one, keyed by ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_TX_PORTS, 0);

#[map]
pub static VIP_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(DEFAULT_MAX_VIPS, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_BACKENDS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);
