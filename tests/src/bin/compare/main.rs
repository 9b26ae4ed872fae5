//! `cargo xtask bench --compare`: xdp-lb against its peers, side by side in one run, on the
//! namespace topology. Every figure is the median of `--rounds` rounds (5) with the spread,
//! rounds interleaved across rows so that noise hits every row alike, and the headline numbers
//! are ratios between rows of the same run (the machines are shared and noisy).
//!
//! What it measures (issue 7):
//! 1. Cost per packet: `cargo xtask bench` runs just before (`target/bench/report.md`).
//! 2. Forwarding rate: frames made in a generator namespace by `BPF_PROG_TEST_RUN` in
//!    live-frames mode (`xdp_gen`: 1024 flows by source port; where the kernel refuses live
//!    frames, the same frames through AF_PACKET), forwarded by the node under
//!    test from one veth to another, counted and dropped on the backends' side (`xdp_sink`);
//!    see `RateBed`. Rows: the floor (a bare XDP forwarder: the limit of this machine), xdp-lb
//!    DSR, xdp-lb NAT, nftables DNAT (the kernel's path).
//! 3. TCP with wrk, a new connection per request and keep-alive, against three nginx
//!    backends: directly, xdp-lb DSR, xdp-lb NAT, haproxy `mode tcp` (on a second node),
//!    nftables DNAT + masquerade (on a third). Requests/s, p50/p99, and CPU per request: the
//!    whole machine's (every namespace shares the CPUs) and the balancer's own (xdp-lb: its XDP
//!    program's run time from the kernel's BPF stats plus the agent's process time; haproxy:
//!    its process time; nftables runs in softirq and has no separate figure).
//! 4. Memory: the agent's RSS and each BPF map's memory as the kernel accounts it (fdinfo).
//! 5. Legitimate connections under a random-source SYN flood (issue 13): xdp-lb NAT and DSR,
//!    and the kernel's own SYN cookies on a plain host as the reference (`flood.rs`).
//! 6. Scale out (issue 14): new connections/s through 1, 2 and 3 active nodes behind a
//!    router's ECMP (BIRD), and the time from a node's death to the reroute (`scale.rs`).
//! 7. `target/bench/compare.md`, `target/bench/compare.svg` (plotters), and a one-screen
//!    summary on stdout.

mod chart;
mod flood;
mod generator;
mod memory;
mod packet_sender;
mod peers;
mod rate;
mod report;
mod scale;
mod wrk;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use xdp_lb_tests::{
    Agent, DsrTopology, NetNs, fixtures,
    peers::{Proc, nginx},
    topology::{VIP, backend_addr},
};

use self::{
    memory::{map_memory, rss_kib},
    peers::Peers,
    rate::RateBed,
    report::Outcome,
    wrk::{LbCpu, WrkResult, wrk},
};

#[derive(Parser)]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent connections of wrk.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Frames per forwarding-rate run.
    #[arg(long, default_value_t = 2_000_000)]
    frames: u32,
    /// Where the report and the chart go (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only the forwarding-rate rows (a minute or two): their table goes to
    /// `compare-rate.md` and stdout.
    #[arg(long)]
    rate_only: bool,
}

const PEER_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const NAT_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
const DSR_PORT: u16 = 80;
const NAT_PORT: u16 = 81;
/// The forwarding-rate bed's tunnel VIP's port (`forwarding = "ipip"`).
const TUN_PORT: u16 = 83;
const HAPROXY_PORT: u16 = 8081;
const NFT_PORT: u16 = 8082;

