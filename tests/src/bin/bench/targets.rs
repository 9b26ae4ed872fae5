//! Issue 18's per-packet targets in the report, each beside the ablation row that bounds it.

use super::*;

/// Issue 18's per-packet targets (half of Katran's cost, in this bench's units), each against
/// the ablation row that bounds it from below: a target under the cost of the kernel's own map
/// operation alone cannot be met by the program.
pub(super) fn issue18_targets(md: &mut String, row: &dyn Fn(&str) -> f64) -> anyhow::Result<()> {
    let floor = row("floor: parse Eth/IPv4/TCP, rewrite MACs, XDP_TX");
    let lookup = row("floor + one flow-table lookup (ablation)");
    let insert = row("floor + one insert into a 1M-entry LRU map, distinct flows (ablation)");
    let cold = row("floor + one lookup in that map, its flows cycled (cache-cold, ablation)");
    let floor6 = row("IPv6 floor: parse Eth/IPv6/TCP, rewrite MACs, XDP_TX (ablation)");
    let lookup6 = row("IPv6 floor + one FLOWS6-shaped lookup, 40-byte key (ablation)");
    let hit = row("xdp-lb: VIP packet, flow-table hit");
    let hit6 = row("xdp-lb: IPv6 VIP packet, flow-table hit (FLOWS6)");
    let targets = [
        (
            "established hit",
            hit,
            40.0,
            format!("one lookup alone: {lookup:.0} ns"),
        ),
        (
            "new flow (SYN)",
            row("xdp-lb: VIP packet, new flow (Maglev + flow insert)"),
            240.0,
            format!("one LRU insert alone: {insert:.0} ns"),
        ),
        (
            "cache-cold hit",
            row("xdp-lb: flow-table hit, many flows cycled (cache-cold)"),
            125.0,
            format!("one cache-cold lookup alone: {cold:.0} ns"),
        ),
        (
            "TCP not to a VIP",
            row("xdp-lb: TCP not to a VIP (XDP_PASS)"),
            18.0,
            format!("the floor alone: {floor:.0} ns"),
        ),
    ];
    writeln!(
        md,
        "\nIssue 18 targets (half of Katran's cost as the issue measured it), each with the \
         ablation that bounds it from below:\n"
    )?;
    writeln!(
        md,
        "| path | ns | target | | bound (ablation, floor included) |"
    )?;
    writeln!(md, "|---|---:|---:|---|---|")?;
    for (path, ns, target, bound) in targets {
        let verdict = if ns <= target { "met" } else { "NOT met" };
        writeln!(
            md,
            "| {path} | {ns:.1} | ≤ {target:.0} | {verdict} | {bound} |"
        )?;
    }
    writeln!(
        md,
        "\nIPv6 against its IPv4 twin: flow-table hit {:.2}×, new flow {:.2}× (issue 18 target: \
         within 1.15×). The 40-byte IPv6 key's lookup alone costs {:.1} ns over its floor, \
         the 16-byte IPv4 key's {:.1} ns (the kernel hashes and compares the whole key).",
        hit6 / hit,
        row("xdp-lb: IPv6 VIP packet, new flow (Maglev + flow insert)")
            / row("xdp-lb: VIP packet, new flow (Maglev + flow insert)"),
        lookup6 - floor6,
        lookup - floor,
    )?;
    Ok(())
}
