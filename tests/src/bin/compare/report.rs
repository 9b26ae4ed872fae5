//! `compare.md`, `compare.svg` and the one-screen summary, from what the rounds measured.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::bail;
use xdp_lb_tests::{median, spread};

use crate::{
    Args,
    chart::chart,
    flood::FloodRow,
    generator::Sender,
    rate::RateRun,
    scale::ScaleFigures,
    wrk::{LbCpu, WrkResult},
};

/// Everything the run measured.
pub(crate) struct Outcome<'a> {
    pub(crate) args: &'a Args,
    pub(crate) started: Instant,
    /// Where the logs are.
    pub(crate) dir: &'a Path,
    /// TCP rows: name, URL, how its balancer CPU is read.
    pub(crate) rows: &'a [(&'static str, String, LbCpu)],
    /// Keep-alive off, on.
    pub(crate) modes: [bool; 2],
    /// [mode][row][round].
    pub(crate) results: Vec<Vec<Vec<WrkResult>>>,
    /// [mode][row]: xdp-lb's own CPU per request (µs), from the run with BPF stats on.
    pub(crate) xdp_lb_cpu: Vec<Vec<Option<f64>>>,
    pub(crate) tcp_drops: Vec<(&'static str, String)>,
    /// How the rate rows' frames were sent.
    pub(crate) sender: Sender,
    pub(crate) rate_rows: Vec<(&'static str, Option<&'static str>)>,
    /// [row][round].
    pub(crate) rates: Vec<Vec<RateRun>>,
    pub(crate) agent_rss: Option<u64>,
    pub(crate) haproxy_rss: Option<u64>,
    /// (map, max entries, bytes).
    pub(crate) maps: Vec<(String, u32, u64)>,
    pub(crate) floods: Vec<FloodRow>,
    pub(crate) scale: ScaleFigures,
}

