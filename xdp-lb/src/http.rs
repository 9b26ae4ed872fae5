//! `agent.listen`: `/metrics` (Prometheus text format), `/stats` (an HTML page in the spirit of
//! haproxy's, refreshing itself) and `/healthz` (the node's own liveness).
//!
//! Counters come straight from the pinned maps (read-only, like `xdp-lb inspect`); health and
//! agent state come from the agent's loop through the same command channel as the control
//! socket, so the page never shows a state the agent does not have.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    control::{Command, Request},
    inspect::{BackendView, Inspector, Stats, VipView},
};

struct Shared {
    pin_dir: PathBuf,
    commands: mpsc::Sender<Command>,
    /// The previous /stats sample, for rates.
    previous: Mutex<Option<(Instant, Stats)>>,
}

/// Serves until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    pin_dir: PathBuf,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        pin_dir,
        commands,
        previous: Mutex::new(None),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats_page))
        .route("/healthz", get(healthz))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/stats") }),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    }))
}

async fn agent_status(shared: &Shared) -> Option<serde_json::Value> {
    let (reply, answer) = oneshot::channel();
    shared
        .commands
        .send(Command {
            request: Request::Status,
            reply,
        })
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()?
        .ok()?
        .status
}

struct Snapshot {
    vips: Vec<VipView>,
    backends: Vec<BackendView>,
    stats: Stats,
}

fn snapshot(shared: &Shared) -> Result<Snapshot, String> {
    let inspector = Inspector::open(&shared.pin_dir).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        vips: inspector.vips(),
        backends: inspector.backends(None)?,
        stats: inspector.stats(),
    })
}

/// The answer when the pinned maps cannot be read.
fn maps_unavailable(error: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the maps: {error}\n"),
    )
        .into_response()
}

fn health_of<'a>(
    status: &'a serde_json::Value,
    vip: &str,
    backend: &str,
) -> Option<&'a serde_json::Value> {
    status["vips"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == vip)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == backend)
}

