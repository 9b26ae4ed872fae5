//! `cargo xtask`: set up the toolchain, build, run, test, demo and bench xdp-lb.
//!
//! Every verb that needs the toolchain calls `setup` first, which is idempotent and quick when
//! everything is already there, so a fresh machine needs nothing but this repository.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test, demo and bench xdp-lb")]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install what is missing (bpffs, Debian packages, rust-src, bpf-linker for LLVM 22,
    /// test peers) and check the toolchain. Idempotent; says what it did.
    Setup,
    /// Build the eBPF object and the agent, release.
    Build,
    /// Build and run `xdp-lb ARGS` as root, e.g. `cargo xtask run -- run --config FILE`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, then every test: the house style (rustfmt, clippy with the workspace's lints,
    /// warnings denied), unit tests, BPF_PROG_TEST_RUN packet tables and the network-namespace
    /// integration tests. Needs root. Exits non-zero on any failure.
    Test {
        /// Only run tests whose name contains this (passed to the test harness).
        filter: Option<String>,
    },
    /// Build, create a namespace topology, show balancing (DSR and NAT), a backend failing and
    /// a VRRP failover, then the scale-out part (three active nodes behind a router's ECMP,
    /// announced with BIRD, one of them killed), and tear everything down. Needs root.
    Demo {
        /// Only one part: `vrrp` (one active node, VRRP failover) or `scale-out`.
        #[arg(value_parser = ["vrrp", "scale-out"])]
        part: Option<String>,
    },
    /// Per-packet cost of each data-plane path against a floor program (BPF_PROG_TEST_RUN).
    Bench {
        /// Repeats per measured path (at least 1M for the report).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Also compare TCP through xdp-lb with the same traffic through haproxy and nftables
        /// DNAT and with no balancer, side by side (target/bench/compare.md).
        #[arg(long)]
        compare: bool,
        /// Only the comparison's forwarding-rate rows (frames through the floor, xdp-lb
        /// and nftables, one and two receive queues; a minute or two):
        /// target/bench/compare-rate.md. Implies no per-packet rows.
        #[arg(long, conflicts_with = "compare")]
        rate: bool,
    },
    /// The real XDP program under BPF_PROG_TEST_RUN with generated and mutated frames, each
    /// run judged (README "Testing"); failures saved under target/fuzz as reproducible cases.
    Fuzz {
        /// How long (minutes).
        #[arg(long, default_value_t = 1)]
        minutes: u64,
        /// The random seed (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Setup => setup::setup(),
        Verb::Build => {
            setup::setup()?;
            cargo(&["build", "--release", "-p", "xdp-lb"])
        }
        Verb::Run { args } => {
            require_root("run")?;
            setup::setup()?;
            cargo(&["build", "--release", "-p", "xdp-lb"])?;
            let bin = workspace_root().join("target/release/xdp-lb");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            if !status.success() {
                bail!("xdp-lb {} exited with {status}", args.join(" "));
            }
            Ok(())
        }
        Verb::Test { filter } => test(filter.as_deref()),
        Verb::Demo { part } => {
            require_root("demo")?;
            setup::setup()?;
            cargo(&["build", "--release", "-p", "xdp-lb"])?;
            if part.as_deref() != Some("scale-out") {
                tests_bin("demo", &[])?;
            }
            if part.as_deref() != Some("vrrp") {
                tests_bin("demo_scale_out", &[])?;
            }
            Ok(())
        }
        Verb::Fuzz { minutes, seed } => {
            require_root("fuzz")?;
            setup::setup()?;
            // The listeners' part runs the agent.
            cargo(&["build", "--release", "-p", "xdp-lb"])?;
            let minutes = minutes.to_string();
            let seed = seed.map(|s| s.to_string());
            let mut args = vec!["--minutes", minutes.as_str()];
            if let Some(s) = &seed {
                args.extend(["--seed", s.as_str()]);
            }
            tests_bin("fuzz", &args)
        }
        Verb::Bench {
            repeat,
            compare,
            rate,
        } => {
            require_root("bench")?;
            setup::setup()?;
            cargo(&["build", "--release", "-p", "xdp-lb"])?;
            if rate {
                step("forwarding rate");
                return tests_bin("compare", &["--rate-only"]);
            }
            tests_bin("bench", &["--repeat", &repeat.to_string()])?;
            if compare {
                step("comparison with the peers (TCP through namespaces)");
                tests_bin("compare", &[])?;
            }
            Ok(())
        }
    }
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    require_root("test")?;
    setup::setup()?;
    // The integration tests start the agent binary; build it in the profile they run in.
    cargo(&["build", "-p", "xdp-lb"])?;
    let bin = workspace_root().join("target/debug/xdp-lb");
    let filter_args: Vec<&str> = filter.into_iter().collect();
    if filter.is_none() {
        style()?;
    }
    step("unit tests (config, Maglev, state, shared types)");
    let mut args = vec!["test", "--workspace", "--exclude", "xdp-lb-tests", "--"];
    args.extend(&filter_args);
    cargo(&args)?;
    step("packet tables (BPF_PROG_TEST_RUN) and network-namespace integration tests");
    // One test at a time: they measure timing (failover, health) on a 2-core machine, and
    // XDP on veth shares the cores with everything else.
    let mut args = vec!["test", "-p", "xdp-lb-tests", "--", "--test-threads", "1"];
    args.extend(&filter_args);
    cargo_env(
        &args,
        &[
            ("XDP_LB_BIN", bin.as_os_str()),
            ("XDP_LB_REQUIRE_ROOT", "1".as_ref()),
        ],
    )?;
    step("all tests passed");
    Ok(())
}

/// The house style, enforced: formatting (stable rustfmt checks what nightly rustfmt wrote,
/// see rustfmt.toml) and the workspace's lint table, warnings denied.
fn style() -> anyhow::Result<()> {
    step("style (rustfmt, clippy with the workspace's lints)");
    cargo(&["fmt", "--all", "--", "--check"])
        .context("the tree is not formatted: run `cargo +nightly fmt --all`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn tests_bin(name: &str, extra: &[&str]) -> anyhow::Result<()> {
    let bin = workspace_root().join("target/release/xdp-lb");
    let mut args = vec![
        "run",
        "--release",
        "-q",
        "-p",
        "xdp-lb-tests",
        "--bin",
        name,
        "--",
    ];
    args.extend_from_slice(extra);
    cargo_env(&args, &[("XDP_LB_BIN", bin.as_os_str())])
}

pub fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn require_root(verb: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`cargo xtask {verb}` needs root (XDP, BPF maps and network namespaces): run it with sudo"
        );
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
