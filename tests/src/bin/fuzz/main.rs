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

mod services;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    NetNs, fixtures,
    fuzz::{Rng, client, judge_sent, mutate},
    harness::{LOOPBACK_IFINDEX, Loaded, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, run_program},
    packet::{
        Frame, TCP_ACK, TCP_SYN, arp_request, icmp_echo, icmp_error, ipv6_frame, tcp_header,
        tcp6_frame,
    },
};

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

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const GUARDED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GUE_PORT: u16 = 6080;

fn vip6() -> Ipv6Addr {
    "2001:2::100".parse().unwrap()
}

/// Every mode and family, with the node's addresses for NAT and the tunnels.
fn config() -> String {
    let three =
        |name: &str, addr: &str, port: u16, mode: &str, backends: &dyn Fn(u32) -> String| {
            (1..=3).fold(
                fixtures::vip(name, addr, port)
                    .key("forwarding", mode)
                    .check("type", "none"),
                |v, i| v.backend(backends(i)),
            )
        };
    fixtures::config("lan0")
        .bed("@PIN_DIR@", 1 << 16, 16)
        .key("flow_table_size_ipv6", 1u32 << 14)
        .key("tunnel_source", vec!["198.18.0.2", "2001:2::2"])
        .key("snat_address", vec!["198.18.0.2", "2001:2::2"])
        .key("snat_port_range", "20000-20999")
        .vip(three("web", "198.18.0.100", 80, "dsr", &|i| {
            format!("198.18.0.{}", 10 + i)
        }))
        .vip(
            three("dns", "198.18.0.100", 53, "dsr", &|i| {
                format!("198.18.0.{}", 10 + i)
            })
            .key("protocol", "udp"),
        )
        .vip(three("api", "198.18.0.100", 443, "nat", &|i| {
            format!("198.18.1.{}", 10 + i)
        }))
        .vip(
            three("dnsnat", "198.18.0.100", 5353, "nat", &|i| {
                format!("198.18.1.{}", 10 + i)
            })
            .key("protocol", "udp"),
        )
        .vip(
            three("ipip", "198.18.0.100", 81, "ipip", &|i| {
                format!("198.18.2.{}", 10 + i)
            })
            .key("mss_clamp", true),
        )
        .vip(three("gue", "198.18.0.100", 82, "gue", &|i| {
            format!("198.18.3.{}", 10 + i)
        }))
        .vip(three("web6", "2001:2::100", 80, "dsr", &|i| {
            format!("2001:2::{}", 10 + i)
        }))
        .vip(three("api6", "2001:2::100", 443, "nat", &|i| {
            format!("2001:2:1::{}", 10 + i)
        }))
        .vip(three("tun6", "2001:2::100", 81, "ipip", &|i| {
            format!("2001:2:2::{}", 10 + i)
        }))
        .vip(
            three("guarded", "198.18.0.101", 80, "dsr", &|i| {
                format!("198.18.0.{}", 10 + i)
            })
            .list("deny", &["198.19.255.0/24"])
            .key("new_flows_per_source", "5/s")
            .key("new_flows_burst", 5u32),
        )
        .to_string()
}

/// The namespace whose FIB NAT and the tunnels consult (routes to the backends and clients).
fn namespace() -> anyhow::Result<NetNs> {
    xdp_lb_tests::tunnel::routed_bed("fuzz")
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = Frame::tcp(src, sport, dst, dport);
    f.flags = flags;
    f.payload = vec![0x5a; payload];
    f.build()
}

