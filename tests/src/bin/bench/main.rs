//! `cargo xtask bench`: the per-packet cost of each xdp-lb path, against a floor program
//! measured in the same run, through BPF_PROG_TEST_RUN.
//!
//! Honesty rules (shared/design/TESTBED.md):
//! - With `repeat = N` the kernel reruns the program on the *same* buffer without restoring
//!   it. DSR rewrites only the MACs, so a VIP packet stays a VIP packet and the flow-hit path
//!   repeats itself; each such row proves it by the counters growing by exactly N on that path.
//! - A new flow cannot repeat (the first run creates the flow), so that row is measured with
//!   `repeat = 1` calls over distinct flows, and so is the many-flows row (100k flows cycled,
//!   so lookups miss the CPU cache). A `repeat = 1` call carries a fixed overhead, measured with
//!   the empty program the same way and replaced by the empty program's `repeat = N` cost, so
//!   every row stands on the same footing: ns per run inside a `repeat = N` loop.
//! - Ratios are to the floor measured in the same run. The empty program's cost is reported
//!   too: it is in every figure, floor included.
//! - Every figure is the median of 5 rounds, with the spread (min–max) shown.

mod capture_rows;
mod control_plane;
mod frames;
mod nat;
mod protection;
mod sync_rows;
mod targets;
mod tunnel;

use std::{fmt::Write as _, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, bail, ensure};
use aya::programs::Xdp;
use clap::Parser;
use xdp_lb_common::{Counter, map_names};
use xdp_lb_tests::{
    fixtures,
    harness::{
        LOOPBACK_IFINDEX, Loaded, XDP_DROP, XDP_PASS, XDP_TX, bench_programs, run_program, xdp,
    },
    median,
    packet::{Frame, TCP_ACK, TCP_SYN},
    spread,
};

use self::frames::{flow, flow6, forget_flows, forget_flows6, frame_key, frame_key6, udp_flow};

