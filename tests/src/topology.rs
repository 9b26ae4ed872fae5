//! The DSR topology of shared/design/TESTBED.md, and the `xdp-lb` agent as a child process.
//!
//! ```text
//!   ns client (198.18.0.1)  ─┐
//!   ns lb     (198.18.0.2)  ─┤  bridge br0 in ns "sw"      VIP 198.18.0.100 on lb's eth0
//!   ns be1..N (198.18.0.11…)─┘  DSR: VIP on lo, arp_ignore=1, arp_announce=2
//! ```

use std::{
    fs,
    io::Read as _,
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    fixtures,
    netns::{NetNs, enter_netns},
};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

/// The IPv6 side of the DSR topology (`DsrTopology::add_ipv6`), in 2001:2::/48.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const LB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

pub fn backend_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

pub struct DsrTopology {
    // Field order is drop order: hosts first, the switch last.
    pub peer_pass: Option<PassProgram>,
    pub client: NetNs,
    pub lb: NetNs,
    pub backends: Vec<NetNs>,
    pub sw: NetNs,
    /// Scratch directory for configs and logs (under target/, kept for inspection).
    pub dir: PathBuf,
}

impl DsrTopology {
    /// Builds the topology with `n` backends. The LB gets the VIP on eth0 (what the VRRP master
    /// does), so clients resolve the VIP to the LB's MAC.
    pub fn new(n: usize) -> anyhow::Result<Self> {
        crate::netns::cleanup_stale();
        let sw = NetNs::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let client = NetNs::new("client")?;
        let lb = NetNs::new("lb")?;
        let mut backends = Vec::new();
        for i in 0..n {
            backends.push(NetNs::new(&format!("be{}", i + 1))?);
        }
        let mut topo = Self {
            peer_pass: None,
            client,
            lb,
            backends,
            sw,
            dir: scratch_dir()?,
        };
        topo.plug(&topo.client, "client", CLIENT_ADDR)?;
        topo.plug(&topo.lb, "lb", LB_ADDR)?;
        topo.lb
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        // XDP_TX out of the LB's eth0 lands on its peer in sw, which must have NAPI for the
        // frame to be accepted (TESTBED.md). GRO on the peer avoids the drops but was seen to
        // hold frames for hundreds of milliseconds; an XDP_PASS program on the peer gives it
        // the XDP NAPI path, which delivers at once.
        topo.peer_pass = Some(PassProgram::attach(&topo.sw, "p-lb")?);
        for (i, be) in topo.backends.iter().enumerate() {
            topo.plug(be, &format!("p-be{}", i + 1), backend_addr(i))?;
            be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            // The VIP on lo must not answer ARP (arp_ignore=1: only for addresses on the
            // receiving interface) nor be used as ARP source (arp_announce=2).
            for scope in ["all", "eth0"] {
                be.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
                be.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
            }
        }
        Ok(topo)
    }

    /// Dual stack: every host's eth0 gets its address in 2001:2::/64, the LB holds `VIP6` on
    /// eth0 (so clients resolve it to the LB's MAC by NDP) and the backends on lo, where the
    /// kernel never answers neighbour solicitations for it (an IPv6 address on lo is not a
    /// target on eth0: ndisc looks addresses up strictly by the receiving interface), so
    /// IPv6 DSR needs no arp_ignore counterpart. Addresses are added without duplicate
    /// address detection, which would hold them tentative for a second.
    pub fn add_ipv6(&self) -> anyhow::Result<()> {
        let add = |ns: &NetNs, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        add(&self.client, format!("{CLIENT_ADDR6}/64"), "eth0")?;
        add(&self.lb, format!("{LB_ADDR6}/64"), "eth0")?;
        // Deprecated (preferred_lft 0), as the VRRP agent adds it: otherwise Linux picks the
        // /128 VIP as the source of the LB's own connections to the subnet (its health
        // checks), whose answers the backends, holding the VIP on lo, keep to themselves.
        add_vip6_deprecated(&self.lb)?;
        for (i, be) in self.backends.iter().enumerate() {
            add(be, format!("{}/64", backend_addr6(i)), "eth0")?;
            add(be, format!("{VIP6}/128"), "lo")?;
        }
        Ok(())
    }

    /// The IPv6 DSR VIP "web6" on `port`, every backend's IPv6 address in it.
    pub fn vip6(&self, port: u16) -> fixtures::Vip {
        let vip = fixtures::vip("web6", VIP6, port);
        (0..self.backends.len()).fold(vip, |v, i| v.backend(backend_addr6(i)))
    }

