//! `xdp-lb import`: a configuration from the classic control-plane pair — haproxy's
//! `haproxy.cfg` and keepalived's `keepalived.conf` — with a report of what became of each
//! directive: translated, approximated (and how), or ignored (and why).
//!
//! - `haproxy.rs` and `keepalived.rs` read their file into the [`Plan`] below, reporting as
//!   they go; a file that cannot be parsed, or lacks a value xdp-lb needs, is an error naming
//!   its file and line.
//! - `emit.rs` writes the plan as TOML, each block under a comment naming where it came from.
//!
//! The result is checked with the same validation as `check-config` before it is written.

mod emit;
mod haproxy;
mod keepalived;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

/// A place in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        write!(f, "{name}:{}", self.line)
    }
}

/// What became of one directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Translated(String),
    /// Translated with a different meaning; says how.
    Approximated(String),
    /// Left out; says why.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub source: Source,
    pub directive: String,
    pub outcome: Outcome,
}

impl fmt::Display for ReportLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, text) = match &self.outcome {
            Outcome::Translated(t) => ("translated", t),
            Outcome::Approximated(t) => ("APPROXIMATED", t),
            Outcome::Ignored(t) => ("ignored", t),
        };
        write!(f, "{}: {}: {word}: {text}", self.source, self.directive)
    }
}

#[derive(Debug, Error)]
#[error("{place}: {message}")]
pub struct ImportError {
    pub place: Source,
    pub message: String,
}

/// An imported configuration: its TOML, and the report.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub report: Vec<ReportLine>,
    /// The VIPs and VRRP instances it made.
    pub vips: usize,
    pub vrrp: usize,
}

impl Imported {
    /// (translated, approximated, ignored).
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |f: fn(&Outcome) -> bool| self.report.iter().filter(|l| f(&l.outcome)).count();
        (
            count(|o| matches!(o, Outcome::Translated(_))),
            count(|o| matches!(o, Outcome::Approximated(_))),
            count(|o| matches!(o, Outcome::Ignored(_))),
        )
    }
}

/// What the inputs say, in xdp-lb's terms.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub interface: Option<(String, Source)>,
    pub listen: Option<(SocketAddr, Source)>,
    pub vips: Vec<Vip>,
    pub vrrp: Vec<Vrrp>,
    pub report: Vec<ReportLine>,
}

impl Plan {
    pub(crate) fn report(&mut self, source: &Source, directive: &str, outcome: Outcome) {
        self.report.push(ReportLine {
            source: source.clone(),
            directive: directive.trim().to_owned(),
            outcome,
        });
    }

