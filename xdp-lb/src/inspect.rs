//! `xdp-lb inspect`: what the data plane holds, read straight from the pinned maps. Works
//! from any process, while the agent runs and after it died with the data plane kept. Reads
//! only; the agent's reconciler stays the only writer.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;
use xdp_lb_common::{BACKEND_F_FORWARD, Counter, TrafficCounters, VipInfo, VipKey};

use crate::{
    dataplane::{DataplaneError, Maps},
    neighbor::fmt_mac,
};

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
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
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: &'static str,
    pub table_size: u32,
    /// Backends configured for this VIP.
    pub backends: usize,
    /// Backends holding entries of the live table (usable for new flows).
    pub backends_in_table: u32,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    pub id: u32,
    pub vip: String,
    pub address: Ipv4Addr,
    pub mac: String,
    pub interface: String,
    pub weight: u32,
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
    pub age_seconds: f64,
    /// NAT flows: the SNAT address:port the backend sees, and the TCP state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub counters: BTreeMap<&'static str, u64>,
    pub vips: BTreeMap<String, Traffic>,
    pub flow_table_entries: usize,
    pub flow_table_size: u32,
    /// NAT flows (reply entries in NAT_FLOWS, one per flow and SNAT port).
    pub nat_flows: usize,
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
    pub address: Ipv4Addr,
    pub weight: u32,
    pub entries: u32,
    pub share_pct: f64,
    pub weight_share_pct: f64,
}