#[derive(Parser)]
struct Args {
    /// Repeats per `repeat = N` measurement.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Distinct flows for the new-flow and many-flows rows.
    #[arg(long, default_value_t = 100_000)]
    flows: u32,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the report goes (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The DSR rows' VIPs: three backends, a flow table for the 100k-flow row; the IPv6 twin and
/// a UDP twin (DNS on :53).
fn config() -> String {
    fixtures::config("lo")
        .bed("@PIN_DIR@", 1 << 20, 4)
        // Room for one round's new IPv6 flows (they are removed after each round).
        .key("flow_table_size_ipv6", 1 << 17)
        .vip(fixtures::three_backends("web", 80))
        .vip(
            fixtures::three_backends("dns", 53)
                .key("protocol", "udp")
                .check("type", "none"),
        )
        .vip(
            fixtures::vip("web6", "2001:2::100", 80)
                .backend("2001:2::11")
                .backend("2001:2::12")
                .backend("2001:2::13"),
        )
        .to_string()
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

struct Row {
    name: &'static str,
    method: String,
    proof: String,
    /// Net ns per packet per round.
    rounds: Vec<f64>,
}

fn per_run(program: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, f64)> {
    let r = run_program(program, frame, repeat)?;
    Ok((r.action, r.duration_ns as f64))
}

/// Each frame run once (`repeat = 1`), each one required to end in XDP_TX: the mean ns/call.
fn mean_tx_run(program: &Xdp, frames: &[Vec<u8>], what: &str) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for f in frames {
        let (a, ns) = per_run(program, f, 1)?;
        ensure!(a == XDP_TX, "{what}: a frame was not sent back ({a})");
        sum += ns;
    }
    Ok(sum / frames.len() as f64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.repeat >= 1 && args.rounds >= 1 && args.flows >= 1,
        "arguments must be positive"
    );
    let n = args.repeat;

    let mut lb = Loaded::new(&config(), LOOPBACK_IFINDEX).context("loading xdp-lb")?;
    let mut bench_obj = bench_programs(&[
        "xdp_floor",
        "xdp_floor_lookup",
        "xdp_floor_insert",
        "xdp_floor6",
        "xdp_floor6_lookup",
        "xdp_empty",
    ])?;
    {
        let key6 = frame_key6(&flow6(u32::MAX, TCP_ACK));
        let mut m: aya::maps::HashMap<_, xdp_lb_common::FlowKey6, xdp_lb_common::FlowValue6> =
            aya::maps::HashMap::try_from(
                bench_obj.map_mut("BENCH_FLOWS6").context("BENCH_FLOWS6")?,
            )?;
        m.insert(key6, xdp_lb_common::FlowValue6::default(), 0)?;
    }
    // Owned, so the rounds can remove the insert ablation's flows while the programs are
    // borrowed.
    let mut bench_flows: aya::maps::HashMap<_, xdp_lb_common::FlowKey, xdp_lb_common::FlowValue> =
        aya::maps::HashMap::try_from(bench_obj.take_map("BENCH_FLOWS").context("BENCH_FLOWS")?)?;
    bench_flows.insert(
        frame_key(&flow(u32::MAX).build())?,
        xdp_lb_common::FlowValue::default(),
        0,
    )?;
    let floor = xdp(&bench_obj, "xdp_floor")?;
    let floor_lookup = xdp(&bench_obj, "xdp_floor_lookup")?;
    let floor_insert = xdp(&bench_obj, "xdp_floor_insert")?;
    let floor6 = xdp(&bench_obj, "xdp_floor6")?;
    let floor6_lookup = xdp(&bench_obj, "xdp_floor6_lookup")?;
    let empty = xdp(&bench_obj, "xdp_empty")?;
    let program = lb.dp().program() as *const Xdp;
    // SAFETY: `lb` outlives every use below and is not mutated while the reference lives,
    // except through its maps (a separate field).
    let program: &Xdp = unsafe { &*program };

    let hit_frame = flow(u32::MAX).build();
    let mut other_port = flow(u32::MAX);
    other_port.dport = 22;
    let pass_frame = other_port.build();

    // Single-run checks: each path does what its row claims, on bytes we can see.
    let r = run_program(floor, &hit_frame, 1)?;
    ensure!(
        r.action == XDP_TX && r.out[..6] != hit_frame[..6],
        "floor: expected XDP_TX with a new MAC"
    );
    let r = lb.run(&hit_frame)?;
    ensure!(
        r.action == XDP_TX && r.out[12..] == hit_frame[12..],
        "xdp-lb: expected a DSR XDP_TX"
    );
    ensure!(
        lb.counter(Counter::NewFlow) == 1,
        "the warm-up packet must create the flow"
    );
    let r = lb.run(&pass_frame)?;
    ensure!(
        r.action == XDP_PASS && r.out == pass_frame,
        "non-VIP: expected an untouched XDP_PASS"
    );
    let hit6_frame = flow6(u32::MAX, TCP_ACK);
    let r = lb.run(&hit6_frame)?;
    ensure!(
        r.action == XDP_TX && r.out[12..] == hit6_frame[12..] && lb.maps().flows6().count() == 1,
        "xdp-lb: expected an IPv6 DSR XDP_TX that made a flow in FLOWS6"
    );

    let hit_udp_frame = udp_flow(u32::MAX).build();
    let r = lb.run(&hit_udp_frame)?;
    ensure!(
        r.action == XDP_TX
            && r.out[12..] == hit_udp_frame[12..]
            && lb
                .maps()
                .flows()
                .any(|(k, _)| k.proto == xdp_lb_common::IPPROTO_UDP),
        "xdp-lb: expected a UDP DSR XDP_TX that made a UDP flow"
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut empty_n = Vec::new();
    let mut empty_1 = Vec::new();
    let mut floor_n = Vec::new();
    let mut floor_lookup_n = Vec::new();
    let mut floor_insert_1 = Vec::new();
    let mut floor_cold_1 = Vec::new();
    let mut floor6_n = Vec::new();
    let mut floor6_lookup_n = Vec::new();
    let mut hit = Vec::new();
    let mut pass = Vec::new();
    let mut new_flow = Vec::new();
    let mut new_flow_ack = Vec::new();
    let mut many = Vec::new();
    let mut hit6 = Vec::new();
    let mut new_flow6 = Vec::new();
    let mut hit_udp = Vec::new();
    let mut new_flow_udp = Vec::new();
    let new_udp_frames: Vec<Vec<u8>> = (0..args.flows)
        .map(|i| udp_flow(args.flows + i).build())
        .collect();
    // A new connection's first packet is its SYN.
    let new6_frames: Vec<Vec<u8>> = (0..args.flows).map(|i| flow6(i, TCP_SYN)).collect();

    // Pre-create the many-flows set once (their creation is not timed here).
    let many_frames: Vec<Vec<u8>> = (0..args.flows).map(|i| flow(i).build()).collect();
    let new_frames: Vec<Vec<u8>> = (0..args.flows)
        .map(|i| {
            let mut f = flow(args.flows + i);
            f.flags = TCP_SYN;
            f.build()
        })
        .collect();
    // A flow whose first packet here is an ACK: one that began on another node (a failover,
    // an ECMP change). DSR balances it like a new one, after a flow-table miss.
    let ack_first_frames: Vec<Vec<u8>> = (0..args.flows)
        .map(|i| flow(2 * args.flows + i).build())
        .collect();
    for f in &many_frames {
        ensure!(lb.run(f)?.action == XDP_TX, "creating the many-flows set");
    }

    for round in 0..args.rounds {
        eprintln!("bench: round {}/{}", round + 1, args.rounds);
        // Empty, repeat N and repeat 1.
        let (a, ns) = per_run(empty, &hit_frame, n)?;
        ensure!(a == XDP_PASS, "empty");
        empty_n.push(ns);
        let mut sum = 0.0;
        for _ in 0..args.flows {
            sum += per_run(empty, &hit_frame, 1)?.1;
        }
        empty_1.push(sum / args.flows as f64);

        // Floor, repeat N: constant MACs, so every repeat takes the same parse + TX path.
        let (a, ns) = per_run(floor, &hit_frame, n)?;
        ensure!(a == XDP_TX, "floor");
        floor_n.push(ns);
        let (a, ns) = per_run(floor_lookup, &hit_frame, n)?;
        ensure!(a == XDP_TX, "floor + lookup: the key must be found");
        floor_lookup_n.push(ns);
        let (a, ns) = per_run(floor6, &hit6_frame, n)?;
        ensure!(a == XDP_TX, "IPv6 floor");
        floor6_n.push(ns);
        let (a, ns) = per_run(floor6_lookup, &hit6_frame, n)?;
        ensure!(a == XDP_TX, "IPv6 floor + lookup: the key must be found");
        floor6_lookup_n.push(ns);

        // Flow-table hit, repeat N.
        let (tx0, nf0) = (lb.counter(Counter::Tx), lb.counter(Counter::NewFlow));
        let (a, ns) = per_run(program, &hit_frame, n)?;
        let (tx1, nf1) = (lb.counter(Counter::Tx), lb.counter(Counter::NewFlow));
        ensure!(
            a == XDP_TX && tx1 - tx0 == n as u64 && nf1 == nf0,
            "flow-hit row took another path"
        );
        hit.push(ns);

        // Not a VIP, repeat N.
        let p0 = lb.counter(Counter::PassNotVip);
        let (a, ns) = per_run(program, &pass_frame, n)?;
        ensure!(
            a == XDP_PASS && lb.counter(Counter::PassNotVip) - p0 == n as u64,
            "non-VIP row took another path"
        );
        pass.push(ns);

        // New flows: repeat 1 over flows never seen; remove them afterwards for the next round.
        let nf0 = lb.counter(Counter::NewFlow);
        let mut sum = 0.0;
        for f in &new_frames {
            let (a, ns) = per_run(program, f, 1)?;
            ensure!(a == XDP_TX, "new-flow row");
            sum += ns;
        }
        ensure!(
            lb.counter(Counter::NewFlow) - nf0 == args.flows as u64,
            "new-flow row: not every packet made a new flow"
        );
        new_flow.push(sum / args.flows as f64);
        forget_flows(&mut lb, &new_frames)?;

        // The same with an ACK first: flow-table miss, then as a new flow.
        let nf0 = lb.counter(Counter::NewFlow);
        let mut sum = 0.0;
        for f in &ack_first_frames {
            let (a, ns) = per_run(program, f, 1)?;
            ensure!(a == XDP_TX, "ACK-first row");
            sum += ns;
        }
        ensure!(
            lb.counter(Counter::NewFlow) - nf0 == args.flows as u64,
            "ACK-first row: not every packet made a new flow"
        );
        new_flow_ack.push(sum / args.flows as f64);
        forget_flows(&mut lb, &ack_first_frames)?;

        // Many established flows, repeat 1, cycled.
        let (tx0, nf0) = (lb.counter(Counter::Tx), lb.counter(Counter::NewFlow));
        let mut sum = 0.0;
        for f in &many_frames {
            let (a, ns) = per_run(program, f, 1)?;
            ensure!(a == XDP_TX, "many-flows row");
            sum += ns;
        }
        ensure!(
            lb.counter(Counter::Tx) - tx0 == args.flows as u64
                && lb.counter(Counter::NewFlow) == nf0,
            "many-flows row: some packets missed the flow table"
        );
        many.push(sum / args.flows as f64);

        // Ablations of the last three: the floor plus one insert into a flow-table-sized LRU
        // map (what a new flow's record alone costs), then plus one lookup of each of those
        // flows, cycled (a cache-cold hit's lookup alone). Removed again after the round.
        floor_insert_1.push(mean_tx_run(floor_insert, &new_frames, "floor + insert")?);
        floor_cold_1.push(mean_tx_run(
            floor_lookup,
            &new_frames,
            "floor + cold lookup",
        )?);
        for f in &new_frames {
            bench_flows.remove(&frame_key(f)?)?;
        }
    }

    // IPv6 rows in rounds of their own, after the IPv4 ones: the IPv4 rows then run on the
    // same memory and caches as without IPv6 (the before/after comparison of issue 15).
    for round in 0..args.rounds {
        eprintln!("bench: IPv6 round {}/{}", round + 1, args.rounds);
        // IPv6: flow-table hit (repeat N) and new flows (repeat 1), as the IPv4 rows.
        let (tx0, nf0) = (lb.counter(Counter::Tx), lb.counter(Counter::NewFlow));
        let (a, ns) = per_run(program, &hit6_frame, n)?;
        ensure!(
            a == XDP_TX
                && lb.counter(Counter::Tx) - tx0 == n as u64
                && lb.counter(Counter::NewFlow) == nf0,
            "IPv6 flow-hit row took another path"
        );
        hit6.push(ns);
        let nf0 = lb.counter(Counter::NewFlow);
        let mut sum = 0.0;
        for f in &new6_frames {
            let (a, ns) = per_run(program, f, 1)?;
            ensure!(a == XDP_TX, "IPv6 new-flow row");
            sum += ns;
        }
        ensure!(
            lb.counter(Counter::NewFlow) - nf0 == args.flows as u64,
            "IPv6 new-flow row: not every packet made a new flow"
        );
        new_flow6.push(sum / args.flows as f64);
        forget_flows6(&mut lb, &new6_frames)?;
    }

    // UDP rows, in rounds of their own as well (after the IPv6 ones, same reason).
    for round in 0..args.rounds {
        eprintln!("bench: UDP round {}/{}", round + 1, args.rounds);
        let (tx0, nf0) = (lb.counter(Counter::Tx), lb.counter(Counter::NewFlow));
        let (a, ns) = per_run(program, &hit_udp_frame, n)?;
        ensure!(
            a == XDP_TX
                && lb.counter(Counter::Tx) - tx0 == n as u64
                && lb.counter(Counter::NewFlow) == nf0,
            "UDP flow-hit row took another path"
        );
        hit_udp.push(ns);
        let nf0 = lb.counter(Counter::NewFlow);
        let mut sum = 0.0;
        for f in &new_udp_frames {
            let (a, ns) = per_run(program, f, 1)?;
            ensure!(a == XDP_TX, "UDP new-flow row");
            sum += ns;
        }
        ensure!(
            lb.counter(Counter::NewFlow) - nf0 == args.flows as u64,
            "UDP new-flow row: not every datagram made a new flow"
        );
        new_flow_udp.push(sum / args.flows as f64);
        forget_flows(&mut lb, &new_udp_frames)?;
    }

    // repeat=1 figures onto the repeat=N footing: remove the per-call overhead, keep the
    // per-run overhead every repeat=N figure has.
    let rebase = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .zip(&empty_1)
            .zip(&empty_n)
            .map(|((x, e1), en)| x - e1 + en)
            .collect()
    };
    rows.push(Row {
        name: "floor: parse Eth/IPv4/TCP, rewrite MACs, XDP_TX",
        method: format!("repeat={n}"),
        proof: "XDP_TX, MACs rewritten (single run checked)".into(),
        rounds: floor_n.clone(),
    });
    rows.push(Row {
        name: "floor + one flow-table lookup (ablation)",
        method: format!("repeat={n}"),
        proof: "XDP_TX only when the key is found".into(),
        rounds: floor_lookup_n.clone(),
    });
    rows.push(Row {
        name: "floor + one insert into a 1M-entry LRU map, distinct flows (ablation)",
        method: format!("repeat=1 × {} distinct flows", args.flows),
        proof: "XDP_TX only when the insert succeeds".into(),
        rounds: rebase(&floor_insert_1),
    });
    rows.push(Row {
        name: "floor + one lookup in that map, its flows cycled (cache-cold, ablation)",
        method: format!("repeat=1 × {} flows cycled", args.flows),
        proof: "XDP_TX only when the key is found".into(),
        rounds: rebase(&floor_cold_1),
    });
    rows.push(Row {
        name: "IPv6 floor: parse Eth/IPv6/TCP, rewrite MACs, XDP_TX (ablation)",
        method: format!("repeat={n}"),
        proof: "XDP_TX (the IPv6 hit's frame)".into(),
        rounds: floor6_n.clone(),
    });
    rows.push(Row {
        name: "IPv6 floor + one FLOWS6-shaped lookup, 40-byte key (ablation)",
        method: format!("repeat={n}"),
        proof: "XDP_TX only when the key is found".into(),
        rounds: floor6_lookup_n.clone(),
    });
    rows.push(Row {
        name: "xdp-lb: VIP packet, flow-table hit",
        method: format!("repeat={n}"),
        proof: format!("tx +{n}, new_flow +0 per round"),
        rounds: hit.clone(),
    });
    rows.push(Row {
        name: "xdp-lb: VIP packet, new flow (Maglev + flow insert)",
        method: format!("repeat=1 × {} distinct SYNs", args.flows),
        proof: format!("new_flow +{} per round", args.flows),
        rounds: rebase(&new_flow),
    });
    rows.push(Row {
        name: "xdp-lb: VIP packet, new flow begun elsewhere (ACK first: miss + Maglev + insert)",
        method: format!("repeat=1 × {} distinct ACKs", args.flows),
        proof: format!("new_flow +{} per round", args.flows),
        rounds: rebase(&new_flow_ack),
    });
    rows.push(Row {
        name: "xdp-lb: flow-table hit, many flows cycled (cache-cold)",
        method: format!("repeat=1 × {} flows cycled", args.flows),
        proof: format!("tx +{}, new_flow +0 per round", args.flows),
        rounds: rebase(&many),
    });
    rows.push(Row {
        name: "xdp-lb: TCP not to a VIP (XDP_PASS)",
        method: format!("repeat={n}"),
        proof: format!("pass_not_vip +{n} per round"),
        rounds: pass.clone(),
    });
    rows.push(Row {
        name: "xdp-lb: IPv6 VIP packet, flow-table hit (FLOWS6)",
        method: format!("repeat={n}"),
        proof: format!("tx +{n}, new_flow +0 per round"),
        rounds: hit6.clone(),
    });
    rows.push(Row {
        name: "xdp-lb: IPv6 VIP packet, new flow (Maglev + flow insert)",
        method: format!("repeat=1 × {} distinct flows", args.flows),
        proof: format!("new_flow +{} per round", args.flows),
        rounds: rebase(&new_flow6),
    });

    rows.push(Row {
        name: "xdp-lb: UDP datagram, flow-table hit",
        method: format!("repeat={n}"),
        proof: format!("tx +{n}, new_flow +0 per round"),
        rounds: hit_udp.clone(),
    });
    rows.push(Row {
        name: "xdp-lb: UDP datagram, new flow (Maglev + flow insert)",
        method: format!("repeat=1 × {} distinct flows", args.flows),
        proof: format!("new_flow +{} per round", args.flows),
        rounds: rebase(&new_flow_udp),
    });

    let floor_med = median(&floor_n);
    let mut md = String::new();
    writeln!(md, "# xdp-lb bench: per-packet cost (BPF_PROG_TEST_RUN)\n")?;
    writeln!(md, "Machine: {}.", xdp_lb_tests::machine_label())?;
    writeln!(
        md,
        "Empty program: {:.1} ns/run with repeat={n} (in every figure below), {:.1} ns/call with repeat=1 \
         (removed from the repeat=1 rows). Median of {} rounds; spread min–max.\n",
        median(&empty_n),
        median(&empty_1),
        args.rounds
    )?;
    writeln!(
        md,
        "| path | ns/packet | spread | × floor | method | path proof |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---|---|")?;
    for r in &rows {
        let (lo, hi) = spread(&r.rounds);
        let m = median(&r.rounds);
        writeln!(
            md,
            "| {} | {m:.1} | {lo:.1}–{hi:.1} | {:.2}× | {} | {} |",
            r.name,
            m / floor_med,
            r.method,
            r.proof
        )?;
    }
    let twin = |row: &str| {
        rows.iter()
            .find(|r| r.name == row)
            .map(|r| median(&r.rounds))
            .unwrap_or(f64::NAN)
    };
    let hit_ratio = twin("xdp-lb: VIP packet, flow-table hit") / floor_med;
    writeln!(
        md,
        "\nTarget (issue: data plane v1): flow-table hit ≤ 1.5× the floor — {} ({hit_ratio:.2}×).",
        if hit_ratio <= 1.5 { "met" } else { "NOT met" }
    )?;
    targets::issue18_targets(&mut md, &twin)?;
    writeln!(
        md,
        "\nUDP against its TCP twin: flow-table hit {:.2}×, new flow {:.2}× (issue 18 target: within 1.15×).",
        twin("xdp-lb: UDP datagram, flow-table hit") / twin("xdp-lb: VIP packet, flow-table hit"),
        twin("xdp-lb: UDP datagram, new flow (Maglev + flow insert)")
            / twin("xdp-lb: VIP packet, new flow (Maglev + flow insert)"),
    )?;
    nat::nat_rows(
        &mut md,
        &args,
        floor_med,
        median(&empty_n),
        twin("floor + one insert into a 1M-entry LRU map, distinct flows (ablation)"),
    )?;
    tunnel::tunnel_rows(&mut md, &args, floor_med, median(&empty_n))?;
    protection::protection_rows(&mut md, &args, floor_med)?;
    capture_rows::capture_rows(&mut md, &args)?;
    sync_rows::sync_rows(&mut md, &args)?;
    control_plane::control_plane(&mut md, args.rounds)?;
    print!("{md}");
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| xdp_lb_tests::topology::target_dir().join("bench"));
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join("report.md");
    std::fs::write(&path, &md)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}
