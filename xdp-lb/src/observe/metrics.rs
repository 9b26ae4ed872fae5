//! `/metrics`: the Prometheus text exposition (format 0.0.4) of the maps' counters and the
//! agent's health, NAT and VRRP state.

use std::fmt::Write as _;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

use super::{
    inspect::{BackendView, Traffic, VipView},
    page_data::PageData,
};
use crate::{
    status::AgentStatus,
    vrrp::{instance::InstanceStatus, machine::State},
};

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
    /// The three traffic counters of each VIP or backend (`of`): `xdp_lb_{of}_packets_total`,
    /// `_bytes_total` and `_new_flows_total`; `to` completes their help texts.
    fn traffic<'a>(
        &mut self,
        of: &str,
        to: [&str; 2],
        rows: &(impl Iterator<Item = (String, &'a Traffic)> + Clone),
    ) {
        let [forwarded, flows] = to;
        type Pick = fn(&Traffic) -> u64;
        let families: [(&str, String, Pick); 3] = [
            ("packets", format!("Packets forwarded {forwarded}."), |t| {
                t.packets
            }),
            ("bytes", format!("Bytes forwarded {forwarded}."), |t| {
                t.bytes
            }),
            ("new_flows", format!("Flows (connections) {flows}."), |t| {
                t.new_flows
            }),
        ];
        for (what, help, pick) in families {
            self.family(
                &format!("xdp_lb_{of}_{what}_total"),
                "counter",
                &help,
                rows.clone().map(|(labels, t)| (labels, pick(t))),
            );
        }
    }

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

/// The `/metrics` page. Without the agent's status (it did not answer) the map counters are
/// still served; health, NAT and VRRP families are then empty.
pub(super) fn render(status: Option<&AgentStatus>, snap: &PageData) -> Response {
    let mut m = Exposition::default();
    agent_families(&mut m, status);
    vip_families(&mut m, snap);
    backend_families(&mut m, status, snap);
    counter_families(&mut m, snap);
    nat_families(&mut m, status);
    vrrp_families(&mut m, status);
    announce_families(&mut m, status);
    sync_families(&mut m, status);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.0,
    )
        .into_response()
}

/// The agent itself: its version and uptime.
fn agent_families(m: &mut Exposition, status: Option<&AgentStatus>) {
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
        [(String::new(), status.map_or(0, |s| s.uptime_seconds))],
    );
}

/// Each VIP's traffic and the new flows it refused.
fn vip_families(m: &mut Exposition, snap: &PageData) {
    // A socket address: an IPv6 address in brackets, so the port is not read as part of it.
    let vip_labels = |v: &VipView| {
        format!(
            "vip=\"{}\",address=\"{}\"",
            label(&v.name),
            std::net::SocketAddr::new(v.address, v.port)
        )
    };
    m.traffic(
        "vip",
        ["for the VIP", "the VIP balanced"],
        &snap.vips.iter().map(|v| (vip_labels(v), &v.traffic)),
    );
    m.family(
        "xdp_lb_vip_info",
        "gauge",
        "A VIP and how it forwards: forwarding=\"dsr\", \"nat\", \"ipip\" or \"gue\".",
        snap.vips.iter().map(|v| {
            (
                format!("{},forwarding=\"{}\"", vip_labels(v), v.forwarding),
                1,
            )
        }),
    );
    // The VIPs' traffic summed by forwarding mode: every mode listed, 0 when unused.
    let mut by_mode: std::collections::BTreeMap<&str, Traffic> = xdp_lb_common::FORWARDING_MODES
        .iter()
        .map(|m| (*m, Traffic::default()))
        .collect();
    for v in &snap.vips {
        if let Some(t) = by_mode.get_mut(v.forwarding) {
            t.packets += v.traffic.packets;
            t.bytes += v.traffic.bytes;
            t.new_flows += v.traffic.new_flows;
        }
    }
    m.traffic(
        "mode",
        ["by VIPs of this forwarding mode", "those VIPs balanced"],
        &by_mode
            .iter()
            .map(|(mode, t)| (format!("mode=\"{mode}\""), t)),
    );
    m.family(
        "xdp_lb_vip_refused_total",
        "counter",
        "New flows a VIP refused before any state: reason=\"denied\" (its deny list), \"not_allowed\" (its allow list does not name the source), \"rate_limited\" (new_flows_per_source).",
        snap.vips.iter().flat_map(|v| {
            [
                ("denied", v.denied),
                ("not_allowed", v.not_allowed),
                ("rate_limited", v.rate_limited),
            ]
            .into_iter()
            .map(move |(reason, n)| (format!("{},reason=\"{reason}\"", vip_labels(v)), n))
        }),
    );
}

