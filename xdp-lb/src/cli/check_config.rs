//! `xdp-lb check-config`: a file validated as `run` would, and a summary of what it holds.

use std::{path::Path, process::ExitCode};

use xdp_lb::{
    agent,
    config::{self, Config, VipConfig},
};

use super::EXIT_CONFIG;

pub(crate) fn check_config(file: &Path) -> ExitCode {
    let config = match agent::check_config(file) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("xdp-lb: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in config
        .warnings
        .iter()
        .chain(&agent::route_warnings(file, &config))
    {
        eprintln!("xdp-lb: warning: {warning}");
    }
    summary(file, &config);
    ExitCode::SUCCESS
}

/// One line per section read: the agent, each VIP (with its check), each VRRP instance,
/// announce and sync — so a section that did not parse as meant shows here, not in production.
fn summary(file: &Path, config: &Config) {
    let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
    println!(
        "{}: OK: interface {}, {} VIP(s), {} backend(s), {} VRRP instance(s){}{}",
        file.display(),
        config.agent.interface,
        config.vips.len(),
        backends,
        config.vrrp.len(),
        if config.announce.is_some() {
            ", [announce]"
        } else {
            ""
        },
        if config.sync.is_some() {
            ", [sync]"
        } else {
            ""
        },
    );
    println!("  {}", agent_line(&config.agent));
    for vip in &config.vips {
        println!("  {}", vip_line(vip));
        let c = &vip.health_check;
        println!(
            "    check {} every {} (timeout {}, rise {}, fall {}){}",
            c.kind.as_str(),
            humantime::format_duration(c.interval),
            humantime::format_duration(c.timeout),
            c.rise,
            c.fall,
            c.port.map_or(String::new(), |p| format!(" on port {p}"))
        );
    }
    for v in &config.vrrp {
        println!("  {}", vrrp_line(v));
    }
    if let Some(a) = &config.announce {
        println!(
            "  announce {} as host routes in table {} (dev {}), grace {:?}, routing engine {}",
            if a.vips.is_empty() {
                "NOTHING (announce.vips is empty)".into()
            } else {
                a.vips.join(", ")
            },
            a.table,
            a.interface,
            a.grace,
            a.engine_socket
                .as_ref()
                .map_or("not checked".into(), |p| format!("at {}", p.display()))
        );
    }
    if let Some(s) = &config.sync {
        println!("  {}", sync_line(s));
    }
}

/// `vrrp NAME vrid N on IF: priority, adverts, preempt, addresses[, unicast peers]`
fn vrrp_line(v: &config::VrrpConfig) -> String {
    let addrs: Vec<String> = v
        .virtual_addresses
        .iter()
        .map(|(a, len)| format!("{a}/{len}"))
        .collect();
    format!(
        "vrrp {} vrid {} on {}: priority {}, adverts every {}, preempt {}, addresses {}{}",
        v.name,
        v.vrid,
        v.interface,
        v.priority,
        humantime::format_duration(v.advert_interval),
        if v.preempt { "on" } else { "off" },
        addrs.join(", "),
        if v.unicast_peers.is_empty() {
            String::new()
        } else {
            format!(", unicast to {}", join(&v.unicast_peers))
        }
    )
}

/// `sync with PEERS on UDP port N, key FILE, …`
fn sync_line(s: &config::SyncConfig) -> String {
    format!(
        "sync with {} on UDP port {}, key {}, batches every {}, at most {} datagrams/s, snapshot wait {}",
        join(&s.peers),
        s.port,
        s.key_file.display(),
        humantime::format_duration(s.batch_interval),
        s.max_datagrams_per_second,
        humantime::format_duration(s.snapshot_wait)
    )
}

fn join(addrs: &[std::net::IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `agent: xdp auto, pins …, flow table N (IPv6 M), control …, HTTP …, [NAT …]`
fn agent_line(a: &config::AgentConfig) -> String {
    let mut line = format!(
        "agent: xdp_mode {}, pins {}, flow table {} (IPv6 {}), control socket {}, HTTP {}, flow log {}",
        format!("{:?}", a.xdp_mode).to_lowercase(),
        a.pin_dir.display(),
        a.flow_table_size,
        a.flow_table_size_ipv6,
        a.control_socket.display(),
        a.listen.map_or("off".into(), |l| l.to_string()),
        if a.flow_log { "on" } else { "off" }
    );
    let family = |f: &config::FamilyAddresses| {
        let v: Vec<String> =
            f.v4.map(|a| a.to_string())
                .into_iter()
                .chain(f.v6.map(|a| a.to_string()))
                .collect();
        if v.is_empty() {
            "the interface's".to_owned()
        } else {
            v.join(", ")
        }
    };
    if a.snat_address.any() {
        line += &format!(
            ", SNAT {} ports {}-{}",
            family(&a.snat_address),
            a.snat_port_range.0,
            a.snat_port_range.1
        );
    }
    if a.tunnel_source.any() {
        line += &format!(", tunnel source {}", family(&a.tunnel_source));
    }
    line
}

/// `NAME ADDRESS:PORT/PROTO (MODE, table N) -> BACKEND wW, …`
fn vip_line(vip: &VipConfig) -> String {
    let backends: Vec<String> = vip
        .backends
        .iter()
        .map(|b| {
            let at = if b.port == vip.port {
                b.address.to_string()
            } else {
                format!("{}:{}", b.address, b.port)
            };
            let named = if b.name == b.address.to_string() {
                at
            } else {
                format!("{} {at}", b.name)
            };
            match b.state {
                config::AdminState::Active => format!("{named} w{}", b.weight),
                s => format!("{named} w{} ({})", b.weight, s.as_str()),
            }
        })
        .collect();
    format!(
        "{} {}:{}/{} ({}, table {}) -> {}",
        vip.name,
        vip.address,
        vip.port,
        vip.protocol.as_str(),
        vip.forwarding.as_str(),
        vip.maglev_table_size,
        backends.join(", ")
    )
}
