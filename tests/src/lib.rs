//! The test bed: network namespaces, veth pairs and a bridge, tiny TCP services, an `xdp-lb`
//! process — everything the integration tests, `cargo xtask demo` and the bench build on.
//!
//! Rules (shared/design/TESTBED.md): every host is a namespace created here, with names unique
//! to this process; addresses come from 198.18.0.0/15; nothing is configured on the root
//! namespace's interfaces; every guard removes what it made when dropped, also on panic; every
//! loop is bounded in count and time.

pub mod dashboard;
pub mod fixtures;
pub mod fuzz;
pub mod harness;
pub mod netns;
pub mod packet;
pub mod peers;
pub mod pki;
pub mod scale_out;
pub mod service;
pub mod topology;
pub mod tunnel;
pub mod udp;

pub use netns::{NetNs, in_netns, sh};
pub use service::{EchoClient, TcpService, http_get, http_get_many};
pub use topology::{Agent, DsrTopology, NatTopology, xdp_lb_binary};

/// The test-side BPF programs (`test-ebpf`, built by `build.rs`): the bench's floor and empty
/// programs, the traffic generator and its sinks.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb-bench"));

/// The median of a bench row's rounds.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// (min, max) of a bench row's rounds.
pub fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

/// "CPU model (N CPUs), kernel X": the machine label of bench reports.
pub fn machine_label() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu} ({} CPUs), kernel {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    )
}

/// The prefix of every namespace this crate creates; `cleanup_stale` removes leftovers of
/// runs that were killed before their guards ran.
pub const NS_PREFIX: &str = "xlbt";

/// Skips a test (with a message) when not running as root: the integration tests need
/// CAP_NET_ADMIN and CAP_BPF. `cargo xtask test` runs as root, so there they always run.
#[macro_export]
macro_rules! require_root {
    () => {
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var_os("XDP_LB_REQUIRE_ROOT").is_some() {
                panic!("this test needs root and XDP_LB_REQUIRE_ROOT is set");
            }
            eprintln!("skipped: needs root (run `cargo xtask test` as root)");
            return;
        }
    };
}
