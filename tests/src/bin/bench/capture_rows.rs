//! The capture rows of `cargo xtask bench` (issue 30): what `xdp-lb capture` costs a DSR
//! flow-table hit when it is off (the program reads one word), on with 1-in-1000 sampling (the
//! filter and the per-CPU count on every frame, a record on one in 1000) and on for every frame
//! (a 2 KiB ring-buffer record and a copy of 256 bytes each).
//!
//! The hit repeats itself (DSR rewrites only the MACs), so each row is `repeat = N` on one
//! frame, proven by CAPTURE_STATS: matched grows by N (on) or not at all (off), recorded by N /
//! every. The every-frame row runs 1 500 repeats, what the 4 MiB ring holds without a loss
//! (lost proven 0), and the ring is drained between rounds.

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use xdp_lb_common::{
    CAPTURE_ANY, CAPTURE_WHAT_DROPS, CAPTURE_WHAT_SENT, CaptureConfig, CaptureStats,
};

use super::*;

fn open(lb: &Loaded, name: &str) -> anyhow::Result<Map> {
    let data = MapData::from_pin(lb.pin_dir.join(name)).with_context(|| name.to_owned())?;
    Ok(Map::from_map_data(data)?)
}

fn stats(m: &PerCpuArray<MapData, CaptureStats>) -> anyhow::Result<CaptureStats> {
    let mut t = CaptureStats::default();
    for s in m.get(&0, 0)?.iter() {
        t.matched += s.matched;
        t.recorded += s.recorded;
        t.lost += s.lost;
    }
    Ok(t)
}

pub(super) fn capture_rows(md: &mut String, args: &Args) -> anyhow::Result<()> {
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 65536, 4)
        .vip(fixtures::three_backends("web", 80))
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX)?;
    let program = lb.dp().program();
    let hit = flow(7).build();
    ensure!(lb.run(&hit)?.action == XDP_TX, "the warm-up makes the flow");
    let mut config: Array<MapData, CaptureConfig> =
        Array::try_from(open(&lb, map_names::CAPTURE_CONFIG)?)?;
    let mut ring = RingBuf::try_from(open(&lb, map_names::CAPTURE)?)?;
    let counts: PerCpuArray<MapData, CaptureStats> =
        PerCpuArray::try_from(open(&lb, map_names::CAPTURE_STATS)?)?;
    let on = |every: u32| CaptureConfig {
        every,
        snaplen: 256,
        vip_id: CAPTURE_ANY,
        backend_id: CAPTURE_ANY,
        what: CAPTURE_WHAT_SENT | CAPTURE_WHAT_DROPS,
        _pad: 0,
        until_ns: u64::MAX,
    };
    let every_frame_repeat = 1_500u32.min(args.repeat);
    // (name, config, repeat, matched per run, recorded per run)
    let rows = [
        (
            "DSR hit, capture off",
            CaptureConfig::default(),
            args.repeat,
            0u64,
        ),
        (
            "DSR hit, capture on, 1 in 1000 recorded",
            on(1000),
            args.repeat,
            1000,
        ),
        (
            "DSR hit, capture on, every frame recorded (256 B)",
            on(1),
            every_frame_repeat,
            1,
        ),
    ];
    let mut results: Vec<(&str, Vec<f64>, String)> = rows
        .iter()
        .map(|r| (r.0, Vec::new(), String::new()))
        .collect();
    for _ in 0..args.rounds {
        for (i, (name, cfg, repeat, every)) in rows.iter().enumerate() {
            config.set(0, *cfg, 0)?;
            let before = stats(&counts)?;
            let tx0 = lb.counter(Counter::Tx);
            let (a, ns) = per_run(program, &hit, *repeat)?;
            let after = stats(&counts)?;
            config.set(0, CaptureConfig::default(), 0)?;
            let mut drained = 0u64;
            while ring.next().is_some() {
                drained += 1;
            }
            let matched = after.matched - before.matched;
            let recorded = after.recorded - before.recorded;
            ensure!(
                a == XDP_TX && lb.counter(Counter::Tx) - tx0 == *repeat as u64,
                "{name}: took another path"
            );
            let expected = if *every == 0 { 0 } else { *repeat as u64 };
            ensure!(
                matched == expected,
                "{name}: matched {matched}, expected {expected}"
            );
            if *every > 0 {
                // The sample counter carries over rounds: within one of N / every.
                let want = *repeat as u64 / every;
                ensure!(
                    recorded.abs_diff(want) <= 1
                        && drained == recorded
                        && after.lost == before.lost,
                    "{name}: recorded {recorded} (drained {drained}, lost {}), expected {want}",
                    after.lost - before.lost
                );
            }
            results[i].1.push(ns);
            results[i].2 = format!(
                "repeat={repeat}; CAPTURE_STATS matched +{matched}, recorded +{recorded}, lost +0"
            );
        }
    }
    let off = median(&results[0].1);
    writeln!(
        md,
        "\n## Capture (issue 30)\n\n| path | ns/packet | spread | × capture off | + ns | path proof |\n|---|---:|---:|---:|---:|---|"
    )?;
    for (name, rounds, proof) in &results {
        let (lo, hi) = spread(rounds);
        let m = median(rounds);
        writeln!(
            md,
            "| {name} | {m:.1} | {lo:.1}–{hi:.1} | {:.2}× | {:+.1} | {proof} |",
            m / off,
            m - off
        )?;
    }
    writeln!(
        md,
        "\nOff, the program's cost is one array read per forwarded or dropped frame; it is inside the \"capture off\" row, which is the DSR hit row of the main table timed again here."
    )?;
    Ok(())
}
