//! `cargo xtask fuzz [--minutes N] [--seed S]`: the real XDP object under BPF_PROG_TEST_RUN
//! with generated and mutated frames. A corpus of every path — IPv4/IPv6 × TCP/UDP × DSR, NAT
//! (and its replies, taken from the flows the corpus made), IPIP, GUE, IP6IP6, VLAN and QinQ,
//! extension headers, ICMP errors, fragments, a denied source, the node's own traffic (VRRP,
//! sync, ssh) — is mutated (bits, header bytes, 16-bit fields at their edges, truncation, junk,
//! splices, inserted bytes) and each run is judged (`xdp_lb_tests::fuzz`):
//! - the action is DROP, PASS, TX or REDIRECT (never ABORTED or anything else);
//! - a frame sent parses, its IPv4 header checksum holds, its lengths fill the frame, it changed
//!   only where its mode may change it (DSR: the MACs; NAT: addresses, ports, checksums, TTL;
//!   a tunnel: the client's packet inside as it came but for a clamped MSS), and an L4 checksum
//!   right on the way in is right on the way out;
//! - exactly one verdict counter (`Counter::is_verdict`) counts each run, and a
//!   frame refused for a bad header or by a protection makes no new flow;
//! - at the end, every flow table is within its size.
//!
//! Then the agent's listeners (`services.rs`): random and mutated requests on a running
//! agent's control socket and HTTP endpoints, each answered, the agent up afterwards, its
//! memory and open files within a bound.
//!
//! A failure is saved as `failure-SEED-RUN.bin` (the frame) and `.txt` (why) under the output
//! directory, for a packet-table test; the run goes on and exits 1.

mod corpus;
mod services;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    fuzz::{Rng, judge_sent, mutate},
    harness::{LOOPBACK_IFINDEX, Loaded, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, run_program},
};

use self::corpus::{GUE_PORT, config, corpus, namespace, nat_replies};

#[derive(Parser)]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, conflicts_with = "minutes")]
    seconds: Option<u64>,
    /// How long to run, in minutes (default 1).
    #[arg(long)]
    minutes: Option<u64>,
    /// The random seed (default: from the clock; printed, so a run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where failures and the report go (default: target/fuzz).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Verdicts of a frame refused before any state: it must make no flow.
fn is_refusal(name: &str) -> bool {
    name.starts_with("drop_bad_")
        || name.starts_with("drop_truncated")
        || matches!(
            name,
            "drop_denied"
                | "drop_not_allowed"
                | "drop_rate_limited"
                | "pass_not_ip"
                | "pass_not_vip"
                | "pass_fragment"
                | "pass_not_local_mac"
        )
}

fn counters(lb: &Loaded) -> BTreeMap<&'static str, u64> {
    Counter::ALL
        .iter()
        .map(|c| (c.name(), lb.counter(*c)))
        .collect()
}

struct Report {
    runs: u64,
    failures: u64,
    moved: BTreeMap<&'static str, u64>,
    actions: BTreeMap<u32, u64>,
}

/// The program loaded, and the corpus with the replies to the NAT flows its first pass made.
fn loaded_with_corpus() -> anyhow::Result<(Loaded, Vec<Vec<u8>>)> {
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).context("loading xdp-lb")?;
    let mut corpus = corpus();
    for f in &corpus {
        run_program(lb.dp().program(), f, 1)?;
    }
    let replies = nat_replies(&lb);
    ensure!(
        !replies.is_empty(),
        "the corpus made no NAT flow to reply to"
    );
    corpus.extend(replies);
    Ok((lb, corpus))
}

/// Runs `frame` once and judges the run: its action, and what is wrong with it (None: all
/// holds).
fn judge_run(
    lb: &Loaded,
    verdicts: &[Counter],
    frame: &[u8],
) -> anyhow::Result<(u32, Option<String>)> {
    let before: Vec<u64> = verdicts.iter().map(|c| lb.counter(*c)).collect();
    let new_before = lb.counter(Counter::NewFlow);
    let r = run_program(lb.dp().program(), frame, 1)?;
    if !matches!(r.action, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
        return Ok((r.action, Some(format!("action {}", r.action))));
    }
    let moved: Vec<(&str, u64)> = verdicts
        .iter()
        .zip(&before)
        .filter_map(|(c, b)| {
            let d = lb.counter(*c) - b;
            (d > 0).then_some((c.name(), d))
        })
        .collect();
    if moved.len() != 1 || moved[0].1 != 1 {
        let why = format!("verdict counters moved: {moved:?} (action {})", r.action);
        return Ok((r.action, Some(why)));
    }
    let name = moved[0].0;
    if is_refusal(name) && lb.counter(Counter::NewFlow) != new_before {
        return Ok((r.action, Some(format!("{name} made a new flow"))));
    }
    if matches!(r.action, XDP_TX | XDP_REDIRECT) {
        let sent = &r.out[..r.out.len().min(frame.len() + 256)];
        if let Err(why) = judge_sent(frame, sent, GUE_PORT) {
            return Ok((
                r.action,
                Some(format!("{why} (action {}, verdict {name})", r.action)),
            ));
        }
    }
    Ok((r.action, None))
}

