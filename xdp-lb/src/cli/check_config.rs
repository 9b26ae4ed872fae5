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

fn summary(file: &Path, config: &Config) {
    let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
    println!(
        "{}: OK: interface {}, {} VIP(s), {} backend(s)",
        file.display(),
        config.agent.interface,
        config.vips.len(),
        backends
    );
    for vip in &config.vips {
        println!("  {}", vip_line(vip));
    }
    if let Some(a) = &config.announce {
        println!(
            "  announce {} as /32 routes in table {} (dev {}), grace {:?}, routing engine {}",
            a.vips.join(", "),
            a.table,
            a.interface,
            a.grace,
            a.engine_socket
                .as_ref()
                .map_or("not checked".into(), |p| format!("at {}", p.display()))
        );
    }
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
            match b.state {
                config::AdminState::Active => format!("{at} w{}", b.weight),
                s => format!("{at} w{} ({})", b.weight, s.as_str()),
            }
        })
        .collect();
    format!(
        "{} {}:{}/{} ({:?}, table {}) -> {}",
        vip.name,
        vip.address,
        vip.port,
        vip.protocol.as_str(),
        vip.forwarding,
        vip.maglev_table_size,
        backends.join(", ")
    )
}