/// Each backend's traffic, health, forwarding and share of its VIP's table.
fn backend_families(m: &mut Exposition, status: Option<&AgentStatus>, snap: &PageData) {
    // `backend` is its name (the address unless the config names it); `address` is kept for
    // joins with other sources.
    let backend_labels = |b: &BackendView| {
        format!(
            "vip=\"{}\",backend=\"{}\",address=\"{}\"",
            label(&b.vip),
            label(&b.name),
            b.address
        )
    };
    m.traffic(
        "backend",
        ["to the backend", "sent to the backend"],
        &snap
            .backends
            .iter()
            .map(|b| (backend_labels(b), &b.traffic)),
    );
    let check = |b: &BackendView| status?.backend(&b.vip, b.address)?.check.clone();
    m.family(
        "xdp_lb_backend_up",
        "gauge",
        "1 when the backend passes its health check.",
        snap.backends
            .iter()
            .filter_map(|b| check(b).map(|h| (backend_labels(b), h.up as u8))),
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
        snap.backends
            .iter()
            .filter_map(|b| check(b).map(|h| (backend_labels(b), h.transitions))),
    );
    m.family(
        "xdp_lb_backend_nat_ports",
        "gauge",
        "NAT VIPs: the SNAT ports the backend's flows hold (live NAT flows, half-open ones included, at the last expiry sweep).",
        snap.backends.iter().filter_map(|b| {
            let ports = status?.backend(&b.vip, b.address)?.nat_ports?;
            Some((backend_labels(b), ports))
        }),
    );
}

/// `[sync]`: flows sent and received, datagrams refused by reason, and what the peers' flows
/// became here. Empty without `[sync]`.
fn sync_families(m: &mut Exposition, status: Option<&AgentStatus>) {
    let sync = status.and_then(|s| s.sync.as_ref());
    m.family(
        "xdp_lb_sync_flows_total",
        "counter",
        "Flows by what became of them: event=\"reported\" (by the program), \"sent\", \"dropped\" (queue full, rate limit, socket), \"unknown\" (backend gone before sending), \"received\", \"received_dropped\" (the agent's queue was full).",
        sync.into_iter().flat_map(|s| {
            let v = &s.stream;
            [
                ("reported", v.flows_reported),
                ("sent", v.flows_sent),
                ("dropped", v.flows_dropped),
                ("unknown", v.flows_unknown),
                ("received", v.flows_received),
                ("received_dropped", v.flows_received_dropped),
            ]
            .map(|(e, n)| (format!("event=\"{e}\""), n))
        }),
    );
    m.family(
        "xdp_lb_sync_datagrams_total",
        "counter",
        "Sync datagrams, direction=\"sent\" or \"received\".",
        sync.into_iter().flat_map(|s| {
            [
                ("sent", s.stream.datagrams_sent),
                ("received", s.stream.datagrams_received),
            ]
            .map(|(d, n)| (format!("direction=\"{d}\""), n))
        }),
    );
    m.family(
        "xdp_lb_sync_rejected_total",
        "counter",
        "Received datagrams refused, by reason (bad_mac: the nodes' keys differ; unknown_peer: not in sync.peers; ...).",
        sync.into_iter().flat_map(|s| {
            s.stream
                .rejected
                .iter()
                .map(|(r, n)| (format!("reason=\"{}\"", label(r)), *n))
        }),
    );
    m.family(
        "xdp_lb_sync_installed_total",
        "counter",
        "Peers' flows by outcome here: result=\"installed\", \"known\" (already here), \"conflict\" (the SNAT port is held for another flow), \"unknown\" (a VIP, backend or SNAT address this node does not have), \"removed\" (the flow ended on the peer).",
        sync.into_iter().flat_map(|s| {
            [
                ("installed", s.installed),
                ("known", s.known),
                ("conflict", s.conflicts),
                ("unknown", s.unknown),
                ("removed", s.removed),
            ]
            .map(|(r, n)| (format!("result=\"{r}\""), n))
        }),
    );
}

