//! `cargo xtask setup`: everything a fresh Debian 12 machine with only rustup needs, installed
//! idempotently, each step named so a failure says which one.
//!
//! The facts behind each step are in shared/design/TESTBED.md: aya 0.14 builds its eBPF crate
//! with the nightly toolchain and rust-src (`-Z build-std=core`), and bpf-linker must be built
//! against the same LLVM major as that rustc (22), from Debian's llvm-22-dev.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The LLVM major that rustc (nightly) and bpf-linker must share.
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Needed to build bpf-linker against LLVM 22.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
];
/// Used by the test bed, the demo and the bench (and the VRRP/health/bench issues' peers).
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "iputils-ping",
    "procps",
    "curl",
    "keepalived",
    "haproxy",
    // The routing engine of the scale-out tests and demo (BGP + BFD to a router namespace).
    "bird2",
    "nftables",
    "wrk",
    // Backends for the comparative bench (fast enough not to be what is measured).
    "nginx-light",
    // DNS servers and the resolver client of the UDP tests (dnsmasq-base: the binary without
    // a system service that would take port 53).
    "dnsmasq-base",
    "bind9-dnsutils",
    // promtool checks /metrics; headless Chromium renders /stats for its screenshot.
    "prometheus",
    "chromium",
    // Reads back what `xdp-lb capture` wrote.
    "tcpdump",
];

pub(crate) fn setup() -> anyhow::Result<()> {
    crate::step("setup: checking the toolchain and the test peers");
    let mut did = Vec::new();
    mount_bpffs(&mut did).context("setup step `mount bpffs on /sys/fs/bpf`")?;
    apt_packages(&mut did).context("setup step `install Debian packages`")?;
    rust_src(&mut did).context("setup step `rust-src for the nightly toolchain`")?;
    check_nightly_llvm().context("setup step `check the nightly toolchain's LLVM`")?;
    bpf_linker(&mut did).context("setup step `bpf-linker built against LLVM 22`")?;
    if did.is_empty() {
        eprintln!("setup: everything was already in place");
    } else {
        for d in &did {
            eprintln!("setup: {d}");
        }
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn mount_bpffs(did: &mut Vec<String>) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    }) {
        return Ok(());
    }
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    did.push("mounted bpffs on /sys/fs/bpf".into());
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages(did: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    did.push(format!("installed {}", missing.join(" ")));
    // The tests start their own haproxy/keepalived; the packages' default services must not
    // hold ports or VIPs on the host.
    if std::path::Path::new("/run/systemd/system").exists() {
        // One unit at a time: systemctl stops at the first unit it does not know.
        for unit in ["haproxy", "keepalived", "prometheus", "nginx", "bird"] {
            let _ = Command::new("systemctl")
                .args(["disable", "--now", unit])
                .status();
        }
    }
    Ok(())
}

fn rust_src(did: &mut Vec<String>) -> anyhow::Result<()> {
    let list = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("is the nightly toolchain installed? (`rustup toolchain list`)")?;
    if list.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    did.push("added rust-src to the nightly toolchain".into());
    Ok(())
}

/// The eBPF crate is compiled by nightly rustc and linked by bpf-linker; both must use the same
/// LLVM major or the link fails with bitcode errors. Pin by checking, not by hoping.
fn check_nightly_llvm() -> anyhow::Result<()> {
    let v = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = v
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "the nightly toolchain uses LLVM {llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}; \
             install a nightly with LLVM {LLVM_MAJOR} (this machine kind ships 1.97-nightly 2026-05-19)"
        );
    }
    Ok(())
}

fn bpf_linker(did: &mut Vec<String>) -> anyhow::Result<()> {
    if let Ok(path) = which("bpf-linker") {
        let ldd = output(Command::new("ldd").arg(&path)).unwrap_or_default();
        if ldd.contains(&format!("libLLVM.so.{LLVM_MAJOR}")) {
            return Ok(());
        }
        eprintln!("setup: {path} is not linked against LLVM {LLVM_MAJOR}; rebuilding it");
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against /usr/lib/llvm-{LLVM_MAJOR} (about 2 minutes)"
    );
    // Its default feature wants LLVM 23; without LLVM_PREFIX it finds Debian's default
    // llvm-config (LLVM 14) and fails to link.
    status(
        Command::new("cargo")
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")),
    )?;
    did.push(format!(
        "built bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR}"
    ));
    Ok(())
}

fn which(name: &str) -> anyhow::Result<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':') {
        let p = std::path::Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p.display().to_string());
        }
    }
    bail!("{name} not found in PATH")
}
