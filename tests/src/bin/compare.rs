//! `cargo xtask bench --compare`: xdp-lb against its peers, side by side in one run, on the
//! namespace topology. Every figure is the median of `--rounds` rounds (5) with the spread,
//! rounds interleaved across rows so that noise hits every row alike, and the headline numbers
//! are ratios between rows of the same run (the machines are shared and noisy).
//!
//! What it measures (issue 7):
//! 1. Cost per packet: `cargo xtask bench` runs just before (`target/bench/report.md`).
//! 2. Forwarding rate: frames made in a generator namespace by `BPF_PROG_TEST_RUN` in
//!    live-frames mode (`xdp_gen`: 1024 flows by source port), forwarded by the node under
//!    test from one veth to another, counted and dropped on the backends' side (`xdp_sink`);
//!    see `RateBed`. Rows: the floor (a bare XDP forwarder: the limit of this machine), xdp-lb
//!    DSR, xdp-lb NAT, nftables DNAT (the kernel's path).
//! 3. TCP with wrk, a new connection per request and keep-alive, against three nginx
//!    backends: directly, xdp-lb DSR, xdp-lb NAT, haproxy `mode tcp` (on a second node),
//!    nftables DNAT + masquerade (on a third). Requests/s, p50/p99, and CPU per request: the
//!    whole machine's (every namespace shares the CPUs) and the balancer's own (xdp-lb: its XDP
//!    program's run time from the kernel's BPF stats plus the agent's process time; haproxy:
//!    its process time; nftables runs in softirq and has no separate figure).
//! 4. Memory: the agent's RSS and each BPF map's memory as the kernel accounts it (fdinfo).
//! 5. `target/bench/compare.md`, `target/bench/compare.svg` (plotters), and a one-screen
//!    summary on stdout.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::Xdp;
use clap::Parser;
use xdp_lb_tests::{
    Agent, DsrTopology, NetNs, in_netns, median,
    packet::{Frame, TCP_ACK, TCP_SYN},
    spread,
    topology::{VIP, backend_addr},
};

#[derive(Parser)]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent connections of wrk.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Frames per forwarding-rate run.
    #[arg(long, default_value_t = 2_000_000)]
    frames: u32,
    /// Where the report and the chart go (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

const PEER_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const NAT_LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
const DSR_PORT: u16 = 80;
const NAT_PORT: u16 = 81;
const HAPROXY_PORT: u16 = 8081;
const NFT_PORT: u16 = 8082;
/// The IPv4 id the sinks count (`xdp_sink`).
const GEN_IP_ID: u16 = 0xb3cc;

/// A process in a namespace (`ip netns exec` execs it, so the pid is the program's own),
/// stopped when dropped: SIGTERM, then SIGKILL after 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &NetNs, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {args:?}"))?;
    Ok(Proc(child))
}

/// nginx on a backend: answers every request with its name; no logs, no temp files. One
/// process (`master_process off`), so that stopping the pid stops all of it.
fn nginx(ns: &NetNs, dir: &Path, name: &str) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("nginx-{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx-{name}.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/tmp-{name};\n\
               keepalive_requests 1000000;\n\
               server {{ listen 80 reuseport backlog=4096; location / {{ return 200 \"{name}\\n\"; }} }}\n}}\n",
            dir = dir.display()
        ),
    )?;
    spawn_in(
        ns,
        &[
            "nginx",
            "-c",
            conf.to_str().context("path")?,
            "-e",
            "stderr",
        ],
        &dir.join(format!("nginx-{name}.log")),
    )
}

// ---- TCP rows (wrk) ------------------------------------------------------------------------

struct WrkResult {
    requests_per_sec: f64,
    requests: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Busy CPU time of the whole machine during the run, µs per request.
    machine_us: f64,
    /// The balancer's own CPU time, µs per request (None: not separable).
    lb_us: Option<f64>,
}

fn parse_ms(s: &str) -> Option<f64> {
    let (num, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| c.is_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => return None,
    })
}

/// How a row's balancer CPU time is read.
#[derive(Clone, Copy)]
enum LbCpu {
    None,
    /// Run time of the XDP programs named `xdp_lb` (kernel BPF stats) plus the agent's own
    /// process time (it expires NAT flows, runs health checks, answers the stats).
    Xdp(u32),
    /// utime + stime of this process.
    Process(u32),
}

fn lb_cpu_ns(how: LbCpu) -> Option<u64> {
    match how {
        LbCpu::None => None,
        LbCpu::Xdp(agent) => Some(
            program_run_ns(Some(xdp_lb_common::PROGRAM_NAME))? + lb_cpu_ns(LbCpu::Process(agent))?,
        ),
        LbCpu::Process(pid) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 1_000_000_000 / clock_ticks())
        }
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// Busy CPU time of the whole machine so far (ns): /proc/stat's first line minus idle and iowait.
fn machine_busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    busy * 1_000_000_000 / clock_ticks()
}

