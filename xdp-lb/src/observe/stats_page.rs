//! `/stats`: a self-refreshing HTML page in the spirit of haproxy's stats page, one document
//! with no external assets: panels for VRRP, announce, sync and NAT (the ones configured),
//! every VIP and backend with its state and how long it has held (`DOWN 42 s, connect
//! refused`), rates (packets, bits and new flows per second) and the last 10 minutes as a
//! sparkline (`history.rs`), then the verdict counters with those at zero folded away. At 1000
//! backends the page stays well under a megabyte (a test renders it).

use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

use super::{
    history::{History, Key, POINTS, Rate, STEP},
    inspect::{BackendView, VipView},
    page_data::PageData,
    stats_panels::html,
    status_report::age,
};
use crate::{
    config::AdminState,
    status::{AgentStatus, HealthState},
};

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// 1234567 → "1.2M": rates in SI steps.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v if v >= 10.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

fn now_unix() -> u64 {
    crate::clock::unix_now()
}

/// The page. `history` gives the rates and sparklines.
pub(super) fn render(history: &History, status: Option<&AgentStatus>, snap: &PageData) -> Response {
    let page = page(history, status, snap, Instant::now());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

pub(super) fn page(
    history: &History,
    status: Option<&AgentStatus>,
    snap: &PageData,
    at: Instant,
) -> String {
    let rates = history.rates(snap, at);
    let series = history.series();
    let mut p = String::with_capacity(64 * 1024 + 600 * snap.backends.len());
    page_head(&mut p, status, snap);
    if let Some(s) = status.filter(|s| {
        !s.vrrp.is_empty() || s.announce.is_some() || s.sync.is_some() || s.nat.is_some()
    }) {
        super::stats_panels::panels(&mut p, s);
    }
    services(&mut p, status, snap, &rates, &series);
    counters(&mut p, snap);
    p.push_str("</body></html>\n");
    p
}

/// The head, the style and the line about the agent.
fn page_head(p: &mut String, status: Option<&AgentStatus>, snap: &PageData) {
    let _ = write!(
        p,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>xdp-lb statistics</title>
<style>
body{{font:13px/1.4 system-ui,sans-serif;margin:14px;color:#222;background:#fafafa}}
h1{{font-size:19px;margin:0 0 4px}} .sub{{color:#666;margin-bottom:12px}}
table{{border-collapse:collapse;width:100%;margin:6px 0 16px;background:#fff}}
th,td{{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}}
th{{background:#dde4ee}} td.l,th.l{{text-align:left}}
tr.vip td{{background:#eef;font-weight:600}}
.up{{background:#c8f0c8}} .down{{background:#f6b8b8}} .drain{{background:#f7e3a0}} .off{{background:#ddd}}
.panels{{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:12px}}
.panel{{background:#fff;border:1px solid #ccc;padding:6px 10px;min-width:260px}}
.panel h2{{font-size:14px;margin:0 0 4px}} .panel div{{white-space:nowrap}}
.MASTER{{color:#070;font-weight:600}} .BACKUP{{color:#555}} .FAULT{{color:#b00;font-weight:600}}
svg.spark{{vertical-align:middle}} summary{{cursor:pointer;color:#555}}
</style></head><body>
<h1>xdp-lb statistics</h1>
<div class="sub">config {} · up {} · interface {} ({}) · flow table {} / {} · rates over the last seconds; sparklines: packets/s, last {} min in {} s steps · refreshes every 5 s</div>
"#,
        html(&status.map_or("?".into(), |s| s.config.display().to_string())),
        status.map_or("?".into(), |s| age(s.uptime_seconds)),
        html(status.map_or("?", |s| s.interface.as_str())),
        html(
            status
                .and_then(|s| s.attached.as_deref())
                .unwrap_or("NOT ATTACHED")
        ),
        snap.stats.flow_table_entries,
        snap.stats.flow_table_size,
        POINTS as u64 * STEP.as_secs() / 60,
        STEP.as_secs(),
    );
}

/// A sparkline of `values` (oldest first), 120×18, scaled to its own maximum.
fn sparkline(p: &mut String, values: Option<&Vec<f64>>) {
    let Some(values) = values.filter(|v| v.len() >= 2) else {
        return;
    };
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let step = 120.0 / (POINTS - 1) as f64;
    let x0 = 120.0 - step * (values.len() - 1) as f64;
    let _ = write!(
        p,
        r##"<svg class="spark" width="120" height="18" viewBox="0 0 120 18"><title>max {}/s</title><polyline fill="none" stroke="#36c" stroke-width="1" points=""##,
        si(max)
    );
    for (i, v) in values.iter().enumerate() {
        let y = if max > 0.0 {
            17.0 - 16.0 * v / max
        } else {
            17.0
        };
        let _ = write!(p, "{:.0},{:.0} ", x0 + step * i as f64, y);
    }
    p.push_str(r#""/></svg>"#);
}

fn rate_cells(p: &mut String, rate: Option<&Rate>) {
    match rate {
        Some(r) => {
            let _ = write!(
                p,
                "<td>{}</td><td>{}</td><td>{}</td>",
                si(r.pps),
                si(r.bps),
                si(r.flows)
            );
        }
        None => p.push_str("<td>–</td><td>–</td><td>–</td>"),
    }
}

/// The table of VIPs, each followed by its backends.
fn services(
    p: &mut String,
    status: Option<&AgentStatus>,
    snap: &PageData,
    rates: &BTreeMap<Key, Rate>,
    series: &BTreeMap<Key, Vec<f64>>,
) {
    p.push_str(
        r#"<table id="services"><tr><th class="l">VIP / backend</th><th class="l">address</th><th>weight</th><th class="l">state</th><th class="l">health</th><th>table share</th><th>pkt/s</th><th>bit/s</th><th>new flows/s</th><th class="l">last 10 min</th><th>packets</th><th>bytes</th><th>connections</th><th title="new flows refused by the allow/deny lists and new_flows_per_source">refused</th></tr>"#,
    );
    let mut by_vip: BTreeMap<&str, Vec<&BackendView>> = BTreeMap::new();
    for b in &snap.backends {
        by_vip.entry(b.vip.as_str()).or_default().push(b);
    }
    for v in &snap.vips {
        let key = Key::Vip(v.name.clone());
        vip_row(p, status, v, rates.get(&key), series.get(&key));
        for b in by_vip.get(v.name.as_str()).into_iter().flatten() {
            let key = Key::Backend(b.vip.clone(), b.address);
            backend_row(p, status, b, rates.get(&key), series.get(&key));
        }
    }
    p.push_str("</table>");
}

fn vip_row(
    p: &mut String,
    status: Option<&AgentStatus>,
    v: &VipView,
    rate: Option<&Rate>,
    series: Option<&Vec<f64>>,
) {
    let _ = write!(
        p,
        r#"<tr class="vip"><td class="l">{}</td><td class="l" title="address:port/protocol, forwarding mode">{}:{}/{} {}</td><td></td><td class="l" title="[announce]: whether this node offers the VIP to the routers">{}</td><td class="l">{}/{} usable</td><td>table {}</td>"#,
        html(&v.name),
        v.address,
        v.port,
        v.protocol,
        v.forwarding,
        html(
            status
                .and_then(|s| s.vips.iter().find(|x| x.name == v.name))
                .and_then(|x| x.announce.as_deref())
                .unwrap_or("")
        ),
        v.backends_in_table,
        v.backends,
        v.table_size,
    );
    rate_cells(p, rate);
    p.push_str(r#"<td class="l">"#);
    sparkline(p, series);
    let _ = write!(
        p,
        r#"</td><td>{}</td><td>{}</td><td>{}</td><td title="denied {} / not allowed {} / rate limited {}">{}</td></tr>"#,
        v.traffic.packets,
        human_bytes(v.traffic.bytes),
        v.traffic.new_flows,
        v.denied,
        v.not_allowed,
        v.rate_limited,
        v.denied + v.not_allowed + v.rate_limited
    );
}

fn backend_row(
    p: &mut String,
    status: Option<&AgentStatus>,
    b: &BackendView,
    rate: Option<&Rate>,
    series: Option<&Vec<f64>>,
) {
    let h = status.and_then(|s| s.backend(&b.vip, b.address));
    let health = h.map_or(HealthState::Unknown, |h| h.health);
    let admin = h.map_or(AdminState::Active, |h| h.state);
    let class = match (health, admin) {
        (_, AdminState::Disabled) => "off",
        (HealthState::Down, _) => "down",
        (_, AdminState::Drain) => "drain",
        (HealthState::Up, _) => "up",
        _ => "off",
    };
    let check = h.and_then(|h| h.check.as_ref());
    // "DOWN 42 s, connect refused": the state, how long it has held, and (down) why.
    let mut health_text = health.as_str().to_uppercase();
    if let Some(c) = check.filter(|c| c.since_unix > 0) {
        let _ = write!(
            health_text,
            " {}",
            age(now_unix().saturating_sub(c.since_unix))
        );
    }
    if let Some(c) = check.filter(|_| health == HealthState::Down) {
        let _ = write!(health_text, ", {}", c.last_check);
    }
    let state = match h.and_then(|h| h.slow_start_pct) {
        Some(pct) => format!("{} {pct}%", admin.as_str()),
        None => admin.as_str().into(),
    };
    let _ = write!(
        p,
        r#"<tr><td class="l">&nbsp;&nbsp;{}</td><td class="l">{}</td><td>{}</td><td class="l">{}</td><td class="l {class}" title="last check: {}">{}</td><td>{:.1}%</td>"#,
        html(&b.name),
        b.address,
        b.weight,
        state,
        html(check.map_or("–", |c| c.last_check.as_str())),
        html(&health_text),
        b.table_share_pct,
    );
    rate_cells(p, rate);
    p.push_str(r#"<td class="l">"#);
    sparkline(p, series);
    let _ = write!(
        p,
        r#"</td><td>{}</td><td>{}</td><td>{}</td><td></td></tr>"#,
        b.traffic.packets,
        human_bytes(b.traffic.bytes),
        b.traffic.new_flows
    );
}

/// The program's verdict counters: those that moved, then the ones at zero folded away.
fn counters(p: &mut String, snap: &PageData) {
    let (moved, zero): (Vec<_>, Vec<_>) = snap.stats.counters.iter().partition(|(_, v)| **v > 0);
    p.push_str(r#"<table id="counters" style="width:auto"><tr><th class="l">verdict / reason</th><th>packets</th></tr>"#);
    for (name, v) in moved {
        let _ = write!(
            p,
            r#"<tr><td class="l">{}</td><td>{v}</td></tr>"#,
            html(name)
        );
    }
    p.push_str("</table>");
    if !zero.is_empty() {
        let names: Vec<&str> = zero.iter().map(|(n, _)| **n).collect();
        let _ = write!(
            p,
            r#"<details id="zero"><summary>{} counters at zero</summary><div class="sub">{}</div></details>"#,
            zero.len(),
            html(&names.join(", "))
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::observe::inspect::{Stats, Traffic};

    fn page_of(backends: usize) -> PageData {
        let vip = VipView {
            name: "web".into(),
            vip_id: 0,
            address: "198.18.0.100".parse().unwrap(),
            port: 80,
            protocol: "tcp",
            forwarding: "dsr",
            tunnel: None,
            table_size: 65537,
            backends,
            backends_in_table: backends as u32,
            traffic: Traffic::default(),
            denied: 0,
            not_allowed: 0,
            rate_limited: 0,
        };
        let backends = (0..backends)
            .map(|i| BackendView {
                id: i as u32,
                vip: "web".into(),
                name: format!("be{i}"),
                address: IpAddr::from([198, 18, (i / 250) as u8 + 1, (i % 250) as u8 + 1]),
                mac: "02:00:00:00:00:01".into(),
                interface: "eth0".into(),
                weight: 1,
                mode: "dsr",
                forwarding: true,
                table_entries: 65,
                table_share_pct: 0.1,
                traffic: Traffic {
                    packets: 1_000_000 + i as u64,
                    bytes: 900_000_000,
                    new_flows: 10_000,
                },
            })
            .collect();
        PageData {
            vips: vec![vip],
            backends,
            stats: Stats::default(),
        }
    }

    /// At 1000 backends with ten minutes of history the page stays small enough to refresh
    /// every 5 s (well under a megabyte) and has every backend's row and sparkline.
    #[test]
    fn a_page_of_1000_backends_with_full_history_stays_small() {
        let history = History::default();
        let t0 = Instant::now();
        let mut page = page_of(1000);
        for i in 0..=POINTS {
            for b in &mut page.backends {
                b.traffic.packets += 1000 * i as u64;
            }
            history.record(&page, t0 + STEP * i as u32);
        }
        let html = super::page(
            &history,
            None,
            &page,
            t0 + STEP * (POINTS as u32) + STEP / 2,
        );
        let rows = html.matches("<tr><td class=\"l\">&nbsp;&nbsp;be").count();
        let sparks = html.matches("<svg class=\"spark\"").count();
        println!(
            "1000 backends: {} bytes, {rows} rows, {sparks} sparklines",
            html.len()
        );
        assert_eq!(rows, 1000);
        assert_eq!(sparks, 1001, "every backend's and the VIP's");
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        assert!(
            !html.contains("http://")
                && !html.contains("https://")
                && !html.contains("<script src"),
            "no external assets"
        );
    }
}
