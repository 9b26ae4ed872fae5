//! What the CLI prints: `xdp-lb inspect` reports and `xdp-lb status`, as tables for a person
//! (`--json` prints the same views with serde instead).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{
    inspect::{BackendView, FlowView, Inspector, MaglevView, Stats, VipView},
    status::AgentStatus,
};

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

pub fn print_status(s: &AgentStatus) {
    println!(
        "config {} (loaded at unix {}), up {} s, interface {} ({}), {} health transition(s)",
        s.config.display(),
        s.loaded_unix,
        s.uptime_seconds,
        s.interface,
        s.attached.as_deref().unwrap_or("not attached"),
        s.health_transitions
    );
    for i in &s.vrrp {
        println!(
            "VRRP {} (vrid {} on {}): {} priority {} (configured {}), {} transition(s), last: {} — {}",
            i.name,
            i.vrid,
            i.interface,
            i.state.name(),
            i.priority,
            i.configured_priority,
            i.transitions,
            i.last_transition_unix,
            i.last_cause
        );
    }
    for vip in &s.vips {
        println!(
            "\nVIP {} {}:{} (check: {}){}",
            vip.name,
            vip.address,
            vip.port,
            vip.health_check.as_str(),
            if vip.usable_backends {
                ""
            } else {
                "  NO USABLE BACKEND"
            }
        );
        println!(
            "  {:<16} {:>6} {:<9} {:<7} {:<19} last check",
            "backend", "weight", "state", "health", "mac"
        );
        for b in &vip.backends {
            println!(
                "  {:<16} {:>6} {:<9} {:<7} {:<19} {}",
                b.address.to_string(),
                b.weight,
                b.state.as_str(),
                b.health.as_str(),
                b.mac.as_deref().unwrap_or("-"),
                b.check.as_ref().map_or("-", |c| c.last_check.as_str())
            );
        }
    }
}
