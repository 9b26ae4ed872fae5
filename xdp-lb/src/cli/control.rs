//! The subcommands that talk to a running agent through its control socket: `reload`,
//! `drain`, `undrain` and `status`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use xdp_lb::{
    config::{self, DEFAULT_CONTROL_SOCKET},
    control::{self, ControlError, Request, Response},
    observe::status_report,
};

use super::EXIT_CONFIG;

/// How long a command waits for the agent (a reload resolves new backends first).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

pub(crate) fn reload(config: Option<PathBuf>, socket: Option<PathBuf>) -> ExitCode {
    let socket = socket_path(socket, config.as_deref());
    // Send the path as the agent sees it: absolute.
    let config = config.map(|c| std::path::absolute(&c).unwrap_or(c));
    verdict(
        ask(&socket, &Request::Reload { config }),
        ExitCode::from(EXIT_CONFIG),
    )
}

/// `drain` (`on`) or `undrain`.
pub(crate) fn drain(on: bool, config: Option<&Path>, socket: Option<PathBuf>) -> ExitCode {
    let request = if on { Request::Drain } else { Request::Undrain };
    let socket = socket_path(socket, config);
    verdict(ask(&socket, &request), ExitCode::FAILURE)
}

pub(crate) fn status(json: bool, config: Option<&Path>, socket: Option<PathBuf>) -> ExitCode {
    let socket = socket_path(socket, config);
    match ask(&socket, &Request::Status) {
        Ok(Response {
            status: Some(status),
            ..
        }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                status_report::print_status(&status);
            }
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("xdp-lb: {}", r.message);
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("xdp-lb: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the agent's answer to a command: its message on stdout when it did it (exit 0), on
/// stderr with `refused` when it would not, and exit 1 when no agent answered.
fn verdict(answer: Result<Response, ControlError>, refused: ExitCode) -> ExitCode {
    match answer {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("xdp-lb: {}", r.message);
            refused
        }
        Err(err) => {
            eprintln!("xdp-lb: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The control socket: --socket, else the config file's agent.control_socket, else the default.
fn socket_path(socket: Option<PathBuf>, config: Option<&Path>) -> PathBuf {
    if let Some(s) = socket {
        return s;
    }
    // Read only that key, so that a file with mistakes elsewhere still finds its agent, which
    // then reports the mistakes.
    config
        .and_then(config::control_socket_of)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

fn ask(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ControlError::Io {
            path: socket.to_owned(),
            source,
        })?;
    runtime.block_on(control::request(socket, request, ANSWER_WITHIN))
}