    /// A VRRP pair: the VIP leaves the LB's eth0 (VRRP places it) and a second LB node `lb2`
    /// joins the bridge at `addr`, with the XDP pass program its switch port needs (see `new`).
    pub fn vrrp_pair(&self, addr: Ipv4Addr) -> anyhow::Result<(NetNs, PassProgram)> {
        self.lb
            .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])?;
        let lb2 = NetNs::new("lb2")?;
        self.plug(&lb2, "p-lb2", addr)?;
        let pass = PassProgram::attach(&self.sw, "p-lb2")?;
        Ok((lb2, pass))
    }

    /// A veth pair: `eth0` in `host`, `port` in sw on br0.
    pub fn plug(&self, host: &NetNs, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        plug_into(&self.sw, host, port, addr)
    }

    /// The `[agent]` section of the agent in the LB namespace (driver mode on eth0), with its
    /// pins in `pin_dir` and this topology's control socket; add VIPs (`vip`) to it.
    pub fn agent_config(&self, pin_dir: &Path) -> fixtures::Config {
        fixtures::config("eth0")
            .key("xdp_mode", "driver")
            .bed(pin_dir.display(), 65536, 4)
            .key("control_socket", self.control_socket())
    }

    /// The bed's DSR VIP "web" on `port`, every backend in it with weight 1.
    pub fn vip(&self, port: u16) -> fixtures::Vip {
        let vip = fixtures::vip("web", VIP, port)
            .key("protocol", "tcp")
            .key("forwarding", "dsr");
        (0..self.backends.len()).fold(vip, |v, i| {
            v.backend_with(backend_addr(i), &[("weight", "1")])
        })
    }

    /// A control socket unique to this topology (short: socket paths are limited to 108 bytes).
    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/xlbt/{}.sock", self.lb.name))
    }

    /// A pin directory unique to this topology.
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}", self.lb.name))
    }
}

/// The workspace's target directory (CARGO_TARGET_DIR if set): where logs, reports and
/// screenshots of test runs are kept.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

impl Drop for DsrTopology {
    /// Whatever an agent left pinned (killed, or `--keep-dataplane`) goes with the topology.
    fn drop(&mut self) {
        let _ = xdp_lb::dataplane::remove_pins(&self.pin_dir());
        let _ = std::fs::remove_file(self.control_socket());
    }
}

/// VIP6 on `lb`'s eth0, deprecated (preferred_lft 0), as the VRRP agent adds it: otherwise
/// Linux picks the /128 VIP as the source of the LB's own connections to the subnet.
fn add_vip6_deprecated(lb: &NetNs) -> anyhow::Result<()> {
    lb.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        "eth0",
        "nodad",
        "preferred_lft",
        "0",
    ])
    .map(drop)
}

