//! The plan as TOML: the sections of `xdp-lb.toml`, each under a comment naming the input lines
//! it came from.

use std::{fmt::Write as _, path::Path, time::Duration};

use super::{Check, Plan, Source, Vip, Vrrp};

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn duration(d: Duration) -> String {
    quoted(&humantime::format_duration(d).to_string().replace(' ', ""))
}

fn sources(from: &[Source]) -> String {
    from.iter()
        .map(Source::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn toml(plan: &Plan, haproxy: Option<&Path>, keepalived: Option<&Path>) -> String {
    let mut t = String::new();
    agent(&mut t, plan, haproxy, keepalived);
    for vip in &plan.vips {
        self::vip(&mut t, vip);
    }
    for v in &plan.vrrp {
        vrrp(&mut t, v);
    }
    t
}

/// The file's head and `[agent]`.
fn agent(t: &mut String, plan: &Plan, haproxy: Option<&Path>, keepalived: Option<&Path>) {
    let inputs: Vec<String> = [haproxy, keepalived]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(
        t,
        "# xdp-lb configuration imported by `xdp-lb import` from {}.\n\
         # Review what the import reported (approximated and ignored directives), then run\n\
         # `xdp-lb check-config` on this file. README: \"Migrating from haproxy + keepalived\".\n",
        inputs.join(" and ")
    );
    match &plan.interface {
        Some((_, from)) => {
            let _ = writeln!(t, "# interface: from {from}");
        }
        None => {
            let _ = writeln!(
                t,
                "# interface: the inputs do not say which; set the one clients' packets arrive on"
            );
        }
    }
    t.push_str("[agent]\n");
    let interface = plan.interface.as_ref().map_or("eth0", |(i, _)| i.as_str());
    let _ = writeln!(t, "interface = {}", quoted(interface));
    if let Some((addr, from)) = &plan.listen {
        let _ = writeln!(
            t,
            "listen = {}   # from {from} (stats)",
            quoted(&addr.to_string())
        );
    }
}

/// A `[[vip]]` with its check and backends.
fn vip(t: &mut String, vip: &Vip) {
    let _ = writeln!(t, "\n# from {}", sources(&vip.from));
    t.push_str("[[vip]]\n");
    let _ = writeln!(t, "name = {}", quoted(&vip.name));
    let _ = writeln!(t, "address = {}", quoted(&vip.address.to_string()));
    let _ = writeln!(t, "port = {}", vip.port);
    if let Some(p) = vip.protocol {
        let _ = writeln!(t, "protocol = {}", quoted(p));
    }
    if let Some(f) = vip.forwarding {
        let _ = writeln!(t, "forwarding = {}", quoted(f));
    }
    if let Some(s) = vip.slowstart {
        let _ = writeln!(t, "slowstart = {}", duration(s));
    }
    check(t, &vip.check);
    for b in &vip.backends {
        t.push_str("[[vip.backend]]\n");
        if let Some(n) = &b.name {
            let _ = writeln!(t, "name = {}", quoted(n));
        }
        let _ = writeln!(t, "address = {}", quoted(&b.address.to_string()));
        if b.port != vip.port {
            let _ = writeln!(t, "port = {}", b.port);
        }
        if let Some(w) = b.weight {
            let _ = writeln!(t, "weight = {w}");
        }
        if let Some(s) = b.state {
            let _ = writeln!(t, "state = {}", quoted(s));
        }
        if let Some(s) = b.slowstart.filter(|s| Some(*s) != vip.slowstart) {
            let _ = writeln!(t, "slowstart = {}", duration(s));
        }
    }
}

/// `[vip.health_check]`.
fn check(t: &mut String, c: &Check) {
    t.push_str("[vip.health_check]\n");
    let _ = writeln!(t, "type = {}", quoted(c.kind.unwrap_or("tcp")));
    if let Some(d) = c.interval {
        let _ = writeln!(t, "interval = {}", duration(d));
    }
    if let Some(d) = c.timeout {
        let _ = writeln!(t, "timeout = {}", duration(d));
    }
    for (key, value) in [("rise", c.rise), ("fall", c.fall)] {
        if let Some(v) = value {
            let _ = writeln!(t, "{key} = {v}");
        }
    }
    if let Some(p) = c.port {
        let _ = writeln!(t, "port = {p}");
    }
    if let Some(p) = &c.path {
        let _ = writeln!(t, "http_path = {}", quoted(p));
    }
    if let Some(s) = c.expect_status {
        let _ = writeln!(t, "http_expect_status = {s}");
    }
    if let Some(ca) = &c.tls_ca_file {
        let _ = writeln!(t, "tls_ca_file = {}", quoted(&ca.display().to_string()));
    }
    if c.tls_verify == Some(false) {
        t.push_str("tls_verify = false\n");
    }
    if let Some(n) = &c.dns_name {
        let _ = writeln!(t, "dns_name = {}", quoted(n));
    }
    if let Some(q) = &c.dns_type {
        let _ = writeln!(t, "dns_type = {}", quoted(q));
    }
}

/// A `[[vrrp]]`.
fn vrrp(t: &mut String, v: &Vrrp) {
    let _ = writeln!(t, "\n# from {}", v.from);
    t.push_str("[[vrrp]]\n");
    let _ = writeln!(t, "name = {}", quoted(&v.name));
    let _ = writeln!(t, "interface = {}", quoted(&v.interface));
    let _ = writeln!(t, "vrid = {}", v.vrid);
    let _ = writeln!(t, "priority = {}", v.priority);
    // keepalived runs an instance of IPv6 addresses as VRRPv3 whatever vrrp_version says
    // (VRRPv2 is IPv4 only); the IPv6 checksum always has its pseudo-header.
    let ipv6 = v.addresses.first().is_some_and(|(a, _)| a.is_ipv6());
    let version = if ipv6 { 3 } else { v.version.unwrap_or(2) };
    let _ = writeln!(t, "version = {version}");
    if version == 3 && !ipv6 {
        // keepalived's default VRRPv3 checksum includes the IPv4 pseudo-header.
        t.push_str("checksum = \"pseudo-header\"\n");
    }
    if let Some(d) = v.advert_interval {
        let _ = writeln!(t, "advert_interval = {}", duration(d));
    }
    if let Some(p) = v.preempt {
        let _ = writeln!(t, "preempt = {p}");
    }
    if let Some(d) = v.preempt_delay {
        let _ = writeln!(t, "preempt_delay = {}", duration(d));
    }
    let addresses: Vec<String> = v
        .addresses
        .iter()
        .map(|(a, len)| quoted(&format!("{a}/{len}")))
        .collect();
    let _ = writeln!(t, "virtual_addresses = [{}]", addresses.join(", "));
    if !v.unicast_peers.is_empty() {
        let peers: Vec<String> = v
            .unicast_peers
            .iter()
            .map(|a| quoted(&a.to_string()))
            .collect();
        let _ = writeln!(t, "unicast_peers = [{}]", peers.join(", "));
    }
    if let Some(n) = &v.notify {
        let _ = writeln!(t, "notify = {}", quoted(&n.display().to_string()));
    }
    let _ = writeln!(t, "track_dataplane = {}", v.track_dataplane);
}
