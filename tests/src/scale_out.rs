//! The scale-out topology: several active xdp-lb nodes behind a router's ECMP, each announcing
//! the VIP over BGP with BIRD (README, "Scale out").
//!
//! ```text
//!   ns client (198.19.1.10) ── ns router (198.19.1.1 | 198.18.0.1; BIRD: BGP + BFD, ECMP)
//!                                 │
//!                      bridge br0 in ns "sw"
//!          ┌──────────────┬───────┴──────┬──────────────┐
//!   ns lb1..N (198.18.0.2…; xdp-lb + BIRD)      ns be1..M (198.18.0.11…; VIP on lo, DSR)
//! ```
//!
//! The router learns `VIP/32` from every node that announces it and installs one route with a
//! next hop per node (`merge paths`), hashed on the 5-tuple (`fib_multipath_hash_policy = 1`).
//! Backends answer clients directly through the router (DSR).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    NetNs, fixtures,
    peers::{Proc, spawn_in},
    topology::{Agent, PassProgram, backend_addr, link_client, plug_into, scratch_dir},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
/// The kernel table the agents put their announcements in (`announce.table`).
pub const TABLE: u32 = 1000;
/// The most nodes the router has BGP neighbours for.
pub const MAX_NODES: usize = 4;
/// BFD: 100 ms × 3 (TESTBED.md: a dead next hop dropped in ~0.3 s).
const BFD: &str = "min rx interval 100 ms; min tx interval 100 ms; multiplier 3;";
pub const READY: &str = "xdp-lb is forwarding";

pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i as u8)
}

/// One LB node: its namespace, its BIRD and its agent (dropped in that order's reverse).
pub struct Node {
    pub agent: Option<Agent>,
    pub bird: Option<Proc>,
    pub ns: NetNs,
    pub index: usize,
}

impl Node {
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}", self.ns.name))
    }

    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/xlbt/{}.sock", self.ns.name))
    }

    pub fn bird_socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("bird-lb{}.ctl", self.index + 1))
    }

    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("agent running")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.agent.take());
        drop(self.bird.take());
        let _ = xdp_lb::dataplane::remove_pins(&self.pin_dir());
        let _ = std::fs::remove_file(self.control_socket());
    }
}

pub struct ScaleOut {
    // Field order is drop order: processes and hosts first, the switch last.
    pub peer_pass: Vec<PassProgram>,
    pub router_bird: Option<Proc>,
    pub nodes: Vec<Node>,
    pub client: NetNs,
    pub router: NetNs,
    pub backends: Vec<NetNs>,
    pub sw: NetNs,
    pub dir: PathBuf,
}

impl ScaleOut {
    /// `nodes` LB namespaces (nothing started in them yet: see [`Self::start_node`]) and
    /// `backends` DSR backends, the router with its BIRD running.
    pub fn new(nodes: usize, backends: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes <= MAX_NODES, "at most {MAX_NODES} nodes");
        crate::netns::cleanup_stale();
        let sw = NetNs::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let router = NetNs::new("router")?;
        let client = NetNs::new("sclient")?;
        let mut topo = Self {
            peer_pass: Vec::new(),
            router_bird: None,
            nodes: Vec::new(),
            client,
            router,
            backends: Vec::new(),
            sw,
            dir: scratch_dir()?,
        };
        plug_into(&topo.sw, &topo.router, "p-router", ROUTER_ADDR)?;
        for key in [
            "net.ipv4.ip_forward=1",
            // ECMP on the 5-tuple: flows of one client spread over the nodes.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
        ] {
            let (k, v) = key.split_once('=').expect("k=v");
            topo.router.sysctl(k, v)?;
        }
        link_client(&topo.router, &topo.client, CLIENT_ADDR)?;

