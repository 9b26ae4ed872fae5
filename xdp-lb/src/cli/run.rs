//! `xdp-lb run`: logging, the runtime, the agent, and the pages beside it.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use xdp_lb::{
    agent::{self, AgentError, RunOptions},
    observe,
};

use super::EXIT_CONFIG;

pub(crate) fn run(config: PathBuf, log_level: &str, keep_dataplane: bool) -> ExitCode {
    if let Err(err) = init_logging(log_level) {
        eprintln!("xdp-lb: {err:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("xdp-lb: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions {
        config_path: config,
        keep_dataplane,
    };
    match runtime.block_on(run_agent(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(AgentError::Config(err)) => {
            tracing::error!("invalid configuration: {err}");
            eprintln!("xdp-lb: invalid configuration: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            let err = anyhow::Error::new(err).context("xdp-lb run failed");
            tracing::error!("{err:#}");
            eprintln!("xdp-lb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent, with the pages (`agent.listen`) beside it until it stops. Forwarding matters
/// more than the pages: a port that cannot be bound is logged and the agent runs on.
async fn run_agent(options: RunOptions) -> Result<(), AgentError> {
    let mut running = agent::start(options).await?;
    if let Some(addr) = running.config().agent.listen {
        let pin_dir = running.config().agent.pin_dir.clone();
        match observe::http::serve(addr, pin_dir, running.commands()).await {
            Ok(task) => {
                tracing::info!(%addr, "serving /metrics, /stats and /healthz");
                running.hold(task);
            }
            Err(err) => {
                tracing::error!(%addr, error = %err, "cannot serve /metrics and /stats (agent.listen)");
            }
        }
    }
    running.run().await
}

pub(crate) fn init_logging(level: &str) -> anyhow::Result<()> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    // A bare word that is not a level would be taken as a target name by EnvFilter and
    // silently log nothing useful.
    if !level.contains(['=', ',']) && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        anyhow::bail!(
            "invalid --log-level {level:?} (use error, warn, info, debug or trace, or a filter such as \"xdp_lb=debug\")"
        );
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        // netlink-proto warns about late acks of our fire-and-forget neighbour requests.
        _ => EnvFilter::try_new(format!("{level},netlink_proto=error")),
    }
    .with_context(|| {
        format!("invalid --log-level {level:?} (use error, warn, info, debug or trace)")
    })?;
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    Ok(())
}