/// The program's counters by verdict, the flow-table events and the flow table's use.
fn counter_families(m: &mut Exposition, snap: &PageData) {
    m.family(
        "xdp_lb_packets_total",
        "counter",
        "Packets by verdict and reason (pass_*: to the kernel; drop_*: dropped; tx/redirect: forwarded).",
        snap.stats
            .counters
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    **name,
                    "new_flow" | "flow_rehashed" | "flow_not_recorded"
                )
            })
            .map(|(name, v)| (format!("verdict=\"{name}\""), *v)),
    );
    m.family(
        "xdp_lb_flows_total",
        "counter",
        "Flow-table events: new flows, flows re-hashed away from a backend that left, and new DSR flows not recorded (agent.flow_insert_rate).",
        ["new_flow", "flow_rehashed", "flow_not_recorded"].into_iter().map(|e| {
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
}

/// NAT flows by state and those expiry reclaimed.
fn nat_families(m: &mut Exposition, status: Option<&AgentStatus>) {
    let nat = status.and_then(|s| s.nat.as_ref());
    m.family(
        "xdp_lb_nat_flows",
        "gauge",
        "NAT flows by TCP state at the agent's last expiry sweep (each holds one SNAT port).",
        nat.iter()
            .flat_map(|n| &n.flows)
            .map(|(state, n)| (format!("state=\"{state}\""), *n)),
    );
    m.family(
        "xdp_lb_nat_flows_reclaimed_total",
        "counter",
        "NAT flows the agent reclaimed after their state's timeout.",
        nat.map(|n| (String::new(), n.reclaimed_total)),
    );
}

/// Each VRRP instance's state, priority, transitions and adverts.
fn vrrp_families(m: &mut Exposition, status: Option<&AgentStatus>) {
    let instances: &[InstanceStatus] = status.map_or(&[], |s| &s.vrrp);
    // Not `instance`: Prometheus sets that label to the scrape target and would rename ours.
    let instance = |i: &InstanceStatus| format!("vrrp_instance=\"{}\"", label(&i.name));
    m.family(
        "xdp_lb_vrrp_state",
        "gauge",
        "VRRP state per instance: 1 for the current state, 0 for the others.",
        instances.iter().flat_map(|i| {
            State::ALL.into_iter().map(move |s| {
                (
                    format!("{},state=\"{}\"", instance(i), s.name()),
                    (i.state == s) as u8,
                )
            })
        }),
    );
    m.family(
        "xdp_lb_vrrp_priority",
        "gauge",
        "The priority the instance advertises now (after tracking).",
        instances.iter().map(|i| (instance(i), i.priority)),
    );
    m.family(
        "xdp_lb_vrrp_transitions_total",
        "counter",
        "VRRP state transitions.",
        instances.iter().map(|i| (instance(i), i.transitions)),
    );
    m.family(
        "xdp_lb_vrrp_adverts_total",
        "counter",
        "VRRP adverts sent and received.",
        instances.iter().flat_map(|i| {
            [("sent", i.adverts_sent), ("received", i.adverts_received)]
                .into_iter()
                .map(move |(d, n)| (format!("{},direction=\"{d}\"", instance(i)), n))
        }),
    );
    m.family(
        "xdp_lb_vrrp_rejected_total",
        "counter",
        "Received VRRP packets not accepted, by reason.",
        instances.iter().flat_map(|i| {
            i.rejected.iter().map(move |(reason, n)| {
                (format!("{},reason=\"{}\"", instance(i), reason.name()), *n)
            })
        }),
    );
}

/// `[announce]`: whether each VIP is announced to the routers, drain, and the routing engine.
fn announce_families(m: &mut Exposition, status: Option<&AgentStatus>) {
    let Some((s, a)) = status.and_then(|s| Some((s, s.announce.as_ref()?))) else {
        return;
    };
    m.family(
        "xdp_lb_vip_announced",
        "gauge",
        "1 while the VIP's route is offered to the routing engine ([announce]), 0 while withdrawn; the reason is in `xdp-lb status`.",
        s.vips.iter().filter_map(|v| {
            let verdict = v.announce.as_ref()?;
            Some((
                format!("vip=\"{}\"", label(&v.name)),
                (verdict == "announced") as u8,
            ))
        }),
    );
    m.family(
        "xdp_lb_draining",
        "gauge",
        "1 while `xdp-lb drain` holds every announcement back.",
        [(String::new(), a.draining as u8)],
    );
    let reachable = match a.engine {
        crate::route_announce::Engine::NotChecked => None,
        crate::route_announce::Engine::Reachable => Some(1u8),
        crate::route_announce::Engine::NotReachable(_) => Some(0),
    };
    m.family(
        "xdp_lb_routing_engine_reachable",
        "gauge",
        "1 while the routing engine answers on announce.engine_socket.",
        reachable.map(|r| (String::new(), r)),
    );
}