        for i in 0..backends {
            let be = NetNs::new(&format!("be{}", i + 1))?;
            plug_into(&topo.sw, &be, &format!("p-be{}", i + 1), backend_addr(i))?;
            be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            for scope in ["all", "eth0"] {
                be.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
                be.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
            }
            be.ip(&["route", "add", "default", "via", &ROUTER_ADDR.to_string()])?;
            topo.backends.push(be);
        }
        for i in 0..nodes {
            topo.add_node(i)?;
        }
        topo.start_router_bird()?;
        Ok(topo)
    }

    /// Plugs node `i` into the segment (its agent and BIRD are started separately).
    pub fn add_node(&mut self, i: usize) -> anyhow::Result<()> {
        let ns = NetNs::new(&format!("lb{}", i + 1))?;
        let port = format!("p-lb{}", i + 1);
        plug_into(&self.sw, &ns, &port, node_addr(i))?;
        // XDP_TX out of the node's eth0 lands on this port: it needs XDP's NAPI path
        // (TESTBED.md).
        self.peer_pass.push(PassProgram::attach(&self.sw, &port)?);
        self.nodes.push(Node {
            agent: None,
            bird: None,
            ns,
            index: i,
        });
        Ok(())
    }

    fn start_router_bird(&mut self) -> anyhow::Result<()> {
        let mut conf = format!(
            "router id {ROUTER_ADDR};\nlog stderr all;\nprotocol device {{}}\n\
             protocol kernel {{\n  merge paths on;\n  ipv4 {{ import none; export all; }};\n}}\n\
             protocol bfd {{\n  interface \"eth0\" {{ {BFD} }};\n}}\n\
             template bgp lbs {{\n  local {ROUTER_ADDR} as 65000;\n  bfd on;\n  hold time 3;\n  keepalive time 1;\n  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 3;\n  ipv4 {{ import all; export none; }};\n}}\n"
        );
        for i in 0..MAX_NODES {
            conf.push_str(&format!(
                "protocol bgp lb{} from lbs {{ neighbor {} as 65001; }}\n",
                i + 1,
                node_addr(i)
            ));
        }
        let path = self.dir.join("bird-router.conf");
        std::fs::write(&path, conf)?;
        self.router_bird = Some(bird(
            &self.router,
            &path,
            &self.dir.join("bird-router.ctl"),
            &self.dir.join("bird-router.log"),
        )?);
        Ok(())
    }

    /// The node's xdp-lb configuration: the DSR VIP "web" on port 80 over every backend
    /// (`reversed`: listed in the opposite order, which must not change any choice), announced.
    pub fn node_config(&self, i: usize, reversed: bool) -> fixtures::Config {
        let node = &self.nodes[i];
        let mut order: Vec<usize> = (0..self.backends.len()).collect();
        if reversed {
            order.reverse();
        }
        let vip = order.into_iter().fold(
            fixtures::vip("web", VIP, 80)
                .key("forwarding", "dsr")
                .key("maglev_table_size", 65537)
                .check("interval", "200ms")
                .check("timeout", "200ms")
                .check("fall", 2)
                .check("rise", 1),
            |v, b| v.backend(backend_addr(b)),
        );
        fixtures::config("eth0")
            .key("xdp_mode", "driver")
            .bed(node.pin_dir().display(), 65536, 4)
            .key("control_socket", node.control_socket())
            .key("listen", "")
            .vip(vip)
            .announce("table", TABLE)
            .announce("grace", "1s")
            .announce("engine_socket", node.bird_socket(&self.dir))
    }

    /// Starts node `i`'s BIRD and agent (with [`Self::node_config`] unless `config` is given).
    pub fn start_node(&mut self, i: usize, config: Option<String>) -> anyhow::Result<()> {
        self.start_bird(i)?;
        self.start_agent(i, config)
    }

    pub fn start_agent(&mut self, i: usize, config: Option<String>) -> anyhow::Result<()> {
        let text = config.unwrap_or_else(|| self.node_config(i, false).to_string());
        let path = self.dir.join(format!("xdp-lb-lb{}.toml", i + 1));
        std::fs::write(&path, text)?;
        let log = self.dir.join(format!("agent-lb{}.log", i + 1));
        let agent = Agent::start(
            &self.nodes[i].ns,
            &["run", "--config", path.to_str().context("path")?],
            log,
            READY,
            Duration::from_secs(20),
        )?;
        self.nodes[i].agent = Some(agent);
        Ok(())
    }

    /// BIRD on node `i`: learns the agent's table, BGP to the router with BFD.
    pub fn start_bird(&mut self, i: usize) -> anyhow::Result<()> {
        let me = node_addr(i);
        let conf = format!(
            "router id {me};\nlog stderr all;\nprotocol device {{}}\n\
             ipv4 table vips;\n\
             # The agent's announcements: VIP/32 routes it keeps in kernel table {TABLE}.\n\
             protocol kernel announced {{\n  kernel table {TABLE};\n  learn;\n  scan time 1;\n  ipv4 {{ table vips; import all; export none; }};\n}}\n\
             protocol bfd {{\n  interface \"eth0\" {{ {BFD} }};\n}}\n\
             protocol bgp uplink {{\n  local {me} as 65001;\n  neighbor {ROUTER_ADDR} as 65000;\n  bfd on;\n  hold time 3;\n  keepalive time 1;\n  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 3;\n  ipv4 {{ table vips; import none; export all; }};\n}}\n"
        );
        let path = self.dir.join(format!("bird-lb{}.conf", i + 1));
        std::fs::write(&path, conf)?;
        let socket = self.nodes[i].bird_socket(&self.dir);
        let log = self.dir.join(format!("bird-lb{}.log", i + 1));
        self.nodes[i].bird = Some(bird(&self.nodes[i].ns, &path, &socket, &log)?);
        Ok(())
    }

    /// The router's next hops for the VIP now (empty: no route).
    pub fn next_hops(&self) -> anyhow::Result<Vec<Ipv4Addr>> {
        let out = self.router.ip(&["route", "show", &format!("{VIP}/32")])?;
        Ok(out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect())
    }

    /// Waits (bounded) until the router's next hops for the VIP are exactly `want` (any
    /// order); returns how long that took.
    pub fn wait_next_hops(&self, want: &[Ipv4Addr], timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut want = want.to_vec();
        want.sort();
        let mut last = Vec::new();
        while start.elapsed() < timeout {
            last = self.next_hops()?;
            last.sort();
            if last == want {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "the router's next hops for {VIP} are {last:?}, not {want:?}, after {timeout:?}\n{}",
            self.logs()
        )
    }

    /// BIRD's and the agents' logs, each node's announcement table and what its BIRD made of
    /// it, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let table = node
                .ns
                .ip(&["route", "show", "table", &TABLE.to_string()])
                .unwrap_or_else(|e| format!("{e:#}"));
            let bird = node
                .ns
                .exec(&[
                    "birdc",
                    "-s",
                    node.bird_socket(&self.dir).to_str().unwrap_or(""),
                    "show",
                    "route",
                    "all",
                    "table",
                    "vips",
                ])
                .unwrap_or_else(|e| format!("{e:#}"));
            out.push_str(&format!(
                "--- lb{}: table {TABLE}:\n{table}\nits BIRD's table:\n{bird}\n",
                node.index + 1
            ));
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                out.push_str(&format!("--- {} (last lines)\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A BIRD in the foreground with its own config, control socket and log.
fn bird(ns: &NetNs, conf: &Path, socket: &Path, log: &Path) -> anyhow::Result<Proc> {
    let _ = std::fs::remove_file(socket);
    let mut proc = spawn_in(
        ns,
        &[
            "bird",
            "-f",
            "-c",
            conf.to_str().context("path")?,
            "-s",
            socket.to_str().context("path")?,
        ],
        log,
    )?;
    // Bounded: its control socket answers once the config is read (the file appears
    // before, and stays when the config is refused: BIRD has exited then).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(status)) = proc.0.try_wait() {
            bail!(
                "BIRD exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            if proc.0.try_wait().ok().flatten().is_none() {
                return Ok(proc);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "BIRD did not start within 5 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
