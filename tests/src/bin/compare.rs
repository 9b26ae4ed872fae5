//! `cargo xtask bench --compare` (first cut of the comparative bench): TCP through xdp-lb
//! against the same traffic through its peers, side by side in one run, on the namespace
//! topology. Every figure is the median of 5 rounds with the spread, and the headline numbers
//! are ratios between rows of the same run (the machines are shared and noisy).
//!
//! Rows, all serving the same three nginx backends:
//! - a backend directly (the reference: no balancer at all);
//! - xdp-lb, L2 DSR (the VIP on the LB node);
//! - haproxy `mode tcp` (a proxy: two TCP connections per request) on a second LB node;
//! - nftables DNAT + masquerade (the kernel's NAT, with conntrack) on a third.
//!
//! wrk opens a new connection per request (`Connection: close`), the case an L4 balancer
//! pays most for. Not yet measured here (issue 7): keep-alive, forwarding rate with live
//! frames, CPU per request, memory, the chart.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use xdp_lb_tests::{
    Agent, DsrTopology, NetNs,
    topology::{VIP, backend_addr},
};

#[derive(Parser)]
struct Args {
    /// Seconds per wrk round.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent connections of wrk.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

const PEER_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const NAT_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
const HAPROXY_PORT: u16 = 8081;
const NFT_PORT: u16 = 8082;

/// A process in a namespace (`ip netns exec` execs it, so the pid is the program's own),
/// stopped when dropped: SIGTERM, then SIGKILL after 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &NetNs, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {args:?}"))?;
    Ok(Proc(child))
}

/// nginx on a backend: answers every request with its name; no logs, no temp files. One
/// process (`master_process off`), so that stopping the pid stops all of it.
fn nginx(ns: &NetNs, dir: &Path, name: &str) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("nginx-{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx-{name}.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/tmp-{name};\n\
               server {{ listen 80 reuseport backlog=4096; location / {{ return 200 \"{name}\\n\"; }} }}\n}}\n",
            dir = dir.display()
        ),
    )?;
    spawn_in(
        ns,
        &[
            "nginx",
            "-c",
            conf.to_str().context("path")?,
            "-e",
            "stderr",
        ],
        &dir.join(format!("nginx-{name}.log")),
    )
}

struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> Option<f64> {
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

fn wrk(client: &NetNs, url: &str, args: &Args) -> anyhow::Result<WrkResult> {
    let out = Command::new("ip")
        .args(["netns", "exec", &client.name, "wrk", "-t2"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .args(["--latency", "-H", "Connection: close", url])
        .output()
        .context("running wrk (Debian's wrk package)")?;
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
    Ok(WrkResult {
        requests_per_sec: rps,
        p50_ms: p50,
        p99_ms: p99,
        errors,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds >= 1 && args.seconds >= 1,
        "rounds and seconds must be positive"
    );
    let topo = DsrTopology::new(3)?;
    let dir = topo.dir.clone();
    let _nginx: Vec<Proc> = (0..3)
        .map(|i| nginx(&topo.backends[i], &dir, &format!("be{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;

    // xdp-lb on the LB node (the VIP is on its eth0, DSR backends hold it on lo).
    let config = dir.join("xdp-lb.toml");
    std::fs::write(
        &config,
        topo.config(&topo.pin_dir(), 80, "maglev_table_size = 4093"),
    )?;
    let _agent = Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().context("path")?],
        dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(30),
    )?;

    // The peers on a second LB node.
    let peer = NetNs::new("peer")?;
    topo.plug(&peer, "p-peer", PEER_LB)?;
    peer.sysctl("net.ipv4.ip_forward", "1")?;
    // nftables on a node of its own: a nat table turns conntrack on for everything in its
    // namespace, which would tax haproxy's row too.
    let natbox = NetNs::new("nat")?;
    topo.plug(&natbox, "p-nat", NAT_LB)?;
    natbox.sysctl("net.ipv4.ip_forward", "1")?;
    // Tuned as an operator of a NAT box would: conntrack keeps TIME_WAIT entries for 120 s,
    // which at this rate fills the table within a round and drops new connections.
    natbox.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")?;
    // A new connection per request at tens of thousands per second exhausts the default
    // ephemeral range within a round (TIME_WAIT lasts 60 s): widen it and allow reuse where
    // connections originate (the client, and the proxy's side towards the backends).
    for ns in [&topo.client, &peer] {
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    }
    let backends: Vec<String> = (0..3).map(|i| backend_addr(i).to_string()).collect();
    let haproxy_cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind {PEER_LB}:{HAPROXY_PORT}\n  default_backend b\nbackend b\n  balance roundrobin\n{}",
            backends
                .iter()
                .enumerate()
                .map(|(i, a)| format!("  server be{i} {a}:80\n"))
                .collect::<String>()
        ),
    )?;
    let _haproxy = spawn_in(
        &peer,
        &[
            "haproxy",
            "-db",
            "-f",
            haproxy_cfg.to_str().context("path")?,
        ],
        &dir.join("haproxy.log"),
    )?;
    let nft = dir.join("dnat.nft");
    std::fs::write(
        &nft,
        format!(
            "table ip xlbt_nat {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n\
                 ip daddr {NAT_LB} tcp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }} : 80\n  }}\n\
               chain post {{\n    type nat hook postrouting priority srcnat;\n    ip daddr 198.18.0.0/24 tcp dport 80 masquerade\n  }}\n}}\n",
            backends[0], backends[1], backends[2]
        ),
    )?;
    natbox.exec(&["nft", "-f", nft.to_str().context("path")?])?;
    std::thread::sleep(Duration::from_millis(500));

    let rows: Vec<(&str, String)> = vec![
        (
            "backend directly (no balancer)",
            format!("http://{}/", backend_addr(0)),
        ),
        ("xdp-lb, L2 DSR", format!("http://{VIP}/")),
        (
            "haproxy mode tcp",
            format!("http://{PEER_LB}:{HAPROXY_PORT}/"),
        ),
        (
            "nftables DNAT + masquerade",
            format!("http://{NAT_LB}:{NFT_PORT}/"),
        ),
    ];
    // Warm up every path once (ARP, conntrack, haproxy's first connections), then the rounds,
    // interleaved so that noise hits every row alike.
    for (_, url) in &rows {
        let quick = Args {
            seconds: 1,
            rounds: 1,
            connections: 4,
        };
        wrk(&topo.client, url, &quick)?;
    }
    let mut results: Vec<Vec<WrkResult>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        eprintln!("compare: round {}/{}", round + 1, args.rounds);
        for (i, (_, url)) in rows.iter().enumerate() {
            results[i].push(wrk(&topo.client, url, &args)?);
        }
    }

    let mut md = String::new();
    writeln!(
        md,
        "# xdp-lb vs its peers: TCP, a new connection per request\n"
    )?;
    writeln!(
        md,
        "wrk -t2 -c{} -d{}s `Connection: close` from the client namespace; 3 nginx backends; {} rounds, median (min–max).\n",
        args.connections, args.seconds, args.rounds
    )?;
    writeln!(
        md,
        "| path | requests/s | spread | p50 ms | p99 ms | errors | × direct |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    let direct = median(
        &results[0]
            .iter()
            .map(|r| r.requests_per_sec)
            .collect::<Vec<_>>(),
    );
    let mut medians = Vec::new();
    for ((name, _), rs) in rows.iter().zip(&results) {
        let rps: Vec<f64> = rs.iter().map(|r| r.requests_per_sec).collect();
        let m = median(&rps);
        medians.push(m);
        let (lo, hi) = (
            rps.iter().copied().fold(f64::INFINITY, f64::min),
            rps.iter().copied().fold(0.0, f64::max),
        );
        let p50 = median(&rs.iter().map(|r| r.p50_ms).collect::<Vec<_>>());
        let p99 = median(&rs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
        let errors: u64 = rs.iter().map(|r| r.errors).sum();
        writeln!(
            md,
            "| {name} | {m:.0} | {lo:.0}–{hi:.0} | {p50:.2} | {p99:.2} | {errors} | {:.2}× |",
            m / direct
        )?;
    }
    let p99 = |i: usize| median(&results[i].iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    writeln!(md, "\nTargets (issue 7):")?;
    writeln!(
        md,
        "- new-connection rate ≥ 2× haproxy: {:.2}× — {}",
        medians[1] / medians[2],
        if medians[1] >= 2.0 * medians[2] {
            "met"
        } else {
            "NOT met"
        }
    )?;
    writeln!(
        md,
        "- new-connection rate ≥ nftables DNAT: {:.2}× — {}",
        medians[1] / medians[3],
        if medians[1] >= medians[3] {
            "met"
        } else {
            "NOT met"
        }
    )?;
    writeln!(
        md,
        "- p99 within 20% of the direct path: {:.2}× — {}",
        p99(1) / p99(0),
        if p99(1) <= 1.2 * p99(0) {
            "met"
        } else {
            "NOT met"
        }
    )?;
    print!("{md}");
    let out: PathBuf = xdp_lb_tests::topology::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("compare.md"), &md)?;
    eprintln!(
        "compare: report written to {}",
        out.join("compare.md").display()
    );
    if results.iter().flatten().any(|r| r.requests_per_sec <= 0.0) {
        bail!("a row served nothing; see the logs in {}", dir.display());
    }
    Ok(())
}
