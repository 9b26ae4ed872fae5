//! What plain `xdp-lb status` prints: every section of the status JSON (`--json`), for a
//! person — the agent and its program, VRRP, announce, sync, NAT, tunnels, then each VIP with
//! its protections and its backends' table. A section the config does not have is left out.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use super::report::table;
use crate::{
    route_announce::AnnounceStatus,
    status::{AgentStatus, BackendStatus, NatStatus, SyncStatus, VipStatus},
    vrrp::instance::InstanceStatus,
};

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "42 s ago", "3 min ago", "2 h ago", "5 d ago" for a Unix time (the agent runs on this host).
pub(crate) fn ago(unix: u64) -> String {
    format!("{} ago", age(now_unix().saturating_sub(unix)))
}

/// A span in the largest unit that keeps it readable: "42 s", "3 min", "2 h", "5 d".
pub(crate) fn age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// "none", or "ttl 2, auth 1": the non-zero counts of a by-reason map.
fn by_reason<K: AsRef<str>>(counts: impl IntoIterator<Item = (K, u64)>) -> String {
    let parts: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{} {n}", k.as_ref()))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn list(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "none".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print_status(s: &AgentStatus) {
    println!(
        "config {} (loaded {}), up {}; status layout {}",
        s.config.display(),
        ago(s.loaded_unix),
        age(s.uptime_seconds),
        s.version
    );
    println!(
        "interface {}: {}; pins {}; {} health transition(s)",
        s.interface,
        s.attached
            .as_deref()
            .map_or("program NOT attached".into(), |m| format!(
                "program attached ({m})"
            )),
        s.pin_dir.display(),
        s.health_transitions
    );
    for i in &s.vrrp {
        print_vrrp(i);
    }
    if let Some(a) = &s.announce {
        print_announce(a);
    }
    if let Some(sync) = &s.sync {
        print_sync(sync);
    }
    if let Some(nat) = &s.nat {
        print_nat(nat);
    }
    if let Some(t) = &s.tunnel_source {
        let addrs: Vec<IpAddr> = t
            .ipv4
            .map(IpAddr::from)
            .into_iter()
            .chain(t.ipv6.map(IpAddr::from))
            .collect();
        println!("tunnels: outer source {}", list(&addrs));
    }
    for vip in &s.vips {
        print_vip(vip);
    }
}

fn print_vrrp(i: &InstanceStatus) {
    println!(
        "VRRP {} (vrid {} on {}): {}, priority {} (configured {}), adverts every {} ms",
        i.name,
        i.vrid,
        i.interface,
        i.state.name(),
        i.priority,
        i.configured_priority,
        i.master_adver_interval_ms
    );
    println!(
        "  {} transition(s), the last {}: {}",
        i.transitions,
        ago(i.last_transition_unix),
        i.last_cause
    );
    println!(
        "  adverts sent {}, received {}; rejected: {}",
        i.adverts_sent,
        i.adverts_received,
        by_reason(i.rejected.iter().map(|(r, n)| (r.name(), *n)))
    );
}

fn print_announce(a: &AnnounceStatus) {
    println!(
        "announce: routing engine {}, table {}{}; announced: {}",
        a.engine.describe(),
        a.table,
        if a.draining {
            ", draining (every route withdrawn by `xdp-lb drain`)"
        } else {
            ""
        },
        list(&a.announced)
    );
}

fn print_sync(s: &SyncStatus) {
    let v = &s.stream;
    println!(
        "sync: peers {} on UDP port {}; start-up snapshot: {}",
        list(&s.peers),
        s.port,
        s.snapshot
    );
    println!(
        "  sent: {} flow(s) reported, {} sent in {} datagram(s), {} dropped, {} of an unknown backend",
        v.flows_reported, v.flows_sent, v.datagrams_sent, v.flows_dropped, v.flows_unknown
    );
    println!(
        "  received: {} flow(s) in {} datagram(s), {} dropped (queue full); refused datagrams: {}",
        v.flows_received,
        v.datagrams_received,
        v.flows_received_dropped,
        by_reason(v.rejected.iter().map(|(r, n)| (r.as_str(), *n)))
    );
    println!(
        "  installed {}, already known {}, conflicts {}, unknown VIP/backend/SNAT {}, removed {}",
        s.installed, s.known, s.conflicts, s.unknown, s.removed
    );
}

