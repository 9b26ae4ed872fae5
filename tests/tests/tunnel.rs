//! End to end in network namespaces: tunnel forwarding (issue 29) through the real XDP
//! program, to backends two hops away in subnets of their own, each running `xdp-lb decap`
//! with the VIP on its loopback and answering the client directly. Real TCP connections, 10 MB
//! each way checked by digest.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use xdp_lb_tests::{
    Agent, TcpService, fixtures, http_get_many, in_netns, require_root,
    service::{Transfer, http_fetch},
    topology::{VIP, VIP6, inspect_stats, xdp_lb_cli_in},
    tunnel::{TunnelTopology, tbackend_addr, tbackend_addr6},
};

const PORT: u16 = 80;
const GUE_PORT: u16 = 6080;
const READY: &str = "xdp-lb is forwarding";
const TEN_MB: u64 = 10 * 1024 * 1024;

/// The topology with `n` backends, each serving `PORT` and decapsulating (GUE on `GUE_PORT`).
fn bed(n: usize) -> (TunnelTopology, Vec<TcpService>) {
    let mut topo = TunnelTopology::new(n).unwrap();
    for i in 0..n {
        topo.start_decap(i, GUE_PORT).unwrap();
    }
    let services = (0..n)
        .map(|i| TcpService::start(&topo.backends[i].name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    (topo, services)
}

/// A tunnel VIP "tun" on `address`, forwarding by `mode`, with these backends.
fn tunnel_vip(address: IpAddr, mode: &str, backends: &[IpAddr]) -> fixtures::Vip {
    backends.iter().fold(
        fixtures::vip("tun", address, PORT)
            .key("forwarding", mode)
            .check("interval", "300ms"),
        |v, b| v.backend(*b),
    )
}

fn start_agent(topo: &TunnelTopology, config: &fixtures::Config) -> Agent {
    let path = topo.dir.join("xdp-lb.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    Agent::start(
        &topo.lb,
        &["run", "--config", path.to_str().unwrap()],
        topo.dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

/// `n` new connections from the client; the answering backend of each.
fn connections(topo: &TunnelTopology, vip: IpAddr, n: usize) -> Vec<anyhow::Result<String>> {
    in_netns(&topo.client.name, move || {
        http_get_many(SocketAddr::new(vip, PORT), n, Duration::from_secs(3))
    })
    .unwrap()
}

/// The data plane's non-zero counters, for a failure's message.
fn nonzero_counters(topo: &TunnelTopology) -> String {
    match inspect_stats(&topo.lb, &topo.pin_dir()) {
        Ok(stats) => stats["stats"]["counters"]
            .as_object()
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        Err(e) => format!("(inspect stats failed: {e:#})"),
    }
}

/// Every connection answered: how many by each backend.
fn answered_by(
    topo: &TunnelTopology,
    answers: &[anyhow::Result<String>],
) -> BTreeMap<String, usize> {
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        let body = a.as_ref().unwrap_or_else(|e| {
            panic!(
                "connection {i} of {} failed: {e:#}; counters: {}",
                answers.len(),
                nonzero_counters(topo)
            )
        });
        *per_backend.entry(body.clone()).or_insert(0) += 1;
    }
    per_backend
}

/// Every connection answered, each backend's share within 10 points of an even one (for three
/// backends, 23% to 43%): 300 connections' shares of a fair split have a standard deviation of
/// 2.7 points, so this fails for a skewed table, not for chance.
fn assert_spread(topo: &TunnelTopology, answers: &[anyhow::Result<String>], backends: usize) {
    let per_backend = answered_by(topo, answers);
    let n = answers.len() as f64;
    for i in 0..backends {
        let share = *per_backend.get(&format!("be{}", i + 1)).unwrap_or(&0) as f64 / n;
        assert!(
            (share - 1.0 / backends as f64).abs() <= 0.10,
            "be{} answered {:.0}% of {n}, expected {:.0}% ± 10: {per_backend:?}",
            i + 1,
            share * 100.0,
            100.0 / backends as f64
        );
    }
}

/// 10 MB each way to `vip`, checked by digest at the far end.
fn transfers(topo: &TunnelTopology, vip: IpAddr) {
    let ((up_be, up_ok), (down_be, down_ok)) = in_netns(&topo.client.name, move || {
        let addr = SocketAddr::new(vip, PORT);
        let transfer = |seed| Transfer {
            bytes: TEN_MB,
            seed,
            timeout: Duration::from_secs(15),
        };
        (
            transfer(7).upload(addr).unwrap(),
            transfer(11).download(addr).unwrap(),
        )
    })
    .unwrap();
    assert!(
        up_ok,
        "10 MB upload (to {up_be}) arrived corrupted or short"
    );
    assert!(
        down_ok,
        "10 MB download (from {down_be}) arrived corrupted or short"
    );
}

/// `mode`'s VIP over three backends of the family of `vip`: 300 connections spread ±10%, then
/// 10 MB each way.
fn balances(mode: &str, v6: bool) {
    let (topo, _services) = bed(3);
    let (vip, backends): (IpAddr, Vec<IpAddr>) = if v6 {
        (
            VIP6.into(),
            (0..3).map(|i| tbackend_addr6(i).into()).collect(),
        )
    } else {
        (
            VIP.into(),
            (0..3).map(|i| tbackend_addr(i).into()).collect(),
        )
    };
    let config = topo
        .agent_config()
        .key("listen", "127.0.0.1:9100")
        .key("flow_log", true)
        .key("flow_log_rate", 1000)
        .vip(tunnel_vip(vip, mode, &backends));
    let mut agent = start_agent(&topo, &config);
    let answers = connections(&topo, vip, 300);
    assert_spread(&topo, &answers, 3);
    transfers(&topo, vip);
    shows_the_mode(&topo, &agent, mode);
    assert!(agent.stop().unwrap().success());
}

/// `inspect`, its stats, `/metrics`, `status` and the flow log name the VIP's mode and count
/// its traffic under it.
fn shows_the_mode(topo: &TunnelTopology, agent: &Agent, mode: &str) {
    let pin = topo.pin_dir();
    let pin = pin.to_str().unwrap();
    let cli = |args: &[&str]| xdp_lb_cli_in(&topo.lb, args).unwrap().1;
    let vips: serde_json::Value =
        serde_json::from_str(&cli(&["inspect", "--pin-dir", pin, "vips", "--json"])).unwrap();
    assert_eq!(vips[0]["forwarding"], mode, "inspect vips: {vips}");
    let tunnel = &vips[0]["tunnel"];
    assert!(
        tunnel["source_ipv4"].is_string() || tunnel["source_ipv6"].is_string(),
        "inspect vips shows the tunnel: {vips}"
    );
    let stats = inspect_stats(&topo.lb, &topo.pin_dir()).unwrap();
    let by_mode = &stats["stats"]["by_mode"];
    assert!(
        by_mode[mode]["packets"].as_u64().unwrap_or(0) > 300,
        "inspect stats counts the mode's traffic: {by_mode}"
    );
    let flows: serde_json::Value =
        serde_json::from_str(&cli(&["inspect", "--pin-dir", pin, "flows", "--json"])).unwrap();
    assert_eq!(flows[0]["forwarding"], mode, "inspect flows: {flows}");
    let metrics = in_netns(&topo.lb.name, || {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9100));
        http_fetch(addr, "/metrics", Duration::from_secs(3))
    })
    .unwrap()
    .unwrap()
    .1;
    assert!(
        metrics.contains(&format!("forwarding=\"{mode}\"}} 1")),
        "/metrics has the VIP's mode"
    );
    let prefix = format!("xdp_lb_mode_packets_total{{mode=\"{mode}\"}} ");
    let mode_packets = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        mode_packets > 300,
        "/metrics counts the mode's packets: {mode_packets}"
    );
    let socket = topo.control_socket();
    let status: serde_json::Value = serde_json::from_str(&cli(&[
        "status",
        "--socket",
        socket.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(status["vips"][0]["forwarding"], mode, "status: {status}");
    assert!(status["tunnel_source"].is_object(), "status: {status}");
    assert!(
        agent.log_text().contains(&format!("mode={mode}")),
        "the flow log names the mode"
    );
}

#[test]
fn ipip_balances_backends_two_hops_away() {
    require_root!();
    balances("ipip", false);
}

#[test]
fn ip6ip6_balances_backends_two_hops_away() {
    require_root!();
    balances("ipip", true);
}

#[test]
fn gue_balances_backends_two_hops_away() {
    require_root!();
    balances("gue", false);
}

/// A backend whose decapsulation stops is taken out by the check through the tunnel (its
/// plain TCP check still passes: the service listens on its own address too), with that
/// reason; it comes back when decapsulation does, and the other backends carry every new
/// connection meanwhile.
#[test]
fn the_tunnel_check_takes_out_a_backend_without_decapsulation() {
    require_root!();
    let (mut topo, _services) = bed(3);
    let backends: Vec<IpAddr> = (0..3).map(|i| tbackend_addr(i).into()).collect();
    let vip = tunnel_vip(VIP.into(), "ipip", &backends)
        .check("rise", 1)
        .check("fall", 2)
        .check("timeout", "200ms");
    let mut agent = start_agent(&topo, &topo.agent_config().vip(vip));
    let before = answered_by(&topo, &connections(&topo, VIP.into(), 60));
    assert_eq!(before.len(), 3, "every backend answers: {before:?}");
    topo.stop_decap(1).unwrap();
    agent
        .wait_for_log("backend DOWN", Duration::from_secs(5))
        .unwrap();
    let log = agent.log_text();
    let down = log
        .lines()
        .find(|l| l.contains("backend DOWN"))
        .unwrap_or_default();
    assert!(
        down.contains(&tbackend_addr(1).to_string())
            && down.contains("no answer through the IPIP tunnel"),
        "the tunnel check names its reason: {down}"
    );
    let per_backend = answered_by(&topo, &connections(&topo, VIP.into(), 60));
    assert!(
        !per_backend.contains_key("be2"),
        "be2 is out: {per_backend:?}"
    );
    topo.start_decap(1, GUE_PORT).unwrap();
    agent
        .wait_for_log("backend UP", Duration::from_secs(5))
        .unwrap();
    assert!(agent.stop().unwrap().success());
}

/// A counter of the LB's data plane.
fn counter(topo: &TunnelTopology, name: &str) -> u64 {
    inspect_stats(&topo.lb, &topo.pin_dir()).unwrap()["stats"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} in stats"))
}

/// A 10 MB upload through a VIP whose `tunnel_mtu` (1400) is below what the client's path
/// allows (1500): without `mss_clamp` the client's full-size segments are answered with ICMP
/// errors naming the MTU that fits, its stack lowers its path MTU, and the upload completes;
/// with `mss_clamp` its SYN already offers a segment size that fits, and no ICMP is needed.
fn small_tunnel_mtu(v6: bool, clamp: bool) {
    let (topo, _services) = bed(1);
    let (vip, backend): (IpAddr, IpAddr) = if v6 {
        (VIP6.into(), tbackend_addr6(0).into())
    } else {
        (VIP.into(), tbackend_addr(0).into())
    };
    let config = topo.agent_config().vip(
        tunnel_vip(vip, "ipip", &[backend])
            .key("tunnel_mtu", 1400)
            .key("mss_clamp", clamp),
    );
    let mut agent = start_agent(&topo, &config);
    let (up_be, up_ok) = in_netns(&topo.client.name, move || {
        Transfer {
            bytes: TEN_MB,
            seed: 5,
            timeout: Duration::from_secs(20),
        }
        .upload(SocketAddr::new(vip, PORT))
        .unwrap()
    })
    .unwrap();
    assert!(
        up_ok,
        "10 MB upload (to {up_be}) arrived corrupted or short"
    );
    let (icmp, clamped) = (
        counter(&topo, "tunnel_icmp_too_big"),
        counter(&topo, "tunnel_mss_clamped"),
    );
    if clamp {
        assert_eq!(
            icmp, 0,
            "mss_clamp: no ICMP needed ({clamped} SYNs clamped)"
        );
        assert!(clamped >= 1, "the SYN's MSS was clamped");
    } else {
        assert!(icmp >= 1, "the client was told the MTU");
        assert_eq!(clamped, 0, "no clamping asked for");
    }
    eprintln!(
        "tunnel_mtu 1400, mss_clamp {clamp}, IPv6 {v6}: {icmp} ICMP errors, {clamped} SYNs clamped"
    );
    assert!(agent.stop().unwrap().success());
}

#[test]
fn a_small_tunnel_mtu_is_found_by_icmp() {
    require_root!();
    small_tunnel_mtu(false, false);
}

#[test]
fn a_small_tunnel_mtu_is_found_by_icmpv6() {
    require_root!();
    small_tunnel_mtu(true, false);
}

#[test]
fn mss_clamp_avoids_the_icmp() {
    require_root!();
    small_tunnel_mtu(false, true);
}

/// A reload that adds a backend and removes another while a client's connection runs
/// through the tunnel: the connection keeps every byte (each echo checked), new connections
/// go to the backends now configured.
#[test]
fn a_connection_keeps_every_byte_while_backends_change() {
    require_root!();
    let (topo, _services) = bed(3);
    let all: Vec<IpAddr> = (0..3).map(|i| tbackend_addr(i).into()).collect();
    let mut agent = start_agent(
        &topo,
        &topo
            .agent_config()
            .vip(tunnel_vip(VIP.into(), "ipip", &all[..2])),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = format!("/run/netns/{}", topo.client.name);
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        xdp_lb_tests::netns::enter_netns(&ns).unwrap();
        let addr = SocketAddr::from((VIP, PORT));
        let mut c = xdp_lb_tests::EchoClient::connect(addr, Duration::from_secs(5)).unwrap();
        tx.send(c.backend.clone()).unwrap();
        let (mut trips, deadline) = (0u64, std::time::Instant::now() + Duration::from_secs(60));
        while !stop2.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            if let Err(e) = c.round_trip() {
                return Err(format!("after {trips} round trips: {e:#}"));
            }
            trips += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(trips)
    });
    let on = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let a: usize = on[2..].parse::<usize>().unwrap() - 1;
    let removed = 1 - a;
    // be3 joins, the other of be1/be2 leaves.
    let kept: Vec<IpAddr> = vec![all[a], all[2]];
    let path = topo.dir.join("xdp-lb.toml");
    std::fs::write(
        &path,
        topo.agent_config()
            .vip(tunnel_vip(VIP.into(), "ipip", &kept))
            .to_string(),
    )
    .unwrap();
    let (code, out, err) =
        xdp_lb_cli_in(&topo.lb, &["reload", "--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "reload: {out}{err}");
    let per_backend = answered_by(&topo, &connections(&topo, VIP.into(), 60));
    assert!(
        !per_backend.contains_key(&format!("be{}", removed + 1)) && per_backend.contains_key("be3"),
        "new connections go to be{} and be3: {per_backend:?}",
        a + 1
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let trips = echo.join().unwrap().unwrap();
    assert!(
        trips > 20,
        "the connection on {on} kept going: {trips} round trips"
    );
    assert!(agent.stop().unwrap().success());
}

/// Two LB nodes behind the router's ECMP (BIRD, BGP and BFD), each announcing the tunnel VIP:
/// connections spread over both nodes, every one answered (both nodes choose the same
/// backend for a flow, so either may carry it), and both encapsulate.
#[test]
fn two_nodes_behind_ecmp_announce_a_tunnel_vip() {
    use xdp_lb_tests::scale_out::{ScaleOut, TABLE, node_addr};
    require_root!();
    let mut topo = ScaleOut::new(2, 2).unwrap();
    let _services: Vec<TcpService> = (0..2)
        .map(|i| TcpService::start(&topo.backends[i].name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    let mut decaps = Vec::new();
    for (i, be) in topo.backends.iter().enumerate() {
        let pin = format!("/sys/fs/bpf/{}-decap", be.name);
        decaps.push(
            Agent::start(
                be,
                &["decap", "--interface", "eth0", "--pin-dir", &pin],
                topo.dir.join(format!("decap-be{}.log", i + 1)),
                "xdp-lb decap: decapsulating",
                Duration::from_secs(10),
            )
            .unwrap(),
        );
    }
    for i in 0..2 {
        xdp_lb_tests::tunnel::tunnel_sysctls(&topo.nodes[i].ns).unwrap();
        let node = &topo.nodes[i];
        let vip = (0..2).fold(
            fixtures::vip("web", VIP, PORT)
                .key("forwarding", "ipip")
                .key("maglev_table_size", 65537)
                .check("interval", "200ms")
                .check("timeout", "200ms"),
            |v, b| v.backend(xdp_lb_tests::topology::backend_addr(b)),
        );
        let config = fixtures::config("eth0")
            .key("xdp_mode", "driver")
            .bed(node.pin_dir().display(), 65536, 4)
            .key("control_socket", node.control_socket())
            .key("listen", "")
            .vip(vip)
            .announce("table", TABLE)
            .announce("grace", "1s")
            .announce("engine_socket", node.bird_socket(&topo.dir));
        topo.start_node(i, Some(config.to_string())).unwrap();
    }
    topo.wait_next_hops(&[node_addr(0), node_addr(1)], Duration::from_secs(15))
        .unwrap();
    let answers = in_netns(&topo.client.name, || {
        http_get_many(SocketAddr::from((VIP, PORT)), 300, Duration::from_secs(3))
    })
    .unwrap();
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 300 failed: {failed:?}",
        failed.len()
    );
    for node in &topo.nodes {
        let stats = inspect_stats(&node.ns, &node.pin_dir()).unwrap();
        let ipip = stats["stats"]["by_mode"]["ipip"]["new_flows"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            ipip >= 45,
            "{} encapsulated {ipip} of 300 new flows",
            node.ns.name
        );
    }
    drop(decaps);
}

/// A VRRP pair carrying a tunnel VIP: the master dies, the backup takes the VIP, and a
/// connection through the tunnel keeps every byte (the backup picks the same backend).
#[test]
fn vrrp_moves_a_tunnel_vip_and_the_connection_keeps_going() {
    use xdp_lb_tests::tunnel::{TLB2_ADDR, TROUTER_ADDR};
    require_root!();
    let (mut topo, _services) = bed(3);
    // The VIP leaves lb's eth0 (VRRP places it); the router finds it on the segment.
    topo.lb
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .unwrap();
    topo.router
        .ip(&["route", "replace", &format!("{VIP}/32"), "dev", "eth0"])
        .unwrap();
    let lb2 = xdp_lb_tests::NetNs::new("lb2").unwrap();
    xdp_lb_tests::topology::plug_into(&topo.sw, &lb2, "p-lb2", TLB2_ADDR).unwrap();
    for (ns, dev) in [(&topo.sw, "p-lb2"), (&lb2, "eth0")] {
        ns.ip(&["link", "set", dev, "mtu", "1600"]).unwrap();
    }
    lb2.ip(&["route", "add", "default", "via", &TROUTER_ADDR.to_string()])
        .unwrap();
    xdp_lb_tests::tunnel::tunnel_sysctls(&lb2).unwrap();
    topo.peer_pass
        .push(xdp_lb_tests::topology::PassProgram::attach(&topo.sw, "p-lb2").unwrap());
    let backends: Vec<IpAddr> = (0..3).map(|i| tbackend_addr(i).into()).collect();
    let node_config = |pins: String, socket: String, priority: u8| {
        fixtures::config("eth0")
            .key("xdp_mode", "driver")
            .bed(pins, 65536, 4)
            .key("control_socket", socket)
            .key("listen", "")
            .vip(tunnel_vip(VIP.into(), "ipip", &backends))
            .vrrp(
                fixtures::vrrp("vi-tun", "eth0", 61, priority)
                    .key("version", 3u8)
                    .key("advert_interval", "100ms")
                    .addresses(&[&format!("{VIP}/24")]),
            )
            .to_string()
    };
    let c1 = topo.dir.join("lb1.toml");
    std::fs::write(
        &c1,
        node_config(
            topo.pin_dir().display().to_string(),
            topo.control_socket().display().to_string(),
            150,
        ),
    )
    .unwrap();
    let c2 = topo.dir.join("lb2.toml");
    let pins2 = format!("/sys/fs/bpf/{}", lb2.name);
    std::fs::write(
        &c2,
        node_config(pins2.clone(), format!("/run/xlbt/{}.sock", lb2.name), 100),
    )
    .unwrap();
    let run = |ns: &xdp_lb_tests::NetNs, c: &std::path::Path, log: &str| {
        Agent::start(
            ns,
            &["run", "--config", c.to_str().unwrap()],
            topo.dir.join(log),
            READY,
            Duration::from_secs(20),
        )
        .unwrap()
    };
    let mut a1 = run(&topo.lb, &c1, "lb1.log");
    let mut a2 = run(&lb2, &c2, "lb2.log");
    a1.wait_for_log("to=\"MASTER\"", Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let echo = in_netns(&topo.client.name, || {
        xdp_lb_tests::EchoClient::connect(SocketAddr::from((VIP, PORT)), Duration::from_secs(5))
    })
    .unwrap()
    .unwrap();
    let ns = format!("/run/netns/{}", topo.client.name);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        xdp_lb_tests::netns::enter_netns(&ns).unwrap();
        let mut echo = echo;
        let mut trips = 0u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rx.try_recv().is_err() && std::time::Instant::now() < deadline {
            echo.round_trip()
                .map_err(|e| format!("after {trips} round trips: {e:#}"))?;
            trips += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok::<u64, String>(trips)
    });
    std::thread::sleep(Duration::from_millis(300));
    a1.kill9();
    topo.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    a2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    tx.send(()).unwrap();
    let trips = worker.join().unwrap().unwrap();
    assert!(
        trips > 30,
        "the connection kept going through the failover: {trips} round trips"
    );
    let answers = answered_by(&topo, &connections(&topo, VIP.into(), 30));
    assert_eq!(
        answers.values().sum::<usize>(),
        30,
        "lb2 carries new connections: {answers:?}"
    );
    assert!(a2.stop().unwrap().success());
    let _ = xdp_lb::dataplane::remove_pins(std::path::Path::new(&pins2));
}
