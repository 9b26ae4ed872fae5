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
