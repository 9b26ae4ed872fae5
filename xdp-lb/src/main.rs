//! The `xdp-lb` command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use xdp_lb::agent::{self, AgentError, RunOptions};

/// Exit status for a configuration that does not parse or validate.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "xdp-lb",
    version,
    about = "A layer-4 TCP load balancer whose data plane is an XDP program",
    long_about = "A layer-4 TCP load balancer whose data plane is an XDP program.\n\n\
        `xdp-lb run` loads the program, attaches it to agent.interface, and forwards each \
        virtual IP's TCP connections to its backends (Maglev consistent hashing, a flow \
        table, L2 direct server return). Validate a file first with `xdp-lb check-config`.",
    after_help = "Examples:\n  xdp-lb check-config /etc/xdp-lb/xdp-lb.toml\n  \
        sudo xdp-lb run --config /etc/xdp-lb/xdp-lb.toml --log-level debug\n  \
        sudo kill -HUP $(pidof xdp-lb)    # reload the config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the XDP program and keep its maps in step with the config.
    ///
    /// Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs). SIGHUP reloads the config
    /// (a bad file is rejected and nothing changes); SIGINT/SIGTERM detach the program, remove
    /// the pinned maps and exit 0.
    Run {
        /// The configuration file (TOML; see README "Configuration").
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log level: error, warn, info, debug or trace; or a tracing filter such as
        /// "xdp_lb=debug". RUST_LOG overrides it.
        #[arg(long, value_name = "LEVEL", default_value = "info")]
        log_level: String,
    },
    /// Check a configuration file and print a summary; exit status 2 if it is invalid.
    ///
    /// Reports the file, line, column and key of the first problem. Loads nothing.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_level } => {
            if let Err(err) = init_logging(&log_level) {
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
            match runtime.block_on(agent::run(RunOptions {
                config_path: config,
            })) {
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
        Command::CheckConfig { file } => match agent::check_config(&file) {
            Ok(config) => {
                let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
                println!(
                    "{}: OK: interface {}, {} VIP(s), {} backend(s)",
                    file.display(),
                    config.agent.interface,
                    config.vips.len(),
                    backends
                );
                for vip in &config.vips {
                    println!(
                        "  {} {}:{}/tcp ({:?}, table {}) -> {}",
                        vip.name,
                        vip.address,
                        vip.port,
                        vip.forwarding,
                        vip.maglev_table_size,
                        vip.backends
                            .iter()
                            .map(|b| format!("{} w{}", b.address, b.weight))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("xdp-lb: invalid configuration: {err}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
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
