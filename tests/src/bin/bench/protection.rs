//! The protection rows of `cargo xtask bench` (issue: flood resilience): a denied SYN, a SYN
//! over its source's limit, a new flow over the insert cap.

use super::*;

/// What a refused or unrecorded new flow costs (issue 13): the packets a flood is made of.
/// Each is timed with repeat=N on one frame the program never rewrites on these paths (a
/// refusal drops it; the unrecorded flow is a DSR MAC rewrite, whose output is again a SYN to
/// the VIP), and proven by its counter growing by exactly N.
pub(super) fn protection_rows(md: &mut String, args: &Args, floor_med: f64) -> anyhow::Result<()> {
    let n = args.repeat;
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 65536, 4)
        .key("flow_insert_rate", 1u32)
        .vip(
            fixtures::three_backends("guarded", 80)
                .list("deny", &["198.19.0.0/24"])
                .key("new_flows_per_source", "1/m")
                .key("new_flows_burst", 1u32),
        )
        .vip(fixtures::three_backends("open", 81))
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX)?;
    let program = lb.dp().program();
    let syn = |src: Ipv4Addr, sport: u16, port: u16| Frame::tcp(src, sport, VIP, port).build();
    let denied = syn(Ipv4Addr::new(198, 19, 0, 9), 4000, 80);
    let limited = syn(Ipv4Addr::new(198, 19, 7, 9), 4000, 80);
    // Its first flow (from another port) spends the source's bucket of 1.
    let first = syn(Ipv4Addr::new(198, 19, 7, 9), 4001, 80);
    ensure!(
        lb.run(&first)?.action == XDP_TX,
        "the limited source's first flow"
    );
    let unrecorded = syn(Ipv4Addr::new(198, 19, 8, 9), 4000, 81);
    let rows: [(&str, &[u8], u32, Counter); 3] = [
        (
            "SYN from a denied source (ACL lookup, XDP_DROP)",
            &denied,
            XDP_DROP,
            Counter::DropDenied,
        ),
        (
            "SYN over its source's limit (bucket, XDP_DROP)",
            &limited,
            XDP_DROP,
            Counter::DropRateLimited,
        ),
        (
            "new DSR flow over the insert cap (Maglev, no insert, XDP_TX)",
            &unrecorded,
            XDP_TX,
            Counter::FlowNotRecorded,
        ),
    ];
    writeln!(
        md,
        "\n## Protection (issue 13)\n\n| path | ns/packet | spread | × floor | method | path proof |\n|---|---:|---:|---:|---|---|"
    )?;
    for (name, frame, action, counter) in rows {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds {
            // The insert cap allows one insert a second per CPU: a round that crossed a
            // second and recorded the flow is not this path; remove the flow, time it again.
            let mut tries = 0;
            loop {
                let before = lb.counter(counter);
                let (a, ns) = per_run(program, frame, n)?;
                if a == action && lb.counter(counter) - before == n as u64 {
                    rounds.push(ns);
                    break;
                }
                tries += 1;
                ensure!(tries < 5, "{name}: took another path");
                let mut flows = lb.pinned_flow_table(map_names::FLOWS)?;
                let _ = flows.remove(&frame_key(frame)?);
            }
        }
        let (lo, hi) = spread(&rounds);
        let m = median(&rounds);
        writeln!(
            md,
            "| {name} | {m:.1} | {lo:.1}–{hi:.1} | {:.2}× | repeat={n} | {} +{n} per round |",
            m / floor_med,
            counter.name()
        )?;
    }
    Ok(())
}