// ---- main -----------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds >= 1 && args.seconds >= 1 && args.frames >= 1,
        "rounds, seconds and frames must be positive"
    );
    let started = Instant::now();
    if args.rate_only {
        return rate_only(&args);
    }
    let topo = DsrTopology::new(3)?;
    let dir = topo.dir.clone();
    let _nginx: Vec<Proc> = (0..3)
        .map(|i| nginx(&topo.backends[i], &dir, &format!("be{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;

    // xdp-lb: the DSR VIP on port 80 and a NAT VIP on port 81, same backends.
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.accept_local",
        "net.ipv4.conf.eth0.accept_local",
    ] {
        topo.lb.sysctl(key, "1")?;
    }
    // The LB's own connections (health checks) use ports above the SNAT range, as the README
    // advises: the SNAT range then covers most client ports, which NAT keeps when it can.
    topo.lb
        .sysctl("net.ipv4.ip_local_port_range", "61000 65535")?;
    // Closing NAT flows are kept 3 s (conntrack's TIME_WAIT is cut to 1 s for nftables below):
    // at tens of thousands of new connections a second the default 10 s would hold a third of
    // the ports; much shorter, and a late retransmission finds its flow gone. The SNAT
    // range stays clear of the LB's own ephemeral ports (set to 61000-65535 below), which the
    // agent's health checks use from the same address.
    let web_nat = (0..3).fold(
        fixtures::vip("web-nat", VIP, NAT_PORT)
            .nat()
            .key("maglev_table_size", 4093),
        |vip, i| vip.backend_with(backend_addr(i), &[("port", "80")]),
    );
    let config = topo
        .agent_config(&topo.pin_dir())
        .key("snat_port_range", "1024-60999")
        .key("nat_closing_timeout", "3s")
        .vip(topo.vip(DSR_PORT).key("maglev_table_size", 4093))
        .vip(web_nat)
        .to_string();
    let config_path = dir.join("xdp-lb.toml");
    std::fs::write(&config_path, &config)?;
    let agent = Agent::start(
        &topo.lb,
        &["run", "--config", config_path.to_str().context("path")?],
        dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(30),
    )?;

    let peers = Peers::start(&topo, &dir)?;
    std::thread::sleep(Duration::from_millis(500));

    // ---- TCP ----
    let haproxy_pid = peers.haproxy.0.id();
    let agent_pid = agent.pid().context("the agent's pid")?;
    let rows: Vec<(&str, String, LbCpu)> = vec![
        (
            "backend directly (no balancer)",
            format!("http://{}/", backend_addr(0)),
            LbCpu::None,
        ),
        (
            "xdp-lb, L2 DSR",
            format!("http://{VIP}:{DSR_PORT}/"),
            LbCpu::Xdp(agent_pid),
        ),
        (
            "xdp-lb, NAT",
            format!("http://{VIP}:{NAT_PORT}/"),
            LbCpu::Xdp(agent_pid),
        ),
        (
            "haproxy mode tcp",
            format!("http://{PEER_LB}:{HAPROXY_PORT}/"),
            LbCpu::Process(haproxy_pid),
        ),
        (
            "nftables DNAT + masquerade",
            format!("http://{NAT_LB}:{NFT_PORT}/"),
            LbCpu::None,
        ),
    ];
    // Warm up every path (ARP, conntrack, haproxy's first connections).
    let quick = Args {
        seconds: 1,
        rounds: 1,
        connections: 4,
        frames: 1,
        out: None,
        rate_only: false,
    };
    for (_, url, _) in &rows {
        wrk(&topo.client, url, &quick, false, LbCpu::None)?;
    }
    let modes = [false, true];
    let mut results: Vec<Vec<Vec<WrkResult>>> = modes
        .iter()
        .map(|_| rows.iter().map(|_| Vec::new()).collect())
        .collect();
    // The rounds run without the kernel's BPF stats: they read the clock twice per program run,
    // a tax on xdp-lb's rows alone. xdp-lb's own CPU per request is measured in one more run
    // per row and mode with the stats on.
    for round in 0..args.rounds {
        eprintln!("compare: TCP round {}/{}", round + 1, args.rounds);
        for (m, keep_alive) in modes.iter().enumerate() {
            for (i, (_, url, lb)) in rows.iter().enumerate() {
                let lb = match lb {
                    LbCpu::Xdp(_) => LbCpu::None,
                    other => *other,
                };
                results[m][i].push(wrk(&topo.client, url, &args, *keep_alive, lb)?);
            }
        }
    }
    let bpf_stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let mut xdp_lb_cpu: Vec<Vec<Option<f64>>> = modes
        .iter()
        .map(|_| rows.iter().map(|_| None).collect())
        .collect();
    for (m, keep_alive) in modes.iter().enumerate() {
        for (i, (_, url, lb)) in rows.iter().enumerate() {
            if let LbCpu::Xdp(_) = lb {
                xdp_lb_cpu[m][i] = wrk(&topo.client, url, &args, *keep_alive, *lb)?.lb_us;
            }
        }
    }

    let tcp_drops = veth_drops(&topo);

    // ---- forwarding rate ----
    // Without the stats' two clock reads per program run (the bed turns them on for one run
    // per row of its own).
    drop(bpf_stats);
    let mut bed = RateBed::new(&dir)?;
    let (rate_rows, rates) = bed.measure(&args)?;

    // ---- memory ----
    let agent_rss = agent.pid().and_then(rss_kib);
    let haproxy_rss = rss_kib(haproxy_pid);
    let maps = map_memory(&topo.pin_dir())?;

    // ---- under a SYN flood ----
    let floods = flood::measure(&topo, args.seconds)?;

    // ---- scale out: 1, 2, 3 active nodes behind ECMP ----
    let scale = scale::measure(&args)?;

    report::write(&Outcome {
        args: &args,
        started,
        dir: &dir,
        rows: &rows,
        modes,
        results,
        xdp_lb_cpu,
        tcp_drops,
        sender: bed.sender(),
        rate_rows,
        rates,
        agent_rss,
        haproxy_rss,
        maps,
        floods,
        scale,
    })
}

/// `--rate-only`: the forwarding-rate bed alone, in a scratch directory of its own.
fn rate_only(args: &Args) -> anyhow::Result<()> {
    xdp_lb_tests::netns::cleanup_stale();
    let dir = std::env::temp_dir().join(format!("xlbt-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> anyhow::Result<String> {
        let mut bed = RateBed::new(&dir)?;
        let (rows, rates) = bed.measure(args)?;
        let mut md = String::from("# xdp-lb forwarding rate\n\n");
        report::rate_section(&mut md, args.frames, bed.sender(), &rows, &rates)?;
        Ok(md)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let md = result?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| xdp_lb_tests::topology::target_dir().join("bench"));
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("compare-rate.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// Frames the veths dropped on the way (XDP_TX into a full ring, the kernel's backlog): a
/// dropped segment costs a retransmission timeout, which shows in the TCP rows.
fn veth_drops(topo: &DsrTopology) -> Vec<(&'static str, String)> {
    let veth_drops = |ns: &NetNs, ifname: &str| -> String {
        let stats = ns.exec(&["ethtool", "-S", ifname]).unwrap_or_default();
        let drops: Vec<String> = stats
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                let v: u64 = v.trim().parse().ok()?;
                (v > 0 && (k.contains("drop") || k.contains("err"))).then(|| format!("{k} {v}"))
            })
            .collect();
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    };
    vec![
        ("xdp-lb node eth0", veth_drops(&topo.lb, "eth0")),
        (
            "switch port of the xdp-lb node",
            veth_drops(&topo.sw, "p-lb"),
        ),
        (
            "switch port of the haproxy node",
            veth_drops(&topo.sw, "p-peer"),
        ),
        (
            "switch port of the nftables node",
            veth_drops(&topo.sw, "p-nat"),
        ),
    ]
}