/// An open view on the pinned maps.
pub struct Inspector {
    maps: Maps,
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn port(be: u16) -> u16 {
    u16::from_be(be)
}

fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() || ifindex == 0 {
        return if ifindex == 0 {
            "-".into()
        } else {
            format!("ifindex {ifindex}")
        };
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl Inspector {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps: Maps::open_pinned(pin_dir)?,
        })
    }

    fn vip_entries(&self) -> Vec<(VipKey, VipInfo, String)> {
        let mut v: Vec<(VipKey, VipInfo, String)> = self
            .maps
            .vips
            .iter()
            .filter_map(Result::ok)
            .map(|(k, info)| {
                let name = self
                    .maps
                    .vip_names
                    .get(&info.vip_id, 0)
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default();
                (k, info, name)
            })
            .collect();
        v.sort_by(|a, b| a.2.cmp(&b.2));
        v
    }

    fn table(&self, info: &VipInfo) -> Vec<u32> {
        if info.backend_count == 0 || info.table_size == 0 {
            return Vec::new();
        }
        self.maps
            .maglev
            .read_slot(info.maglev_slot, info.table_size)
    }

    /// The VIP named `name`, or an error listing the names there are.
    fn find_vip(&self, name: &str) -> Result<(VipKey, VipInfo, String), String> {
        let vips = self.vip_entries();
        let names: Vec<String> = vips.iter().map(|v| v.2.clone()).collect();
        vips.into_iter()
            .find(|v| v.2 == name)
            .ok_or_else(|| format!("no VIP named {name:?} (there are: {})", names.join(", ")))
    }

    pub fn vips(&self) -> Vec<VipView> {
        let backends = self.backend_entries();
        self.vip_entries()
            .into_iter()
            .map(|(k, info, name)| VipView {
                name,
                vip_id: info.vip_id,
                address: addr(k.addr_be),
                port: port(k.port_be),
                protocol: "tcp",
                table_size: info.table_size,
                backends: backends
                    .iter()
                    .filter(|(_, b)| b.vip_id == info.vip_id)
                    .count(),
                backends_in_table: info.backend_count,
                traffic: Maps::traffic(&self.maps.vip_stats, info.vip_id)
                    .unwrap_or_default()
                    .into(),
            })
            .collect()
    }

    fn backend_entries(&self) -> Vec<(u32, xdp_lb_common::BackendInfo)> {
        self.maps
            .backends
            .iter()
            .enumerate()
            .filter_map(|(id, b)| b.ok().filter(|b| b.addr_be != 0).map(|b| (id as u32, b)))
            .collect()
    }

    pub fn backends(&self, vip: Option<&str>) -> Result<Vec<BackendView>, String> {
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
                    address: addr(b.addr_be),
                    mac: fmt_mac(&b.mac),
                    interface: interface_name(b.ifindex),
                    weight: b.weight,
                    forwarding: b.flags & BACKEND_F_FORWARD != 0,
                    table_entries: n,
                    table_share_pct: if table.is_empty() {
                        0.0
                    } else {
                        100.0 * n as f64 / table.len() as f64
                    },
                    traffic: Maps::traffic(&self.maps.backend_stats, *id)
                        .unwrap_or_default()
                        .into(),
                });
            }
        }
        Ok(out)
    }

    pub fn flows(&self, vip: Option<&str>, limit: usize) -> Result<Vec<FlowView>, String> {
        let wanted = match vip {
            Some(name) => Some(self.find_vip(name)?.1.vip_id),
            None => None,
        };
        let names: BTreeMap<u32, String> = self
            .vip_entries()
            .into_iter()
            .map(|(_, i, n)| (i.vip_id, n))
            .collect();
        let backends: BTreeMap<u32, u32> = self
            .backend_entries()
            .into_iter()
            .map(|(id, b)| (id, b.addr_be))
            .collect();
        let now = monotonic_ns();
        let mut out = Vec::new();
        for entry in self.maps.flows.iter() {
            let Ok((k, v)) = entry else { continue };
            if wanted.is_some_and(|w| w != v.vip_id) {
                continue;
            }
            let nat = v.flags & xdp_lb_common::FLOW_F_NAT != 0;
            let backend = match backends.get(&v.backend_id) {
                Some(_) if nat => {
                    format!("{}:{}", addr(v.nat_dst_addr_be), port(v.nat_dst_port_be))
                }
                Some(a) => addr(*a).to_string(),
                None => format!("id {} (gone)", v.backend_id),
            };
            let (snat, state) = if nat {
                // The reply direction carries the backend's word on the state.
                let reply_key = xdp_lb_common::FlowKey {
                    src_addr_be: v.nat_dst_addr_be,
                    dst_addr_be: v.nat_src_addr_be,
                    src_port_be: v.nat_dst_port_be,
                    dst_port_be: v.nat_src_port_be,
                    proto: xdp_lb_common::IPPROTO_TCP,
                    _pad: [0; 3],
                };
                let reply_flags = self
                    .maps
                    .nat_flows
                    .get(&reply_key, 0)
                    .map(|r| r.flags)
                    .unwrap_or(0);
                (
                    Some(format!(
                        "{}:{}",
                        addr(v.nat_src_addr_be),
                        port(v.nat_src_port_be)
                    )),
                    Some(xdp_lb_common::FlowValue::nat_state(v.flags | reply_flags).name()),
                )
            } else {
                (None, None)
            };
            out.push(FlowView {
                client: format!("{}:{}", addr(k.src_addr_be), port(k.src_port_be)),
                vip: format!("{}:{}", addr(k.dst_addr_be), port(k.dst_port_be)),
                vip_name: names.get(&v.vip_id).cloned().unwrap_or_else(|| "?".into()),
                backend,
                age_seconds: now.saturating_sub(v.created_ns) as f64 / 1e9,
                snat,
                state,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn stats(&self) -> Stats {
        let counters = Counter::ALL
            .iter()
            .map(|c| (c.name(), self.maps.counter(*c).unwrap_or(0)))
            .collect();
        let vips = self
            .vip_entries()
            .into_iter()
            .map(|(_, info, name)| {
                (
                    name,
                    Maps::traffic(&self.maps.vip_stats, info.vip_id)
                        .unwrap_or_default()
                        .into(),
                )
            })
            .collect();
        Stats {
            counters,
            vips,
            flow_table_entries: self.maps.flows.keys().filter(Result::is_ok).count(),
            flow_table_size: self.maps.flows_max_entries(),
            nat_flows: self.maps.nat_flows.keys().filter(Result::is_ok).count(),
        }
    }

    pub fn maglev(&self, vip: &str) -> Result<MaglevView, String> {
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
                    address: addr(b.addr_be),
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

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- text rendering -------------------------------------------------------------------------

pub fn print_vips(vips: &[VipView]) {
    println!(
        "{:<16} {:<22} {:>7} {:>9} {:>12} {:>14} {:>10}",
        "VIP", "ADDRESS", "TABLE", "BACKENDS", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for v in vips {
        println!(
            "{:<16} {:<22} {:>7} {:>9} {:>12} {:>14} {:>10}",
            v.name,
            format!("{}:{}/{}", v.address, v.port, v.protocol),
            v.table_size,
            format!("{}/{}", v.backends_in_table, v.backends),
            v.traffic.packets,
            v.traffic.bytes,
            v.traffic.new_flows
        );
    }
}

pub fn print_backends(backends: &[BackendView]) {
    println!(
        "{:<12} {:<16} {:<18} {:<10} {:>6} {:>4} {:>8} {:>12} {:>10}",
        "VIP", "BACKEND", "MAC", "INTERFACE", "WEIGHT", "FWD", "TABLE%", "PACKETS", "NEW FLOWS"
    );
    for b in backends {
        println!(
            "{:<12} {:<16} {:<18} {:<10} {:>6} {:>4} {:>7.2}% {:>12} {:>10}",
            b.vip,
            b.address.to_string(),
            b.mac,
            b.interface,
            b.weight,
            if b.forwarding { "yes" } else { "no" },
            b.table_share_pct,
            b.traffic.packets,
            b.traffic.new_flows
        );
    }
}

pub fn print_flows(flows: &[FlowView]) {
    println!(
        "{:<22} {:<22} {:<12} {:<22} {:>9}  {:<22} STATE",
        "CLIENT", "VIP", "NAME", "BACKEND", "AGE (s)", "NAT SOURCE"
    );
    for f in flows {
        println!(
            "{:<22} {:<22} {:<12} {:<22} {:>9.1}  {:<22} {}",
            f.client,
            f.vip,
            f.vip_name,
            f.backend,
            f.age_seconds,
            f.snat.as_deref().unwrap_or("-"),
            f.state.unwrap_or("-")
        );
    }
}

pub fn print_maglev(m: &MaglevView) {
    println!(
        "VIP {} table size {} (slot {})",
        m.vip, m.table_size, m.slot
    );
    println!(
        "{:<16} {:>6} {:>8} {:>9} {:>13}",
        "BACKEND", "WEIGHT", "ENTRIES", "SHARE", "WEIGHT SHARE"
    );
    for b in &m.backends {
        println!(
            "{:<16} {:>6} {:>8} {:>8.2}% {:>12.2}%",
            b.address.to_string(),
            b.weight,
            b.entries,
            b.share_pct,
            b.weight_share_pct
        );
    }
}

/// Prints the stats once, or every `interval` with rates since the previous print
/// (`count` prints, or until interrupted).
pub fn print_stats(inspector: &Inspector, watch: Option<Duration>, count: Option<u64>, json: bool) {
    let mut previous: Option<(Instant, Stats)> = None;
    let mut printed = 0u64;
    loop {
        let now = Instant::now();
        let stats = inspector.stats();
        if json {
            let rates = previous
                .as_ref()
                .map(|(t, p)| rates(p, &stats, now.duration_since(*t)));
            println!(
                "{}",
                serde_json::json!({ "stats": stats, "rates_per_second": rates })
            );
        } else {
            if watch.is_some() {
                println!("--- {:?}", std::time::SystemTime::now());
            }
            println!(
                "flow table: {} of {} entries; NAT flows: {}",
                stats.flow_table_entries, stats.flow_table_size, stats.nat_flows
            );
            let r = previous
                .as_ref()
                .map(|(t, p)| rates(p, &stats, now.duration_since(*t)));
            println!("{:<22} {:>14} {:>12}", "COUNTER", "TOTAL", "PER SECOND");
            for (name, v) in &stats.counters {
                let rate = r
                    .as_ref()
                    .and_then(|r| r.get(*name))
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "-".into());
                println!("{name:<22} {v:>14} {rate:>12}");
            }
            for (name, t) in &stats.vips {
                println!(
                    "vip {name:<18} {:>14} packets {:>14} bytes {:>10} new flows",
                    t.packets, t.bytes, t.new_flows
                );
            }
        }
        printed += 1;
        let Some(interval) = watch else { return };
        if count.is_some_and(|c| printed >= c) {
            return;
        }
        previous = Some((now, stats));
        std::thread::sleep(interval);
    }
}

fn rates(prev: &Stats, cur: &Stats, dt: Duration) -> BTreeMap<&'static str, f64> {
    let secs = dt.as_secs_f64().max(1e-6);
    cur.counters
        .iter()
        .map(|(k, v)| {
            (
                *k,
                v.saturating_sub(prev.counters.get(k).copied().unwrap_or(0)) as f64 / secs,
            )
        })
        .collect()
}