/// Escapes a Prometheus label value (exposition format: backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition (format 0.0.4): each family is its HELP and TYPE lines, then
/// its samples.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    /// `samples`: (label set without braces, possibly empty; value).
    fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, V)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await.unwrap_or_default();
    let snap = match snapshot(&shared) {
        Ok(s) => s,
        Err(e) => return maps_unavailable(e),
    };
    let mut m = Exposition::default();
    m.family(
        "xdp_lb_info",
        "gauge",
        "Agent build information.",
        [(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    m.family(
        "xdp_lb_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        [(
            String::new(),
            status["uptime_seconds"].as_u64().unwrap_or(0),
        )],
    );

    let vip_labels = |v: &VipView| {
        format!(
            "vip=\"{}\",address=\"{}:{}\"",
            label(&v.name),
            v.address,
            v.port
        )
    };
    let traffic = |t: &crate::inspect::Traffic| [t.packets, t.bytes, t.new_flows];
    for (pick, (name, help)) in [
        ("xdp_lb_vip_packets_total", "Packets forwarded for the VIP."),
        ("xdp_lb_vip_bytes_total", "Bytes forwarded for the VIP."),
        (
            "xdp_lb_vip_new_flows_total",
            "Flows (connections) the VIP balanced.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        m.family(
            name,
            "counter",
            help,
            snap.vips
                .iter()
                .map(|v| (vip_labels(v), traffic(&v.traffic)[pick])),
        );
    }

    let backend_labels =
        |b: &BackendView| format!("vip=\"{}\",backend=\"{}\"", label(&b.vip), b.address);
    for (pick, (name, help)) in [
        (
            "xdp_lb_backend_packets_total",
            "Packets forwarded to the backend.",
        ),
        (
            "xdp_lb_backend_bytes_total",
            "Bytes forwarded to the backend.",
        ),
        (
            "xdp_lb_backend_new_flows_total",
            "Flows (connections) sent to the backend.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        m.family(
            name,
            "counter",
            help,
            snap.backends
                .iter()
                .map(|b| (backend_labels(b), traffic(&b.traffic)[pick])),
        );
    }
    let health = |b: &BackendView| health_of(&status, &b.vip, &b.address.to_string()).cloned();
    m.family(
        "xdp_lb_backend_up",
        "gauge",
        "1 when the backend passes its health check.",
        snap.backends
            .iter()
            .filter_map(|b| health(b).map(|h| (backend_labels(b), (h["health"] == "up") as u8))),
    );
    m.family(
        "xdp_lb_backend_forwarding",
        "gauge",
        "1 when the data plane forwards to the backend.",
        snap.backends
            .iter()
            .map(|b| (backend_labels(b), b.forwarding as u8)),
    );
    m.family(
        "xdp_lb_backend_table_share_ratio",
        "gauge",
        "The backend's share of its VIP's Maglev table.",
        snap.backends.iter().map(|b| {
            (
                backend_labels(b),
                format!("{:.6}", b.table_share_pct / 100.0),
            )
        }),
    );
    m.family(
        "xdp_lb_backend_health_transitions_total",
        "counter",
        "Health transitions of the backend.",
        snap.backends.iter().filter_map(|b| {
            health(b)?["transitions"]
                .as_u64()
                .map(|t| (backend_labels(b), t))
        }),
    );
    m.family(
        "xdp_lb_packets_total",
        "counter",
        "Packets by verdict and reason (pass_*: to the kernel; drop_*: dropped; tx/redirect: forwarded).",
        snap.stats
            .counters
            .iter()
            .filter(|(name, _)| !matches!(**name, "new_flow" | "flow_rehashed"))
            .map(|(name, v)| (format!("verdict=\"{name}\""), *v)),
    );
    m.family(
        "xdp_lb_flows_total",
        "counter",
        "Flow-table events: new flows, and flows re-hashed away from a backend that left.",
        ["new_flow", "flow_rehashed"].into_iter().map(|e| {
            (
                format!("event=\"{e}\""),
                snap.stats.counters.get(e).copied().unwrap_or(0),
            )
        }),
    );
    m.family(
        "xdp_lb_flow_table_entries",
        "gauge",
        "Entries in the flow table.",
        [(String::new(), snap.stats.flow_table_entries as u64)],
    );
    m.family(
        "xdp_lb_flow_table_size",
        "gauge",
        "Capacity of the flow table (LRU).",
        [(String::new(), snap.stats.flow_table_size as u64)],
    );
    m.family(
        "xdp_lb_nat_flows",
        "gauge",
        "NAT flows by TCP state at the agent's last expiry sweep (each holds one SNAT port).",
        status["nat"]["flows"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(state, n)| (format!("state=\"{state}\""), n.as_u64().unwrap_or(0))),
    );
    m.family(
        "xdp_lb_nat_flows_reclaimed_total",
        "counter",
        "NAT flows the agent reclaimed after their state's timeout.",
        status["nat"]["reclaimed_total"]
            .as_u64()
            .map(|n| (String::new(), n)),
    );

    let instances: Vec<&serde_json::Value> =
        status["vrrp"].as_array().into_iter().flatten().collect();
    let instance =
        |i: &serde_json::Value| format!("instance=\"{}\"", label(i["name"].as_str().unwrap_or("")));
    m.family(
        "xdp_lb_vrrp_state",
        "gauge",
        "VRRP state per instance: 1 for the current state, 0 for the others.",
        instances.iter().flat_map(|i| {
            ["INIT", "BACKUP", "MASTER", "FAULT"]
                .into_iter()
                .map(move |s| {
                    (
                        format!("{},state=\"{s}\"", instance(i)),
                        (i["state"] == s) as u8,
                    )
                })
        }),
    );
    m.family(
        "xdp_lb_vrrp_priority",
        "gauge",
        "The priority the instance advertises now (after tracking).",
        instances
            .iter()
            .map(|i| (instance(i), i["priority"].as_u64().unwrap_or(0))),
    );
    m.family(
        "xdp_lb_vrrp_transitions_total",
        "counter",
        "VRRP state transitions.",
        instances
            .iter()
            .map(|i| (instance(i), i["transitions"].as_u64().unwrap_or(0))),
    );
    m.family(
        "xdp_lb_vrrp_adverts_total",
        "counter",
        "VRRP adverts sent and received.",
        instances.iter().flat_map(|i| {
            [("sent", "adverts_sent"), ("received", "adverts_received")]
                .into_iter()
                .map(move |(d, k)| {
                    (
                        format!("{},direction=\"{d}\"", instance(i)),
                        i[k].as_u64().unwrap_or(0),
                    )
                })
        }),
    );
    m.family(
        "xdp_lb_vrrp_rejected_total",
        "counter",
        "Received VRRP packets not accepted, by reason.",
        instances.iter().flat_map(|i| {
            i["rejected"]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(reason, n)| {
                    (
                        format!("{},reason=\"{}\"", instance(i), label(reason)),
                        n.as_u64().unwrap_or(0),
                    )
                })
        }),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.0,
    )
        .into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match agent_status(&shared).await {
        Some(s) if s["attached"].is_string() => (StatusCode::OK, "ok\n").into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the program is not attached\n",
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent does not answer\n",
        )
            .into_response(),
    }
}

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

