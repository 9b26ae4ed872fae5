//! `xdp-lb decap`: run the backends' decapsulation program, or print its counters.

use std::{path::Path, process::ExitCode};

use xdp_lb::{
    dataplane::AttachMode,
    decap::{self, DecapOptions},
};

use super::run::init_logging;

/// `xdp-lb decap --interface IF`: runs until SIGTERM/SIGINT.
pub(crate) fn run(options: DecapOptions, log_level: &str) -> ExitCode {
    if let Err(err) = init_logging(log_level) {
        eprintln!("xdp-lb decap: {err:#}");
        return ExitCode::from(super::EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("xdp-lb decap: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(decap::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("xdp-lb decap: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `xdp-lb decap --status`: the running program's counters.
pub(crate) fn status(pin_dir: &Path, json: bool) -> ExitCode {
    let counters = match decap::counters(pin_dir) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("xdp-lb decap: {err}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let map: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(c, v)| (c.name().to_owned(), (*v).into()))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!("{:<24} {:>14}", "COUNTER", "PACKETS");
        for (c, v) in counters {
            println!("{:<24} {v:>14}", c.name());
        }
    }
    ExitCode::SUCCESS
}

/// `--xdp-mode` as the data plane takes it.
pub(crate) fn attach_mode(mode: &str) -> Option<AttachMode> {
    match mode {
        "auto" => Some(AttachMode::Auto),
        "driver" => Some(AttachMode::Driver),
        "generic" => Some(AttachMode::Generic),
        _ => None,
    }
}
