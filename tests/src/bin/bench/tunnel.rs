//! The tunnel rows of `cargo xtask bench` (issue 29): IPIP, GUE and IP6IP6 encapsulation
//! (a flow-table hit, and a new flow) beside the L2 DSR hit timed the same way, and the
//! backends' decapsulation program beside the floor.
//!
//! Encapsulation grows the frame at its front, so a `repeat = N` loop would run on its own
//! output (the second run sees the outer packet, no VIP's): every row here is `repeat = 1`
//! over the same packet (hits) or distinct ones (new flows), rebased like the other
//! `repeat = 1` rows, and each call's output is checked (the outer protocol and destination).
//! `bpf_fib_lookup` needs routes and a neighbour: the rows run in a namespace of their own
//! (lan0 198.18.0.2/24 and 2001:2::2/64, the router resolved, the backends' subnets routed
//! through it), where the tunnel's packets leave by a redirect to lan0; the DSR yardstick's
//! backend is resolved by the harness (ifindex 1: XDP_TX), as in the other rows.

use super::*;

const IPIP_PORT: u16 = 80;
const GUE_PORT_VIP: u16 = 81;
const DSR_PORT: u16 = 82;

fn tunnel_config() -> String {
    let three = |name: &str, port: u16, mode: &str| {
        (1..=3).fold(
            fixtures::vip(name, "198.18.0.100", port)
                .key("forwarding", mode)
                .check("type", "none"),
            |v, i| v.backend(format!("198.18.{i}.11")),
        )
    };
    let ip6ip6 = (1..=3).fold(
        fixtures::vip("tun6", "2001:2::100", 80)
            .key("forwarding", "ipip")
            .check("type", "none"),
        |v, i| v.backend(format!("2001:2:{i}::11")),
    );
    fixtures::config("lan0")
        .bed("@PIN_DIR@", 1 << 20, 8)
        .key("flow_table_size_ipv6", 1 << 17)
        .key("tunnel_source", vec!["198.18.0.2", "2001:2::2"])
        .vip(three("ipip", IPIP_PORT, "ipip"))
        .vip(three("gue", GUE_PORT_VIP, "gue"))
        .vip(ip6ip6)
        .vip(
            fixtures::vip("web", "198.18.0.100", DSR_PORT)
                .check("type", "none")
                .backend("198.18.0.11"),
        )
        .to_string()
}

/// The namespace the rows' FIB lookups see.
fn namespace() -> anyhow::Result<xdp_lb_tests::NetNs> {
    xdp_lb_tests::tunnel::routed_bed("benchtun")
}

struct TunnelFigures {
    dsr_hot: Vec<f64>,
    ipip_hot: Vec<f64>,
    ipip_new: Vec<f64>,
    gue_hot: Vec<f64>,
    gue_new: Vec<f64>,
    ip6ip6_hot: Vec<f64>,
    ip6ip6_new: Vec<f64>,
    decap: Vec<f64>,
    floor_1: Vec<f64>,
    empty_1: Vec<f64>,
}