async fn stats_page(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await.unwrap_or_default();
    let snap = match snapshot(&shared) {
        Ok(s) => s,
        Err(e) => return maps_unavailable(e),
    };
    let now = Instant::now();
    let rates: Option<(f64, Stats)> = {
        let mut prev = shared.previous.lock().expect("poisoned");
        let r = prev
            .as_ref()
            .map(|(t, s)| (now.duration_since(*t).as_secs_f64().max(0.001), s.clone()));
        *prev = Some((now, snap.stats.clone()));
        r
    };
    let rate_of = |vip: &str, packets: u64| -> String {
        match &rates {
            Some((dt, prev)) => {
                let before = prev.vips.get(vip).map(|t| t.packets).unwrap_or(packets);
                format!("{:.0}", packets.saturating_sub(before) as f64 / dt)
            }
            None => "–".into(),
        }
    };
    let mut p = String::new();
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
        html(status["config"].as_str().unwrap_or("?")),
        status["uptime_seconds"].as_u64().unwrap_or(0),
        html(status["interface"].as_str().unwrap_or("?")),
        html(status["attached"].as_str().unwrap_or("not attached")),
        snap.stats.flow_table_entries,
        snap.stats.flow_table_size,
    );
    let _ = write!(
        p,
        r#"<table><tr><th class="l">VIP / backend</th><th class="l">address</th><th>weight</th><th class="l">state</th><th class="l">health</th><th class="l">last check</th><th>table share</th><th>packets</th><th>pkt/s</th><th>bytes</th><th>connections</th></tr>"#
    );
    for v in &snap.vips {
        let _ = write!(
            p,
            r#"<tr class="vip"><td class="l">{}</td><td class="l">{}:{}/tcp</td><td></td><td class="l"></td><td class="l">{}/{} usable</td><td class="l"></td><td>table {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            html(&v.name),
            v.address,
            v.port,
            v.backends_in_table,
            v.backends,
            v.table_size,
            v.traffic.packets,
            rate_of(&v.name, v.traffic.packets),
            human_bytes(v.traffic.bytes),
            v.traffic.new_flows
        );
        for b in snap.backends.iter().filter(|b| b.vip == v.name) {
            let h = health_of(&status, &b.vip, &b.address.to_string());
            let health = h.and_then(|h| h["health"].as_str()).unwrap_or("unknown");
            let admin = h.and_then(|h| h["state"].as_str()).unwrap_or("active");
            let class = match (health, admin) {
                (_, "disabled") => "off",
                ("down", _) => "down",
                (_, "drain") => "drain",
                ("up", _) => "up",
                _ => "off",
            };
            let _ = write!(
                p,
                r#"<tr><td class="l">&nbsp;&nbsp;{}</td><td class="l">{}</td><td>{}</td><td class="l">{}</td><td class="l {class}">{}</td><td class="l">{}</td><td>{:.1}%</td><td>{}</td><td></td><td>{}</td><td>{}</td></tr>"#,
                html(&format!("backend {}", b.id)),
                b.address,
                b.weight,
                html(admin),
                html(&health.to_uppercase()),
                html(h.and_then(|h| h["last_check"].as_str()).unwrap_or("–")),
                b.table_share_pct,
                b.traffic.packets,
                human_bytes(b.traffic.bytes),
                b.traffic.new_flows
            );
        }
    }
    p.push_str("</table><table><tr><th class=\"l\">verdict / reason</th><th>packets</th></tr>");
    for (name, v) in &snap.stats.counters {
        let _ = write!(
            p,
            r#"<tr><td class="l">{}</td><td>{v}</td></tr>"#,
            html(name)
        );
    }
    p.push_str("</table><table><tr><th class=\"l\">VRRP instance</th><th class=\"l\">state</th><th>priority</th></tr>");
    let vrrp = status["vrrp"].as_array().cloned().unwrap_or_default();
    if vrrp.is_empty() {
        p.push_str(r#"<tr><td class="l" colspan="3">no VRRP instance configured</td></tr>"#);
    }
    for i in vrrp {
        let _ = write!(
            p,
            r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{}</td></tr>"#,
            html(i["name"].as_str().unwrap_or("")),
            html(i["state"].as_str().unwrap_or("")),
            i["priority"]
        );
    }
    p.push_str("</table></body></html>\n");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], p).into_response()
}
