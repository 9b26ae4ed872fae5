//! `/stats`' panels: VRRP, announce, sync and NAT, one each for what the config has.

use std::fmt::Write as _;

use super::status_report::age;
use crate::{
    clock::unix_now,
    route_announce::AnnounceStatus,
    status::{AgentStatus, NatStatus, SyncStatus},
    vrrp::instance::InstanceStatus,
};

/// Text made safe for the page (also the rest of `/stats`' escaping).
pub(super) fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// VRRP, announce, sync and NAT: a panel each, for what the config has.
pub(super) fn panels(p: &mut String, s: &AgentStatus) {
    p.push_str(r#"<div class="panels">"#);
    for i in &s.vrrp {
        vrrp_panel(p, i);
    }
    if let Some(a) = &s.announce {
        announce_panel(p, a);
    }
    if let Some(sync) = &s.sync {
        sync_panel(p, sync);
    }
    if let Some(n) = &s.nat {
        nat_panel(p, n);
    }
    p.push_str("</div>");
}

fn vrrp_panel(p: &mut String, i: &InstanceStatus) {
    let rejected: Vec<String> = i
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{} {n}", r.name()))
        .collect();
    let _ = write!(
        p,
        r#"<div class="panel" id="vrrp-{}"><h2>VRRP {} (vrid {} on {})</h2><div><span class="{}">{}</span> · priority {} (configured {}) · adverts every {} ms</div><div>{} transition(s), the last {} ago: {}</div><div>adverts sent {}, received {} · rejected: {}</div></div>"#,
        html(&i.name),
        html(&i.name),
        i.vrid,
        html(&i.interface),
        i.state.name(),
        i.state.name(),
        i.priority,
        i.configured_priority,
        i.master_adver_interval_ms,
        i.transitions,
        age(unix_now().saturating_sub(i.last_transition_unix)),
        html(&i.last_cause),
        i.adverts_sent,
        i.adverts_received,
        if rejected.is_empty() {
            "none".into()
        } else {
            rejected.join(", ")
        }
    );
}

fn announce_panel(p: &mut String, a: &AnnounceStatus) {
    let announced: Vec<String> = a.announced.iter().map(ToString::to_string).collect();
    let _ = write!(
        p,
        r#"<div class="panel" id="announce"><h2>Announce</h2><div>routing engine {} · table {}{}</div><div>announced: {}</div></div>"#,
        html(&a.engine.describe()),
        a.table,
        if a.draining {
            " · <b>draining</b>"
        } else {
            ""
        },
        if announced.is_empty() {
            "none".into()
        } else {
            html(&announced.join(", "))
        }
    );
}

fn sync_panel(p: &mut String, s: &SyncStatus) {
    let v = &s.stream;
    let refused: Vec<String> = v
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{} {n}", html(r)))
        .collect();
    let peers: Vec<String> = s.peers.iter().map(ToString::to_string).collect();
    let _ = write!(
        p,
        r#"<div class="panel" id="sync"><h2>Sync</h2><div>peers {} · port {} · snapshot: {}</div><div>sent {} of {} reported ({} datagrams), dropped {}</div><div>received {} ({} datagrams) · refused: {}</div><div>installed {}, known {}, conflicts {}, unknown {}, removed {}</div></div>"#,
        html(&peers.join(", ")),
        s.port,
        html(&s.snapshot),
        v.flows_sent,
        v.flows_reported,
        v.datagrams_sent,
        v.flows_dropped,
        v.flows_received,
        v.datagrams_received,
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join(", ")
        },
        s.installed,
        s.known,
        s.conflicts,
        s.unknown,
        s.removed
    );
}

fn nat_panel(p: &mut String, n: &NatStatus) {
    let addrs: Vec<String> = n
        .snat_address
        .map(|a| a.to_string())
        .into_iter()
        .chain(n.snat_address_ipv6.map(|a| a.to_string()))
        .collect();
    let flows: Vec<String> = n
        .flows
        .iter()
        .map(|(k, v)| format!("{} {v}", html(k)))
        .collect();
    let _ = write!(
        p,
        r#"<div class="panel" id="nat"><h2>NAT</h2><div>SNAT {} · ports {}</div><div>live flows: {} · reclaimed {}</div></div>"#,
        html(&addrs.join(", ")),
        html(&n.snat_port_range),
        flows.join(", "),
        n.reclaimed_total
    );
}
