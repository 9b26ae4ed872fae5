//! IPv6 end to end in network namespaces: real TCP over IPv6 through the real XDP program (L2
//! DSR), beside an IPv4 VIP on the same node, with health checks over IPv6.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use xdp_lb_tests::{
    Agent, DsrTopology, TcpService, http_get, in_netns, require_root,
    topology::{VIP, VIP6, backend_addr6, xdp_lb_cli},
};

const PORT: u16 = 80;
const READY: &str = "xdp-lb is forwarding";
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 3;

/// `count` new connections to `vip` from the client; answers per backend (failures by text).
fn spread(topo: &DsrTopology, vip: IpAddr, count: usize) -> BTreeMap<String, usize> {
    let answers = in_netns(&topo.client.name, move || {
        (0..count)
            .map(|_| http_get(SocketAddr::new(vip, PORT), Duration::from_secs(3)))
            .collect::<Vec<_>>()
    })
    .unwrap();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for a in answers {
        *per.entry(a.unwrap_or_else(|e| format!("error: {e:#}")))
            .or_default() += 1;
    }
    per
}

/// A dual-stack node: the IPv4 VIP and the IPv6 VIP side by side, three backends each (the
/// same hosts, one service on both families). 300 IPv6 connections spread 33% ± 10% per
/// backend, IPv4 ones still balance, an HTTP check over IPv6 takes a backend whose
/// /healthz answers 503 out and brings it back, and inspect, status and the flow log name the
/// IPv6 VIP, backends and flows.
#[test]
fn a_dual_stack_pair_of_vips_balances_both_families() {
    require_root!();
    let topo = DsrTopology::new(3).unwrap();
    topo.add_ipv6().unwrap();
    let services: Vec<TcpService> = (0..3)
        .map(|i| TcpService::start(&topo.backends[i].name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    let config = topo.dir.join("xdp-lb.toml");
    let text = topo
        .agent_config(&topo.pin_dir())
        .key("flow_log", true)
        .vip(topo.vip(PORT).key("maglev_table_size", 4093))
        .vip(
            topo.vip6(PORT)
                .key("maglev_table_size", 4093)
                .check("type", "http")
                .check("http_path", "/healthz")
                .check("interval", format!("{INTERVAL_MS}ms"))
                .check("timeout", format!("{INTERVAL_MS}ms"))
                .check("rise", 2)
                .check("fall", FALL),
        )
        .to_string();
    std::fs::write(&config, text).unwrap();
    let (code, out, err) = xdp_lb_cli(&["check-config", config.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let mut agent = Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().unwrap()],
        topo.dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();

    let per = spread(&topo, IpAddr::V6(VIP6), 300);
    println!("IPv6 answers per backend: {per:?}");
    for name in ["be1", "be2", "be3"] {
        let n = per.get(name).copied().unwrap_or(0);
        assert!(
            (70..=130).contains(&n),
            "{name} served {n} of 300: {per:?}\n{}",
            agent.log_text()
        );
    }
    assert_eq!(per.values().sum::<usize>(), 300);
    let per4 = spread(&topo, IpAddr::V4(VIP), 60);
    println!("IPv4 answers per backend: {per4:?}");
    assert_eq!(
        per4.iter()
            .filter(|(k, _)| k.starts_with("be"))
            .map(|(_, v)| v)
            .sum::<usize>(),
        60,
        "{per4:?}"
    );
    assert_eq!(
        services
            .iter()
            .map(xdp_lb_tests::TcpService::served)
            .sum::<u64>(),
        360
    );

    // inspect: the IPv6 VIP, its backends and its flows.
    let pin_dir = topo.pin_dir();
    let pins = pin_dir.to_str().unwrap();
    let (code, out, err) = xdp_lb_cli(&["inspect", "vips", "--json", "--pin-dir", pins]).unwrap();
    assert_eq!(code, 0, "{err}");
    let vips: serde_json::Value = serde_json::from_str(&out).unwrap();
    let web6 = vips
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web6")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(web6["address"], "2001:2::100");
    assert_eq!(web6["traffic"]["new_flows"], 300);
    let (code, out, err) =
        xdp_lb_cli(&["inspect", "flows", "--vip", "web6", "--pin-dir", pins]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[2001:2::1]:"), "{out}");
    assert!(out.contains("2001:2::1"), "{out}");

    // /metrics and /stats name the IPv6 VIP (a socket address in brackets) and its backends.
    let (metrics, stats) = in_netns(&topo.lb.name, || {
        let get = |path| {
            xdp_lb_tests::service::http_fetch(
                SocketAddr::from(([127, 0, 0, 1], 9100)),
                path,
                Duration::from_secs(5),
            )
            .unwrap()
        };
        (get("/metrics"), get("/stats"))
    })
    .unwrap();
    assert_eq!((metrics.0, stats.0), (200, 200));
    assert!(
        metrics
            .1
            .contains("vip=\"web6\",address=\"[2001:2::100]:80\"")
            && metrics.1.contains("vip=\"web6\",backend=\"2001:2::11\""),
        "{}",
        metrics.1
    );
    assert!(
        stats.1.contains("2001:2::100") && stats.1.contains("2001:2::12"),
        "{}",
        stats.1
    );

    // The flow log names IPv6 flows as they are.
    let log = agent.log_text();
    assert!(
        log.contains("flow new client=[2001:2::1]:") && log.contains("vip=[2001:2::100]:80"),
        "{log}"
    );

    // An HTTP check over IPv6: be1's /healthz answers 503 → down, then 200 → up.
    services[0].set_health_status(503);
    agent
        .wait_for_log(
            "backend DOWN",
            Duration::from_millis(FALL * INTERVAL_MS + 2000),
        )
        .unwrap();
    let per = spread(&topo, IpAddr::V6(VIP6), 60);
    assert_eq!(per.get("be1"), None, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), 60, "{per:?}");
    let socket = topo.control_socket();
    let (code, out, err) =
        xdp_lb_cli(&["status", "--json", "--socket", socket.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let web6 = status["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web6")
        .unwrap();
    let b = &web6["backends"][0];
    assert_eq!(
        (
            b["address"].as_str(),
            b["health"].as_str(),
            b["last_check"].as_str()
        ),
        (
            Some(backend_addr6(0).to_string().as_str()),
            Some("down"),
            Some("HTTP 503")
        ),
        "{web6}"
    );
    services[0].set_health_status(200);
    agent
        .wait_for_log("backend UP", Duration::from_secs(3))
        .unwrap();

    let status = agent.stop().unwrap();
    assert!(status.success(), "{}", agent.log_text());
}