/// The tunnel rows, appended to the report.
pub(super) fn tunnel_rows(
    md: &mut String,
    args: &Args,
    floor: f64,
    empty_n: f64,
) -> anyhow::Result<()> {
    let ns = namespace()?;
    let (flows, rounds) = (args.flows, args.rounds);
    // The kernel's run-time statistics, on while these rows run.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF stats")?;
    let m = xdp_lb_tests::in_netns(&ns.name, move || measure(flows, rounds))??;
    drop(stats);
    // The statistics' own cost (two clock reads a run) is what they report for the empty
    // program: taken out, and the empty program's `repeat = N` cost put back, so that the
    // rows stand on the other rows' footing.
    let rebase = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .zip(&m.empty_1)
            .map(|(x, e1)| x - e1 + empty_n)
            .collect()
    };
    writeln!(md, "\n## Tunnel forwarding (issue 29)\n")?;
    writeln!(
        md,
        "Each row: `repeat=1` × {flows} calls (one flow for a hit, distinct flows for new \
         flows), timed by the kernel's BPF statistics (the program's run time alone: a \
         `repeat=1` call's syscall is not in it), minus what they report for the empty program \
         (their own clock reads), plus the empty program's `repeat=N` per-run cost \
         ({empty_n:.1} ns); median of {rounds} rounds. Every call's output is checked: its \
         outer protocol and destination (or, for decap, the inner packet first).\n"
    )?;
    writeln!(md, "| path | ns/packet | spread | × floor | path proof |")?;
    writeln!(md, "|---|---:|---:|---:|---|")?;
    let rows = [
        (
            "L2 DSR flow-table hit, one flow, by this method (the yardstick)",
            rebase(&m.dsr_hot),
            "redirect to lan0 (as the tunnels'), MACs only",
        ),
        (
            "IPIP flow-table hit, one flow",
            rebase(&m.ipip_hot),
            "redirect, outer IPv4 proto 4 to the backend",
        ),
        (
            "IPIP new flow (SYN: Maglev + flow insert + FIB)",
            rebase(&m.ipip_new),
            "new_flow +N, outer proto 4",
        ),
        (
            "GUE flow-table hit, one flow",
            rebase(&m.gue_hot),
            "redirect, outer UDP to 6080",
        ),
        (
            "GUE new flow",
            rebase(&m.gue_new),
            "new_flow +N, outer UDP to 6080",
        ),
        (
            "IP6IP6 flow-table hit, one flow",
            rebase(&m.ip6ip6_hot),
            "redirect, outer IPv6 next header 41",
        ),
        (
            "IP6IP6 new flow",
            rebase(&m.ip6ip6_new),
            "new_flow +N, outer next header 41",
        ),
        (
            "xdp-lb decap: an IPIP packet stripped and handed up",
            rebase(&m.decap),
            "XDP_PASS, the inner packet first",
        ),
        (
            "floor by this method (repeat=1, rebased)",
            rebase(&m.floor_1),
            "XDP_TX",
        ),
    ];
    for (name, v, proof) in &rows {
        let (lo, hi) = spread(v);
        let med = median(v);
        writeln!(
            md,
            "| {name} | {med:.1} | {lo:.1}–{hi:.1} | {:.2}× | {proof} |",
            med / floor
        )?;
    }
    let of = |prefix: &str| {
        rows.iter()
            .find(|(n, _, _)| n.starts_with(prefix))
            .map_or(f64::NAN, |(_, v, _)| median(v))
    };
    let ipip = of("IPIP flow-table hit") / of("L2 DSR flow-table hit");
    let decap = of("xdp-lb decap") / of("floor by this method");
    writeln!(
        md,
        "\nTargets (issue 29, ratios in this run): IPIP hit ≤ 1.3× the L2 DSR hit — {ipip:.2}× ({}); \
         decap ≤ 2× the floor (both `repeat=1`, rebased) — {decap:.2}× ({}). GUE hit {:.2}×, \
         IP6IP6 hit {:.2}× the L2 DSR hit.",
        if ipip <= 1.3 { "met" } else { "NOT met" },
        if decap <= 2.0 { "met" } else { "NOT met" },
        of("GUE flow-table hit") / of("L2 DSR flow-table hit"),
        of("IP6IP6 flow-table hit") / of("L2 DSR flow-table hit"),
    )?;
    Ok(())
}

/// `repeat = 1` calls of `program` on each of `frames` (`times` over the first if `times` is
/// given); each output must pass `check`: the program's mean run time, by the kernel's BPF
/// statistics (its entry to its exit, callees included; the syscall around it, which a
/// `repeat = 1` call's own figure carries and which is noisy here, is not in it).
fn mean_run(
    program: &Xdp,
    frames: &[Vec<u8>],
    times: Option<u32>,
    check: &dyn Fn(&xdp_lb_tests::harness::Run) -> bool,
    what: &str,
) -> anyhow::Result<f64> {
    let n = times.unwrap_or(frames.len() as u32);
    let before = program.info()?;
    for i in 0..n {
        let f = if times.is_some() {
            &frames[0]
        } else {
            &frames[i as usize]
        };
        let r = run_program(program, f, 1)?;
        ensure!(
            check(&r),
            "{what}: a call took another path (verdict {})",
            r.action
        );
    }
    let after = program.info()?;
    let runs = after.run_count() - before.run_count();
    ensure!(
        runs == n as u64,
        "{what}: BPF statistics counted {runs} runs of {n}"
    );
    Ok((after.run_time() - before.run_time()).as_nanos() as f64 / runs as f64)
}

