//! The tunnel topology (issue 29): backends two hops from the LB, in subnets of their own, each
//! running `xdp-lb decap` with the VIP on its loopback.
//!
//! ```text
//!   ns tclient (198.19.1.10) ── ns router ─┬─ bridge br0 in ns "sw": router 198.18.0.1,
//!                                          │   lb 198.18.0.2 (VIP .100 on eth0) [lb2 .3]
//!                                          ├─ be1 198.18.1.11 (router 198.18.1.1)
//!                                          ├─ be2 198.18.2.11 (router 198.18.2.1)
//!                                          └─ be3 198.18.3.11 ...
//! ```
//!
//! IPv6 beside it: the LB segment 2001:2::/64 (router ::1, LB ::2, VIP6 ::100), backend `i`
//! on 2001:2:<i+1>::/64 (router ::1, backend ::11), the client on 2001:2:ff::/64. The LB
//! segment and the backends' links have an MTU of 1600, so a client's full-size 1500-byte
//! packet fits its tunnel; the client's link keeps 1500. The router routes the VIPs to the LB
//! and takes the backends' answers from the VIP without a reverse-path check (they come back
//! another way than the VIP's route: that is the point of direct return).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use crate::{
    Agent, NetNs,
    topology::{PassProgram, VIP, VIP6, link_client, plug_into, scratch_dir},
};

pub const TCLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
pub const TROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const TLB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const TLB2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const TCLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0xff, 0, 0, 0, 0, 0x10);
pub const TROUTER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const TLB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// The MTU of the LB's segment and the backends' links.
pub const TUNNEL_LINK_MTU: u32 = 1600;

/// Backend `i`'s address, in a subnet of its own.
pub fn tbackend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1 + i as u8, 11)
}

pub fn tbackend_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 1 + i as u16, 0, 0, 0, 0, 0x11)
}

pub struct TunnelTopology {
    // Field order is drop order: processes, then hosts, the switch last.
    pub decaps: Vec<Option<Agent>>,
    pub peer_pass: Vec<PassProgram>,
    pub client: NetNs,
    pub router: NetNs,
    pub lb: NetNs,
    pub backends: Vec<NetNs>,
    pub sw: NetNs,
    pub dir: PathBuf,
}

