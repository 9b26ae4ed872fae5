//! Typed handles on every map of the program, and what may be read from them.
//!
//! The fields are private to `dataplane`: outside it a [`Maps`] can only be read (every method
//! here takes `&self`), so `xdp-lb inspect`, the HTTP server and tests may open the pinned maps
//! freely. The one value that writes is the one [`super::Reconciler`] owns.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::Key,
    },
};
use xdp_lb_common::{
    AclData, AclData6, AnyVipKey, BackendInfo, Bucket, BucketKey, BucketKey6, Counter, FlowKey,
    FlowKey6, FlowLogBudget, FlowValue, FlowValue6, ProbeReply, Settings, TrafficCounters,
    TunnelParams, VipInfo, VipKey, VipKey6, VipLimit, VipName, map_names,
};

use super::{DataplaneError, maglev_array::MaglevArray};

/// Typed handles on every map of the program.
pub struct Maps {
    pub(super) vips: HashMap<MapData, VipKey, VipInfo>,
    /// IPv6 VIPs and flows (their ids, tables and backends share the arrays below).
    pub(super) vips6: HashMap<MapData, VipKey6, VipInfo>,
    pub(super) flows6: HashMap<MapData, FlowKey6, FlowValue6>,
    pub(super) backends: Array<MapData, BackendInfo>,
    /// The ports VIPs listen on, a bit each (`xdp_lb_common::vip_port_bit`).
    pub(super) vip_ports: Array<MapData, u64>,
    pub(super) maglev: MaglevArray,
    pub(super) flows: HashMap<MapData, FlowKey, FlowValue>,
    /// NAT reply direction and SNAT port reservations (see `xdp-lb-ebpf/src/nat.rs`).
    pub(super) nat_flows: HashMap<MapData, FlowKey, FlowValue>,
    /// Half-open NAT flows (an LRU; see `NAT_EMBRYONIC` in `xdp-lb-ebpf/src/maps.rs`).
    pub(super) nat_embryonic: HashMap<MapData, FlowKey, FlowValue>,
    /// Their client directions (`NAT_EMBRYONIC_CLIENT`).
    pub(super) nat_embryonic_client: HashMap<MapData, FlowKey, FlowValue>,
    /// The same three for NAT66.
    pub(super) nat_flows6: HashMap<MapData, FlowKey6, FlowValue6>,
    pub(super) nat_embryonic6: HashMap<MapData, FlowKey6, FlowValue6>,
    pub(super) nat_embryonic_client6: HashMap<MapData, FlowKey6, FlowValue6>,
    pub(super) tx_ports: DevMapHash<MapData>,
    /// The VIPs' allow and deny lists (`xdp-lb-ebpf/src/acl.rs`).
    pub(super) acl: LpmTrie<MapData, AclData, u32>,
    pub(super) acl6: LpmTrie<MapData, AclData6, u32>,
    /// Per-source new-flow limits by VIP id, and the sources' buckets (`limit.rs`).
    pub(super) vip_limits: Array<MapData, VipLimit>,
    /// Tunnel VIPs' parameters by VIP id, and the answers to the tunnel health probes by
    /// backend id (`xdp-lb-ebpf/src/tunnel/`).
    pub(super) vip_tunnels: Array<MapData, TunnelParams>,
    tunnel_probes: Array<MapData, ProbeReply>,
    source_buckets: HashMap<MapData, BucketKey, Bucket>,
    source_buckets6: HashMap<MapData, BucketKey6, Bucket>,
    pub(super) vip_stats: PerCpuArray<MapData, TrafficCounters>,
    pub(super) backend_stats: PerCpuArray<MapData, TrafficCounters>,
    counters: PerCpuArray<MapData, u64>,
    pub(super) vip_names: Array<MapData, VipName>,
    pub(super) backend_names: Array<MapData, VipName>,
    pub(super) settings: Array<MapData, Settings>,
    flow_log_budget: PerCpuArray<MapData, FlowLogBudget>,
    /// The flow-log ring buffer, until the agent takes it to read events.
    flow_log: Option<RingBuf<MapData>>,
    /// New flows for `[sync]`, until the sync task takes it.
    sync_events: Option<RingBuf<MapData>>,
    flows_size: u32,
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Self::from_source(|name| {
            ebpf.take_map(name).ok_or(DataplaneError::MissingMap {
                name,
                place: "the object".into(),
            })
        })
    }

    /// Opens the maps pinned under `pin_dir` by a running (or dead but kept) agent, to read.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Self::from_source(|name| {
            let path = pin_dir.join(name);
            if !path.exists() {
                return Err(DataplaneError::MissingMap {
                    name,
                    place: format!("{} (is xdp-lb running?)", pin_dir.display()),
                });
            }
            let data =
                MapData::from_pin(&path).map_err(|source| DataplaneError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| DataplaneError::Map { name, source })
        })
    }

    fn from_source(
        mut get: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        fn conv<T: TryFrom<Map, Error = MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, DataplaneError> {
            T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
        }
        let maglev = match get(map_names::MAGLEV)? {
            Map::Array(data) => MaglevArray::new(data)?,
            _ => {
                return Err(DataplaneError::WrongMap {
                    name: map_names::MAGLEV,
                    detail: "not an array".into(),
                });
            }
        };
        let flows = get(map_names::FLOWS)?;
        let flows_size = match &flows {
            Map::LruHashMap(d) | Map::HashMap(d) => d.info().map(|i| i.max_entries()).unwrap_or(0),
            _ => 0,
        };
        Ok(Self {
            vips: conv(map_names::VIPS, get(map_names::VIPS)?)?,
            vips6: conv(map_names::VIPS6, get(map_names::VIPS6)?)?,
            flows6: conv(map_names::FLOWS6, get(map_names::FLOWS6)?)?,
            backends: conv(map_names::BACKENDS, get(map_names::BACKENDS)?)?,
            vip_ports: conv(map_names::VIP_PORTS, get(map_names::VIP_PORTS)?)?,
            maglev,
            flows: conv(map_names::FLOWS, flows)?,
            nat_flows: conv(map_names::NAT_FLOWS, get(map_names::NAT_FLOWS)?)?,
            nat_embryonic: conv(map_names::NAT_EMBRYONIC, get(map_names::NAT_EMBRYONIC)?)?,
            nat_embryonic_client: conv(
                map_names::NAT_EMBRYONIC_CLIENT,
                get(map_names::NAT_EMBRYONIC_CLIENT)?,
            )?,
            nat_flows6: conv(map_names::NAT_FLOWS6, get(map_names::NAT_FLOWS6)?)?,
            nat_embryonic6: conv(map_names::NAT_EMBRYONIC6, get(map_names::NAT_EMBRYONIC6)?)?,
            nat_embryonic_client6: conv(
                map_names::NAT_EMBRYONIC_CLIENT6,
                get(map_names::NAT_EMBRYONIC_CLIENT6)?,
            )?,
            tx_ports: conv(map_names::TX_PORTS, get(map_names::TX_PORTS)?)?,
            acl: conv(map_names::ACL, get(map_names::ACL)?)?,
            acl6: conv(map_names::ACL6, get(map_names::ACL6)?)?,
            vip_limits: conv(map_names::VIP_LIMITS, get(map_names::VIP_LIMITS)?)?,
            vip_tunnels: conv(map_names::VIP_TUNNELS, get(map_names::VIP_TUNNELS)?)?,
            tunnel_probes: conv(map_names::TUNNEL_PROBES, get(map_names::TUNNEL_PROBES)?)?,
            source_buckets: conv(map_names::SOURCE_BUCKETS, get(map_names::SOURCE_BUCKETS)?)?,
            source_buckets6: conv(map_names::SOURCE_BUCKETS6, get(map_names::SOURCE_BUCKETS6)?)?,
            vip_stats: conv(map_names::VIP_STATS, get(map_names::VIP_STATS)?)?,
            backend_stats: conv(map_names::BACKEND_STATS, get(map_names::BACKEND_STATS)?)?,
            counters: conv(map_names::COUNTERS, get(map_names::COUNTERS)?)?,
            vip_names: conv(map_names::VIP_NAMES, get(map_names::VIP_NAMES)?)?,
            backend_names: conv(map_names::BACKEND_NAMES, get(map_names::BACKEND_NAMES)?)?,
            settings: conv(map_names::SETTINGS, get(map_names::SETTINGS)?)?,
            flow_log_budget: conv(map_names::FLOW_LOG_BUDGET, get(map_names::FLOW_LOG_BUDGET)?)?,
            flow_log: Some(conv(map_names::FLOW_LOG, get(map_names::FLOW_LOG)?)?),
            sync_events: Some(conv(map_names::SYNC_EVENTS, get(map_names::SYNC_EVENTS)?)?),
            flows_size,
        })
    }

    /// The flow-log ring buffer, for its one reader (the agent takes it once).
    pub fn take_flow_log(&mut self) -> Option<RingBuf<MapData>> {
        self.flow_log.take()
    }

    /// The ring of new flows the sync sends to its peers (see `sync_events.rs` in the
    /// program): the sync task takes it once.
    pub fn take_sync_events(&mut self) -> Option<RingBuf<MapData>> {
        self.sync_events.take()
    }

    /// The flow table's size as created.
    pub fn flows_max_entries(&self) -> u32 {
        self.flows_size
    }

    /// Every VIP entry, IPv4 then IPv6 (entries that vanish while we read are skipped).
    pub fn vips(&self) -> Vec<(AnyVipKey, VipInfo)> {
        let v4 = self.vips.iter().filter_map(Result::ok);
        let v6 = self.vips6.iter().filter_map(Result::ok);
        v4.map(|(k, v)| (AnyVipKey::V4(k), v))
            .chain(v6.map(|(k, v)| (AnyVipKey::V6(k), v)))
            .collect()
    }

    pub fn vip(&self, key: &AnyVipKey) -> Option<VipInfo> {
        match key {
            AnyVipKey::V4(k) => self.vips.get(k, 0).ok(),
            AnyVipKey::V6(k) => self.vips6.get(k, 0).ok(),
        }
    }

    /// The name the agent gave VIP `vip_id` (what `inspect` shows).
    pub fn vip_name(&self, vip_id: u32) -> Option<String> {
        self.vip_names
            .get(&vip_id, 0)
            .ok()
            .map(|n| n.as_str().to_owned())
    }

    /// The name the agent gave backend `id` (None: an older agent wrote no name).
    pub fn backend_name(&self, id: u32) -> Option<String> {
        self.backend_names
            .get(&id, 0)
            .ok()
            .map(|n| n.as_str().to_owned())
            .filter(|n| !n.is_empty())
    }

    /// Every backend id in use, with its entry (a cleared entry means the id is free).
    pub fn backends(&self) -> Vec<(u32, BackendInfo)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(id, b)| {
                b.ok()
                    .filter(|b| b.addr_be != 0 || b.addr6 != [0; 16])
                    .map(|b| (id as u32, b))
            })
            .collect()
    }

    /// The live Maglev table of a VIP (empty when it has no usable backend).
    pub fn maglev_table(&self, info: &VipInfo) -> Vec<u32> {
        if info.table_size == 0 || info.maglev_slot >= self.maglev.slots() {
            return Vec::new();
        }
        self.maglev.read_slot(info.maglev_slot, info.table_size)
    }

    /// Every client-direction flow (entries evicted while we read are skipped).
    pub fn flows(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        self.flows.iter().filter_map(Result::ok)
    }

    /// Every IPv6 flow (entries evicted while we read are skipped).
    pub fn flows6(&self) -> impl Iterator<Item = (FlowKey6, FlowValue6)> + '_ {
        self.flows6.iter().filter_map(Result::ok)
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key, 0).ok()
    }

    /// Every NAT reply-direction entry (one per NAT flow and SNAT port).
    pub fn nat_flows(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        self.nat_flows.iter().filter_map(Result::ok)
    }

    /// Every half-open NAT flow (reply-direction key and entry, awaiting the backend's SYN-ACK).
    pub fn nat_embryonic(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        self.nat_embryonic.iter().filter_map(Result::ok)
    }

    /// Every half-open NAT flow's client direction (client key, the rewrite towards the
    /// backend): a TCP flow's SYN, a UDP flow's first datagram.
    pub fn nat_embryonic_client(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        self.nat_embryonic_client.iter().filter_map(Result::ok)
    }

    pub fn nat_embryonic_client6(&self) -> impl Iterator<Item = (FlowKey6, FlowValue6)> + '_ {
        self.nat_embryonic_client6.iter().filter_map(Result::ok)
    }

    pub fn nat_flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.nat_flows.get(key, 0).ok()
    }

    /// NAT66's reply-direction entries, half-open flows and one reply entry, as above.
    pub fn nat_flows6(&self) -> impl Iterator<Item = (FlowKey6, FlowValue6)> + '_ {
        self.nat_flows6.iter().filter_map(Result::ok)
    }

    pub fn nat_embryonic6(&self) -> impl Iterator<Item = (FlowKey6, FlowValue6)> + '_ {
        self.nat_embryonic6.iter().filter_map(Result::ok)
    }

    pub fn nat_flow6(&self, key: &FlowKey6) -> Option<FlowValue6> {
        self.nat_flows6.get(key, 0).ok()
    }

    /// The data plane's switches as the agent last wrote them.
    pub fn settings(&self) -> Option<Settings> {
        self.settings.get(&0, 0).ok()
    }

    /// Every allow/deny entry: (VIP id, source prefix length, source address) → action.
    pub fn acl_entries(&self) -> Vec<(u32, u8, std::net::IpAddr, u32)> {
        let v4 = self
            .acl
            .iter()
            .filter_map(Result::ok)
            .map(|(k, action): (Key<AclData>, u32)| {
                let d = k.data();
                let len = k.prefix_len().saturating_sub(32) as u8;
                let addr = std::net::Ipv4Addr::from(d.addr_be.to_ne_bytes());
                (d.vip_id, len, addr.into(), action)
            });
        let v6 =
            self.acl6
                .iter()
                .filter_map(Result::ok)
                .map(|(k, action): (Key<AclData6>, u32)| {
                    let d = k.data();
                    let len = k.prefix_len().saturating_sub(32) as u8;
                    (
                        d.vip_id,
                        len,
                        std::net::Ipv6Addr::from(d.addr).into(),
                        action,
                    )
                });
        v4.chain(v6).collect()
    }

    /// The per-source limit of VIP `vip_id` as the program reads it.
    pub fn vip_limit(&self, vip_id: u32) -> Option<VipLimit> {
        self.vip_limits.get(&vip_id, 0).ok()
    }

    /// A tunnel VIP's parameters as the program reads them.
    pub fn vip_tunnel(&self, vip_id: u32) -> Option<TunnelParams> {
        self.vip_tunnels.get(&vip_id, 0).ok()
    }

    /// The last answer backend `backend_id` gave a tunnel health probe (`seen_ns` 0: none).
    pub fn tunnel_probe(&self, backend_id: u32) -> Option<ProbeReply> {
        self.tunnel_probes.get(&backend_id, 0).ok()
    }

    /// Sources with a new-flow bucket (limited VIPs' recent sources).
    pub fn source_buckets(&self) -> usize {
        self.source_buckets.keys().filter(Result::is_ok).count()
            + self.source_buckets6.keys().filter(Result::is_ok).count()
    }

    /// Interfaces the program may redirect to.
    pub fn tx_ports(&self) -> Result<Vec<u32>, MapError> {
        self.tx_ports.keys().collect()
    }

    /// The flow log's per-CPU budgets (what each CPU has reported and suppressed).
    pub fn flow_log_budgets(&self) -> Vec<FlowLogBudget> {
        self.flow_log_budget
            .get(&0, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A counter summed over CPUs. `Tx` and `Redirect` are summed over the VIPs' counters,
    /// where the data plane keeps them (see `TrafficCounters`).
    pub fn counter(&self, counter: Counter) -> Result<u64, MapError> {
        match counter {
            Counter::Tx | Counter::Redirect => {
                let mut total = 0;
                for values in self.vip_stats.iter() {
                    for v in values?.iter() {
                        total += if counter == Counter::Tx {
                            v.tx
                        } else {
                            v.redirect
                        };
                    }
                }
                Ok(total)
            }
            c => Ok(self.counters.get(&(c as u32), 0)?.iter().sum()),
        }
    }

    /// A VIP's counters summed over CPUs.
    pub fn vip_traffic(&self, vip_id: u32) -> TrafficCounters {
        sum_traffic(&self.vip_stats, vip_id)
    }

    /// A backend's counters summed over CPUs.
    pub fn backend_traffic(&self, backend_id: u32) -> TrafficCounters {
        sum_traffic(&self.backend_stats, backend_id)
    }
}

fn sum_traffic(map: &PerCpuArray<MapData, TrafficCounters>, index: u32) -> TrafficCounters {
    let mut total = TrafficCounters::default();
    if let Ok(values) = map.get(&index, 0) {
        for v in values.iter() {
            total.add(v);
        }
    }
    total
}
