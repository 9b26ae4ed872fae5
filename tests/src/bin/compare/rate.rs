//! The forwarding-rate bed: frames from a generator namespace (live frames, or AF_PACKET where
//! the kernel refuses them: `generator::Sender`), through the node under test
//! (a bare XDP floor, xdp-lb DSR and NAT, nftables), counted by XDP sinks.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use xdp_lb_test_ebpf::bench::{GEN_FLOW_LABEL, GEN_IP_ID};
use xdp_lb_tests::{
    Agent, NetNs, fixtures, in_netns,
    packet::{Frame, TCP_ACK, TCP_SYN},
};

use crate::{
    Args, DSR_PORT, NAT_PORT, NFT_PORT, TUN_PORT,
    generator::{Traffic, load_in},
    wrk::machine_busy_ns,
};

pub(crate) struct RateRun {
    pub(crate) mpps: f64,
    /// Delivered / sent.
    pub(crate) share: f64,
    /// Busy CPU of the whole machine per delivered frame (generator and bridge included).
    pub(crate) machine_ns: f64,
    /// Run time of the forwarding XDP program per delivered frame (kernel BPF stats).
    pub(crate) program_ns: Option<f64>,
    /// Frames each receive queue of the forwarder's ingress veth handled in this run: proof of
    /// how many queues (and so CPUs) the row used.
    pub(crate) queues: Vec<u64>,
}

/// Total run time of the loaded programs with this kernel name (BPF stats must be on).
pub(crate) fn program_run_ns(name: Option<&str>) -> Option<u64> {
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
pub(crate) struct RateBed {
    generator: NetNs,
    fwd: Vec<NetNs>,
    sink: NetNs,
    traffic: Traffic,
    gen_ifindex: Vec<u32>,
    _floor: aya::Ebpf,
    _agent: Agent,
    pin_dir: PathBuf,
}

pub(crate) const RATE_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
pub(crate) const RATE_VIP6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 2, 0x90, 0, 0, 0, 0, 0x100);