fn print_nat(n: &NatStatus) {
    let addrs: Vec<IpAddr> = n
        .snat_address
        .map(IpAddr::from)
        .into_iter()
        .chain(n.snat_address_ipv6.map(IpAddr::from))
        .collect();
    let flows: BTreeMap<&str, u64> = n.flows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    println!(
        "NAT: SNAT {} ports {}; live flows: {}; {} reclaimed by expiry",
        list(&addrs),
        n.snat_port_range,
        by_reason(flows),
        n.reclaimed_total
    );
}

/// One VIP: its line, its protections and what they refused, its backends' table.
fn print_vip(vip: &VipStatus) {
    println!(
        "\nVIP {} {}:{} ({}, check: {}){}{}",
        vip.name,
        vip.address,
        vip.port,
        vip.forwarding.as_str(),
        vip.health_check.as_str(),
        if vip.usable_backends {
            ""
        } else {
            "  NO USABLE BACKEND"
        },
        vip.announce
            .as_ref()
            .map(|v| format!("  {v}"))
            .unwrap_or_default()
    );
    let mut protection = Vec::new();
    if !vip.allow.is_empty() {
        protection.push(format!("allow {}", vip.allow.join(", ")));
    }
    if !vip.deny.is_empty() {
        protection.push(format!("deny {}", vip.deny.join(", ")));
    }
    if let Some(limit) = &vip.new_flows_per_source {
        protection.push(format!("new flows per source {limit}"));
    }
    let r = vip.refused;
    if !protection.is_empty() || r.denied + r.not_allowed + r.rate_limited > 0 {
        println!(
            "  protection: {}; refused: denied {}, not allowed {}, rate limited {}",
            if protection.is_empty() {
                "none configured".into()
            } else {
                protection.join("; ")
            },
            r.denied,
            r.not_allowed,
            r.rate_limited
        );
    }
    let nat = vip.backends.iter().any(|b| b.nat_ports.is_some());
    let cols = if nat {
        "backend<16|address<16|weight>6|state<11|health<16|nat ports>9|last check<0"
    } else {
        "backend<16|address<16|weight>6|state<11|health<16|mac<19|last check<0"
    };
    table(2, cols, vip.backends.iter().map(|b| backend_row(b, nat)));
}

fn backend_row(b: &BackendStatus, nat: bool) -> Vec<String> {
    let state = match b.slow_start_pct {
        Some(pct) => format!("{} {pct}%", b.state.as_str()),
        None => b.state.as_str().into(),
    };
    // The health with how long it has held ("down 42 s"): the first question about a DOWN.
    let health = match &b.check {
        Some(c) if c.since_unix > 0 => format!(
            "{} {}",
            b.health.as_str(),
            age(now_unix().saturating_sub(c.since_unix))
        ),
        _ => b.health.as_str().into(),
    };
    let last = b.check.as_ref().map_or("-".into(), |c| {
        if c.last_check_unix > 0 {
            format!("{} ({})", c.last_check, ago(c.last_check_unix))
        } else {
            c.last_check.clone()
        }
    });
    vec![
        b.name.clone(),
        b.address.to_string(),
        b.weight.to_string(),
        state,
        health,
        if nat {
            b.nat_ports.unwrap_or(0).to_string()
        } else {
            b.mac.clone().unwrap_or_else(|| "-".into())
        },
        last,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_a_unit_that_fits() {
        assert_eq!(age(42), "42 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(3 * 3600), "3 h");
        assert_eq!(age(5 * 86_400), "5 d");
        assert_eq!(by_reason([("ttl", 0u64), ("auth", 2)]), "auth 2");
        assert_eq!(by_reason::<&str>([]), "none");
    }
}
