//! `xdp-lb capture`: what the program sent and dropped, into a pcapng file.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use clap::Args;
use xdp_lb::capture::{self, CaptureOptions};

/// `xdp-lb capture`'s arguments (its help is the subcommand's, in `main.rs`).
#[derive(Args)]
pub(crate) struct CaptureArgs {
    /// The pcapng file to write; `-` for standard output.
    #[arg(long, short = 'w', value_name = "FILE")]
    pub(crate) write: PathBuf,
    /// Only this VIP's frames (its `name`).
    #[arg(long, value_name = "NAME")]
    pub(crate) vip: Option<String>,
    /// Only frames to or from this backend (its `name` or address; add --vip when two
    /// VIPs have one of that name). Drops are not a backend's: --backend leaves them out.
    #[arg(long, value_name = "NAME")]
    pub(crate) backend: Option<String>,
    /// Stop after this many frames.
    #[arg(long, short = 'c', value_name = "N")]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    pub(crate) seconds: Option<u64>,
    /// Bytes of each frame to keep (1..=2048).
    #[arg(long, short = 's', value_name = "B", default_value_t = 256)]
    pub(crate) snaplen: u32,
    /// Record one in N matching frames on each CPU (1: every frame).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) every: u32,
    /// Only drops (no frames sent).
    #[arg(long, conflicts_with_all = ["sent_only", "backend"])]
    pub(crate) drops_only: bool,
    /// Only frames sent (no drops).
    #[arg(long)]
    pub(crate) sent_only: bool,
    /// Where the maps are pinned (agent.pin_dir).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/xdp-lb")]
    pub(crate) pin_dir: PathBuf,
}

impl CaptureArgs {
    fn options(self) -> CaptureOptions {
        CaptureOptions {
            pin_dir: self.pin_dir,
            // A backend filter names a backend; drops have none.
            drops: !self.sent_only && self.backend.is_none(),
            sent: !self.drops_only,
            vip: self.vip,
            backend: self.backend,
            count: self.count,
            duration: self.seconds.map(std::time::Duration::from_secs),
            snaplen: self.snaplen,
            every: self.every,
            output: self.write,
        }
    }
}

/// Set by SIGINT/SIGTERM: the capture ends cleanly (its config cleared, the file complete).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn capture(args: CaptureArgs) -> ExitCode {
    let opts = &args.options();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let to = if opts.output.as_os_str() == "-" {
        "standard output".to_owned()
    } else {
        opts.output.display().to_string()
    };
    eprintln!(
        "xdp-lb: capturing {}{}{} (1 in {}, {} bytes each) to {to}; Ctrl-C stops",
        match (opts.sent, opts.drops) {
            (true, true) => "frames sent and dropped",
            (true, false) => "frames sent",
            _ => "frames dropped",
        },
        opts.vip
            .as_ref()
            .map(|v| format!(" of VIP {v}"))
            .unwrap_or_default(),
        opts.backend
            .as_ref()
            .map(|b| format!(" to/from backend {b}"))
            .unwrap_or_default(),
        opts.every,
        opts.snaplen
    );
    match capture::run(opts, "xdp-lb", &STOP) {
        Ok(s) => {
            eprintln!(
                "xdp-lb: {} frame(s) written ({} sent, {} dropped) to {to}; the program matched {}, recorded {}, lost {} (ring full)",
                s.written, s.sent, s.dropped, s.matched, s.recorded, s.lost
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdp-lb: capture: {e}");
            ExitCode::FAILURE
        }
    }
}
