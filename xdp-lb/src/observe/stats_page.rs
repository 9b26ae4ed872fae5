//! `/stats`: a self-refreshing HTML page in the spirit of haproxy's stats page: every VIP and
//! backend with its health, table share and traffic, the verdict counters, and VRRP.

use std::{fmt::Write as _, sync::Mutex, time::Instant};

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

use super::{
    inspect::{BackendView, Stats, VipView},
    page_data::PageData,
};
use crate::{
    config::AdminState,
    route_announce::AnnounceStatus,
    status::{AgentStatus, HealthState},
};

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

/// The previous request's sample, which the next request's rates are against.
#[derive(Default)]
pub(super) struct RateMemory(Mutex<Option<(Instant, Stats)>>);

/// The `/stats` page; rates are against the previous request's sample.
pub(super) fn render(
    rates: &RateMemory,
    status: Option<&AgentStatus>,
    snap: &PageData,
) -> Response {
    let rates = rates.since_last(&snap.stats);
    let mut p = String::new();
    page_head(&mut p, status, snap);
    services(&mut p, status, snap, rates.as_ref());
    if let Some(a) = status.and_then(|s| s.announce.as_ref()) {
        announce(&mut p, a);
    }
    counters_and_vrrp(&mut p, status, snap);
    p.push_str("</table></body></html>\n");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], p).into_response()
}

impl RateMemory {
    /// The seconds since the previous sample and that sample (None on the first request);
    /// `now` becomes the previous sample.
    fn since_last(&self, now: &Stats) -> Option<(f64, Stats)> {
        let at = Instant::now();
        let mut prev = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = prev
            .as_ref()
            .map(|(t, s)| (at.duration_since(*t).as_secs_f64().max(0.001), s.clone()));
        *prev = Some((at, now.clone()));
        r
    }
}

/// The head, the style and the line about the agent.
fn page_head(p: &mut String, status: Option<&AgentStatus>, snap: &PageData) {
    let _ = write!(
        p,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
    <meta name="viewport" content="width=device-width, initial-scale=1"><title>xdp-lb statistics</title>
    <style>
    body{{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}}
    h1{{font-size:20px;margin:0 0 4px}} .sub{{color:#666;margin-bottom:14px}}
    table{{border-collapse:collapse;width:100%;margin:6px 0 18px;background:#fff}}
    th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}}
    th{{background:#dde4ee}} td.l,th.l{{text-align:left}}
    tr.vip td{{background:#eef;font-weight:600}}
    .up{{background:#c8f0c8}} .down{{background:#f6b8b8}} .drain{{background:#f7e3a0}} .off{{background:#ddd}}
    </style></head><body>
    <h1>xdp-lb statistics</h1>
    <div class="sub">config {} · up {} s · interface {} ({}) · flow table {} / {} · refreshes every 2 s</div>
    "#,
        html(&status.map_or("?".into(), |s| s.config.display().to_string())),
        status.map_or(0, |s| s.uptime_seconds),
        html(status.map_or("?", |s| s.interface.as_str())),
        html(
            status
                .and_then(|s| s.attached.as_deref())
                .unwrap_or("not attached")
        ),
        snap.stats.flow_table_entries,
        snap.stats.flow_table_size,
    );
}

/// The table of VIPs, each followed by its backends.
fn services(
    p: &mut String,
    status: Option<&AgentStatus>,
    snap: &PageData,
    rates: Option<&(f64, Stats)>,
) {
    let _ = write!(
        p,
        r#"<table><tr><th class="l">VIP / backend</th><th class="l">address</th><th>weight</th><th class="l">state</th><th class="l">health</th><th class="l">last check</th><th>table share</th><th>packets</th><th>pkt/s</th><th>bytes</th><th>connections</th><th title="new flows refused by the allow/deny lists and new_flows_per_source">refused</th></tr>"#
    );
    for v in &snap.vips {
        vip_row(p, status, v, rates);
        for b in snap.backends.iter().filter(|b| b.vip == v.name) {
            backend_row(p, status, b);
        }
    }
    p.push_str("</table>");
}

fn vip_row(
    p: &mut String,
    status: Option<&AgentStatus>,
    v: &VipView,
    rates: Option<&(f64, Stats)>,
) {
    let rate = match rates {
        Some((dt, prev)) => {
            let before = prev
                .vips
                .get(&v.name)
                .map_or(v.traffic.packets, |t| t.packets);
            format!(
                "{:.0}",
                v.traffic.packets.saturating_sub(before) as f64 / dt
            )
        }
        None => "–".into(),
    };
    let _ = write!(
        p,
        r#"<tr class="vip"><td class="l">{}</td><td class="l" title="address:port/protocol, forwarding mode">{}:{}/{} {}</td><td></td><td class="l" title="[announce]: whether this node offers the VIP to the routers">{}</td><td class="l">{}/{} usable</td><td class="l"></td><td>table {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td title="denied {} / not allowed {} / rate limited {}">{}</td></tr>"#,
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
        v.traffic.packets,
        rate,
        human_bytes(v.traffic.bytes),
        v.traffic.new_flows,
        v.denied,
        v.not_allowed,
        v.rate_limited,
        v.denied + v.not_allowed + v.rate_limited
    );
}

fn backend_row(p: &mut String, status: Option<&AgentStatus>, b: &BackendView) {
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
    let _ = write!(
        p,
        r#"<tr><td class="l">&nbsp;&nbsp;{}</td><td class="l">{}</td><td>{}</td><td class="l">{}</td><td class="l {class}">{}</td><td class="l">{}</td><td>{:.1}%</td><td>{}</td><td></td><td>{}</td><td>{}</td><td></td></tr>"#,
        html(&b.name),
        b.address,
        b.weight,
        admin.as_str(),
        health.as_str().to_uppercase(),
        html(
            h.and_then(|h| h.check.as_ref())
                .map_or("–", |c| c.last_check.as_str())
        ),
        b.table_share_pct,
        b.traffic.packets,
        human_bytes(b.traffic.bytes),
        b.traffic.new_flows
    );
}

/// `[announce]`: the routing engine, drain, what is announced.
fn announce(p: &mut String, a: &AnnounceStatus) {
    let _ = write!(
        p,
        r#"<div class="sub">announce: routing engine {} · table {}{} · {} address(es) announced</div>"#,
        html(&a.engine.describe()),
        a.table,
        if a.draining {
            " · <b>DRAINING</b>"
        } else {
            ""
        },
        a.announced.len()
    );
}

/// The program's counters and the VRRP instances.
fn counters_and_vrrp(p: &mut String, status: Option<&AgentStatus>, snap: &PageData) {
    p.push_str("<table><tr><th class=\"l\">verdict / reason</th><th>packets</th></tr>");
    for (name, v) in &snap.stats.counters {
        let _ = write!(
            p,
            r#"<tr><td class="l">{}</td><td>{v}</td></tr>"#,
            html(name)
        );
    }
    p.push_str("</table><table><tr><th class=\"l\">VRRP instance</th><th class=\"l\">state</th><th>priority</th></tr>");
    let vrrp = status.map_or(&[][..], |s| &s.vrrp);
    if vrrp.is_empty() {
        p.push_str(r#"<tr><td class="l" colspan="3">no VRRP instance configured</td></tr>"#);
    }
    for i in vrrp {
        let _ = write!(
            p,
            r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{}</td></tr>"#,
            html(&i.name),
            i.state.name(),
            i.priority
        );
    }
}
