//! `cargo xtask fuzz` for 30 seconds: the real program, mutated frames of every path, each run
//! judged, then a running agent's control socket and HTTP endpoints under random and mutated
//! requests (see `src/bin/fuzz/`). The seed is from the clock and printed, so a failure here is
//! replayed with `cargo xtask fuzz --seed S`; its frames are saved under target/fuzz.

use std::process::Command;

use xdp_lb_tests::{require_root, topology::target_dir};

#[test]
fn thirty_seconds_of_mutated_frames_break_no_invariant() {
    require_root!();
    let out = target_dir()
        .join("fuzz")
        .join(format!("smoke-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fuzz"))
        .args(["--seconds", "30", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    println!("{stdout}");
    assert!(run.status.success(), "{stderr}\n{stdout}");
    // It reached the paths it claims to: forwarded (TX and redirect: DSR, NAT, tunnels),
    // refused, passed.
    for path in [
        "tx:",
        "redirect:",
        "new_flow:",
        "drop_truncated_ip:",
        "pass_not_vip:",
        "icmp_too_big_to_backend:",
        "drop_denied:",
    ] {
        assert!(stdout.contains(path), "no run reached {path}\n{stdout}");
    }
    // And the listeners took their share of abuse (the command fails if the agent did not
    // survive it or answer every request).
    assert!(
        stdout.contains("listeners: ") && stdout.contains(" control requests ("),
        "{stdout}"
    );
}