/// Writes the report and the chart, prints the summary; fails when a row carried nothing.
pub(crate) fn write(o: &Outcome<'_>) -> anyhow::Result<()> {
    let machine = xdp_lb_tests::machine_label();
    let mut md = String::new();
    writeln!(md, "# xdp-lb vs its peers\n")?;
    writeln!(
        md,
        "Machine: {machine}. All namespaces share these CPUs. {} rounds, interleaved; median (min–max). \
         Per-packet costs: `target/bench/report.md`.\n",
        o.args.rounds
    )?;
    let mut med: Vec<Vec<f64>> = Vec::new();
    for (m, keep_alive) in o.modes.iter().enumerate() {
        writeln!(
            md,
            "## TCP, {}\n",
            if *keep_alive {
                "keep-alive"
            } else {
                "a new connection per request"
            }
        )?;
        writeln!(
            md,
            "wrk -t2 -c{} -d{}s{} from the client namespace; 3 nginx backends. Machine CPU: busy time of \
             all CPUs (client, balancer and backends share them) per request. Balancer CPU: xdp-lb's XDP \
             program run time (kernel BPF stats, in one extra run: they slow the program down) plus its agent's \
             process time; haproxy's process time; nftables works in the kernel's softirq, inside the machine \
             figure only.\n",
            o.args.connections,
            o.args.seconds,
            if *keep_alive {
                ""
            } else {
                " -H 'Connection: close'"
            }
        )?;
        writeln!(
            md,
            "| path | requests/s | spread | p50 ms | p99 ms | errors | × direct | machine CPU µs/req | balancer CPU µs/req |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        let rps_of = |i: usize| {
            median(
                &o.results[m][i]
                    .iter()
                    .map(|r| r.requests_per_sec)
                    .collect::<Vec<_>>(),
            )
        };
        let direct = rps_of(0);
        let mut meds = Vec::new();
        for (i, (name, _, lb)) in o.rows.iter().enumerate() {
            let rs = &o.results[m][i];
            let rps: Vec<f64> = rs.iter().map(|r| r.requests_per_sec).collect();
            let med_rps = median(&rps);
            meds.push(med_rps);
            let (lo, hi) = spread(&rps);
            let pick = |f: fn(&WrkResult) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
            let errors: u64 = rs.iter().map(|r| r.errors).sum();
            let lb_cpu = match lb {
                LbCpu::None if i == 0 => "—".to_owned(),
                LbCpu::None => "in softirq".to_owned(),
                LbCpu::Xdp(_) => o.xdp_lb_cpu[m][i].map_or("?".into(), |v| format!("{v:.2}")),
                _ => format!(
                    "{:.2}",
                    median(&rs.iter().filter_map(|r| r.lb_us).collect::<Vec<_>>())
                ),
            };
            writeln!(
                md,
                "| {name} | {med_rps:.0} | {lo:.0}–{hi:.0} | {:.2} | {:.2} | {errors} | {:.2}× | {:.1} | {lb_cpu} |",
                pick(|r| r.p50_ms),
                pick(|r| r.p99_ms),
                med_rps / direct,
                pick(|r| r.machine_us),
            )?;
        }
        let total: f64 = o.results[m].iter().flatten().map(|r| r.requests).sum();
        writeln!(md, "\n({total:.0} requests in all.)\n")?;
        med.push(meds);
    }
    writeln!(
        md,
        "Drop counters of the veths after the TCP o.rows (`ethtool -S`; all o.rows together):\n"
    )?;
    for (what, drops) in o.tcp_drops.iter() {
        writeln!(md, "- {what}: {drops}")?;
    }
    writeln!(md)?;
    let (mpps, machine_ns) =
        rate_section(&mut md, o.args.frames, o.sender, &o.rate_rows, &o.rates)?;
    writeln!(md, "\n## Memory\n")?;
    writeln!(
        md,
        "xdp-lb agent RSS: {} KiB (haproxy, for comparison: {} KiB). BPF maps as the kernel accounts them \
         (`memlock` in fdinfo; NAT_FLOWS grows with use):\n",
        o.agent_rss.map_or("?".into(), |v| v.to_string()),
        o.haproxy_rss.map_or("?".into(), |v| v.to_string()),
    )?;
    writeln!(md, "| map | max entries | memory |")?;
    writeln!(md, "|---|---:|---:|")?;
    let mut total_maps = 0;
    for (name, entries, bytes) in o.maps.iter() {
        total_maps += bytes;
        writeln!(
            md,
            "| {name} | {entries} | {:.1} MiB |",
            *bytes as f64 / 1048576.0
        )?;
    }
    writeln!(md, "| all | | {:.1} MiB |", total_maps as f64 / 1048576.0)?;

    writeln!(md, "\n## New connections under a random-source SYN flood\n")?;
    writeln!(
        md,
        "Each target flooded with SYNs from random addresses while the client opens 20 new \
         connections a second to it, each given 1 s (a lost SYN counts as a failure).\n"
    )?;
    writeln!(md, "| target | flood SYN/s | legitimate connections |")?;
    writeln!(md, "|---|---:|---:|")?;
    for f in &o.floods {
        writeln!(
            md,
            "| {} | {:.0} | {} of {} ({:.1}%) |",
            f.name,
            f.flood.rate_per_s(),
            f.ok,
            f.tried,
            f.success_pct()
        )?;
    }
    let scale_lines = scale_section(&mut md, &o.scale)?;
    let p99 =
        |m: usize, i: usize| median(&o.results[m][i].iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    // A forwarding row's rate by its name (the rows are rate.rs's table).
    let rate = |prefix: &str| {
        o.rate_rows
            .iter()
            .position(|(name, _)| name.starts_with(prefix))
            .map_or(f64::NAN, |i| mpps[i])
    };
    let (dsr, nft) = (rate("xdp-lb, L2 DSR"), rate("nftables DNAT ("));
    let (dsr_udp, nat_udp, nft_udp) = (
        rate("xdp-lb, L2 DSR, UDP"),
        rate("xdp-lb, NAT, UDP"),
        rate("nftables DNAT, UDP"),
    );
    // Two receive queues against one: xdp-lb's gain beside the floor's (which shares nothing).
    let gain = |two: &str, one: &str| rate(two) / rate(one);
    let floor_gain = gain("floor, two RX queues", "floor: ");
    let (dsr_gain, nat_gain) = (
        gain("xdp-lb, L2 DSR, two RX queues", "xdp-lb, L2 DSR"),
        gain("xdp-lb, NAT, two RX queues", "xdp-lb, NAT"),
    );
    let floor = mpps[0];
    let rate_targets = [
        format!(
            "two RX queues (issue 18): DSR ×{dsr_gain:.2} and NAT ×{nat_gain:.2} their one-queue \
             rate, the floor ×{floor_gain:.2}; no shared lock on the hot path (each ≥ 0.9× the \
             floor's gain) — {}",
            verdict(dsr_gain >= 0.9 * floor_gain && nat_gain >= 0.9 * floor_gain)
        ),
        {
            let nat = rate("xdp-lb, NAT");
            format!(
                "forwarding rate (issue 18, {}): DSR ≥ 0.95× the floor: {:.2}× — {}; NAT ≥ 0.9×: \
                 {:.2}× — {}; both ≥ 5× nftables: {:.2}× and {:.2}× — {}",
                o.sender.short(),
                dsr / floor,
                verdict(dsr >= 0.95 * floor),
                nat / floor,
                verdict(nat >= 0.9 * floor),
                dsr / nft,
                nat / nft,
                verdict(dsr >= 5.0 * nft && nat >= 5.0 * nft)
            )
        },
        format!(
            "xdp-lb DSR forwarding ≥ 0.8× the floor: {:.2}× — {}",
            dsr / floor,
            verdict(dsr >= 0.8 * floor)
        ),
        format!(
            "xdp-lb DSR forwarding ≥ 5× nftables DNAT: {:.2}× — {}",
            dsr / nft,
            verdict(dsr >= 5.0 * nft)
        ),
        format!(
            "UDP: xdp-lb DSR {:.2}× and NAT {:.2}× nftables DNAT; DSR {:.2}× its TCP twin",
            dsr_udp / nft_udp,
            nat_udp / nft_udp,
            dsr_udp / dsr
        ),
    ];
    let mut targets = Vec::from(rate_targets);
    targets.extend([
        format!(
            "new-connection rate ≥ 2× haproxy: {:.2}× (NAT {:.2}×) — {}",
            med[0][1] / med[0][3],
            med[0][2] / med[0][3],
            verdict(med[0][1] >= 2.0 * med[0][3])
        ),
        format!(
            "new-connection rate ≥ nftables DNAT: {:.2}× (NAT {:.2}×) — {}",
            med[0][1] / med[0][4],
            med[0][2] / med[0][4],
            verdict(med[0][1] >= med[0][4])
        ),
        format!(
            "p99 within 20% of the direct path (new connections): {:.2}× (NAT {:.2}×) — {}",
            p99(0, 1) / p99(0, 0),
            p99(0, 2) / p99(0, 0),
            verdict(p99(0, 1) <= 1.2 * p99(0, 0))
        ),
        {
            let pct = |prefix: &str| {
                o.floods
                    .iter()
                    .find(|f| f.name.starts_with(prefix))
                    .map_or(f64::NAN, FloodRow::success_pct)
            };
            let (nat, cookies) = (pct("xdp-lb, NAT"), pct("plain host"));
            format!(
                "legitimate NAT connections under a SYN flood ≥ 99% and ≥ the kernel's SYN \
                 cookies: {nat:.1}% (SYN cookies {cookies:.1}%) — {}",
                verdict(nat >= 99.0 && nat >= cookies)
            )
        },
    ]);
    writeln!(
        md,
        "\n## Targets (issues 7, 13 and 18), ratios within this run\n"
    )?;
    for t in &targets {
        writeln!(md, "- {t}")?;
    }
    writeln!(
        md,
        "\nChart: `target/bench/compare.svg`. Whole run: {:.0} s.",
        o.started.elapsed().as_secs_f64()
    )?;

    let out: PathBuf = o
        .args
        .out
        .clone()
        .unwrap_or_else(|| xdp_lb_tests::topology::target_dir().join("bench"));
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("compare.md"), &md)?;
    // Chart labels: the row names up to their first explanation.
    let short = |name: &'static str| name.split([':', '(']).next().unwrap_or(name).trim();
    let tcp_chart: Vec<(&str, f64, f64)> = o
        .rows
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| (short(name), med[0][i], med[1][i]))
        .collect();
    let rate_chart: Vec<(&str, f64)> = o
        .rate_rows
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (short(name), mpps[i]))
        .collect();
    chart(&out.join("compare.svg"), &tcp_chart, &rate_chart, &machine)?;

    // One screen.
    println!("xdp-lb vs its peers on {machine}");
    println!(
        "{:<34} {:>12} {:>12} {:>9} {:>9}",
        "TCP path", "new conn/s", "keep-alive/s", "p99 ms", "CPU µs/r"
    );
    for (i, (name, _, _)) in o.rows.iter().enumerate() {
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>9.2} {:>9.1}",
            name,
            med[0][i],
            med[1][i],
            p99(0, i),
            median(
                &o.results[0][i]
                    .iter()
                    .map(|r| r.machine_us)
                    .collect::<Vec<_>>()
            )
        );
    }
    println!(
        "{:<48} {:>8} {:>8} {:>12}",
        "forwarding (live frames)", "Mpps", "× floor", "CPU ns/frame"
    );
    for (i, (name, _)) in o.rate_rows.iter().enumerate() {
        println!(
            "{:<48} {:>8.3} {:>7.2}× {:>12.0}",
            name,
            mpps[i],
            mpps[i] / floor,
            machine_ns[i]
        );
    }
    println!(
        "{:<48} {:>11} {:>16}",
        "under a SYN flood", "flood SYN/s", "legit conns"
    );
    for f in &o.floods {
        println!(
            "{:<48} {:>11.0} {:>9}/{:<3} {:.0}%",
            f.name,
            f.flood.rate_per_s(),
            f.ok,
            f.tried,
            f.success_pct()
        );
    }
    println!(
        "agent RSS {} KiB; BPF maps {:.1} MiB",
        o.agent_rss.map_or("?".into(), |v| v.to_string()),
        total_maps as f64 / 1048576.0
    );
    for l in &scale_lines {
        println!("{l}");
    }
    for t in &targets {
        println!("target: {t}");
    }
    println!(
        "report: {}, chart: {}",
        out.join("compare.md").display(),
        out.join("compare.svg").display()
    );
    if o.results
        .iter()
        .flatten()
        .flatten()
        .any(|r| r.requests_per_sec <= 0.0)
        || mpps.iter().any(|m| *m <= 0.0)
        || o.floods.iter().any(|f| f.flood.sent == 0 || f.ok == 0)
        || o.scale.rates.iter().flatten().any(|r| *r <= 0.0)
    {
        bail!("a row carried nothing; see the logs in {}", o.dir.display());
    }
    Ok(())
}