impl TunnelTopology {
    /// The topology with `n` backends (IPv4 and IPv6), none decapsulating yet
    /// (`start_decap`).
    pub fn new(n: usize) -> anyhow::Result<Self> {
        crate::netns::cleanup_stale();
        let sw = NetNs::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&[
            "link",
            "set",
            "br0",
            "mtu",
            &TUNNEL_LINK_MTU.to_string(),
            "up",
        ])?;
        let topo = Self {
            decaps: Vec::new(),
            peer_pass: Vec::new(),
            client: NetNs::new("tclient")?,
            router: NetNs::new("router")?,
            lb: NetNs::new("lb")?,
            backends: (0..n)
                .map(|i| NetNs::new(&format!("be{}", i + 1)))
                .collect::<anyhow::Result<_>>()?,
            sw,
            dir: scratch_dir()?,
        };
        topo.router_side()?;
        topo.lb_side()?;
        for i in 0..n {
            topo.backend_side(i)?;
        }
        let mut topo = topo;
        // XDP_TX out of the LB's eth0 lands on its switch port, which needs NAPI (TESTBED.md).
        topo.peer_pass.push(PassProgram::attach(&topo.sw, "p-lb")?);
        topo.warm_up();
        Ok(topo)
    }

    /// One ping from the LB and the client to each backend, both families: every neighbour
    /// on the way is resolved before a test's first connection (IPv6 neighbour discovery on
    /// a fresh router otherwise costs the first health checks their timeout).
    fn warm_up(&self) {
        for i in 0..self.backends.len() {
            for (ns, addr) in [
                (&self.lb, tbackend_addr(i).to_string()),
                (&self.lb, tbackend_addr6(i).to_string()),
                (&self.client, tbackend_addr(i).to_string()),
                (&self.client, tbackend_addr6(i).to_string()),
            ] {
                let _ = ns.exec(&["ping", "-c", "1", "-W", "2", &addr]);
            }
        }
    }

    fn router_side(&self) -> anyhow::Result<()> {
        let r = &self.router;
        plug_into(&self.sw, r, "p-router", TROUTER_ADDR)?;
        self.mtu(&self.sw, "p-router")?;
        self.mtu(r, "eth0")?;
        link_client(r, &self.client, TCLIENT_ADDR)?;
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            r.sysctl(key, "1")?;
        }
        // The backends answer from the VIP, whose route points at the LB segment.
        for scope in ["all", "default", "eth0", "r-client"] {
            r.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        r.ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &TLB_ADDR.to_string(),
        ])?;
        let add6 = |ns: &NetNs, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        add6(r, format!("{TROUTER_ADDR6}/64"), "eth0")?;
        add6(r, "2001:2:ff::1/64".into(), "r-client")?;
        add6(&self.client, format!("{TCLIENT_ADDR6}/64"), "eth0")?;
        self.client
            .ip(&["-6", "route", "add", "default", "via", "2001:2:ff::1"])?;
        r.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &TLB_ADDR6.to_string(),
        ])?;
        Ok(())
    }

    fn lb_side(&self) -> anyhow::Result<()> {
        let lb = &self.lb;
        plug_into(&self.sw, lb, "p-lb", TLB_ADDR)?;
        self.mtu(&self.sw, "p-lb")?;
        self.mtu(lb, "eth0")?;
        lb.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        lb.ip(&["route", "add", "default", "via", &TROUTER_ADDR.to_string()])?;
        tunnel_sysctls(lb)?;
        lb.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{TLB_ADDR6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
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
        ])?;
        lb.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &TROUTER_ADDR6.to_string(),
        ])?;
        Ok(())
    }

    fn backend_side(&self, i: usize) -> anyhow::Result<()> {
        let (be, r) = (&self.backends[i], &self.router);
        let port = format!("r-be{}", i + 1);
        r.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &be.name,
        ])?;
        r.ip(&[
            "addr",
            "add",
            &format!("198.18.{}.1/24", i + 1),
            "dev",
            &port,
        ])?;
        r.ip(&[
            "-6",
            "addr",
            "add",
            &format!("2001:2:{}::1/64", i + 1),
            "dev",
            &port,
            "nodad",
        ])?;
        r.sysctl(&format!("net.ipv4.conf.{port}.rp_filter"), "0")?;
        for (ns, dev) in [(r, port.as_str()), (be, "eth0")] {
            ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
            self.mtu(ns, dev)?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        be.ip(&[
            "addr",
            "add",
            &format!("{}/24", tbackend_addr(i)),
            "dev",
            "eth0",
        ])?;
        be.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", tbackend_addr6(i)),
            "dev",
            "eth0",
            "nodad",
        ])?;
        be.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("198.18.{}.1", i + 1),
        ])?;
        be.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("2001:2:{}::1", i + 1),
        ])?;
        // The VIP on lo, as for DSR; no ARP caveats (the VIP's segment is not the backend's).
        be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        be.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        // The decapsulated packet arrives on eth0 from the client, whose route is eth0's too;
        // loose anyway, as an operator would set it for asymmetric paths.
        for scope in ["all", "eth0"] {
            be.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "2")?;
        }
        Ok(())
    }

    fn mtu(&self, ns: &NetNs, dev: &str) -> anyhow::Result<()> {
        ns.ip(&["link", "set", dev, "mtu", &TUNNEL_LINK_MTU.to_string()])
            .map(drop)
    }

    /// `xdp-lb decap` on backend `i`'s eth0 (GUE on `gue_port`), until `stop_decap` or drop.
    pub fn start_decap(&mut self, i: usize, gue_port: u16) -> anyhow::Result<()> {
        let pin_dir = self.decap_pin_dir(i);
        let log = self.dir.join(format!("decap-be{}.log", i + 1));
        let agent = Agent::start(
            &self.backends[i],
            &[
                "decap",
                "--interface",
                "eth0",
                "--gue-port",
                &gue_port.to_string(),
                "--pin-dir",
                pin_dir.to_str().unwrap_or_default(),
            ],
            log,
            "xdp-lb decap: decapsulating",
            Duration::from_secs(10),
        )?;
        while self.decaps.len() <= i {
            self.decaps.push(None);
        }
        self.decaps[i] = Some(agent);
        Ok(())
    }

    /// Stops backend `i`'s decapsulation (SIGTERM: it detaches).
    pub fn stop_decap(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(Some(mut agent)) = self.decaps.get_mut(i).map(Option::take) {
            agent.stop()?;
        }
        Ok(())
    }

    /// Where backend `i`'s decapsulation pins its maps (unique to this topology).
    pub fn decap_pin_dir(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}-decap{}", self.lb.name, i + 1))
    }

    /// The LB agent's `[agent]` section, as `DsrTopology::agent_config`.
    pub fn agent_config(&self) -> crate::fixtures::Config {
        crate::fixtures::config("eth0")
            .key("xdp_mode", "driver")
            .bed(self.pin_dir().display(), 65536, 4)
            .key("control_socket", self.control_socket())
            .key("listen", "")
    }

    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/xlbt/{}.sock", self.lb.name))
    }

    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}", self.lb.name))
    }
}

