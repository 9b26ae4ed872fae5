//! The benchmarks themselves, run small: `cargo xtask bench [--compare]` must work on a fresh
//! machine after `cargo xtask setup`, and every row must carry traffic on the path it names
//! (each binary checks its rows' counters and fails otherwise). The figures are not judged
//! here: speed targets live in the bench report, never in timed assertions.

use std::process::Command;

use xdp_lb_tests::{require_root, topology::target_dir};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = target_dir()
        .join("testbed")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_per_packet_bench_runs_and_proves_its_rows() {
    require_root!();
    let out = scratch("bench");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--repeat", "1000", "--flows", "500", "--rounds", "1", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "floor:",
        "flow-table hit",
        "new flow",
        "new flow begun elsewhere (ACK first",
        "NAT new flow",
        "NAT established",
        "NAT reply",
        "IPv6 VIP packet, flow-table hit",
        "NAT66 new flow",
        "NAT66 established",
        "NAT66 reply",
        "UDP datagram, flow-table hit",
        "UDP datagram, new flow",
        "NAT UDP new flow",
        "NAT UDP established",
        "NAT UDP reply",
        "DSR flow-table hit, one flow, by this method",
        "NAT against the DSR flow-table hit, same method",
        "report on vs off",
        "verify + decode + replay window",
        "health transition",
    ] {
        assert!(report.contains(row), "{row} missing from {report}");
    }
}

#[test]
fn the_comparison_runs_every_row_and_draws_its_chart() {
    require_root!();
    let out = scratch("compare");
    let run = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args([
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--frames",
            "50000",
            "--connections",
            "8",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(out.join("compare.md")).unwrap();
    for row in [
        "backend directly",
        "xdp-lb, L2 DSR",
        "xdp-lb, NAT",
        "haproxy mode tcp",
        "nftables DNAT",
        "floor: bare XDP forwarder",
        "xdp-lb, L2 DSR, IPv6",
        "xdp-lb, L2 DSR, UDP",
        "xdp-lb, NAT, UDP",
        "nftables DNAT, UDP",
        "keep-alive",
        "agent RSS",
        "Scale out: active nodes behind ECMP",
        "the router dropped its",
        "| FLOWS |",
        "random-source SYN flood",
        "the kernel's SYN cookies (reference)",
    ] {
        assert!(report.contains(row), "{row} missing from {report}");
    }
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{svg}");
    assert!(
        stdout.contains("target:"),
        "the one-screen summary: {stdout}"
    );
}