/// The forwarding-rate table and the programs' sizes; returns each row's median Mpps and
/// machine CPU per frame.
pub(crate) fn rate_section(
    md: &mut String,
    frames: u32,
    sender: Sender,
    rate_rows: &[(&'static str, Option<&'static str>)],
    rates: &[Vec<RateRun>],
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    writeln!(md, "## Forwarding rate\n")?;
    writeln!(
        md,
        "Frames sent by {} from a generator namespace ({} frames of 60 bytes, IPv6 74, per run, 1024 flows) \
         over point-to-point veths into the node under test, which forwards them out of a second veth to the \
         backends' side, where an XDP program counts and drops them (no bridge: frames stay XDP frames where the \
         forwarder allows it). Mpps = frames delivered / run time. Machine CPU = busy time of all CPUs per \
         delivered frame (the generator is in every row alike); forwarder = run time of the forwarding XDP \
         program per frame (kernel BPF stats, in one extra run per row so the rate runs do \
         without them; nftables runs in the kernel's softirq and has no separate figure).\n",
        sender.describe(),
        frames
    )?;
    writeln!(
        md,
        "| path | Mpps delivered | spread | delivered / sent | × floor | machine CPU ns/frame | forwarder ns/frame | frames by RX queue |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mpps: Vec<f64> = rates
        .iter()
        .map(|r| median(&r.iter().map(|x| x.mpps).collect::<Vec<_>>()))
        .collect();
    let machine_ns: Vec<f64> = rates
        .iter()
        .map(|r| median(&r.iter().map(|x| x.machine_ns).collect::<Vec<_>>()))
        .collect();
    for (i, (name, _)) in rate_rows.iter().enumerate() {
        let v: Vec<f64> = rates[i].iter().map(|x| x.mpps).collect();
        let (lo, hi) = spread(&v);
        let share = median(&rates[i].iter().map(|x| x.share).collect::<Vec<_>>());
        let program: Vec<f64> = rates[i].iter().filter_map(|x| x.program_ns).collect();
        // The ingress queues' shares over all rounds: which queues (so CPUs) the row used.
        let mut by_queue: Vec<u64> = Vec::new();
        for run in &rates[i] {
            by_queue.resize(by_queue.len().max(run.queues.len()), 0);
            for (q, n) in run.queues.iter().enumerate() {
                by_queue[q] += n;
            }
        }
        let all = by_queue.iter().sum::<u64>().max(1) as f64;
        let queues = by_queue
            .iter()
            .map(|n| format!("{:.0}%", *n as f64 * 100.0 / all))
            .collect::<Vec<_>>()
            .join(" / ");
        writeln!(
            md,
            "| {name} | {:.3} | {lo:.3}–{hi:.3} | {:.0}% | {:.2}× | {:.0} | {} | {queues} |",
            mpps[i],
            share * 100.0,
            mpps[i] / mpps[0],
            machine_ns[i],
            if program.is_empty() {
                "in softirq".to_owned()
            } else {
                format!("{:.0}", median(&program))
            }
        )?;
    }
    // Issue 29: a tunnel forwards at least 0.9× the L2 DSR rate.
    let row = |name: &str| {
        rate_rows
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| mpps[i])
    };
    if let (Some(tun), Some(dsr)) = (row("xdp-lb, IPIP tunnel"), row("xdp-lb, L2 DSR")) {
        let ratio = tun / dsr;
        writeln!(
            md,
            "\nIPIP tunnel against L2 DSR (issue 29 target ≥ 0.9×): {ratio:.2}× — {}.",
            if ratio >= 0.9 { "met" } else { "NOT met" }
        )?;
    }
    // Program sizes: part of where the per-frame time goes.
    let sizes: Vec<String> = [xdp_lb_common::PROGRAM_NAME, "xdp_floor_live"]
        .iter()
        .filter_map(|name| {
            let p = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.name_as_str() == Some(name))?;
            Some(format!(
                "{name}: {} bytes of machine code ({} instructions processed by the verifier)",
                p.size_jitted(),
                p.verified_instruction_count()
                    .map_or("?".into(), |n| n.to_string())
            ))
        })
        .collect();
    writeln!(md, "\nPrograms: {}.", sizes.join("; "))?;
    Ok((mpps, machine_ns))
}