fn run(args: &Args, seed: u64, out: &std::path::Path) -> anyhow::Result<Report> {
    let (lb, corpus) = loaded_with_corpus()?;
    let duration = Duration::from_secs(args.seconds.unwrap_or(args.minutes.unwrap_or(1) * 60));
    let mut rng = Rng::new(seed);
    let verdicts: Vec<Counter> = Counter::ALL
        .iter()
        .copied()
        .filter(|c| c.is_verdict())
        .collect();
    let start = Instant::now();
    let first = counters(&lb);
    let mut report = Report {
        runs: 0,
        failures: 0,
        moved: BTreeMap::new(),
        actions: BTreeMap::new(),
    };
    while start.elapsed() < duration {
        let pick = rng.below(corpus.len());
        let other = rng.below(corpus.len());
        let mut frame = corpus[pick].clone();
        for _ in 0..rng.below(4) {
            mutate(&mut rng, &mut frame, &corpus[other]);
        }
        // What BPF_PROG_TEST_RUN takes (and a NIC delivers): an Ethernet header at least,
        // at most what fits a page with XDP's headroom.
        frame.resize(frame.len().clamp(14, 3000), 0);
        let (action, problem) = judge_run(&lb, &verdicts, &frame)?;
        report.runs += 1;
        *report.actions.entry(action).or_default() += 1;
        if let Some(why) = problem {
            report.failures += 1;
            save_failure(out, seed, report.runs, &frame, &why, report.failures)?;
        }
    }
    for (name, v) in counters(&lb) {
        let d = v - first.get(name).copied().unwrap_or(0);
        if d > 0 {
            report.moved.insert(name, d);
        }
    }
    // The tables stay within their sizes (an LRU evicts; a hash map refuses).
    let m = lb.maps();
    ensure!(
        m.flows().count() as u32 <= m.flows_max_entries(),
        "FLOWS over its size"
    );
    ensure!(
        m.nat_flows().count() <= 2 * 1000 * 3,
        "NAT_FLOWS over what the port range allows"
    );
    Ok(report)
}

/// A failure, said and (the first 50) saved as the frame and why.
fn save_failure(
    out: &std::path::Path,
    seed: u64,
    run: u64,
    frame: &[u8],
    why: &str,
    failures: u64,
) -> anyhow::Result<()> {
    eprintln!("fuzz: FAILURE at run {run} (seed {seed}): {why}");
    if failures <= 50 {
        std::fs::write(out.join(format!("failure-{seed}-{run}.bin")), frame)?;
        std::fs::write(
            out.join(format!("failure-{seed}-{run}.txt")),
            format!("seed {seed} run {run}\n{why}\n{frame:02x?}\n"),
        )?;
    }
    Ok(())
}

/// The run's figures: runs, actions, the counters it moved, the listeners'.
fn report_text(seed: u64, report: &Report, secs: f64, s: &services::ServicesReport) -> String {
    let actions: Vec<String> = report
        .actions
        .iter()
        .map(|(a, n)| {
            let name = ["aborted", "drop", "pass", "tx", "redirect"].get(*a as usize);
            format!("{} {n}", name.copied().unwrap_or("?"))
        })
        .collect();
    let mut text = format!(
        "fuzz: seed {seed}: {} runs in {secs:.0} s ({:.0} runs/s), {} failure(s)\nactions: {}\npaths covered (counter: runs):\n",
        report.runs,
        report.runs as f64 / secs,
        report.failures,
        actions.join(", ")
    );
    for (name, n) in &report.moved {
        text += &format!("  {name}: {n}\n");
    }
    let statuses: Vec<String> = s
        .http_status
        .iter()
        .map(|(c, n)| match c {
            0 => format!("closed {n}"),
            c => format!("{c} {n}"),
        })
        .collect();
    text += &format!(
        "listeners: {} control requests ({} refused with their reason), {} HTTP requests (status: {}); agent RSS {} → {} KiB, open files {} → {}\n",
        s.control,
        s.control_rejected,
        s.http,
        statuses.join(", "),
        s.rss_kb.0,
        s.rss_kb.1,
        s.fds.0,
        s.fds.1
    );
    text
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| xdp_lb_tests::topology::target_dir().join("fuzz"));
    std::fs::create_dir_all(&out)?;
    eprintln!("fuzz: seed {seed}; failures go to {}", out.display());
    let ns = namespace()?;
    let started = Instant::now();
    let (out2, seed2) = (out.clone(), seed);
    let total = Duration::from_secs(args.seconds.unwrap_or(args.minutes.unwrap_or(1) * 60));
    // A sixth of the time (at least 5 s) for the listeners, the rest for packets.
    let listeners = (total / 6).max(Duration::from_secs(5));
    let packets = Args {
        seconds: Some(total.saturating_sub(listeners).as_secs().max(1)),
        minutes: None,
        seed: args.seed,
        out: None,
    };
    let report = xdp_lb_tests::in_netns(&ns.name, move || run(&packets, seed2, &out2))??;
    let secs = started.elapsed().as_secs_f64();
    drop(ns);
    let s = services::run(seed, listeners).context("the listeners under abuse")?;
    let text = report_text(seed, &report, secs, &s);
    print!("{text}");
    std::fs::write(out.join("report.txt"), &text)?;
    if report.failures > 0 {
        anyhow::bail!(
            "{} failure(s); the frames are in {}",
            report.failures,
            out.display()
        );
    }
    Ok(())
}