/// A veth pair: `eth0` in `host` with `addr/24`, `port` in `sw` on its bridge br0.
pub fn plug_into(sw: &NetNs, host: &NetNs, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let port = if port.starts_with("p-") {
        port.to_owned()
    } else {
        format!("p-{port}")
    };
    sw.ip(&[
        "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
    ])?;
    sw.ip(&["link", "set", &port, "master", "br0", "up"])?;
    // Frames leave the switch with their VLAN tags in them, as on a wire: the bridge holds
    // a tag out of band once it has forwarded a frame, and a veth that may insert it by
    // "offload" hands it on out of band, where XDP cannot see it (README, troubleshooting).
    sw.exec(&[
        "ethtool",
        "-K",
        &port,
        "txvlan",
        "off",
        "tx-vlan-stag-hw-insert",
        "off",
    ])?;
    host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    // veth offloads TCP checksums (CHECKSUM_PARTIAL); a frame that XDP_TX re-sends loses
    // that mark and would reach the backend with only the pseudo-header sum, and be dropped.
    // Real NICs hand XDP complete frames, so make the test hosts send complete ones too.
    host.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
    host.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// The client's segment behind a router: `r-client` (198.19.1.1/24) in `router`, `eth0`
/// (`client_addr`/24, default route through the router) in `client`.
pub fn link_client(router: &NetNs, client: &NetNs, client_addr: Ipv4Addr) -> anyhow::Result<()> {
    router.ip(&[
        "link",
        "add",
        "r-client",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ])?;
    router.ip(&["addr", "add", "198.19.1.1/24", "dev", "r-client"])?;
    router.exec(&["ethtool", "-K", "r-client", "tx", "off"])?;
    router.ip(&["link", "set", "r-client", "up"])?;
    client.ip(&["addr", "add", &format!("{client_addr}/24"), "dev", "eth0"])?;
    client.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
    client.ip(&["link", "set", "eth0", "up"])?;
    client.ip(&["route", "add", "default", "via", "198.19.1.1"])?;
    Ok(())
}

/// A fresh scratch directory under target/testbed for one topology's configs and logs.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = target_dir()
        .join("testbed")
        .join(format!("run-{}-{}", std::process::id(), unique()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Where the `xdp-lb` binary is: `XDP_LB_BIN`, else next to the running test binary
/// (`target/<profile>/deps/…` → `target/<profile>/xdp-lb`), else target/release or debug.
pub fn xdp_lb_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("XDP_LB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        candidates.push(dir.join("xdp-lb"));
    }
    candidates.push(workspace_root().join("target/release/xdp-lb"));
    candidates.push(workspace_root().join("target/debug/xdp-lb"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("xdp-lb binary not found: build it (`cargo build -p xdp-lb`) or set XDP_LB_BIN")
}

/// An `xdp-lb` process in a namespace, with its log in a file. SIGTERM, then SIGKILL, on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `xdp-lb ARGS` inside `ns` and waits (bounded) until its log says `ready`.
    pub fn start(
        ns: &NetNs,
        args: &[&str],
        log: PathBuf,
        ready: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let bin = xdp_lb_binary()?;
        let out = fs::File::create(&log)?;
        let ns_path = ns.path();
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        // Join only the network namespace (unlike `ip netns exec`, which also remounts /sys and
        // would hide the root bpffs where the maps are pinned).
        // SAFETY: the closure runs in the child between fork and exec and only calls setns.
        unsafe {
            cmd.pre_exec(move || {
                enter_netns(&ns_path).map_err(std::io::Error::other)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut agent = Self {
            child: Some(child),
            log,
        };
        agent.wait_for_log(ready, timeout)?;
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`; fails early if the process exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "xdp-lb exited ({status}) before {needle:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "timed out after {timeout:?} waiting for {needle:?}; log:\n{}",
            self.log_text()
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGKILL, as a crash would: nothing of the agent's own cleanup runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("not running")
        };
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "xdp-lb did not stop within 10 s of SIGTERM; log:\n{}",
            self.log_text()
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// An XDP program that passes every frame, attached (driver mode) to an interface in a
/// namespace. Detached when dropped.
pub struct PassProgram {
    _ebpf: aya::Ebpf,
}

impl PassProgram {
    pub fn attach(ns: &NetNs, interface: &str) -> anyhow::Result<Self> {
        let interface = interface.to_owned();
        let ebpf = crate::netns::in_netns(&ns.name, move || -> anyhow::Result<aya::Ebpf> {
            let mut ebpf = aya::Ebpf::load(crate::BENCH_OBJECT)?;
            let program: &mut aya::programs::Xdp = ebpf
                .program_mut("xdp_empty")
                .context("xdp_empty missing")?
                .try_into()?;
            program.load()?;
            program.attach(&interface, aya::programs::XdpMode::Driver)?;
            Ok(ebpf)
        })??;
        Ok(Self { _ebpf: ebpf })
    }
}

/// Runs `xdp-lb ARGS` (a client command such as `reload` or `status`) and returns
/// (exit code, stdout, stderr).
pub fn xdp_lb_cli(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(xdp_lb_binary()?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `xdp-lb inspect stats --json` on the maps pinned in `pin_dir`, run in `ns`.
pub fn inspect_stats(ns: &NetNs, pin_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let pin_dir = pin_dir.to_str().context("pin dir path")?;
    let (code, out, err) =
        xdp_lb_cli_in(ns, &["inspect", "--pin-dir", pin_dir, "stats", "--json"])?;
    anyhow::ensure!(code == 0, "inspect stats: {err}");
    Ok(serde_json::from_str(&out)?)
}

/// Like [`xdp_lb_cli`], run inside `ns`'s network namespace (interface names are per namespace).
pub fn xdp_lb_cli_in(ns: &NetNs, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let ns_path = ns.path();
    let mut cmd = Command::new(xdp_lb_binary()?);
    cmd.args(args);
    // SAFETY: only async-signal-safe work between fork and exec (open, setns).
    unsafe {
        cmd.pre_exec(move || enter_netns(&ns_path).map_err(std::io::Error::other));
    }
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The NAT topology: backends that know nothing of the VIP, on another subnet than the
/// clients, with a router between (the common kube-apiserver HA layout).
///
/// ```text
///   ns client (198.19.1.10) ── ns router (198.19.1.1 | 198.18.0.1) ─┐
///                              ns lb     (198.18.0.2, VIP .100)    ─┤ bridge br0 in ns "sw"
///                              ns be1..N (198.18.0.11…)            ─┘ default route: the router
/// ```
///
/// The LB sends to the backends from 198.18.0.2 (the SNAT address); the backends answer it
/// directly, and the LB sends the answers to the clients through the router.
pub struct NatTopology {
    pub peer_pass: Option<PassProgram>,
    pub client: NetNs,
    pub router: NetNs,
    pub inner: DsrTopology,
}

pub const NAT_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The IPv6 side of the NAT topology (`NatTopology::add_ipv6`): the client's segment is
/// 2001:2:1::/64, the LB's and backends' 2001:2::/64 (the LB at `LB_ADDR6`, its SNAT
/// address; the VIP `VIP6`).
pub const NAT_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x10);
pub const ROUTER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

impl NatTopology {
    pub fn new(n: usize) -> anyhow::Result<Self> {
        crate::netns::cleanup_stale();
        let sw = NetNs::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let router = NetNs::new("router")?;
        let client = NetNs::new("nclient")?;
        let lb = NetNs::new("lb")?;
        let mut backends = Vec::new();
        for i in 0..n {
            backends.push(NetNs::new(&format!("be{}", i + 1))?);
        }
        let inner = DsrTopology {
            peer_pass: None,
            // Unused in this topology (the real client is behind the router); a placeholder
            // namespace keeps DsrTopology's helpers (pin_dir, control_socket) usable.
            client: NetNs::new("unused")?,
            lb,
            backends,
            sw,
            dir: scratch_dir()?,
        };
        let mut topo = Self {
            peer_pass: None,
            client,
            router,
            inner,
        };
        let t = &topo.inner;
        t.plug(&topo.router, "p-router", ROUTER_ADDR)?;
        topo.router.sysctl("net.ipv4.ip_forward", "1")?;
        link_client(&topo.router, &topo.client, NAT_CLIENT_ADDR)?;

        t.plug(&t.lb, "p-lb", LB_ADDR)?;
        t.lb.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        t.lb.ip(&["route", "add", "default", "via", &ROUTER_ADDR.to_string()])?;
        // NAT's kernel prerequisites (README, "NAT mode"): forwarding, and accept_local so a
        // rewritten packet whose next hop is still unresolved is forwarded by the kernel.
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.accept_local",
            "net.ipv4.conf.eth0.accept_local",
        ] {
            t.lb.sysctl(key, "1")?;
        }
        topo.peer_pass = Some(PassProgram::attach(&t.sw, "p-lb")?);
        for (i, be) in t.backends.iter().enumerate() {
            // Plain hosts: an address, a default route, nothing else.
            t.plug(be, &format!("p-be{}", i + 1), backend_addr(i))?;
            be.ip(&["route", "add", "default", "via", &ROUTER_ADDR.to_string()])?;
        }
        Ok(topo)
    }

    /// The same topology over IPv6, beside IPv4: the router routes 2001:2:1::/64 (the
    /// client) and 2001:2::/64 (LB, backends); the LB holds VIP6 on eth0 (deprecated, as the
    /// VRRP agent adds it, so it is never the source of the LB's own connections) and forwards
    /// IPv6 (NAT66's prerequisite, README "NAT mode"). Addresses skip duplicate address
    /// detection, which would hold them tentative for a second.
    pub fn add_ipv6(&self) -> anyhow::Result<()> {
        let add = |ns: &NetNs, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        let route_via =
            |ns: &NetNs, via: &str| ns.ip(&["-6", "route", "add", "default", "via", via]);
        self.router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        add(&self.router, format!("{ROUTER_ADDR6}/64"), "eth0")?;
        add(&self.router, "2001:2:1::1/64".into(), "r-client")?;
        add(&self.client, format!("{NAT_CLIENT_ADDR6}/64"), "eth0")?;
        route_via(&self.client, "2001:2:1::1")?;
        let t = &self.inner;
        for key in [
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.eth0.forwarding",
        ] {
            t.lb.sysctl(key, "1")?;
        }
        add(&t.lb, format!("{LB_ADDR6}/64"), "eth0")?;
        add_vip6_deprecated(&t.lb)?;
        route_via(&t.lb, &ROUTER_ADDR6.to_string())?;
        for (i, be) in t.backends.iter().enumerate() {
            add(be, format!("{}/64", backend_addr6(i)), "eth0")?;
            route_via(be, &ROUTER_ADDR6.to_string())?;
        }
        Ok(())
    }

    pub fn lb(&self) -> &NetNs {
        &self.inner.lb
    }

    pub fn backends(&self) -> &[NetNs] {
        &self.inner.backends
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}