/// What an LB node of tunnel VIPs needs (README "Tunnel forwarding"): forwarding (the FIB
/// routes for the program), accept_local (the kernel forwards an encapsulated packet whose
/// next hop is not resolved yet).
pub fn tunnel_sysctls(lb: &NetNs) -> anyhow::Result<()> {
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.accept_local",
        "net.ipv4.conf.eth0.accept_local",
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.eth0.forwarding",
    ] {
        lb.sysctl(key, "1")?;
    }
    Ok(())
}

impl Drop for TunnelTopology {
    fn drop(&mut self) {
        self.decaps.clear();
        let _ = xdp_lb::dataplane::remove_pins(&self.pin_dir());
        let _ = std::fs::remove_file(self.control_socket());
        for i in 0..self.backends.len() {
            let _ = std::fs::remove_dir_all(self.decap_pin_dir(i));
        }
    }
}

/// A namespace where BPF_PROG_TEST_RUN's FIB lookups find what NAT and the tunnels need, for
/// the bench's tunnel rows and the fuzzer: lan0 with the node's addresses (198.18.0.2,
/// 2001:2::2), the router (.1, ::1) resolved, the backends' subnets (198.18.1-3.0/24,
/// 2001:2:1-3::/64) and the clients (198.19.0.0/16, 2001:2:9::/64) routed through it.
pub fn routed_bed(name: &str) -> anyhow::Result<crate::NetNs> {
    let ns = crate::NetNs::new(name)?;
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])?;
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "lan0"])?;
    ns.ip(&["-6", "addr", "add", "2001:2::2/64", "dev", "lan0", "nodad"])?;
    ns.ip(&["link", "set", "lan0", "up"])?;
    ns.ip(&["link", "set", "lan1", "up"])?;
    for router in ["198.18.0.1", "2001:2::1"] {
        let mac = "02:99:00:00:00:01";
        ns.ip(&[
            "neigh",
            "add",
            router,
            "lladdr",
            mac,
            "dev",
            "lan0",
            "nud",
            "permanent",
        ])?;
    }
    let mut routes: Vec<(String, &str)> = (1..=3)
        .flat_map(|i| {
            [
                (format!("198.18.{i}.0/24"), "198.18.0.1"),
                (format!("2001:2:{i}::/64"), "2001:2::1"),
            ]
        })
        .collect();
    routes.push(("198.19.0.0/16".into(), "198.18.0.1"));
    routes.push(("2001:2:9::/64".into(), "2001:2::1"));
    for (net, via) in &routes {
        let family = if net.contains(':') { "-6" } else { "-4" };
        ns.ip(&[family, "route", "add", net, "via", via])?;
    }
    for key in [
        "net.ipv4.conf.all.forwarding",
        "net.ipv4.conf.lo.forwarding",
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.lo.forwarding",
    ] {
        ns.sysctl(key, "1")?;
    }
    Ok(ns)
}
