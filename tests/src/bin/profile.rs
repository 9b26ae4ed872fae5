//! One data-plane path, run alone in a loop through BPF_PROG_TEST_RUN for a while, so that a
//! profiler can see where its time goes (issue 18):
//!
//! ```text
//! cargo build --release -p xdp-lb-tests --bin profile
//! target/release/profile --path hit --seconds 5 &
//! perf record -a -g -- sleep 4; perf report --no-children --sort symbol
//! ```
//!
//! The JIT'd program and its calls show as `bpf_prog_<tag>_<name>` (net.core.bpf_jit_kallsyms),
//! the helpers and map code as kernel symbols. Each path is checked once before the loop, by
//! its verdict and counter, as the bench does.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    fixtures,
    harness::{LOOPBACK_IFINDEX, Loaded, XDP_PASS, XDP_TX, run_program},
    packet::{Frame, TCP_ACK},
};

#[derive(Parser)]
struct Args {
    /// hit (flow-table hit), hit6 (its IPv6 twin), new (new flow: Maglev and an insert), pass
    /// (TCP not to a VIP).
    #[arg(long, default_value = "hit")]
    path: String,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn frame(i: u32, port: u16) -> Vec<u8> {
    let mut f = Frame::tcp(
        Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8),
        10_000 + (i % 50_000) as u16,
        VIP,
        port,
    );
    f.flags = TCP_ACK;
    f.build()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 1 << 20, 4)
        .vip(fixtures::three_backends("web", 80))
        .vip(
            fixtures::vip("web6", "2001:2::100", 80)
                .backend("2001:2::11")
                .backend("2001:2::12")
                .backend("2001:2::13"),
        )
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX).context("loading xdp-lb")?;
    let program = lb.dp().program();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut runs = 0u64;
    match args.path.as_str() {
        "hit" | "hit6" | "pass" => {
            let (f, verdict, counter) = match args.path.as_str() {
                "hit" => (frame(u32::MAX, 80), XDP_TX, Counter::Tx),
                // The bench's IPv6 twin: a segment to "web6" ([2001:2::100]:80).
                "hit6" => {
                    let mut tcp = xdp_lb_tests::packet::tcp_header();
                    tcp[13] = TCP_ACK;
                    (
                        xdp_lb_tests::packet::ipv6_frame(&[], 6, &tcp),
                        XDP_TX,
                        Counter::Tx,
                    )
                }
                _ => (frame(u32::MAX, 22), XDP_PASS, Counter::PassNotVip),
            };
            lb.run(&f)?;
            let before = lb.counter(counter);
            let r = run_program(program, &f, 1000)?;
            ensure!(
                r.action == verdict && lb.counter(counter) - before == 1000,
                "{} took another path",
                args.path
            );
            while Instant::now() < deadline {
                run_program(program, &f, 1_000_000)?;
                runs += 1_000_000;
            }
        }
        "new" => {
            // Distinct flows, never the same twice within a run (the table holds 1M; the LRU
            // evicts the oldest once full, as under a real stream of new flows).
            let mut i = 0u32;
            let before = lb.counter(Counter::NewFlow);
            while Instant::now() < deadline {
                for _ in 0..10_000 {
                    let r = run_program(program, &frame(i, 80), 1)?;
                    ensure!(r.action == XDP_TX, "new flow: {}", r.action);
                    i = i.wrapping_add(1);
                }
                runs += 10_000;
            }
            ensure!(
                lb.counter(Counter::NewFlow) - before == runs,
                "not every packet made a new flow"
            );
        }
        "ipip" => {
            // A tunnel VIP's hit, `repeat = 1` (encapsulation grows the frame: a repeat would
            // run on its own output), in a namespace whose FIB routes to the backend.
            drop(lb);
            runs = ipip_loop(deadline)?;
        }
        other => anyhow::bail!("--path {other}: hit, hit6, new, pass or ipip"),
    }
    eprintln!("profile: {} runs of {}", runs, args.path);
    Ok(())
}

/// The IPIP hit in a loop until `deadline`, in a namespace of its own (lan0, a router, a
/// route to the backend's subnet); the number of runs.
fn ipip_loop(deadline: Instant) -> anyhow::Result<u64> {
    let ns = xdp_lb_tests::NetNs::new("proftun")?;
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])?;
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "lan0"])?;
    ns.ip(&["link", "set", "lan0", "up"])?;
    ns.ip(&["link", "set", "lan1", "up"])?;
    ns.ip(&[
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        "02:99:00:00:00:01",
        "dev",
        "lan0",
        "nud",
        "permanent",
    ])?;
    ns.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.0.1"])?;
    ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    ns.sysctl("net.ipv4.conf.lo.forwarding", "1")?;
    xdp_lb_tests::in_netns(&ns.name, move || -> anyhow::Result<u64> {
        let text = fixtures::config("lan0")
            .bed("@PIN_DIR@", 1 << 20, 4)
            .key("tunnel_source", "198.18.0.2")
            .vip(
                fixtures::vip("tun", VIP, 80)
                    .key("forwarding", "ipip")
                    .check("type", "none")
                    .backend("198.18.1.11"),
            )
            .vip(
                fixtures::vip("dsr", VIP, 82)
                    .check("type", "none")
                    .backend("198.18.0.11"),
            )
            .to_string();
        let mut lb = Loaded::new(&text, LOOPBACK_IFINDEX)?;
        // The DSR backend behind lan0: both paths end in a redirect.
        let lan0 = xdp_lb::netlink::ifindex("lan0").context("lan0")?;
        let neighbours = lb.all_resolved(lan0);
        lb.apply_with(&neighbours)?;
        let program = lb.dp().program();
        let bench = xdp_lb_tests::harness::bench_programs(&["xdp_empty"])?;
        let empty = xdp_lb_tests::harness::xdp(&bench, "xdp_empty")?;
        let f = frame(u32::MAX, 80);
        let dsr = frame(u32::MAX, 82);
        let r = run_program(program, &f, 1)?;
        eprintln!(
            "ipip first: verdict {} proto {} ({:?})",
            r.action,
            r.out[23],
            lb.all_counters()
        );
        ensure!(
            run_program(program, &dsr, 1)?.action == xdp_lb_tests::harness::XDP_REDIRECT,
            "dsr"
        );
        let mut runs = 0;
        let (mut t_ipip, mut t_dsr, mut t_empty) = (0u64, 0u64, 0u64);
        while Instant::now() < deadline {
            for _ in 0..10_000 {
                t_ipip += run_program(program, &f, 1)?.duration_ns;
                t_dsr += run_program(program, &dsr, 1)?.duration_ns;
                t_empty += run_program(empty, &dsr, 1)?.duration_ns;
            }
            runs += 10_000;
        }
        let mean = |t: u64| t as f64 / runs as f64;
        eprintln!(
            "mean ns per call: ipip {:.1}, dsr {:.1}, empty {:.1}; (ipip - empty) / (dsr - empty) = {:.2}",
            mean(t_ipip),
            mean(t_dsr),
            mean(t_empty),
            (mean(t_ipip) - mean(t_empty)) / (mean(t_dsr) - mean(t_empty))
        );
        Ok(runs)
    })?
}