/// The seed frames: one or more of every path.
fn corpus() -> Vec<Vec<u8>> {
    let mut c = Vec::new();
    for (i, port) in [80u16, 443, 81, 82].into_iter().enumerate() {
        let src = client(i as u32 + 1);
        c.push(tcp(src, 40000, VIP, port, TCP_SYN, 0));
        c.push(tcp(src, 40000, VIP, port, TCP_ACK, 100));
        c.push(tcp(src, 40001, VIP, port, TCP_ACK | 0x08, 1400));
    }
    let mut tagged = Frame::tcp(client(9), 40002, VIP, 80);
    tagged.vlan = Some(7);
    c.push(tagged.build());
    tagged.outer_vlan = Some(100);
    c.push(tagged.build());
    let mut udp = Frame::tcp(client(10), 5353, VIP, 53);
    udp.proto = 17;
    udp.payload = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    c.push(udp.build());
    // The same to the UDP NAT VIP; SYNs with an MSS option (the tunnels' clamp).
    udp.dport = 5353;
    c.push(udp.build());
    for port in [81u16, 82, 80] {
        c.push(with_mss(
            &tcp(client(14), 40000, VIP, port, TCP_SYN, 0),
            1460,
        ));
    }
    c.push(tcp(
        Ipv4Addr::new(198, 19, 255, 9),
        40000,
        GUARDED,
        80,
        TCP_SYN,
        0,
    ));
    c.push(tcp(client(11), 40000, GUARDED, 80, TCP_SYN, 0));
    // Not a VIP's: the node's ssh, the VIP address on another port, ARP, ping, VRRP, sync.
    c.push(tcp(client(12), 40000, NODE, 22, TCP_SYN, 0));
    c.push(tcp(client(12), 40000, VIP, 8080, TCP_SYN, 0));
    c.push(arp_request(client(12), NODE));
    c.push(icmp_echo(client(12), VIP));
    let mut vrrp = Frame::tcp(NODE, 0, Ipv4Addr::new(224, 0, 0, 18), 0);
    vrrp.proto = 112;
    c.push(vrrp.build());
    let mut sync = Frame::tcp(Ipv4Addr::new(198, 18, 0, 3), 7947, NODE, 7947);
    sync.proto = 17;
    sync.payload = vec![0xaa; 64];
    c.push(sync.build());
    // ICMP "fragmentation needed" about a DSR flow; a fragment.
    c.push(icmp_error(
        Ipv4Addr::new(198, 18, 9, 1),
        VIP,
        80,
        client(1),
        40000,
        (3, 4, 1400),
        28,
    ));
    let mut frag = Frame::tcp(client(13), 40000, VIP, 80);
    frag.frag = 0x2000;
    c.push(frag.build());
    // IPv6: each VIP, with and without extension headers.
    let v6 = |i: u16| -> Ipv6Addr { format!("2001:2:9::{i}").parse().unwrap() };
    for (i, port) in [80u16, 443, 81].into_iter().enumerate() {
        c.push(tcp6_frame(
            (v6(i as u16 + 1), 40000),
            (vip6(), port),
            TCP_SYN,
            7,
        ));
        c.push(tcp6_frame(
            (v6(i as u16 + 1), 40000),
            (vip6(), port),
            TCP_ACK,
            7,
        ));
    }
    c.push(ipv6_frame(&[(0, 8), (60, 16)], 6, &tcp_header()));
    c.push(ipv6_frame(&[(44, 8)], 6, &tcp_header()));
    c
}

