//! The TCP rows: wrk against a URL, and the CPU each row costs (the whole machine's, and the
//! balancer's own where it can be told apart).

use std::process::Command;

use anyhow::{Context as _, ensure};
use xdp_lb_tests::NetNs;

use crate::{Args, rate::program_run_ns};

pub(crate) struct WrkResult {
    pub(crate) requests_per_sec: f64,
    pub(crate) requests: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    /// Busy CPU time of the whole machine during the run, µs per request.
    pub(crate) machine_us: f64,
    /// The balancer's own CPU time, µs per request (None: not separable).
    pub(crate) lb_us: Option<f64>,
}

pub(crate) fn parse_ms(s: &str) -> Option<f64> {
    let (num, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| c.is_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => return None,
    })
}

/// How a row's balancer CPU time is read.
#[derive(Clone, Copy)]
pub(crate) enum LbCpu {
    None,
    /// Run time of the XDP programs named `xdp_lb` (kernel BPF stats) plus the agent's own
    /// process time (it expires NAT flows, runs health checks, answers the stats).
    Xdp(u32),
    /// utime + stime of this process.
    Process(u32),
}

pub(crate) fn lb_cpu_ns(how: LbCpu) -> Option<u64> {
    match how {
        LbCpu::None => None,
        LbCpu::Xdp(agent) => Some(
            program_run_ns(Some(xdp_lb_common::PROGRAM_NAME))? + lb_cpu_ns(LbCpu::Process(agent))?,
        ),
        LbCpu::Process(pid) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 1_000_000_000 / clock_ticks())
        }
    }
}

pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// Busy CPU time of the whole machine so far (ns): /proc/stat's first line minus idle and iowait.
pub(crate) fn machine_busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    busy * 1_000_000_000 / clock_ticks()
}

pub(crate) fn wrk(
    client: &NetNs,
    url: &str,
    args: &Args,
    keep_alive: bool,
    lb: LbCpu,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &client.name, "wrk", "-t2"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency");
    if !keep_alive {
        cmd.args(["-H", "Connection: close"]);
    }
    let (busy0, lb0) = (machine_busy_ns(), lb_cpu_ns(lb));
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (Debian's wrk package)")?;
    let (busy1, lb1) = (machine_busy_ns(), lb_cpu_ns(lb));
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {url}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps: f64 = field("Requests/sec:").context("no Requests/sec")?.parse()?;
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no request count")?;
    let p50 = field("50%")
        .and_then(|v| parse_ms(&v))
        .context("no 50% latency")?;
    let p99 = field("99%")
        .and_then(|v| parse_ms(&v))
        .context("no 99% latency")?;
    // "Socket errors: connect 0, read 0, write 0, timeout 3" and "Non-2xx or 3xx responses: N"
    let mut errors = 0;
    if let Some(e) = field("Socket errors:") {
        errors += e
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        errors += n.parse::<u64>().unwrap_or(0);
    }
    let per_request = |ns: u64| ns as f64 / 1000.0 / requests.max(1.0);
    Ok(WrkResult {
        requests_per_sec: rps,
        requests,
        p50_ms: p50,
        p99_ms: p99,
        errors,
        machine_us: per_request(busy1.saturating_sub(busy0)),
        lb_us: match (lb0, lb1) {
            (Some(a), Some(b)) => Some(per_request(b.saturating_sub(a))),
            _ => None,
        },
    })
}