fn wrk(
    client: &NetNs,
    url: &str,
    args: &Args,
    keep_alive: bool,
    lb: LbCpu,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &client.name, "wrk", "-t2"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency");
    if !keep_alive {
        cmd.args(["-H", "Connection: close"]);
    }
    let (busy0, lb0) = (machine_busy_ns(), lb_cpu_ns(lb));
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (Debian's wrk package)")?;
    let (busy1, lb1) = (machine_busy_ns(), lb_cpu_ns(lb));
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {url}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps: f64 = field("Requests/sec:").context("no Requests/sec")?.parse()?;
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no request count")?;
    let p50 = field("50%")
        .and_then(|v| parse_ms(&v))
        .context("no 50% latency")?;
    let p99 = field("99%")
        .and_then(|v| parse_ms(&v))
        .context("no 99% latency")?;
    // "Socket errors: connect 0, read 0, write 0, timeout 3" and "Non-2xx or 3xx responses: N"
    let mut errors = 0;
    if let Some(e) = field("Socket errors:") {
        errors += e
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        errors += n.parse::<u64>().unwrap_or(0);
    }
    let per_request = |ns: u64| ns as f64 / 1000.0 / requests.max(1.0);
    Ok(WrkResult {
        requests_per_sec: rps,
        requests,
        p50_ms: p50,
        p99_ms: p99,
        errors,
        machine_us: per_request(busy1.saturating_sub(busy0)),
        lb_us: match (lb0, lb1) {
            (Some(a), Some(b)) => Some(per_request(b.saturating_sub(a))),
            _ => None,
        },
    })
}

// ---- forwarding rate (live frames) --------------------------------------------------------

/// The generator (client namespace) and the sinks (one per backend).
struct Traffic {
    gen_ebpf: aya::Ebpf,
    sinks: Vec<aya::Ebpf>,
}

fn load_in(ns: &NetNs, attach: Option<(&str, &'static str)>) -> anyhow::Result<aya::Ebpf> {
    let attach = attach.map(|(i, p)| (i.to_owned(), p));
    in_netns(&ns.name, move || -> anyhow::Result<aya::Ebpf> {
        let mut ebpf = aya::Ebpf::load(xdp_lb_tests::BENCH_OBJECT)?;
        if let Some((interface, program)) = attach {
            let p: &mut Xdp = ebpf.program_mut(program).context(program)?.try_into()?;
            p.load()?;
            p.attach(&interface, aya::programs::XdpMode::Driver)?;
        } else {
            let p: &mut Xdp = ebpf.program_mut("xdp_gen").context("xdp_gen")?.try_into()?;
            p.load()?;
        }
        Ok(ebpf)
    })?
}

impl Traffic {
    fn new(generator: &NetNs, sinks: Vec<aya::Ebpf>) -> anyhow::Result<Self> {
        Ok(Self {
            gen_ebpf: load_in(generator, None)?,
            sinks,
        })
    }

    fn delivered(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for s in &self.sinks {
            let m: aya::maps::PerCpuArray<_, u64> =
                aya::maps::PerCpuArray::try_from(s.map("SINK_COUNT").context("SINK_COUNT")?)?;
            total += m.get(&0, 0)?.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// Sends `frames` copies of `frame` (source ports cycled by the generator) out of interface
    /// `ifindex` of `ns`; returns (frames delivered to the sinks, seconds).
    fn send(
        &mut self,
        ns: &NetNs,
        ifindex: u32,
        frame: &[u8],
        frames: u32,
    ) -> anyhow::Result<(u64, f64)> {
        set_template(&mut self.gen_ebpf, frame)?;
        let before = self.delivered()?;
        let program: &Xdp = self
            .gen_ebpf
            .program("xdp_gen")
            .context("xdp_gen")?
            .try_into()?;
        let fd = program.fd()?.try_clone()?;
        let frame = frame.to_vec();
        let elapsed = in_netns(&ns.name, move || -> anyhow::Result<f64> {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex; data_end must be the frame's length.
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let started = Instant::now();
            run_live(&fd, &frame, &ctx, frames)?;
            Ok(started.elapsed().as_secs_f64())
        })??;
        // Frames still in flight through the veths land within a few ms.
        std::thread::sleep(Duration::from_millis(100));
        Ok((self.delivered()? - before, elapsed))
    }
}

/// The generator writes every frame from this template (see `xdp_gen`).
fn set_template(ebpf: &mut aya::Ebpf, frame: &[u8]) -> anyhow::Result<()> {
    let mut t: aya::maps::Array<_, [u8; 60]> =
        aya::maps::Array::try_from(ebpf.map_mut("GEN_TEMPLATE").context("GEN_TEMPLATE")?)?;
    t.set(
        0,
        <[u8; 60]>::try_from(frame).context("a 60-byte frame")?,
        0,
    )?;
    Ok(())
}

/// BPF_PROG_TEST_RUN in live-frames mode on a program fd (aya's `test_run` needs the program
/// object, which stays on this side of the namespace switch).
fn run_live(
    fd: &aya::programs::ProgramFd,
    frame: &[u8],
    ctx: &[u8],
    repeat: u32,
) -> anyhow::Result<()> {
    // bpf_attr for BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h, `test` member).
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    let attr = TestAttr {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 64,
        ..Default::default()
    };
    // SAFETY: attr points at live buffers of the sizes given, for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &attr as *const TestAttr,
            std::mem::size_of::<TestAttr>(),
        )
    };
    if rc != 0 {
        bail!(
            "BPF_PROG_TEST_RUN (live frames): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

struct RateRun {
    mpps: f64,
    /// Delivered / sent.
    share: f64,
    /// Busy CPU of the whole machine per delivered frame (generator and bridge included).
    machine_ns: f64,
    /// Run time of the forwarding XDP program per delivered frame (kernel BPF stats).
    program_ns: Option<f64>,
}

/// Total run time of the loaded programs with this kernel name (BPF stats must be on).
fn program_run_ns(name: Option<&str>) -> Option<u64> {
    let name = name?;
    Some(
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str() == Some(name))
            .map(|p| p.run_time().as_nanos() as u64)
            .sum(),
    )
}

/// The forwarding-rate bed: point-to-point veths only, so that frames stay XDP frames from
/// the generator to the sinks wherever the forwarder allows it (a bridge would turn every
/// frame into an skb and cap every row at its own rate).
///
/// ```text
///   ns rgen  gen0 ── in0  ns rfloor (bare XDP forwarder)  out0 ── snk0 ┐
///            gen1 ── in0  ns rlb    (xdp-lb agent)        out0 ── snk1 ├ ns rsink: XDP sinks
///            gen2 ── in0  ns rnft   (nftables DNAT)       out0 ── snk2 ┘
/// ```
///
/// Each forwarder's backends are the sink side's addresses (198.18.1X.11-13), reached through
/// its `out0`, so xdp-lb and the floor redirect from `in0` to `out0` and the kernel forwards.
struct RateBed {
    generator: NetNs,
    fwd: Vec<NetNs>,
    sink: NetNs,
    traffic: Traffic,
    gen_ifindex: Vec<u32>,
    _floor: aya::Ebpf,
    _agent: Agent,
    pin_dir: PathBuf,
}

const RATE_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);

impl RateBed {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let generator = NetNs::new("rgen")?;
        let sink = NetNs::new("rsink")?;
        let fwd = vec![
            NetNs::new("rfloor")?,
            NetNs::new("rlb")?,
            NetNs::new("rnft")?,
        ];
        for (i, f) in fwd.iter().enumerate() {
            let net = 10 + i;
            generator.ip(&[
                "link",
                "add",
                &format!("generator{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "in0",
                "netns",
                &f.name,
            ])?;
            f.ip(&[
                "link",
                "add",
                "out0",
                "type",
                "veth",
                "peer",
                "name",
                &format!("snk{i}"),
                "netns",
                &sink.name,
            ])?;
            generator.ip(&[
                "addr",
                "add",
                &format!("198.19.{i}.2/24"),
                "dev",
                &format!("generator{i}"),
            ])?;
            f.ip(&["addr", "add", &format!("198.19.{i}.1/24"), "dev", "in0"])?;
            f.ip(&["addr", "add", &format!("198.18.{net}.1/24"), "dev", "out0"])?;
            for b in 11..=13 {
                sink.ip(&[
                    "addr",
                    "add",
                    &format!("198.18.{net}.{b}/24"),
                    "dev",
                    &format!("snk{i}"),
                ])?;
            }
            for (ns, ifname) in [
                (&generator, format!("generator{i}")),
                (f, "in0".into()),
                (f, "out0".into()),
                (&sink, format!("snk{i}")),
            ] {
                ns.ip(&["link", "set", &ifname, "up"])?;
            }
            f.sysctl("net.ipv4.ip_forward", "1")?;
            f.sysctl("net.ipv4.conf.all.accept_local", "1")?;
        }
        let sinks = (0..fwd.len())
            .map(|i| load_in(&sink, Some((&format!("snk{i}"), "xdp_sink"))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let traffic = Traffic::new(&generator, sinks)?;
        let gen_ifindex = (0..fwd.len())
            .map(|i| {
                let name = format!("generator{i}");
                in_netns(&generator.name, move || xdp_lb::netlink::ifindex(&name))?
                    .context("generator interface")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        // The floor: MAC rewrite and redirect to out0.
        let mut floor = load_in(&fwd[0], Some(("in0", "xdp_floor_live")))?;
        {
            let out0 =
                in_netns(&fwd[0].name, || xdp_lb::netlink::ifindex("out0"))?.context("out0")?;
            let mut f: aya::maps::Array<_, [u8; 16]> =
                aya::maps::Array::try_from(floor.map_mut("FLOOR_FWD").context("FLOOR_FWD")?)?;
            let mut v = [0u8; 16];
            v[..6].copy_from_slice(&sink.mac("snk0")?);
            v[6..12].copy_from_slice(&fwd[0].mac("out0")?);
            v[12..].copy_from_slice(&out0.to_ne_bytes());
            f.set(0, v, 0)?;
        }

        // xdp-lb: a DSR VIP and a NAT VIP on port 80 and 81, backends behind out0.
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", fwd[1].name));
        let mut config = format!(
            "[agent]\ninterface = \"in0\"\nxdp_mode = \"driver\"\npin_dir = \"{}\"\nflow_table_size = 65536\nmax_vips = 4\n\
             control_socket = \"/run/xlbt/{}.sock\"\nlisten = \"\"\n\n",
            pin_dir.display(),
            fwd[1].name
        );
        for (name, port, mode) in [("rate-dsr", DSR_PORT, "dsr"), ("rate-nat", NAT_PORT, "nat")] {
            config.push_str(&format!(
                "[[vip]]\nname = \"{name}\"\naddress = \"{RATE_VIP}\"\nport = {port}\nforwarding = \"{mode}\"\nmaglev_table_size = 4093\n\
                 [vip.health_check]\ntype = \"none\"\n"
            ));
            for b in 11..=13 {
                config.push_str(&format!("[[vip.backend]]\naddress = \"198.18.11.{b}\"\n"));
            }
        }
        let config_path = dir.join("xdp-lb-rate.toml");
        std::fs::write(&config_path, &config)?;
        let agent = Agent::start(
            &fwd[1],
            &["run", "--config", config_path.to_str().context("path")?],
            dir.join("agent-rate.log"),
            "xdp-lb is forwarding",
            Duration::from_secs(30),
        )?;

        // nftables: DNAT to the backends behind out0. The generator's XDP_TX into in0 needs
        // NAPI there, which GRO gives a veth without an XDP program (TESTBED.md).
        fwd[2].exec(&["ethtool", "-K", "in0", "gro", "on"])?;
        let nft = dir.join("rate-dnat.nft");
        std::fs::write(
            &nft,
            format!(
                "table ip xlbt_rate {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n\
                     ip daddr {RATE_VIP} tcp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : 198.18.12.11, 1 : 198.18.12.12, 2 : 198.18.12.13 }} : 80\n  }}\n\
                   chain post {{\n    type nat hook postrouting priority srcnat;\n    oif \"out0\" masquerade\n  }}\n}}\n"
            ),
        )?;
        fwd[2].exec(&["nft", "-f", nft.to_str().context("path")?])?;
        fwd[2].sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            generator,
            fwd,
            sink,
            traffic,
            gen_ifindex,
            _floor: floor,
            _agent: agent,
            pin_dir,
        })
    }

    /// The rows, 5 rounds interleaved: (name, program to time), runs.
    #[expect(clippy::type_complexity, reason = "a local table")]
    fn measure(
        &mut self,
        args: &Args,
    ) -> anyhow::Result<(Vec<(&'static str, Option<&'static str>)>, Vec<Vec<RateRun>>)> {
        let gen_mac = |i: usize| self.generator.mac(&format!("generator{i}"));
        let frame = |i: usize, dst: Ipv4Addr, port: u16, flags: u8| -> anyhow::Result<Vec<u8>> {
            let mut f = Frame::tcp(Ipv4Addr::new(198, 19, i as u8, 2), 40000, dst, port);
            f.src_mac = gen_mac(i)?;
            f.dst_mac = self.fwd[i].mac("in0")?;
            f.flags = flags;
            f.ip_id = GEN_IP_ID;
            Ok(f.build())
        };
        // (name, generator port, frame, XDP program to time)
        let rows: Vec<(&'static str, usize, Vec<u8>, Option<&'static str>)> = vec![
            (
                "floor: bare XDP forwarder (MAC rewrite, redirect)",
                0,
                frame(0, Ipv4Addr::new(198, 18, 10, 11), 80, TCP_ACK)?,
                Some("xdp_floor_live"),
            ),
            (
                "xdp-lb, L2 DSR",
                1,
                frame(1, RATE_VIP, DSR_PORT, TCP_ACK)?,
                Some(xdp_lb_common::PROGRAM_NAME),
            ),
            (
                "xdp-lb, NAT",
                1,
                frame(1, RATE_VIP, NAT_PORT, TCP_ACK)?,
                Some(xdp_lb_common::PROGRAM_NAME),
            ),
            (
                "nftables DNAT (kernel forwarding + conntrack)",
                2,
                frame(2, RATE_VIP, NFT_PORT, TCP_ACK)?,
                None,
            ),
        ];
        // NAT flows open with a SYN, one per generator flow, sent before every NAT run: the
        // sinks never answer, so the flows stay half-open and expire after nat_syn_timeout
        // while the other rows run.
        let nat_syns = frame(1, RATE_VIP, NAT_PORT, TCP_SYN)?;
        let gen_ns = &self.generator;
        self.traffic
            .send(gen_ns, self.gen_ifindex[1], &nat_syns, 1024)?;
        for (_, port, f, _) in &rows {
            self.traffic
                .send(gen_ns, self.gen_ifindex[*port], f, 20_000)?;
        }
        let mut runs: Vec<Vec<RateRun>> = rows.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            eprintln!("compare: forwarding round {}/{}", round + 1, args.rounds);
            for (i, (name, port, f, _)) in rows.iter().enumerate() {
                if *name == "xdp-lb, NAT" {
                    self.traffic
                        .send(gen_ns, self.gen_ifindex[1], &nat_syns, 1024)?;
                }
                let busy0 = machine_busy_ns();
                let (delivered, secs) =
                    self.traffic
                        .send(gen_ns, self.gen_ifindex[*port], f, args.frames)?;
                let busy1 = machine_busy_ns();
                runs[i].push(RateRun {
                    mpps: delivered as f64 / secs / 1e6,
                    share: delivered as f64 / args.frames as f64,
                    machine_ns: busy1.saturating_sub(busy0) as f64 / delivered.max(1) as f64,
                    program_ns: None,
                });
            }
        }
        // The programs' own time per frame, in one more run per row with the kernel's BPF
        // stats on: they read the clock twice per program run, which the rate runs above are
        // spared.
        let stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF stats")?;
        for (i, (name, port, f, program)) in rows.iter().enumerate() {
            if program.is_none() {
                continue;
            }
            if *name == "xdp-lb, NAT" {
                self.traffic
                    .send(gen_ns, self.gen_ifindex[1], &nat_syns, 1024)?;
            }
            let before = program_run_ns(*program);
            let (delivered, _) =
                self.traffic
                    .send(gen_ns, self.gen_ifindex[*port], f, args.frames / 2)?;
            let after = program_run_ns(*program);
            let ns = before
                .zip(after)
                .map(|(a, b)| b.saturating_sub(a) as f64 / delivered.max(1) as f64);
            for run in &mut runs[i] {
                run.program_ns = ns;
            }
        }
        drop(stats);
        Ok((rows.iter().map(|r| (r.0, r.3)).collect(), runs))
    }
}

impl Drop for RateBed {
    fn drop(&mut self) {
        let _ = xdp_lb::dataplane::remove_pins(&self.pin_dir);
        let _ = (&self.sink, &self.fwd);
    }
}

// ---- memory ---------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (map name, max entries, memory in bytes) of every pinned map, from the kernel's fdinfo.
fn map_memory(pin_dir: &Path) -> anyhow::Result<Vec<(String, u32, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pin_dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n == xdp_lb::dataplane::LINK_PIN)
        {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_pin(&path) else {
            continue;
        };
        let info = data.info()?;
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            data.fd().as_fd().as_raw_fd()
        ))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, info.max_entries(), memlock));
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.2));
    Ok(out)
}

