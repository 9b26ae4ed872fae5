//! The `xdp-lb` command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use xdp_lb::{
    agent::{self, AgentError, RunOptions},
    config::{self, DEFAULT_CONTROL_SOCKET},
    control::{self, Request, Response},
};

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
        table; L2 direct server return, or full NAT for plain backends on any subnet and \
        port), taking backends in and out with health checks and \
        moving the virtual IPs between LB nodes with VRRP (keepalived-compatible). The program \
        and its maps stay pinned, so a restart or upgrade keeps established connections. \
        Validate a file first with `xdp-lb check-config`.",
    after_help = "Examples:\n  xdp-lb check-config /etc/xdp-lb/xdp-lb.toml\n  \
        sudo xdp-lb run --config /etc/xdp-lb/xdp-lb.toml --log-level debug\n  \
        sudo xdp-lb reload --config /etc/xdp-lb/xdp-lb.toml     # apply a changed file, print the verdict\n  \
        sudo xdp-lb status                                       # health, VRRP state\n  \
        sudo xdp-lb inspect backends --vip apiserver             # the live maps\n  \
        sudo xdp-lb inspect stats --watch 1s                     # counters and rates\n\n\
        Configuration reference, operations and troubleshooting: README.md"
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
        /// On SIGTERM/SIGINT leave the program attached and the maps (flow table included)
        /// pinned, so traffic keeps flowing and the next `xdp-lb run` adopts them: an upgrade
        /// or restart without an outage. (After a crash or SIGKILL they are kept anyway.)
        #[arg(long)]
        keep_dataplane: bool,
    },
    /// Ask the running agent to reload its config, and print its verdict.
    ///
    /// Like SIGHUP, but waits for the answer: exit status 0 when applied, 2 when the file is
    /// invalid or cannot be applied (the running configuration is then unchanged), 1 when no
    /// agent answers.
    Reload {
        /// Reload from this file instead (it becomes the agent's config file). Its
        /// agent.control_socket also says where to find the agent, unless --socket is given.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The agent's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Withdraw every announced VIP from the routers ([announce]) and keep forwarding what
    /// still arrives: maintenance without cutting a connection.
    ///
    /// The routing engine withdraws the routes, the routers move new flows to the other
    /// nodes, and flows already here are forwarded until they end or move (every node picks
    /// the same backend). `xdp-lb status` shows "draining"; `xdp-lb undrain` ends it. A drain
    /// lasts until undrain or the agent's stop (a restarted agent announces again).
    #[command(after_help = "Examples:
  sudo xdp-lb drain && sleep 60 && sudo systemctl stop xdp-lb   # maintenance
  sudo xdp-lb undrain")]
    Drain {
        /// Find the control socket through this config file's agent.control_socket.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The agent's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// End a drain: announce again every VIP this node can serve.
    Undrain {
        /// Find the control socket through this config file's agent.control_socket.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The agent's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Read the data plane's pinned maps: VIPs, backends, flows, counters, Maglev tables.
    ///
    /// Works from any process while the agent runs, and after it died with the data plane
    /// kept. Reads only.
    Inspect {
        #[command(subcommand)]
        report: InspectReport,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        /// Where the maps are pinned (agent.pin_dir).
        #[arg(
            long,
            global = true,
            value_name = "DIR",
            default_value = "/sys/fs/bpf/xdp-lb"
        )]
        pin_dir: PathBuf,
    },
    /// Show the running agent's state: config, uptime, each backend's health and last check.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Find the control socket through this config file's agent.control_socket.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The agent's control socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Translate haproxy.cfg and/or keepalived.conf into an xdp-lb configuration.
    ///
    /// Prints the TOML (or writes it to --output) and a report on stderr: each directive
    /// translated, approximated (how) or ignored (why). The result passes check-config; review
    /// the report before you use it. Exit status 2 names the file and line of anything that
    /// cannot be parsed or lacks a value xdp-lb needs.
    #[command(
        after_help = "Examples:\n  xdp-lb import --haproxy /etc/haproxy/haproxy.cfg --keepalived /etc/keepalived/keepalived.conf -o xdp-lb.toml\n  xdp-lb import --keepalived /etc/keepalived/keepalived.conf   # virtual_server blocks and VRRP only"
    )]
    Import {
        /// haproxy's configuration: frontends/listens in mode tcp become VIPs.
        #[arg(long, value_name = "FILE", required_unless_present = "keepalived")]
        haproxy: Option<PathBuf>,
        /// keepalived's configuration: vrrp_instance → [[vrrp]]; virtual_server → VIPs.
        /// haproxy's `bind *:PORT` means its first virtual address.
        #[arg(long, value_name = "FILE")]
        keepalived: Option<PathBuf>,
        /// Write the TOML here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a configuration file and print a summary; exit status 2 if it is invalid.
    ///
    /// Reports the file, line, column and key of the first problem. Loads nothing.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum InspectReport {
    /// VIPs with their backends, table size and traffic.
    Vips,
    /// Backends: address, MAC, interface, weight, share of the Maglev table, traffic.
    Backends {
        /// Only this VIP's.
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
    },
    /// Flow-table entries: protocol, client, VIP, backend, age; for NAT flows also the SNAT
    /// source the backend sees and the state that sets the flow's expiry (TCP's, or udp),
    /// half-open flows included (a SYN, or a UDP flow's first datagram).
    Flows {
        /// Only this VIP's flows (its `name`).
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
        /// At most this many entries (IPv4 flows first, then IPv6).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Counters summed over CPUs: verdicts, drop reasons, per-VIP traffic, flow-table use.
    Stats {
        /// Print again every INTERVAL (e.g. 1s) with rates, until interrupted.
        #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
        /// With --watch: stop after this many prints.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// A VIP's Maglev table: entries per backend against its weight share.
    Maglev {
        #[arg(long, value_name = "NAME")]
        vip: String,
    },
}

fn inspect(report: InspectReport, json: bool, pin_dir: &std::path::Path) -> ExitCode {
    use xdp_lb::observe::{inspect::Inspector, report as print};
    let inspector = match Inspector::open(pin_dir) {
        Ok(i) => i,
        Err(err) => {
            eprintln!("xdp-lb: cannot read the maps: {err}");
            return ExitCode::FAILURE;
        }
    };
    fn out<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            text(value);
        }
    }
    let result: Result<(), String> = match report {
        InspectReport::Vips => {
            out(json, &inspector.vips(), |v| print::print_vips(v));
            Ok(())
        }
        InspectReport::Backends { vip } => inspector
            .backends(vip.as_deref())
            .map(|b| out(json, &b, |b| print::print_backends(b))),
        InspectReport::Flows { vip, limit } => inspector
            .flows(vip.as_deref(), limit)
            .map(|f| out(json, &f, |f| print::print_flows(f))),
        InspectReport::Stats { watch, count } => {
            print::print_stats(&inspector, watch, count, json);
            Ok(())
        }
        InspectReport::Maglev { vip } => inspector
            .maglev(&vip)
            .map(|m| out(json, &m, print::print_maglev)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp-lb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the agent's answer to a command: its message on stdout when it did it (exit 0), on
/// stderr with `refused` when it would not, and exit 1 when no agent answered.
fn verdict(answer: anyhow::Result<Response>, refused: ExitCode) -> ExitCode {
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
            eprintln!("xdp-lb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A report piped into `head` ends quietly, as other command-line tools do, instead of
        // failing on the broken pipe. The agent keeps Rust's default (EPIPE is an error on
        // one socket, never a reason to die).
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let cli_command_is_drain = matches!(cli.command, Command::Drain { .. });
    match cli.command {
        Command::Reload { config, socket } => {
            let socket = socket_path(socket, config.as_deref());
            // Send the path as the agent sees it: absolute.
            let config = config.map(|c| std::path::absolute(&c).unwrap_or(c));
            verdict(
                client(&socket, &Request::Reload { config }),
                ExitCode::from(EXIT_CONFIG),
            )
        }
        Command::Inspect {
            report,
            json,
            pin_dir,
        } => inspect(report, json, &pin_dir),
        Command::Drain { config, socket } | Command::Undrain { config, socket } => {
            let request = if cli_command_is_drain {
                Request::Drain
            } else {
                Request::Undrain
            };
            let socket = socket_path(socket, config.as_deref());
            verdict(client(&socket, &request), ExitCode::FAILURE)
        }
        Command::Status {
            json,
            config,
            socket,
        } => {
            let socket = socket_path(socket, config.as_deref());
            match client(&socket, &Request::Status) {
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
                        xdp_lb::observe::report::print_status(&status);
                    }
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!("xdp-lb: {}", r.message);
                    ExitCode::FAILURE
                }
                Err(err) => {
                    eprintln!("xdp-lb: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            log_level,
            keep_dataplane,
        } => {
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
                keep_dataplane,
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
        Command::Import {
            haproxy,
            keepalived,
            output,
        } => import(haproxy.as_deref(), keepalived.as_deref(), output.as_deref()),
        Command::CheckConfig { file } => match agent::check_config(&file) {
            Ok(config) => {
                for warning in config
                    .warnings
                    .iter()
                    .chain(&agent::route_warnings(&file, &config))
                {
                    eprintln!("xdp-lb: warning: {warning}");
                }
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
                            .map(|b| {
                                let at = if b.port == vip.port {
                                    b.address.to_string()
                                } else {
                                    format!("{}:{}", b.address, b.port)
                                };
                                match b.state {
                                    config::AdminState::Active => format!("{at} w{}", b.weight),
                                    s => format!("{at} w{} ({})", b.weight, s.as_str()),
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if let Some(a) = &config.announce {
                    println!(
                        "  announce {} as /32 routes in table {} (dev {}), grace {:?}, routing engine {}",
                        a.vips.join(", "),
                        a.table,
                        a.interface,
                        a.grace,
                        a.engine_socket
                            .as_ref()
                            .map_or("not checked".into(), |p| format!("at {}", p.display()))
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

/// The control socket: --socket, else the config file's agent.control_socket, else the default.
fn socket_path(socket: Option<PathBuf>, config: Option<&std::path::Path>) -> PathBuf {
    if let Some(s) = socket {
        return s;
    }
    // Read only that key, so that a file with mistakes elsewhere still finds its agent, which
    // then reports the mistakes.
    config
        .and_then(config::control_socket_of)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

fn client(socket: &std::path::Path, request: &Request) -> anyhow::Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(control::request(
        socket,
        request,
        std::time::Duration::from_secs(30),
    ))?)
}

fn import(
    haproxy: Option<&std::path::Path>,
    keepalived: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
) -> ExitCode {
    let imported = match xdp_lb::import::import(haproxy, keepalived) {
        Ok(i) => i,
        Err(err) => {
            eprintln!("xdp-lb: import: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for line in &imported.report {
        eprintln!("{line}");
    }
    let (translated, approximated, ignored) = imported.counts();
    eprintln!(
        "xdp-lb: import: {translated} translated, {approximated} approximated, {ignored} ignored"
    );
    // What the import wrote must load as it stands.
    let shown = output.unwrap_or(std::path::Path::new("imported.toml"));
    if let Err(err) = config::parse(shown, &imported.toml) {
        eprintln!("xdp-lb: import: the result does not validate ({err}); please report this");
        return ExitCode::FAILURE;
    }
    match output {
        Some(path) => {
            if let Err(err) = std::fs::write(path, &imported.toml) {
                eprintln!("xdp-lb: import: writing {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("xdp-lb: import: wrote {}", path.display());
        }
        None => print!("{}", imported.toml),
    }
    ExitCode::SUCCESS
}
