//! The benchmarks themselves, run small: `cargo xtask bench [--compare]` must work on a fresh
//! machine after `cargo xtask setup`, and every row must carry traffic on the path it names
//! (each binary checks its rows' counters and fails otherwise). The figures are not judged
//! here: speed targets live in the bench report, never in timed assertions.

use std::process::Command;

use xdp_lb_tests::{harness::live_frames_supported, require_root, topology::target_dir};

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
        "floor + one insert into a 1M-entry LRU map",
        "its flows cycled (cache-cold, ablation)",
        "IPv6 floor:",
        "FLOWS6-shaped lookup, 40-byte key",
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
        "NAT new flow (issue 18 target",
        "report on vs off",
        "verify + decode + replay window",
        "health transition",
        "Issue 18 targets",
        "IPv6 against its IPv4 twin",
        "IPIP flow-table hit, one flow",
        "GUE new flow",
        "IP6IP6 flow-table hit",
        "xdp-lb decap: an IPIP packet stripped",
        "Targets (issue 29",
        "DSR hit, capture on, 1 in 1000 recorded",
        "DSR hit, capture on, every frame recorded",
    ] {
        assert!(report.contains(row), "{row} missing from {report}");
    }
    // A summary line that names a row the bench no longer has prints NaN.
    assert!(!report.contains("NaN"), "a summary lost its row: {report}");
}

/// Runs the comparison binary with `args` and `--out out`; its stdout, once it succeeded.
fn run_compare(args: &[&str], out: &std::path::Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

#[test]
fn the_rate_rows_alone_use_one_receive_queue_or_two() {
    require_root!();
    let out = scratch("compare-rate");
    let args = ["--rate-only", "--rounds", "1", "--frames", "40000"];
    run_compare(&args, &out);
    let report = std::fs::read_to_string(out.join("compare-rate.md")).unwrap();
    // Live frames where the kernel allows them, else AF_PACKET; the report says which.
    let sender = if live_frames_supported().unwrap() {
        "Frames sent by `BPF_PROG_TEST_RUN` live frames"
    } else {
        "Frames sent by an AF_PACKET socket"
    };
    assert!(report.contains(sender), "{sender} missing from {report}");
    // A row's last column: the shares of the forwarder's receive queues, "a% / b%".
    let queue_shares = |row: &str| -> Vec<f64> {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("{row} missing from {report}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        cells[cells.len() - 2]
            .split(" / ")
            .map(|p| p.trim_end_matches('%').parse().unwrap())
            .collect()
    };
    for row in ["xdp-lb, L2 DSR", "xdp-lb, NAT"] {
        let shares = queue_shares(row);
        assert_eq!(shares.len(), 2, "{row}: {report}");
        assert!(shares.contains(&100.0), "{row} used one queue: {report}");
    }
    for row in [
        "floor, two RX queues (two generator CPUs)",
        "xdp-lb, L2 DSR, two RX queues",
        "xdp-lb, NAT, two RX queues",
    ] {
        let shares = queue_shares(row);
        assert!(
            shares.len() == 2 && shares.iter().all(|s| *s >= 30.0),
            "{row} did not use both queues: {report}"
        );
    }
}

#[test]
fn the_comparison_runs_every_row_and_draws_its_chart() {
    require_root!();
    let out = scratch("compare");
    let stdout = run_compare(
        &[
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--frames",
            "50000",
            "--connections",
            "8",
        ],
        &out,
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
        "xdp-lb, IPIP tunnel",
        "IPIP tunnel against L2 DSR (issue 29 target",
        "xdp-lb, L2 DSR, UDP",
        "xdp-lb, NAT, UDP",
        "nftables DNAT, UDP",
        "xdp-lb, L2 DSR, two RX queues",
        "two RX queues (issue 18)",
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