// ---- the chart --------------------------------------------------------------------------

fn chart(
    path: &Path,
    tcp: &[(&str, f64, f64)],
    rate: &[(&str, f64)],
    machine: &str,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(440);
    let title = format!("xdp-lb vs its peers — {machine}");
    let max_rps = tcp.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "{title}: TCP requests/s (blue: a new connection per request; green: keep-alive)"
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max_rps, 0..(tcp.len() * 3) as i32)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(tcp.len() * 3)
        .y_label_formatter(&|y| {
            let i = (*y / 3) as usize;
            if *y % 3 == 1 && i < tcp.len() {
                tcp[tcp.len() - 1 - i].0.to_owned()
            } else {
                String::new()
            }
        })
        .x_desc("requests/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (_, new_conn, keep)) in tcp.iter().rev().enumerate() {
        let y = (i * 3) as i32;
        c.draw_series([Rectangle::new(
            [(0.0, y), (*new_conn, y + 1)],
            BLUE.mix(0.7).filled(),
        )])?;
        c.draw_series([Rectangle::new(
            [(0.0, y + 1), (*keep, y + 2)],
            GREEN.mix(0.6).filled(),
        )])?;
    }
    let max_rate = rate.iter().map(|r| r.1).fold(0.01, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "forwarding rate (live frames, 1024 flows), Mpps delivered",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max_rate, 0..(rate.len() * 2) as i32)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(rate.len() * 2)
        .y_label_formatter(&|y| {
            let i = (*y / 2) as usize;
            if *y % 2 == 0 && i < rate.len() {
                rate[rate.len() - 1 - i].0.to_owned()
            } else {
                String::new()
            }
        })
        .x_desc("Mpps")
        .draw()?;
    for (i, (_, mpps)) in rate.iter().rev().enumerate() {
        let y = (i * 2) as i32;
        c.draw_series([Rectangle::new(
            [(0.0, y), (*mpps, y + 1)],
            RED.mix(0.6).filled(),
        )])?;
    }
    root.present()?;
    Ok(())
}

