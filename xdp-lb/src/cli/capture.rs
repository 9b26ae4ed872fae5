//! `xdp-lb capture`: what the program sent and dropped, into a pcapng file.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use xdp_lb::capture::{self, CaptureOptions};

/// Set by SIGINT/SIGTERM: the capture ends cleanly (its config cleared, the file complete).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn capture(opts: &CaptureOptions) -> ExitCode {
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
