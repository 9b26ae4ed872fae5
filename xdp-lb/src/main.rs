//! The `xdp-lb` command line: its arguments and their help here, one module per subcommand
//! under `cli/` (`run`, `control`: reload / drain / status, `inspect`, `import`,
//! `check_config`). The library (`lib.rs`) does the work; these only print and choose the
//! exit status.

mod cli;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use self::cli::inspect::InspectReport;

#[derive(Parser)]
#[command(
    name = "xdp-lb",
    version,
    about = "A layer-4 (TCP and UDP) load balancer whose data plane is an XDP program",
    long_about = "A layer-4 (TCP and UDP) load balancer whose data plane is an XDP program.\n\n\
        `xdp-lb run` loads the program, attaches it to agent.interface, and forwards each \
        virtual IP's TCP connections and UDP flows to its backends (Maglev consistent hashing, a flow \
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
    /// Record the frames the XDP program sent (after its rewrite) and dropped, into a pcapng file.
    ///
    /// tcpdump on the LB cannot see them: XDP_TX and XDP_REDIRECT leave below the kernel's
    /// taps, and XDP drops never reach them. Each frame carries the verdict as a comment
    /// (`xdp-lb: tx vip=web backend=cp1`, `xdp-lb: drop reason=drop_no_backend`), which
    /// Wireshark shows; `tcpdump -r FILE` reads the file. Sampling (--every) keeps it safe on a
    /// loaded node; frames the ring cannot take are counted as lost, never queued. Needs root,
    /// and the agent's data plane (its pins); one capture at a time.
    #[command(after_help = "Examples:
  sudo xdp-lb capture -w /tmp/web.pcapng --vip web --count 100
  sudo xdp-lb capture -w - --backend cp1 --every 100 | tcpdump -r - -nn -e
  sudo xdp-lb capture -w /tmp/drops.pcapng --drops-only --seconds 10")]
    Capture(cli::capture::CaptureArgs),
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
    /// On a backend of a tunnel VIP: strip the LB's IPIP, IP6IP6 and GUE encapsulation in XDP.
    ///
    /// Attaches the decapsulation program to --interface and keeps it there until SIGTERM or
    /// SIGINT (then detaches). A packet tunnelled to one of this host's addresses (followed
    /// every second) goes up the stack as the client sent it, to the VIP on this host's
    /// loopback; anything else passes untouched; malformed tunnel packets are dropped and
    /// counted. For hosts without the kernel's ipip/ip6_tunnel/fou modules, or instead of
    /// them (README "Tunnel forwarding"). Needs root.
    #[command(after_help = "Examples:
  sudo xdp-lb decap --interface eth0 --gue-port 6080     # run it (systemd: xdp-lb-decap.service)
  sudo xdp-lb decap --status                             # what it decapsulated, passed, dropped")]
    Decap {
        /// The interface the LB's tunnel packets arrive on.
        #[arg(long, short, value_name = "IF", required_unless_present = "status")]
        interface: Option<String>,
        /// Also strip GUE: UDP to this port (the VIP's gue_port; 6080 by default there).
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        gue_port: Option<u16>,
        /// auto (driver mode, else generic), driver or generic.
        #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "driver", "generic"])]
        xdp_mode: String,
        /// Where its maps are pinned (for --status).
        #[arg(long, value_name = "DIR", default_value = xdp_lb::decap::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print the running program's counters instead, and exit.
        #[arg(long, conflicts_with_all = ["interface", "gue_port"])]
        status: bool,
        /// With --status: print JSON.
        #[arg(long, requires = "status")]
        json: bool,
        /// Log level (as for `run`).
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
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::Decap { status: false, .. }
    ) {
        // A report piped into `head` ends quietly, as other command-line tools do, instead of
        // failing on the broken pipe. The agent keeps Rust's default (EPIPE is an error on
        // one socket, never a reason to die).
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run {
            config,
            log_level,
            keep_dataplane,
        } => cli::run::run(config, &log_level, keep_dataplane),
        Command::Reload { config, socket } => cli::control::reload(config, socket),
        Command::Drain { config, socket } => cli::control::drain(true, config.as_deref(), socket),
        Command::Undrain { config, socket } => {
            cli::control::drain(false, config.as_deref(), socket)
        }
        Command::Status {
            json,
            config,
            socket,
        } => cli::control::status(json, config.as_deref(), socket),
        Command::Inspect {
            report,
            json,
            pin_dir,
        } => cli::inspect::inspect(report, json, &pin_dir),
        Command::Import {
            haproxy,
            keepalived,
            output,
        } => cli::import::import(haproxy.as_deref(), keepalived.as_deref(), output.as_deref()),
        Command::CheckConfig { file } => cli::check_config::check_config(&file),
        Command::Capture(args) => cli::capture::capture(args),
        Command::Decap {
            status: true,
            pin_dir,
            json,
            ..
        } => cli::decap::status(&pin_dir, json),
        Command::Decap {
            interface,
            gue_port,
            xdp_mode,
            pin_dir,
            log_level,
            ..
        } => {
            let options = xdp_lb::decap::DecapOptions {
                interface: interface.unwrap_or_default(),
                gue_port,
                mode: cli::decap::attach_mode(&xdp_mode)
                    .unwrap_or(xdp_lb::dataplane::AttachMode::Auto),
                pin_dir,
            };
            cli::decap::run(options, &log_level)
        }
    }
}
