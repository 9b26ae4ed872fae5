//! `xdp-lb inspect` (and `/metrics`, `/stats`): what the data plane holds, read straight from
//! the pinned maps, as serde views. Works
//! from any process, while the agent runs and after it died with the data plane kept. Reads
//! only; the agent's reconciler stays the only writer.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::Serialize;
use thiserror::Error;
use xdp_lb_common::{
    AnyVipKey, BACKEND_F_FORWARD, Counter, FLOW_F_NAT, FORWARDING_MODES, FlowTuple, FlowValueOf,
    IPPROTO_UDP, TrafficCounters, VipInfo, forwarding_name,
};

pub use super::tunnel_view::TunnelView;
use crate::{
    dataplane::{DataplaneError, Maps},
    netlink::{fmt_mac, interface_name},
};

/// Why a report could not be made.
#[derive(Debug, Error)]
pub enum InspectError {
    #[error(transparent)]
    Maps(#[from] DataplaneError),
    #[error("no VIP named {name:?} (there are: {})", known.join(", "))]
    NoSuchVip { name: String, known: Vec<String> },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl Traffic {
    fn add(&mut self, t: &Traffic) {
        self.packets += t.packets;
        self.bytes += t.bytes;
        self.new_flows += t.new_flows;
    }
}

impl From<TrafficCounters> for Traffic {
    fn from(t: TrafficCounters) -> Self {
        Self {
            packets: t.packets,
            bytes: t.bytes,
            new_flows: t.new_flows,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VipView {
    pub name: String,
    pub vip_id: u32,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    /// "dsr", "nat", "ipip" or "gue".
    pub forwarding: &'static str,
    /// Tunnel VIPs: what the program encapsulates with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelView>,
    pub table_size: u32,
    /// Backends configured for this VIP.
    pub backends: usize,
    /// Backends holding entries of the live table (usable for new flows).
    pub backends_in_table: u32,
    pub traffic: Traffic,
    /// New flows its deny list refused.
    pub denied: u64,
    /// New flows its allow list refused.
    pub not_allowed: u64,
    /// New flows its per-source limit refused.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    pub id: u32,
    pub vip: String,
    /// Its `name` (the address when the config gives none, or an older agent wrote none).
    pub name: String,
    pub address: IpAddr,
    pub mac: String,
    pub interface: String,
    pub weight: u32,
    /// How its VIP forwards to it: "dsr", "nat", "ipip" or "gue".
    pub mode: &'static str,
    /// Carries its established flows (healthy, not disabled, MAC known).
    pub forwarding: bool,
    pub table_entries: u32,
    /// Share of the VIP's Maglev table, in percent.
    pub table_share_pct: f64,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub client: String,
    pub vip: String,
    pub vip_name: String,
    pub backend: String,
    /// The backend's `name` (its address when it has none).
    pub backend_name: String,
    /// "dsr", "nat", "ipip" or "gue".
    pub forwarding: &'static str,
    pub age_seconds: f64,
    /// NAT flows: the SNAT address:port the backend sees, and the TCP state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    /// A NAT flow not yet established: a TCP flow's SYN sent on, or a UDP flow the client has
    /// sent one datagram on (in the half-open tables until its second).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub half_open: bool,
}

/// What a flow row needs besides its entry: names of VIPs and backends, and the clock.
struct FlowNames {
    vips: BTreeMap<u32, String>,
    /// Each VIP's forwarding mode, by id.
    modes: BTreeMap<u32, &'static str>,
    /// Each backend's address and name, by id.
    backends: BTreeMap<u32, (IpAddr, String)>,
    now: u64,
}

impl FlowNames {
    /// One flow's row (and its VIP id, for the filter): `k` is the client's 5-tuple, `v` its
    /// client-direction entry, `reply_flags` the reply direction's flags (NAT).
    fn view<K: FlowTuple>(
        &self,
        k: &K,
        v: &FlowValueOf<K::Addr>,
        reply_flags: u32,
        half_open: bool,
        ip: impl Fn(K::Addr) -> IpAddr,
    ) -> (u32, FlowView) {
        let nat = v.flags & FLOW_F_NAT != 0;
        let (backend, backend_name) = match self.backends.get(&v.backend_id) {
            Some((_, n)) if nat => (socket(ip(v.nat_dst_addr_be), v.nat_dst_port_be), n.clone()),
            Some((a, n)) => (a.to_string(), n.clone()),
            None => (format!("id {} (gone)", v.backend_id), "-".into()),
        };
        let (snat, state) = if nat {
            (
                Some(socket(ip(v.nat_src_addr_be), v.nat_src_port_be)),
                Some(FlowValueOf::<K::Addr>::nat_state(v.flags | reply_flags).name()),
            )
        } else {
            (None, None)
        };
        let view = FlowView {
            client: socket(ip(k.src()), k.src_port_be()),
            vip: socket(ip(k.dst()), k.dst_port_be()),
            vip_name: self
                .vips
                .get(&v.vip_id)
                .cloned()
                .unwrap_or_else(|| "?".into()),
            backend,
            backend_name,
            forwarding: self.modes.get(&v.vip_id).copied().unwrap_or("?"),
            age_seconds: self.now.saturating_sub(v.created_ns) as f64 / 1e9,
            snat,
            state,
            protocol: if k.proto() == IPPROTO_UDP {
                "udp"
            } else {
                "tcp"
            },
            half_open,
        };
        (v.vip_id, view)
    }
}

/// The flags of a NAT flow's reply direction, which carries the backend's word on the state
/// (0 for a DSR flow or a reply entry gone).
fn nat_reply_flags<K: FlowTuple>(
    v: &FlowValueOf<K::Addr>,
    lookup: impl Fn(&K) -> Option<FlowValueOf<K::Addr>>,
) -> u32 {
    if v.flags & FLOW_F_NAT == 0 {
        return 0;
    }
    lookup(&crate::nat::other_direction(v)).map_or(0, |r| r.flags)
}

/// `address:port`, an IPv6 address in brackets (RFC 3986 §3.2.2).
fn socket(ip: IpAddr, port_be: u16) -> String {
    std::net::SocketAddr::new(ip, port(port_be)).to_string()
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub counters: BTreeMap<&'static str, u64>,
    pub vips: BTreeMap<String, Traffic>,
    /// The VIPs' traffic summed by forwarding mode ("dsr", "nat", "ipip", "gue").
    pub by_mode: BTreeMap<&'static str, Traffic>,
    pub flow_table_entries: usize,
    pub flow_table_size: u32,
    /// IPv6 flows (in `FLOWS6`).
    pub flow_table_ipv6_entries: usize,
    /// NAT flows (reply entries in NAT_FLOWS and NAT_FLOWS6, one per flow and SNAT port).
    pub nat_flows: usize,
    /// Half-open NAT flows (in NAT_EMBRYONIC and NAT_EMBRYONIC6): a SYN sent on, or a UDP
    /// flow's first datagram, and nothing more from the client yet.
    pub nat_half_open: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaglevView {
    pub vip: String,
    pub table_size: u32,
    pub slot: u32,
    pub backends: Vec<MaglevShare>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaglevShare {
    pub name: String,
    pub address: IpAddr,
    pub weight: u32,
    pub entries: u32,
    pub share_pct: f64,
    pub weight_share_pct: f64,
}

/// An open view on the pinned maps.
pub struct Inspector {
    maps: Maps,
}

fn port(be: u16) -> u16 {
    u16::from_be(be)
}

impl Inspector {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps: Maps::open_pinned(pin_dir)?,
        })
    }

    fn vip_entries(&self) -> Vec<(AnyVipKey, VipInfo, String)> {
        let mut v: Vec<(AnyVipKey, VipInfo, String)> = self
            .maps
            .vips()
            .into_iter()
            .map(|(k, info)| {
                let name = self.maps.vip_name(info.vip_id).unwrap_or_default();
                (k, info, name)
            })
            .collect();
        v.sort_by(|a, b| a.2.cmp(&b.2));
        v
    }

    fn table(&self, info: &VipInfo) -> Vec<u32> {
        if info.backend_count == 0 {
            return Vec::new();
        }
        self.maps.maglev_table(info)
    }

    /// The VIP named `name`, or an error listing the names there are.
    fn find_vip(&self, name: &str) -> Result<(AnyVipKey, VipInfo, String), InspectError> {
        let vips = self.vip_entries();
        let known: Vec<String> = vips.iter().map(|v| v.2.clone()).collect();
        vips.into_iter()
            .find(|v| v.2 == name)
            .ok_or_else(|| InspectError::NoSuchVip {
                name: name.to_owned(),
                known,
            })
    }

    pub fn vips(&self) -> Vec<VipView> {
        let backends = self.backend_entries();
        self.vip_entries()
            .into_iter()
            .map(|(k, info, name)| VipView {
                name,
                vip_id: info.vip_id,
                address: k.address(),
                port: port(k.port_be()),
                protocol: if k.proto() == IPPROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                },
                forwarding: forwarding_name(info.flags),
                tunnel: (info.flags & xdp_lb_common::VIP_F_TUNNEL != 0)
                    .then(|| self.maps.vip_tunnel(info.vip_id))
                    .flatten()
                    .map(TunnelView::from),
                table_size: info.table_size,
                backends: backends
                    .iter()
                    .filter(|(_, b)| b.vip_id == info.vip_id)
                    .count(),
                backends_in_table: info.backend_count,
                traffic: self.maps.vip_traffic(info.vip_id).into(),
                denied: self.maps.vip_traffic(info.vip_id).denied,
                not_allowed: self.maps.vip_traffic(info.vip_id).not_allowed,
                rate_limited: self.maps.vip_traffic(info.vip_id).rate_limited,
            })
            .collect()
    }

    fn backend_entries(&self) -> Vec<(u32, xdp_lb_common::BackendInfo)> {
        self.maps.backends()
    }

    /// Backend `id`'s name: the config's `name`, else (no name, or an older agent's pins
    /// without names) its address.
    fn name_of(&self, id: u32, b: &xdp_lb_common::BackendInfo) -> String {
        self.maps
            .backend_name(id)
            .unwrap_or_else(|| b.address().to_string())
    }

    pub fn backends(&self, vip: Option<&str>) -> Result<Vec<BackendView>, InspectError> {
        let vips = match vip {
            Some(name) => vec![self.find_vip(name)?],
            None => self.vip_entries(),
        };
        let backends = self.backend_entries();
        let mut out = Vec::new();
        for (_, info, name) in vips {
            let table = self.table(&info);
            let mut entries: BTreeMap<u32, u32> = BTreeMap::new();
            for id in &table {
                *entries.entry(*id).or_default() += 1;
            }
            for (id, b) in backends.iter().filter(|(_, b)| b.vip_id == info.vip_id) {
                let n = entries.get(id).copied().unwrap_or(0);
                out.push(BackendView {
                    id: *id,
                    vip: name.clone(),
                    name: self.name_of(*id, b),
                    address: b.address(),
                    mac: fmt_mac(&b.mac),
                    interface: interface_name(b.ifindex),
                    weight: b.weight,
                    mode: forwarding_name(info.flags),
                    forwarding: b.flags & BACKEND_F_FORWARD != 0,
                    table_entries: n,
                    table_share_pct: if table.is_empty() {
                        0.0
                    } else {
                        100.0 * n as f64 / table.len() as f64
                    },
                    traffic: self.maps.backend_traffic(*id).into(),
                });
            }
        }
        Ok(out)
    }

    /// Established flows (`FLOWS`, `FLOWS6`), then half-open NAT flows (a TCP flow's SYN, a
    /// UDP flow the client has sent one datagram on: a DNS query and its answer), at most
    /// `limit` in all.
    pub fn flows(&self, vip: Option<&str>, limit: usize) -> Result<Vec<FlowView>, InspectError> {
        let wanted = match vip {
            Some(name) => Some(self.find_vip(name)?.1.vip_id),
            None => None,
        };
        let entries = self.vip_entries();
        let names = FlowNames {
            modes: entries
                .iter()
                .map(|(_, i, _)| (i.vip_id, forwarding_name(i.flags)))
                .collect(),
            vips: entries.into_iter().map(|(_, i, n)| (i.vip_id, n)).collect(),
            backends: self
                .backend_entries()
                .into_iter()
                .map(|(id, b)| (id, (b.address(), self.name_of(id, &b))))
                .collect(),
            now: crate::clock::monotonic_ns(),
        };
        let v4 = |a: u32| IpAddr::from(a.to_ne_bytes());
        let v6 = IpAddr::from;
        let rows = self
            .maps
            .flows()
            .map(|(k, v)| {
                let reply = nat_reply_flags(&v, |r| self.maps.nat_flow(r));
                names.view(&k, &v, reply, false, v4)
            })
            .chain(self.maps.flows6().map(|(k, v)| {
                let reply = nat_reply_flags(&v, |r| self.maps.nat_flow6(r));
                names.view(&k, &v, reply, false, v6)
            }))
            .chain(
                self.maps
                    .nat_embryonic_client()
                    .map(|(k, v)| names.view(&k, &v, 0, true, v4)),
            )
            .chain(
                self.maps
                    .nat_embryonic_client6()
                    .map(|(k, v)| names.view(&k, &v, 0, true, v6)),
            );
        Ok(rows
            .filter(|(vip_id, _)| wanted.is_none_or(|w| w == *vip_id))
            .map(|(_, view)| view)
            .take(limit)
            .collect())
    }

    pub fn stats(&self) -> Stats {
        let counters = Counter::ALL
            .iter()
            .map(|c| (c.name(), self.maps.counter(*c).unwrap_or(0)))
            .collect();
        let mut by_mode: BTreeMap<&'static str, Traffic> = FORWARDING_MODES
            .iter()
            .map(|m| (*m, Traffic::default()))
            .collect();
        let vips = self
            .vip_entries()
            .into_iter()
            .map(|(_, info, name)| {
                let t: Traffic = self.maps.vip_traffic(info.vip_id).into();
                if let Some(m) = by_mode.get_mut(forwarding_name(info.flags)) {
                    m.add(&t);
                }
                (name, t)
            })
            .collect();
        Stats {
            counters,
            vips,
            by_mode,
            flow_table_entries: self.maps.flows().count(),
            flow_table_size: self.maps.flows_max_entries(),
            flow_table_ipv6_entries: self.maps.flows6().count(),
            nat_flows: self.maps.nat_flows().count() + self.maps.nat_flows6().count(),
            nat_half_open: self.maps.nat_embryonic().count() + self.maps.nat_embryonic6().count(),
        }
    }

    pub fn maglev(&self, vip: &str) -> Result<MaglevView, InspectError> {
        let (_, info, name) = self.find_vip(vip)?;
        let table = self.table(&info);
        let mut entries: BTreeMap<u32, u32> = BTreeMap::new();
        for id in &table {
            *entries.entry(*id).or_default() += 1;
        }
        let backends: Vec<(u32, xdp_lb_common::BackendInfo)> = self
            .backend_entries()
            .into_iter()
            .filter(|(_, b)| b.vip_id == info.vip_id)
            .collect();
        let total_weight: u32 = backends
            .iter()
            .filter(|(id, _)| entries.contains_key(id))
            .map(|(_, b)| b.weight)
            .sum();
        let shares = backends
            .iter()
            .map(|(id, b)| {
                let n = entries.get(id).copied().unwrap_or(0);
                let in_table = entries.contains_key(id);
                MaglevShare {
                    name: self.name_of(*id, b),
                    address: b.address(),
                    weight: b.weight,
                    entries: n,
                    share_pct: if table.is_empty() {
                        0.0
                    } else {
                        100.0 * n as f64 / table.len() as f64
                    },
                    weight_share_pct: if in_table && total_weight > 0 {
                        100.0 * b.weight as f64 / total_weight as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        Ok(MaglevView {
            vip: name,
            table_size: info.table_size,
            slot: info.maglev_slot,
            backends: shares,
        })
    }
}