/// Scale out: 1, 2 and 3 active nodes, and the reroute time; returns the summary lines.
fn scale_section(md: &mut String, f: &ScaleFigures) -> anyhow::Result<Vec<String>> {
    writeln!(
        md,
        "\n## Scale out: active nodes behind ECMP (BIRD, BGP + BFD)\n\n\
         New connections/s (wrk, `Connection: close`) from the client through a router namespace \
         whose ECMP route has one next hop per active node (the others drained), to the same \
         three nginx backends. Every node, the router, the client and the backends share this \
         machine's CPUs: the rows show that more nodes do not cost throughput and that the \
         flows spread, not capacity (on real hosts each node brings its own CPUs and queues).\n"
    )?;
    writeln!(
        md,
        "| active nodes | new connections/s | spread | × one node | packets forwarded per node (last round) |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---|")?;
    let one = median(&f.rates[0]);
    let mut lines = Vec::new();
    for (k, rates) in f.rates.iter().enumerate() {
        let (lo, hi) = spread(rates);
        let m = median(rates);
        let per_node: Vec<String> = f.spread[k].iter().map(u64::to_string).collect();
        writeln!(
            md,
            "| {} | {m:.0} | {lo:.0}–{hi:.0} | {:.2}× | {} |",
            k + 1,
            m / one,
            per_node.join(" / ")
        )?;
        lines.push(format!(
            "scale out: {} active node(s) {m:>8.0} new conn/s  {:.2}× one node  (packets per node {})",
            k + 1,
            m / one,
            per_node.join("/")
        ));
    }
    let (lo, hi) = spread(&f.reroute);
    let reroute = median(&f.reroute);
    writeln!(
        md,
        "\nA node dies (its link down, then its agent and BIRD SIGKILLed): the router dropped its \
         next hop after {reroute:.2} s (median of {}, {lo:.2}–{hi:.2} s; BFD 100 ms × 3).",
        f.reroute.len()
    )?;
    lines.push(format!(
        "scale out: node death to reroute {reroute:.2} s (median, {lo:.2}–{hi:.2} s)"
    ));
    Ok(lines)
}