fn measure(flows: u32, rounds: usize) -> anyhow::Result<TunnelFigures> {
    use xdp_lb_tests::harness::XDP_REDIRECT;
    let mut lb =
        Loaded::new(&tunnel_config(), LOOPBACK_IFINDEX).context("loading xdp-lb (tunnel)")?;
    // The DSR yardstick's backend behind lan0 too, so that it leaves by a redirect as the
    // tunnel rows' packets do (not by XDP_TX, a different and cheaper verdict).
    let lan0 = xdp_lb::netlink::ifindex("lan0").context("lan0")?;
    let neighbours = lb.all_resolved(lan0);
    lb.apply_with(&neighbours)?;
    let bench_obj = bench_programs(&["xdp_empty", "xdp_floor"])?;
    let (empty, floor) = (xdp(&bench_obj, "xdp_empty")?, xdp(&bench_obj, "xdp_floor")?);
    let program = lb.dp().program() as *const Xdp;
    // SAFETY: as in main: `lb` outlives the reference; only its maps change meanwhile.
    let program: &Xdp = unsafe { &*program };
    let packet = |i: u32, port: u16, flags: u8| {
        let mut f = flow(i);
        f.dport = port;
        f.flags = flags;
        f.build()
    };
    let v4_dst_of = |o: &[u8]| {
        o.get(30..33)
            .is_some_and(|d| d[0] == 198 && d[1] == 18 && d[2] >= 1)
    };
    let ipip_ok = |r: &xdp_lb_tests::harness::Run| {
        r.action == XDP_REDIRECT && r.out[23] == 4 && v4_dst_of(&r.out)
    };
    let gue_ok = |r: &xdp_lb_tests::harness::Run| {
        r.action == XDP_REDIRECT && r.out[23] == 17 && r.out[36..38] == 6080u16.to_be_bytes()
    };
    let ip6ip6_ok = |r: &xdp_lb_tests::harness::Run| {
        r.action == XDP_REDIRECT && r.out[12..14] == [0x86, 0xdd] && r.out[20] == 41
    };
    let dsr_ok = |r: &xdp_lb_tests::harness::Run| r.action == XDP_REDIRECT && r.out[23] == 6;
    let floor_ok = |r: &xdp_lb_tests::harness::Run| r.action == XDP_TX;
    // One flow of each, made (not timed).
    let (ipip_hit, gue_hit, dsr_hit) = (
        packet(u32::MAX, IPIP_PORT, TCP_ACK),
        packet(u32::MAX, GUE_PORT_VIP, TCP_ACK),
        packet(u32::MAX, DSR_PORT, TCP_ACK),
    );
    let ip6ip6_hit = flow6(u32::MAX, TCP_ACK);
    for (f, ok, what) in [
        (&ipip_hit, &ipip_ok as &dyn Fn(&_) -> bool, "IPIP"),
        (&gue_hit, &gue_ok, "GUE"),
        (&dsr_hit, &dsr_ok, "DSR"),
        (&ip6ip6_hit, &ip6ip6_ok, "IP6IP6"),
    ] {
        let r = run_program(program, f, 1)?;
        ensure!(
            ok(&r),
            "{what}: the first packet took another path ({:?})",
            lb.all_counters()
        );
    }
    // The decapsulation program, with the backend's address as its own, and an IPIP packet:
    // the IPIP row's own output.
    let pin =
        std::path::PathBuf::from(format!("/sys/fs/bpf/xlbt{}-benchdecap", std::process::id()));
    let mut decap = xdp_lb::decap::Decap::load(&pin, Some(6080))?;
    let local: std::collections::BTreeSet<std::net::IpAddr> = (1..=3)
        .map(|i| std::net::IpAddr::from([198, 18, i, 11]))
        .collect();
    decap.set_local(&local)?;
    let encapsulated = run_program(program, &ipip_hit, 1)?.out;
    let inner_first = ipip_hit[14..34].to_vec();
    let decap_ok = move |r: &xdp_lb_tests::harness::Run| {
        r.action == XDP_PASS && r.out[12..14] == [0x08, 0x00] && r.out[14..34] == inner_first[..]
    };
    let new4 =
        |port: u16| -> Vec<Vec<u8>> { (0..flows).map(|i| packet(i, port, TCP_SYN)).collect() };
    let (ipip_new_frames, gue_new_frames) = (new4(IPIP_PORT), new4(GUE_PORT_VIP));
    let ip6ip6_new_frames: Vec<Vec<u8>> = (0..flows).map(|i| flow6(i, TCP_SYN)).collect();
    let mut f = TunnelFigures {
        dsr_hot: Vec::new(),
        ipip_hot: Vec::new(),
        ipip_new: Vec::new(),
        gue_hot: Vec::new(),
        gue_new: Vec::new(),
        ip6ip6_hot: Vec::new(),
        ip6ip6_new: Vec::new(),
        decap: Vec::new(),
        floor_1: Vec::new(),
        empty_1: Vec::new(),
    };
    for round in 0..rounds {
        eprintln!("bench: tunnel round {}/{rounds}", round + 1);
        f.empty_1.push(mean_run(
            empty,
            std::slice::from_ref(&dsr_hit),
            Some(flows),
            &|r| r.action == XDP_PASS,
            "empty",
        )?);
        f.floor_1.push(mean_run(
            floor,
            std::slice::from_ref(&dsr_hit),
            Some(flows),
            &floor_ok,
            "floor",
        )?);
        f.dsr_hot.push(mean_run(
            program,
            std::slice::from_ref(&dsr_hit),
            Some(flows),
            &dsr_ok,
            "DSR hit",
        )?);
        f.ipip_hot.push(mean_run(
            program,
            std::slice::from_ref(&ipip_hit),
            Some(flows),
            &ipip_ok,
            "IPIP hit",
        )?);
        f.gue_hot.push(mean_run(
            program,
            std::slice::from_ref(&gue_hit),
            Some(flows),
            &gue_ok,
            "GUE hit",
        )?);
        f.ip6ip6_hot.push(mean_run(
            program,
            std::slice::from_ref(&ip6ip6_hit),
            Some(flows),
            &ip6ip6_ok,
            "IP6IP6 hit",
        )?);
        f.decap.push(mean_run(
            decap.program()?,
            std::slice::from_ref(&encapsulated),
            Some(flows),
            &decap_ok,
            "decap",
        )?);
        for (frames, ok, out, v6, what) in [
            (
                &ipip_new_frames,
                &ipip_ok as &dyn Fn(&_) -> bool,
                &mut f.ipip_new,
                false,
                "IPIP new flow",
            ),
            (
                &gue_new_frames,
                &gue_ok,
                &mut f.gue_new,
                false,
                "GUE new flow",
            ),
            (
                &ip6ip6_new_frames,
                &ip6ip6_ok,
                &mut f.ip6ip6_new,
                true,
                "IP6IP6 new flow",
            ),
        ] {
            let nf0 = lb.counter(Counter::NewFlow);
            out.push(mean_run(program, frames, None, ok, what)?);
            ensure!(
                lb.counter(Counter::NewFlow) - nf0 == flows as u64,
                "{what}: not every SYN made a flow"
            );
            if v6 {
                forget_flows6(&mut lb, frames)?;
            } else {
                forget_flows(&mut lb, frames)?;
            }
        }
    }
    decap.stop();
    Ok(f)
}
