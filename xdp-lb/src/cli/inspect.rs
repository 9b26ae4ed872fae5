//! `xdp-lb inspect`: the pinned maps, as tables or JSON. Reads only.

use std::{path::Path, process::ExitCode};

use clap::Subcommand;
use serde::Serialize;
use xdp_lb::observe::{
    inspect::{InspectError, Inspector},
    report,
};

#[derive(Subcommand)]
pub(crate) enum InspectReport {
    /// VIPs with their backends, table size and traffic.
    Vips,
    /// Backends: address, MAC, interface, weight, share of the Maglev table, traffic.
    Backends {
        /// Only this VIP's.
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
    },
    /// Flow-table entries: protocol, client, VIP, backend, age; for NAT flows also the SNAT
    /// source the backend sees and the state that sets the flow's expiry (TCP's, or udp),
    /// half-open flows included (a SYN, or a UDP flow's first datagram).
    Flows {
        /// Only this VIP's flows (its `name`).
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
        /// At most this many entries (IPv4 flows first, then IPv6).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Counters summed over CPUs: verdicts, drop reasons, per-VIP traffic, flow-table use.
    Stats {
        /// Print again every INTERVAL (e.g. 1s) with rates, until interrupted.
        #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
        /// With --watch: stop after this many prints.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// A VIP's Maglev table: entries per backend against its weight share.
    Maglev {
        #[arg(long, value_name = "NAME")]
        vip: String,
    },
}

pub(crate) fn inspect(report: InspectReport, json: bool, pin_dir: &Path) -> ExitCode {
    let inspector = match Inspector::open(pin_dir) {
        Ok(i) => i,
        Err(err) => {
            eprintln!("xdp-lb: cannot read the maps: {err}");
            return ExitCode::FAILURE;
        }
    };
    match print(&inspector, report, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp-lb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(inspector: &Inspector, report: InspectReport, json: bool) -> Result<(), InspectError> {
    match report {
        InspectReport::Vips => out(json, &inspector.vips(), |v| report::print_vips(v)),
        InspectReport::Backends { vip } => {
            let backends = inspector.backends(vip.as_deref())?;
            out(json, &backends, |b| report::print_backends(b));
        }
        InspectReport::Flows { vip, limit } => {
            let flows = inspector.flows(vip.as_deref(), limit)?;
            out(json, &flows, |f| report::print_flows(f));
        }
        InspectReport::Stats { watch, count } => {
            report::print_stats(inspector, watch, count, json);
        }
        InspectReport::Maglev { vip } => {
            out(json, &inspector.maglev(&vip)?, report::print_maglev);
        }
    }
    Ok(())
}

/// `value` as JSON, or as the table `text` prints.
fn out<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        text(value);
    }
}
