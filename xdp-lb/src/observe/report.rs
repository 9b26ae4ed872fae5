//! What `xdp-lb inspect` prints, as tables for a person (`--json` prints the same views with
//! serde instead).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::inspect::{BackendView, FlowView, Inspector, MaglevView, Stats, VipView};

/// Prints a header row and `rows` aligned under it, `indent` spaces in. `cols` is one spec per
/// column, `|`-separated: the title, `<` (text, left-aligned) or `>` (numbers, right-aligned),
/// and the width, e.g. `"VIP<16|PACKETS>12"`.
pub(super) fn table(indent: usize, cols: &str, rows: impl IntoIterator<Item = Vec<String>>) {
    let cols: Vec<(&str, bool, usize)> = cols
        .split('|')
        .map(|c| {
            let at = c.find(['<', '>']).expect("a column spec has < or >");
            let width = c[at + 1..]
                .parse()
                .expect("a column spec ends in its width");
            (&c[..at], c[at..].starts_with('>'), width)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cols
            .iter()
            .zip(cells)
            .map(|(&(_, right, width), cell)| match right {
                true => format!("{cell:>width$}"),
                false => format!("{cell:<width$}"),
            })
            .collect();
        println!("{:indent$}{}", "", cells.join(" ").trim_end());
    };
    line(cols.iter().map(|c| c.0.to_owned()).collect());
    for row in rows {
        line(row);
    }
}

pub fn print_vips(vips: &[VipView]) {
    let cols =
        "VIP<16|ADDRESS<22|MODE<5|TABLE>7|BACKENDS>9|PACKETS>12|BYTES>14|NEW FLOWS>10|REFUSED>8";
    table(
        0,
        cols,
        vips.iter().map(|v| {
            vec![
                v.name.clone(),
                format!("{}:{}/{}", v.address, v.port, v.protocol),
                v.forwarding.into(),
                v.table_size.to_string(),
                format!("{}/{}", v.backends_in_table, v.backends),
                v.traffic.packets.to_string(),
                v.traffic.bytes.to_string(),
                v.traffic.new_flows.to_string(),
                (v.denied + v.not_allowed + v.rate_limited).to_string(),
            ]
        }),
    );
}

pub fn print_backends(backends: &[BackendView]) {
    let cols = "VIP<12|NAME<16|BACKEND<16|MODE<5|MAC<18|INTERFACE<10|WEIGHT>6|FWD>4|TABLE%>8|PACKETS>12|NEW FLOWS>10";
    table(
        0,
        cols,
        backends.iter().map(|b| {
            // Routed backends (NAT, tunnels): the FIB names the next hop per packet.
            let routed = b.mode != "dsr";
            vec![
                b.vip.clone(),
                b.name.clone(),
                b.address.to_string(),
                b.mode.into(),
                if routed {
                    "(routed)".into()
                } else {
                    b.mac.clone()
                },
                if routed {
                    "-".into()
                } else {
                    b.interface.clone()
                },
                b.weight.to_string(),
                if b.forwarding { "yes" } else { "no" }.into(),
                format!("{:.2}%", b.table_share_pct),
                b.traffic.packets.to_string(),
                b.traffic.new_flows.to_string(),
            ]
        }),
    );
}

pub fn print_flows(flows: &[FlowView]) {
    let cols = "PROTO<5|CLIENT<22|VIP<22|NAME<12|MODE<5|BACKEND<22|BACKEND NAME<16|AGE (s)>9|NAT SOURCE<22|STATE<0";
    table(
        0,
        cols,
        flows.iter().map(|f| {
            vec![
                f.protocol.into(),
                f.client.clone(),
                f.vip.clone(),
                f.vip_name.clone(),
                f.forwarding.into(),
                f.backend.clone(),
                f.backend_name.clone(),
                format!("{:.1}", f.age_seconds),
                f.snat.clone().unwrap_or_else(|| "-".into()),
                match (f.state, f.half_open) {
                    (Some(s), true) => format!("{s} (half-open)"),
                    (Some(s), false) => s.into(),
                    (None, _) => "-".into(),
                },
            ]
        }),
    );
}

pub fn print_maglev(m: &MaglevView) {
    println!(
        "VIP {} table size {} (slot {})",
        m.vip, m.table_size, m.slot
    );
    let cols = "NAME<16|BACKEND<16|WEIGHT>6|ENTRIES>8|SHARE>9|WEIGHT SHARE>13";
    table(
        0,
        cols,
        m.backends.iter().map(|b| {
            vec![
                b.name.clone(),
                b.address.to_string(),
                b.weight.to_string(),
                b.entries.to_string(),
                format!("{:.2}%", b.share_pct),
                format!("{:.2}%", b.weight_share_pct),
            ]
        }),
    );
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
                "flow table: {} of {} entries; NAT flows: {} (+{} half-open)",
                stats.flow_table_entries,
                stats.flow_table_size,
                stats.nat_flows,
                stats.nat_half_open
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
            for (mode, t) in stats.by_mode.iter().filter(|(_, t)| t.packets > 0) {
                println!(
                    "mode {mode:<17} {:>14} packets {:>14} bytes {:>10} new flows",
                    t.packets, t.bytes, t.new_flows
                );
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