    /// The first IPv4 virtual address of the VRRP instances (what `bind *:PORT` means: the
    /// data plane balances IPv4 VIPs).
    pub(crate) fn vrrp_address(&self) -> Option<Ipv4Addr> {
        self.vrrp
            .iter()
            .flat_map(|v| v.addresses.iter())
            .find_map(|(a, _)| match a {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Vip {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    /// "dsr" or "nat"; None: the default (DSR).
    pub forwarding: Option<&'static str>,
    /// "udp"; None: the default (TCP).
    pub protocol: Option<&'static str>,
    pub check: Check,
    pub slowstart: Option<Duration>,
    pub backends: Vec<Backend>,
    /// Where the VIP and its backends came from (e.g. a frontend and a backend).
    pub from: Vec<Source>,
}

#[derive(Debug, Clone)]
pub(crate) struct Backend {
    /// haproxy's server name (None: keepalived's real_server, named by its address).
    pub name: Option<String>,
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: Option<u32>,
    /// "drain" or "disabled"; None: active.
    pub state: Option<&'static str>,
    pub slowstart: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Check {
    /// "tcp", "http", "https", "dns" or "none".
    pub kind: Option<&'static str>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    /// https: `Some(false)` for haproxy's `verify none` / keepalived's SSL_GET.
    pub tls_verify: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
    /// dns: keepalived's DNS_CHECK `name` and `type`.
    pub dns_name: Option<String>,
    pub dns_type: Option<String>,
}

impl Check {
    /// Leaves out what the chosen check type does not use (an HTTP path on a TCP check would
    /// only mislead), and says so; an HTTPS check that verifies nothing is reported with the
    /// way to make it verify.
    pub(crate) fn fit_kind(&mut self, source: &Source, plan: &mut Plan) {
        let kind = self.kind.unwrap_or("tcp");
        let http = matches!(kind, "http" | "https");
        let mut dropped = Vec::new();
        if !http && self.path.take().is_some() {
            dropped.push("the HTTP path");
        }
        if !http && self.expect_status.take().is_some() {
            dropped.push("the expected status");
        }
        if kind != "https" && (self.tls_verify.take().is_some() | self.tls_ca_file.take().is_some())
        {
            dropped.push("the TLS settings");
        }
        if !dropped.is_empty() {
            plan.report(
                source,
                "health check",
                Outcome::Approximated(format!(
                    "a {kind} check: {} left out (they have no effect on it)",
                    dropped.join(", ")
                )),
            );
        }
        if kind == "https" && self.tls_verify == Some(false) {
            plan.report(
                source,
                "health check",
                Outcome::Approximated(format!(
                    "type = \"https\" of {} with tls_verify = false: the backends' certificates are not verified; set tls_ca_file to the CA that signed them (kubeadm: /etc/kubernetes/pki/ca.crt) and remove tls_verify",
                    self.path.as_deref().unwrap_or("/")
                )),
            );
        }
    }

    /// xdp-lb's check timeout may not exceed its interval (haproxy's and keepalived's may):
    /// cut it to the interval and say so.
    pub(crate) fn fit_timeout(&mut self, source: &Source, plan: &mut Plan) {
        let interval = self.interval.unwrap_or(Duration::from_secs(2));
        if let Some(t) = self.timeout
            && t > interval
        {
            self.timeout = Some(interval);
            plan.report(
                source,
                "check timeout",
                Outcome::Approximated(format!(
                    "{} is longer than the check interval; cut to {}",
                    humantime::format_duration(t),
                    humantime::format_duration(interval)
                )),
            );
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Vrrp {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Option<u8>,
    pub advert_interval: Option<Duration>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<Duration>,
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    pub unicast_peers: Vec<std::net::IpAddr>,
    pub notify: Option<PathBuf>,
    pub track_dataplane: bool,
    pub from: Source,
}

/// Imports either file or both (keepalived first: haproxy's `bind *` means its VIP).
pub fn import(haproxy: Option<&Path>, keepalived: Option<&Path>) -> Result<Imported, ImportError> {
    let mut plan = Plan::default();
    if let Some(path) = keepalived {
        keepalived::read(path, &mut plan)?;
    }
    if let Some(path) = haproxy {
        haproxy::read(path, &mut plan)?;
    }
    let toml = emit::toml(&plan, haproxy, keepalived);
    // In the order of the files (haproxy first, as on the command line), then of their lines.
    let rank = |s: &Source| (Some(s.file.as_path()) != haproxy, s.line);
    plan.report.sort_by_key(|l| rank(&l.source));
    Ok(Imported {
        toml,
        report: plan.report,
        vips: plan.vips.len(),
        vrrp: plan.vrrp.len(),
    })
}

/// Reads a whole input file, or says which one could not be read.
fn read_file(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|e| ImportError {
        place: Source {
            file: path.to_owned(),
            line: 0,
        },
        message: format!("cannot read the file: {e}"),
    })
}

/// A duration as haproxy and keepalived write it: a number with an optional unit (haproxy:
/// us, ms (default), s, m, h, d; keepalived: seconds, possibly fractional).
pub(crate) fn duration(text: &str, default_unit_ms: bool) -> Option<Duration> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let ms = match unit {
        "" if default_unit_ms => n,
        "" => n * 1000.0,
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return None,
    };
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_both_dialects() {
        // haproxy: milliseconds unless a unit says otherwise.
        assert_eq!(duration("2000", true), Some(Duration::from_secs(2)));
        assert_eq!(duration("15s", true), Some(Duration::from_secs(15)));
        assert_eq!(duration("1m", true), Some(Duration::from_secs(60)));
        assert_eq!(duration("500us", true), Some(Duration::from_micros(500)));
        // keepalived: seconds, possibly fractional.
        assert_eq!(duration("3", false), Some(Duration::from_secs(3)));
        assert_eq!(duration("0.5", false), Some(Duration::from_millis(500)));
        assert_eq!(duration("2x", true), None);
        assert_eq!(duration("", true), None);
    }
}