impl RateBed {
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        let generator = NetNs::new("rgen")?;
        let sink = NetNs::new("rsink")?;
        let fwd = vec![
            NetNs::new("rfloor")?,
            NetNs::new("rlb")?,
            NetNs::new("rnft")?,
        ];
        for (i, f) in fwd.iter().enumerate() {
            let net = 10 + i;
            // The floor's and xdp-lb's veths have two queues each way (the two-queue rows);
            // one generator thread still feeds one of them. veth refuses XDP on a device with
            // fewer receive queues than its peer has transmit queues, so both ends match.
            let q = if i < 2 { "2" } else { "1" };
            let queues = ["numtxqueues", q, "numrxqueues", q];
            let generator_if = format!("generator{i}");
            let sink_if = format!("snk{i}");
            let mut args = vec!["link", "add", &generator_if];
            args.extend(queues);
            args.extend(["type", "veth", "peer", "name", "in0"]);
            args.extend(queues);
            args.extend(["netns", &f.name]);
            generator.ip(&args)?;
            let mut args = vec!["link", "add", "out0"];
            args.extend(queues);
            args.extend(["type", "veth", "peer", "name", &sink_if]);
            args.extend(queues);
            args.extend(["netns", &sink.name]);
            f.ip(&args)?;
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
        // IPv6 beside IPv4 on xdp-lb's path: generator 2001:2:91::2 → in0, backends
        // 2001:2:11::11-13 behind out0 (the agent resolves them by NDP).
        let add6 = |ns: &NetNs, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        add6(&generator, "2001:2:91::2/64".into(), "generator1")?;
        add6(&fwd[1], "2001:2:91::1/64".into(), "in0")?;
        add6(&fwd[1], "2001:2:11::1/64".into(), "out0")?;
        for b in 11..=13 {
            add6(&sink, format!("2001:2:11::{b}/64"), "snk1")?;
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
        let mut config = fixtures::config("in0")
            .key("xdp_mode", "driver")
            .bed(pin_dir.display(), 65536, 8)
            .key("control_socket", format!("/run/xlbt/{}.sock", fwd[1].name))
            .key("listen", "");
        // Each also over UDP, on the same address and port.
        for (name, port, mode, protocol) in [
            ("rate-dsr", DSR_PORT, "dsr", "tcp"),
            ("rate-nat", NAT_PORT, "nat", "tcp"),
            ("rate-dsr-udp", DSR_PORT, "dsr", "udp"),
            ("rate-nat-udp", NAT_PORT, "nat", "udp"),
            ("rate-ipip", TUN_PORT, "ipip", "tcp"),
        ] {
            let vip = fixtures::vip(name, RATE_VIP, port)
                .key("forwarding", mode)
                .key("protocol", protocol)
                .key("maglev_table_size", 4093)
                .check("type", "none");
            config = config.vip((11..=13).fold(vip, |v, b| v.backend(format!("198.18.11.{b}"))));
        }
        let vip6 = fixtures::vip("rate-dsr6", RATE_VIP6, DSR_PORT)
            .key("maglev_table_size", 4093)
            .check("type", "none");
        config = config.vip((11..=13).fold(vip6, |v, b| v.backend(format!("2001:2:11::{b}"))));
        let config = config.to_string();
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
                     ip daddr {RATE_VIP} tcp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : 198.18.12.11, 1 : 198.18.12.12, 2 : 198.18.12.13 }} : 80\n\
                     ip daddr {RATE_VIP} udp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : 198.18.12.11, 1 : 198.18.12.12, 2 : 198.18.12.13 }} : 80\n  }}\n\
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

    /// How the generator sends (live frames, or AF_PACKET where the kernel refuses them).
    pub(crate) fn sender(&self) -> crate::generator::Sender {
        self.traffic.sender()
    }

    /// The rows, 5 rounds interleaved: (name, program to time), runs.
    #[expect(clippy::type_complexity, reason = "a local table")]
    pub(crate) fn measure(
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
        // A UDP datagram of the same length (60 bytes: 18 of payload).
        let datagram = |i: usize, dst: Ipv4Addr, port: u16| -> anyhow::Result<Vec<u8>> {
            let mut f = Frame::tcp(Ipv4Addr::new(198, 19, i as u8, 2), 40000, dst, port);
            f.proto = xdp_lb_common::IPPROTO_UDP;
            f.payload = vec![0x5a; 18];
            f.src_mac = gen_mac(i)?;
            f.dst_mac = self.fwd[i].mac("in0")?;
            f.ip_id = GEN_IP_ID;
            Ok(f.build())
        };
        let frame6 = |port: u16| -> anyhow::Result<Vec<u8>> {
            let mut f = xdp_lb_tests::packet::tcp6_frame(
                ("2001:2:91::2".parse()?, 40000),
                (RATE_VIP6, port),
                TCP_ACK,
                GEN_FLOW_LABEL,
            );
            f[0..6].copy_from_slice(&self.fwd[1].mac("in0")?);
            f[6..12].copy_from_slice(&gen_mac(1)?);
            Ok(f)
        };
        let dsr = frame(1, RATE_VIP, DSR_PORT, TCP_ACK)?;
        let nat = frame(1, RATE_VIP, NAT_PORT, TCP_ACK)?;
        let floor = frame(0, Ipv4Addr::new(198, 18, 10, 11), 80, TCP_ACK)?;
        let lb = Some(xdp_lb_common::PROGRAM_NAME);
        let row = |name, generator, frame: &Vec<u8>, program, cpus| Row {
            name,
            generator,
            frame: frame.clone(),
            program,
            cpus,
        };
        let rows = vec![
            row(
                "floor: bare XDP forwarder (MAC rewrite, redirect)",
                0,
                &floor,
                Some("xdp_floor_live"),
                1,
            ),
            row("xdp-lb, L2 DSR", 1, &dsr, lb, 1),
            row("xdp-lb, NAT", 1, &nat, lb, 1),
            row("xdp-lb, L2 DSR, IPv6", 1, &frame6(DSR_PORT)?, lb, 1),
            // IPIP to the same backends (on out0's link: the FIB's next hop is the backend),
            // counted by the sinks by the generator's id inside.
            row(
                "xdp-lb, IPIP tunnel",
                1,
                &frame(1, RATE_VIP, TUN_PORT, TCP_ACK)?,
                lb,
                1,
            ),
            row(
                "nftables DNAT (kernel forwarding + conntrack)",
                2,
                &frame(2, RATE_VIP, NFT_PORT, TCP_ACK)?,
                None,
                1,
            ),
            row(
                "xdp-lb, L2 DSR, UDP",
                1,
                &datagram(1, RATE_VIP, DSR_PORT)?,
                lb,
                1,
            ),
            row(
                "xdp-lb, NAT, UDP",
                1,
                &datagram(1, RATE_VIP, NAT_PORT)?,
                lb,
                1,
            ),
            row(
                "nftables DNAT, UDP (kernel forwarding + conntrack)",
                2,
                &datagram(2, RATE_VIP, NFT_PORT)?,
                None,
                1,
            ),
            // Two receive queues on the node under test, one generator CPU each: the same
            // flows, now handled on both CPUs at once. A shared lock or a shared counter on the
            // hot path would show as a gain below the floor's.
            row(
                "floor, two RX queues (two generator CPUs)",
                0,
                &floor,
                Some("xdp_floor_live"),
                2,
            ),
            row("xdp-lb, L2 DSR, two RX queues", 1, &dsr, lb, 2),
            row("xdp-lb, NAT, two RX queues", 1, &nat, lb, 2),
        ];
        // NAT flows open with a SYN, one per generator flow, sent before every NAT TCP run: the
        // sinks never answer, so the flows stay half-open and expire after nat_syn_timeout
        // while the other rows run.
        let nat_syns = frame(1, RATE_VIP, NAT_PORT, TCP_SYN)?;
        // Each generator CPU has its own 1024 flows (`xdp_gen`), so a two-queue row opens
        // 2048.
        let gen_ns = &self.generator;
        let syn_ifindex = self.gen_ifindex[1];
        let open_nat_flows = |traffic: &mut Traffic, r: &Row| -> anyhow::Result<()> {
            if r.frame == nat {
                traffic.send(gen_ns, syn_ifindex, &nat_syns, 1024 * r.cpus as u32, r.cpus)?;
            }
            Ok(())
        };
        for r in &rows {
            open_nat_flows(&mut self.traffic, r)?;
            self.traffic.send(
                gen_ns,
                self.gen_ifindex[r.generator],
                &r.frame,
                20_000,
                r.cpus,
            )?;
        }
        let mut runs: Vec<Vec<RateRun>> = rows.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            eprintln!("compare: forwarding round {}/{}", round + 1, args.rounds);
            for (i, r) in rows.iter().enumerate() {
                open_nat_flows(&mut self.traffic, r)?;
                let fwd = &self.fwd[r.generator];
                let queues0 = rx_queue_frames(fwd, "in0");
                let busy0 = machine_busy_ns();
                let (delivered, secs) = self.traffic.send(
                    gen_ns,
                    self.gen_ifindex[r.generator],
                    &r.frame,
                    args.frames,
                    r.cpus,
                )?;
                let busy1 = machine_busy_ns();
                let queues = rx_queue_frames(fwd, "in0")
                    .iter()
                    .zip(queues0.iter().chain(std::iter::repeat(&0)))
                    .map(|(a, b)| a.saturating_sub(*b))
                    .collect();
                runs[i].push(RateRun {
                    mpps: delivered as f64 / secs / 1e6,
                    share: delivered as f64 / args.frames as f64,
                    machine_ns: busy1.saturating_sub(busy0) as f64 / delivered.max(1) as f64,
                    program_ns: None,
                    queues,
                });
            }
        }
        // The programs' own time per frame, in one more run per row with the kernel's BPF
        // stats on: they read the clock twice per program run, which the rate runs above are
        // spared.
        let stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF stats")?;
        for (i, r) in rows.iter().enumerate() {
            if r.program.is_none() {
                continue;
            }
            open_nat_flows(&mut self.traffic, r)?;
            let before = program_run_ns(r.program);
            let (delivered, _) = self.traffic.send(
                gen_ns,
                self.gen_ifindex[r.generator],
                &r.frame,
                args.frames / 2,
                r.cpus,
            )?;
            let after = program_run_ns(r.program);
            let ns = before
                .zip(after)
                .map(|(a, b)| b.saturating_sub(a) as f64 / delivered.max(1) as f64);
            for run in &mut runs[i] {
                run.program_ns = ns;
            }
        }
        drop(stats);
        Ok((rows.iter().map(|r| (r.name, r.program)).collect(), runs))
    }
}

/// One forwarding-rate row.
struct Row {
    name: &'static str,
    /// Which generator interface (and so which forwarder) the frames go through.
    generator: usize,
    frame: Vec<u8>,
    /// The XDP program whose run time the stats run measures (None: the kernel's softirq).
    program: Option<&'static str>,
    /// Generator CPUs sending at once (= receive queues of the forwarder in use).
    cpus: usize,
}

/// Frames each receive queue of a veth has handed to its XDP program so far
/// (`ethtool -S`: `rx_queue_N_xdp_packets`), by queue number.
fn rx_queue_frames(ns: &NetNs, ifname: &str) -> Vec<u64> {
    let stats = ns.exec(&["ethtool", "-S", ifname]).unwrap_or_default();
    let mut queues: Vec<(usize, u64)> = stats
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let q = k.strip_prefix("rx_queue_")?.strip_suffix("_xdp_packets")?;
            Some((q.parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();
    queues.sort_unstable();
    queues.into_iter().map(|(_, v)| v).collect()
}

impl Drop for RateBed {
    fn drop(&mut self) {
        let _ = xdp_lb::dataplane::remove_pins(&self.pin_dir);
        let _ = (&self.sink, &self.fwd);
    }
}