// ---- main -----------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds >= 1 && args.seconds >= 1 && args.frames >= 1,
        "rounds, seconds and frames must be positive"
    );
    let started = Instant::now();
    let topo = DsrTopology::new(3)?;
    let dir = topo.dir.clone();
    let _nginx: Vec<Proc> = (0..3)
        .map(|i| nginx(&topo.backends[i], &dir, &format!("be{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;

    // xdp-lb: the DSR VIP on port 80 and a NAT VIP on port 81, same backends.
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.accept_local",
        "net.ipv4.conf.eth0.accept_local",
    ] {
        topo.lb.sysctl(key, "1")?;
    }
    // The LB's own connections (health checks) use ports above the SNAT range, as the README
    // advises: the SNAT range then covers most client ports, which NAT keeps when it can.
    topo.lb
        .sysctl("net.ipv4.ip_local_port_range", "61000 65535")?;
    let mut config = topo.config(&topo.pin_dir(), DSR_PORT, "maglev_table_size = 4093");
    // Closing NAT flows are kept 3 s (conntrack's TIME_WAIT is cut to 1 s for nftables below):
    // at tens of thousands of new connections a second the default 10 s would hold a third of
    // the ports; much shorter, and a late retransmission finds its flow gone. The SNAT
    // range stays clear of the LB's own ephemeral ports (set to 61000-65535 below), which the
    // agent's health checks use from the same address.
    config = config.replace(
        "max_vips = 4\n",
        "max_vips = 4\nsnat_port_range = \"1024-60999\"\nnat_closing_timeout = \"3s\"\n",
    );
    config.push_str(&format!(
        "[[vip]]\nname = \"web-nat\"\naddress = \"{VIP}\"\nport = {NAT_PORT}\nforwarding = \"nat\"\nmaglev_table_size = 4093\n\n"
    ));
    for i in 0..3 {
        config.push_str(&format!(
            "[[vip.backend]]\naddress = \"{}\"\nport = 80\n\n",
            backend_addr(i)
        ));
    }
    let config_path = dir.join("xdp-lb.toml");
    std::fs::write(&config_path, &config)?;
    let agent = Agent::start(
        &topo.lb,
        &["run", "--config", config_path.to_str().context("path")?],
        dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(30),
    )?;

    // haproxy on a second LB node, nftables on a third (a nat table turns conntrack on for
    // everything in its namespace, which would tax the other rows).
    let peer = NetNs::new("peer")?;
    topo.plug(&peer, "p-peer", PEER_LB)?;
    let natbox = NetNs::new("nat")?;
    topo.plug(&natbox, "p-nat", NAT_LB)?;
    natbox.sysctl("net.ipv4.ip_forward", "1")?;
    // NAPI on its veth (as a real NIC has): without it a veth queues received frames on the
    // CPU's backlog, which a burst of live frames overflows at once (66 of 200 000 got in).
    natbox.exec(&["ethtool", "-K", "eth0", "gro", "on"])?;
    // Tuned as an operator of a NAT box would: conntrack keeps TIME_WAIT entries for 120 s,
    // which at this rate fills the table within a round and drops new connections.
    natbox.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")?;
    // A new connection per request at tens of thousands per second exhausts the default
    // ephemeral range within a round (TIME_WAIT lasts 60 s): widen it and allow reuse where
    // connections originate (the client, and the proxy's side towards the backends).
    for ns in [&topo.client, &peer] {
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    }
    let backends: Vec<String> = (0..3).map(|i| backend_addr(i).to_string()).collect();
    let haproxy_cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind {PEER_LB}:{HAPROXY_PORT}\n  default_backend b\nbackend b\n  balance roundrobin\n{}",
            backends
                .iter()
                .enumerate()
                .map(|(i, a)| format!("  server be{i} {a}:80\n"))
                .collect::<String>()
        ),
    )?;
    let haproxy = spawn_in(
        &peer,
        &[
            "haproxy",
            "-db",
            "-f",
            haproxy_cfg.to_str().context("path")?,
        ],
        &dir.join("haproxy.log"),
    )?;
    let nft = dir.join("dnat.nft");
    std::fs::write(
        &nft,
        format!(
            "table ip xlbt_nat {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n\
                 ip daddr {NAT_LB} tcp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }} : 80\n  }}\n\
               chain post {{\n    type nat hook postrouting priority srcnat;\n    ip daddr 198.18.0.0/24 tcp dport 80 masquerade\n  }}\n}}\n",
            backends[0], backends[1], backends[2]
        ),
    )?;
    natbox.exec(&["nft", "-f", nft.to_str().context("path")?])?;

    std::thread::sleep(Duration::from_millis(500));

    // ---- TCP ----
    let haproxy_pid = haproxy.0.id();
    let agent_pid = agent.pid().context("the agent's pid")?;
    let rows: Vec<(&str, String, LbCpu)> = vec![
        (
            "backend directly (no balancer)",
            format!("http://{}/", backend_addr(0)),
            LbCpu::None,
        ),
        (
            "xdp-lb, L2 DSR",
            format!("http://{VIP}:{DSR_PORT}/"),
            LbCpu::Xdp(agent_pid),
        ),
        (
            "xdp-lb, NAT",
            format!("http://{VIP}:{NAT_PORT}/"),
            LbCpu::Xdp(agent_pid),
        ),
        (
            "haproxy mode tcp",
            format!("http://{PEER_LB}:{HAPROXY_PORT}/"),
            LbCpu::Process(haproxy_pid),
        ),
        (
            "nftables DNAT + masquerade",
            format!("http://{NAT_LB}:{NFT_PORT}/"),
            LbCpu::None,
        ),
    ];
    // Warm up every path (ARP, conntrack, haproxy's first connections).
    let quick = Args {
        seconds: 1,
        rounds: 1,
        connections: 4,
        frames: 1,
        out: None,
    };
    for (_, url, _) in &rows {
        wrk(&topo.client, url, &quick, false, LbCpu::None)?;
    }
    let modes = [false, true];
    let mut results: Vec<Vec<Vec<WrkResult>>> = modes
        .iter()
        .map(|_| rows.iter().map(|_| Vec::new()).collect())
        .collect();
    // The rounds run without the kernel's BPF stats: they read the clock twice per program run,
    // a tax on xdp-lb's rows alone. xdp-lb's own CPU per request is measured in one more run
    // per row and mode with the stats on.
    for round in 0..args.rounds {
        eprintln!("compare: TCP round {}/{}", round + 1, args.rounds);
        for (m, keep_alive) in modes.iter().enumerate() {
            for (i, (_, url, lb)) in rows.iter().enumerate() {
                let lb = match lb {
                    LbCpu::Xdp(_) => LbCpu::None,
                    other => *other,
                };
                results[m][i].push(wrk(&topo.client, url, &args, *keep_alive, lb)?);
            }
        }
    }
    let bpf_stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let mut xdp_lb_cpu: Vec<Vec<Option<f64>>> = modes
        .iter()
        .map(|_| rows.iter().map(|_| None).collect())
        .collect();
    for (m, keep_alive) in modes.iter().enumerate() {
        for (i, (_, url, lb)) in rows.iter().enumerate() {
            if let LbCpu::Xdp(_) = lb {
                xdp_lb_cpu[m][i] = wrk(&topo.client, url, &args, *keep_alive, *lb)?.lb_us;
            }
        }
    }

    // Frames the veths dropped on the way (XDP_TX into a full ring, the kernel's backlog): a
    // dropped segment costs a retransmission timeout, which shows in the TCP rows.
    let veth_drops = |ns: &NetNs, ifname: &str| -> String {
        let stats = ns.exec(&["ethtool", "-S", ifname]).unwrap_or_default();
        let drops: Vec<String> = stats
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                let v: u64 = v.trim().parse().ok()?;
                (v > 0 && (k.contains("drop") || k.contains("err"))).then(|| format!("{k} {v}"))
            })
            .collect();
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    };
    let tcp_drops = [
        ("xdp-lb node eth0", veth_drops(&topo.lb, "eth0")),
        (
            "switch port of the xdp-lb node",
            veth_drops(&topo.sw, "p-lb"),
        ),
        (
            "switch port of the haproxy node",
            veth_drops(&topo.sw, "p-peer"),
        ),
        (
            "switch port of the nftables node",
            veth_drops(&topo.sw, "p-nat"),
        ),
    ];

    // ---- forwarding rate ----
    // Without the stats' two clock reads per program run (the bed turns them on for one run
    // per row of its own).
    drop(bpf_stats);
    let mut bed = RateBed::new(&dir)?;
    let (rate_rows, rates) = bed.measure(&args)?;

    // ---- memory ----
    let agent_rss = agent.pid().and_then(rss_kib);
    let haproxy_rss = rss_kib(haproxy_pid);
    let maps = map_memory(&topo.pin_dir())?;

    // ---- report ----
    let machine = xdp_lb_tests::machine_label();
    let mut md = String::new();
    writeln!(md, "# xdp-lb vs its peers\n")?;
    writeln!(
        md,
        "Machine: {machine}. All namespaces share these CPUs. {} rounds, interleaved; median (min–max). \
         Per-packet costs: `target/bench/report.md`.\n",
        args.rounds
    )?;
    let mut med: Vec<Vec<f64>> = Vec::new();
    for (m, keep_alive) in modes.iter().enumerate() {
        writeln!(
            md,
            "## TCP, {}\n",
            if *keep_alive {
                "keep-alive"
            } else {
                "a new connection per request"
            }
        )?;
        writeln!(
            md,
            "wrk -t2 -c{} -d{}s{} from the client namespace; 3 nginx backends. Machine CPU: busy time of \
             all CPUs (client, balancer and backends share them) per request. Balancer CPU: xdp-lb's XDP \
             program run time (kernel BPF stats, in one extra run: they slow the program down) plus its agent's \
             process time; haproxy's process time; nftables works in the kernel's softirq, inside the machine \
             figure only.\n",
            args.connections,
            args.seconds,
            if *keep_alive {
                ""
            } else {
                " -H 'Connection: close'"
            }
        )?;
        writeln!(
            md,
            "| path | requests/s | spread | p50 ms | p99 ms | errors | × direct | machine CPU µs/req | balancer CPU µs/req |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        let rps_of = |i: usize| {
            median(
                &results[m][i]
                    .iter()
                    .map(|r| r.requests_per_sec)
                    .collect::<Vec<_>>(),
            )
        };
        let direct = rps_of(0);
        let mut meds = Vec::new();
        for (i, (name, _, lb)) in rows.iter().enumerate() {
            let rs = &results[m][i];
            let rps: Vec<f64> = rs.iter().map(|r| r.requests_per_sec).collect();
            let med_rps = median(&rps);
            meds.push(med_rps);
            let (lo, hi) = spread(&rps);
            let pick = |f: fn(&WrkResult) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
            let errors: u64 = rs.iter().map(|r| r.errors).sum();
            let lb_cpu = match lb {
                LbCpu::None if i == 0 => "—".to_owned(),
                LbCpu::None => "in softirq".to_owned(),
                LbCpu::Xdp(_) => xdp_lb_cpu[m][i].map_or("?".into(), |v| format!("{v:.2}")),
                _ => format!(
                    "{:.2}",
                    median(&rs.iter().filter_map(|r| r.lb_us).collect::<Vec<_>>())
                ),
            };
            writeln!(
                md,
                "| {name} | {med_rps:.0} | {lo:.0}–{hi:.0} | {:.2} | {:.2} | {errors} | {:.2}× | {:.1} | {lb_cpu} |",
                pick(|r| r.p50_ms),
                pick(|r| r.p99_ms),
                med_rps / direct,
                pick(|r| r.machine_us),
            )?;
        }
        let total: f64 = results[m].iter().flatten().map(|r| r.requests).sum();
        writeln!(md, "\n({total:.0} requests in all.)\n")?;
        med.push(meds);
    }
    writeln!(
        md,
        "Drop counters of the veths after the TCP rows (`ethtool -S`; all rows together):\n"
    )?;
    for (what, drops) in &tcp_drops {
        writeln!(md, "- {what}: {drops}")?;
    }
    writeln!(md)?;
    writeln!(md, "## Forwarding rate (live frames)\n")?;
    writeln!(
        md,
        "`BPF_PROG_TEST_RUN` live frames from a generator namespace ({} frames of 60 bytes per run, 1024 flows) \
         over point-to-point veths into the node under test, which forwards them out of a second veth to the \
         backends' side, where an XDP program counts and drops them (no bridge: frames stay XDP frames where the \
         forwarder allows it). Mpps = frames delivered / run time. Machine CPU = busy time of all CPUs per \
         delivered frame (the generator is in every row alike); forwarder = run time of the forwarding XDP \
         program per frame (kernel BPF stats, in one extra run per row so the rate runs do \
         without them; nftables runs in the kernel's softirq and has no separate figure).\n",
        args.frames
    )?;
    writeln!(
        md,
        "| path | Mpps delivered | spread | delivered / sent | × floor | machine CPU ns/frame | forwarder ns/frame |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    let mpps: Vec<f64> = rates
        .iter()
        .map(|r| median(&r.iter().map(|x| x.mpps).collect::<Vec<_>>()))
        .collect();
    let machine_ns: Vec<f64> = rates
        .iter()
        .map(|r| median(&r.iter().map(|x| x.machine_ns).collect::<Vec<_>>()))
        .collect();
    for (i, (name, _)) in rate_rows.iter().enumerate() {
        let v: Vec<f64> = rates[i].iter().map(|x| x.mpps).collect();
        let (lo, hi) = spread(&v);
        let share = median(&rates[i].iter().map(|x| x.share).collect::<Vec<_>>());
        let program: Vec<f64> = rates[i].iter().filter_map(|x| x.program_ns).collect();
        writeln!(
            md,
            "| {name} | {:.3} | {lo:.3}–{hi:.3} | {:.0}% | {:.2}× | {:.0} | {} |",
            mpps[i],
            share * 100.0,
            mpps[i] / mpps[0],
            machine_ns[i],
            if program.is_empty() {
                "in softirq".to_owned()
            } else {
                format!("{:.0}", median(&program))
            }
        )?;
    }
    // Program sizes: part of where the per-frame time goes.
    let sizes: Vec<String> = [xdp_lb_common::PROGRAM_NAME, "xdp_floor_live"]
        .iter()
        .filter_map(|name| {
            let p = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.name_as_str() == Some(name))?;
            Some(format!(
                "{name}: {} bytes of machine code ({} instructions processed by the verifier)",
                p.size_jitted(),
                p.verified_instruction_count()
                    .map_or("?".into(), |n| n.to_string())
            ))
        })
        .collect();
    writeln!(md, "\nPrograms: {}.", sizes.join("; "))?;
    writeln!(md, "\n## Memory\n")?;
    writeln!(
        md,
        "xdp-lb agent RSS: {} KiB (haproxy, for comparison: {} KiB). BPF maps as the kernel accounts them \
         (`memlock` in fdinfo; NAT_FLOWS grows with use):\n",
        agent_rss.map_or("?".into(), |v| v.to_string()),
        haproxy_rss.map_or("?".into(), |v| v.to_string()),
    )?;
    writeln!(md, "| map | max entries | memory |")?;
    writeln!(md, "|---|---:|---:|")?;
    let mut total_maps = 0;
    for (name, entries, bytes) in &maps {
        total_maps += bytes;
        writeln!(
            md,
            "| {name} | {entries} | {:.1} MiB |",
            *bytes as f64 / 1048576.0
        )?;
    }
    writeln!(md, "| all | | {:.1} MiB |", total_maps as f64 / 1048576.0)?;

    let p99 =
        |m: usize, i: usize| median(&results[m][i].iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let targets = [
        format!(
            "xdp-lb DSR forwarding ≥ 0.8× the floor: {:.2}× — {}",
            mpps[1] / mpps[0],
            verdict(mpps[1] >= 0.8 * mpps[0])
        ),
        format!(
            "xdp-lb DSR forwarding ≥ 5× nftables DNAT: {:.2}× — {}",
            mpps[1] / mpps[3],
            verdict(mpps[1] >= 5.0 * mpps[3])
        ),
        format!(
            "new-connection rate ≥ 2× haproxy: {:.2}× (NAT {:.2}×) — {}",
            med[0][1] / med[0][3],
            med[0][2] / med[0][3],
            verdict(med[0][1] >= 2.0 * med[0][3])
        ),
        format!(
            "new-connection rate ≥ nftables DNAT: {:.2}× (NAT {:.2}×) — {}",
            med[0][1] / med[0][4],
            med[0][2] / med[0][4],
            verdict(med[0][1] >= med[0][4])
        ),
        format!(
            "p99 within 20% of the direct path (new connections): {:.2}× (NAT {:.2}×) — {}",
            p99(0, 1) / p99(0, 0),
            p99(0, 2) / p99(0, 0),
            verdict(p99(0, 1) <= 1.2 * p99(0, 0))
        ),
    ];
    writeln!(md, "\n## Targets (issue 7), ratios within this run\n")?;
    for t in &targets {
        writeln!(md, "- {t}")?;
    }
    writeln!(
        md,
        "\nChart: `target/bench/compare.svg`. Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;

    let out: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| xdp_lb_tests::topology::target_dir().join("bench"));
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("compare.md"), &md)?;
    // Chart labels: the row names up to their first explanation.
    let short = |name: &'static str| name.split([':', '(']).next().unwrap_or(name).trim();
    let tcp_chart: Vec<(&str, f64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| (short(name), med[0][i], med[1][i]))
        .collect();
    let rate_chart: Vec<(&str, f64)> = rate_rows
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (short(name), mpps[i]))
        .collect();
    chart(&out.join("compare.svg"), &tcp_chart, &rate_chart, &machine)?;

    // One screen.
    println!("xdp-lb vs its peers on {machine}");
    println!(
        "{:<34} {:>12} {:>12} {:>9} {:>9}",
        "TCP path", "new conn/s", "keep-alive/s", "p99 ms", "CPU µs/r"
    );
    for (i, (name, _, _)) in rows.iter().enumerate() {
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>9.2} {:>9.1}",
            name,
            med[0][i],
            med[1][i],
            p99(0, i),
            median(
                &results[0][i]
                    .iter()
                    .map(|r| r.machine_us)
                    .collect::<Vec<_>>()
            )
        );
    }
    println!(
        "{:<48} {:>8} {:>8} {:>12}",
        "forwarding (live frames)", "Mpps", "× floor", "CPU ns/frame"
    );
    for (i, (name, _)) in rate_rows.iter().enumerate() {
        println!(
            "{:<48} {:>8.3} {:>7.2}× {:>12.0}",
            name,
            mpps[i],
            mpps[i] / mpps[0],
            machine_ns[i]
        );
    }
    println!(
        "agent RSS {} KiB; BPF maps {:.1} MiB",
        agent_rss.map_or("?".into(), |v| v.to_string()),
        total_maps as f64 / 1048576.0
    );
    for t in &targets {
        println!("target: {t}");
    }
    println!(
        "report: {}, chart: {}",
        out.join("compare.md").display(),
        out.join("compare.svg").display()
    );
    if results
        .iter()
        .flatten()
        .flatten()
        .any(|r| r.requests_per_sec <= 0.0)
        || mpps.iter().any(|m| *m <= 0.0)
    {
        bail!("a row carried nothing; see the logs in {}", dir.display());
    }
    Ok(())
}