/// A TCP/IPv4 SYN frame (no VLAN, no options) with an MSS option added, lengths and checksums
/// made right.
fn with_mss(frame: &[u8], mss: u16) -> Vec<u8> {
    let (l3, l4) = (14, 34);
    let mut f = frame[..l4 + 20].to_vec();
    f.extend_from_slice(&[2, 4]);
    f.extend_from_slice(&mss.to_be_bytes());
    f[l4 + 12] = 6 << 4;
    let total = (f.len() - l3) as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let ip_sum = xdp_lb_tests::packet::checksum(&f[l3..l4]);
    f[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
    f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let sum = xdp_lb_tests::packet::l4_checksum(src, dst, 6, &f[l4..]);
    f[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// Replies to the NAT flows the corpus made: what the backends would send back.
fn nat_replies(lb: &Loaded) -> Vec<Vec<u8>> {
    let mut c = Vec::new();
    let v4 = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    for (k, _) in lb
        .maps()
        .nat_flows()
        .chain(lb.maps().nat_embryonic())
        .take(8)
    {
        let flags = if c.len() % 2 == 0 {
            TCP_SYN | TCP_ACK
        } else {
            TCP_ACK
        };
        let (sp, dp) = (u16::from_be(k.src_port_be), u16::from_be(k.dst_port_be));
        c.push(tcp(v4(k.src_addr), sp, v4(k.dst_addr), dp, flags, 40));
    }
    for (k, _) in lb
        .maps()
        .nat_flows6()
        .chain(lb.maps().nat_embryonic6())
        .take(8)
    {
        let (sp, dp) = (u16::from_be(k.src_port_be), u16::from_be(k.dst_port_be));
        c.push(tcp6_frame(
            (Ipv6Addr::from(k.src_addr), sp),
            (Ipv6Addr::from(k.dst_addr), dp),
            TCP_SYN | TCP_ACK,
            0,
        ));
    }
    c
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

fn run(args: &Args, seed: u64, out: &std::path::Path) -> anyhow::Result<Report> {
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).context("loading xdp-lb")?;
    let program = lb.dp().program();
    let mut corpus = corpus();
    // Once through the corpus: the NAT flows it makes give the replies their tuples.
    for f in &corpus {
        run_program(program, f, 1)?;
    }
    let replies = nat_replies(&lb);
    ensure!(
        !replies.is_empty(),
        "the corpus made no NAT flow to reply to"
    );
    corpus.extend(replies);
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
    let fail = |run: u64, frame: &[u8], why: String, report: &mut Report| -> anyhow::Result<()> {
        report.failures += 1;
        eprintln!("fuzz: FAILURE at run {run} (seed {seed}): {why}");
        if report.failures <= 50 {
            std::fs::write(out.join(format!("failure-{seed}-{run}.bin")), frame)?;
            std::fs::write(
                out.join(format!("failure-{seed}-{run}.txt")),
                format!("seed {seed} run {run}\n{why}\n{frame:02x?}\n"),
            )?;
        }
        Ok(())
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
        let before: Vec<u64> = verdicts.iter().map(|c| lb.counter(*c)).collect();
        let new_before = lb.counter(Counter::NewFlow);
        let r = run_program(program, &frame, 1)?;
        report.runs += 1;
        *report.actions.entry(r.action).or_default() += 1;
        let moved: Vec<(&str, u64)> = verdicts
            .iter()
            .zip(&before)
            .filter_map(|(c, b)| {
                let d = lb.counter(*c) - b;
                (d > 0).then_some((c.name(), d))
            })
            .collect();
        let n = report.runs;
        if !matches!(r.action, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
            fail(n, &frame, format!("action {}", r.action), &mut report)?;
            continue;
        }
        if moved.len() != 1 || moved[0].1 != 1 {
            fail(
                n,
                &frame,
                format!("verdict counters moved: {moved:?} (action {})", r.action),
                &mut report,
            )?;
        }
        if let Some((name, _)) = moved.first()
            && is_refusal(name)
            && lb.counter(Counter::NewFlow) != new_before
        {
            fail(n, &frame, format!("{name} made a new flow"), &mut report)?;
        }
        if matches!(r.action, XDP_TX | XDP_REDIRECT) {
            let sent = &r.out[..r.out.len().min(frame.len() + 256)];
            if let Err(why) = judge_sent(&frame, sent, GUE_PORT) {
                fail(
                    n,
                    &frame,
                    format!("{why} (action {}, verdict {moved:?})", r.action),
                    &mut report,
                )?;
            }
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
    let services_text = format!(
        "listeners: {} control requests ({} refused with their reason), {} HTTP requests (status: {}); agent RSS {} → {} KiB, open files {} → {}\n",
        s.control,
        s.control_rejected,
        s.http,
        s.http_status
            .iter()
            .map(|(c, n)| if *c == 0 {
                format!("closed {n}")
            } else {
                format!("{c} {n}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        s.rss_kb.0,
        s.rss_kb.1,
        s.fds.0,
        s.fds.1
    );
    let mut text = format!(
        "fuzz: seed {seed}: {} runs in {secs:.0} s ({:.0} runs/s), {} failure(s)\nactions: {}\npaths covered (counter: runs):\n",
        report.runs,
        report.runs as f64 / secs,
        report.failures,
        report
            .actions
            .iter()
            .map(|(a, n)| format!(
                "{} {n}",
                ["aborted", "drop", "pass", "tx", "redirect"]
                    .get(*a as usize)
                    .copied()
                    .unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, n) in &report.moved {
        text += &format!("  {name}: {n}\n");
    }
    text += &services_text;
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
