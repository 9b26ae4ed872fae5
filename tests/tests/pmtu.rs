//! Path-MTU discovery through a DSR VIP (README, "Packets xdp-lb does not forward"): the
//! backends answer clients directly from the VIP, so a router that finds an answer too big for
//! the next link sends "fragmentation needed" to the VIP — to the LB node. The node passes it on
//! to the backend that owns the flow, which lowers the connection's path MTU; without that the
//! download would stall on its first full-size segment (a PMTU black hole). Through NAT the
//! error is translated for the backend, whose packets the LB rewrote.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use xdp_lb::dataplane::Maps;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    Agent, NatTopology, TcpService, fixtures, in_netns, require_root,
    scale_out::{ScaleOut, VIP, node_addr},
    service::Transfer,
    topology::{LB_ADDR6, VIP6, backend_addr, backend_addr6},
};

/// Squeezes the router's link to the client to 1280 bytes, downloads 4 MiB from the client
/// through the VIP (every byte checked), and returns the LB's `counter` afterwards.
fn download_through_1280(
    router: &xdp_lb_tests::NetNs,
    client: &str,
    pin_dir: &std::path::Path,
    counter: Counter,
    logs: impl FnOnce() -> String,
) -> u64 {
    download_from_through_1280(IpAddr::V4(VIP), router, client, pin_dir, counter, logs)
}

/// `download_through_1280` from `vip`, of either family.
fn download_from_through_1280(
    vip: IpAddr,
    router: &xdp_lb_tests::NetNs,
    client: &str,
    pin_dir: &std::path::Path,
    counter: Counter,
    logs: impl FnOnce() -> String,
) -> u64 {
    router
        .ip(&["link", "set", "r-client", "mtu", "1280"])
        .unwrap();
    let transfer = Transfer {
        bytes: 4 << 20,
        seed: 7,
        timeout: Duration::from_secs(20),
    };
    let (backend, intact) = in_netns(client, move || transfer.download(SocketAddr::new(vip, 80)))
        .unwrap()
        .unwrap_or_else(|e| panic!("download failed: {e:#}\n{}", logs()));
    assert_eq!(backend, "be1");
    assert!(intact, "4 MiB arrived, every byte as sent");
    let n = Maps::open_pinned(pin_dir)
        .unwrap()
        .counter(counter)
        .unwrap();
    println!("{}: {n}", counter.name());
    assert!(n >= 1, "the error took the LB path");
    n
}

/// The agent on the NAT topology's LB with one VIP.
fn start_nat_agent(topo: &NatTopology, vip: fixtures::Vip) -> Agent {
    let config = topo.dir().join("xdp-lb.toml");
    std::fs::write(
        &config,
        topo.inner
            .agent_config(&topo.inner.pin_dir())
            .key("listen", "")
            .vip(vip)
            .to_string(),
    )
    .unwrap();
    Agent::start(
        topo.lb(),
        &["run", "--config", config.to_str().unwrap()],
        topo.dir().join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn a_download_through_a_1280_byte_link_completes() {
    require_root!();
    let mut topo = ScaleOut::new(1, 1).unwrap();
    let _service = TcpService::start(&topo.backends[0].name, 80, "be1").unwrap();
    topo.start_agent(0, None).unwrap();
    // The node's route on the router (no BGP needed here), and a 1280-byte link between the
    // router and the client: the client still says MSS 1460, so the backend's full-size
    // segments (1500 bytes, DF set) do not fit the router's way out.
    topo.router
        .ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &node_addr(0).to_string(),
        ])
        .unwrap();
    download_through_1280(
        &topo.router,
        &topo.client.name,
        &topo.nodes[0].pin_dir(),
        Counter::IcmpTooBigToBackend,
        || topo.logs(),
    );
    // The backend learnt the path MTU of the client.
    let cache = topo.backends[0]
        .ip(&["route", "get", "198.19.1.10"])
        .unwrap();
    assert!(cache.contains("mtu 1280"), "{cache}");
}

/// The same through a NAT VIP: the router's error about the LB's (rewritten) reply reaches the
/// backend translated, about the backend's own packet to the SNAT address.
#[test]
fn a_nat_download_through_a_1280_byte_link_completes() {
    require_root!();
    let topo = NatTopology::new(1).unwrap();
    let _service = TcpService::start(&topo.backends()[0].name, 8080, "be1").unwrap();
    let agent = start_nat_agent(
        &topo,
        fixtures::vip("api", VIP, 80)
            .nat()
            .backend_with(backend_addr(0), &[("port", "8080")]),
    );
    download_through_1280(
        &topo.router,
        &topo.client.name,
        &topo.inner.pin_dir(),
        Counter::IcmpTooBigTranslated,
        || agent.log_text(),
    );
    let cache = topo.backends()[0]
        .ip(&["route", "get", "198.18.0.2"])
        .unwrap();
    assert!(cache.contains("mtu 1280"), "{cache}");
}

/// The same over IPv6 through a DSR VIP (RFC 8201): the router's Packet Too Big about the
/// backend's segment goes to the IPv6 VIP, i.e. to the node, which passes it on to the
/// backend; IPv6 routers never fragment, so without it the download stalls.
#[test]
fn an_ipv6_download_through_a_1280_byte_link_completes() {
    require_root!();
    let mut topo = ScaleOut::new(1, 1).unwrap();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    let (vip6, router6, node6, backend6) = (
        v6("2001:2::100"),
        v6("2001:2::1"),
        v6("2001:2::2"),
        v6("2001:2::11"),
    );
    let add = |ns: &xdp_lb_tests::NetNs, addr: String, dev: &str| {
        ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
            .unwrap();
    };
    add(&topo.router, format!("{router6}/64"), "eth0");
    add(&topo.router, "2001:2:1::1/64".into(), "r-client");
    topo.router
        .sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    add(&topo.client, "2001:2:1::10/64".into(), "eth0");
    topo.client
        .ip(&["-6", "route", "add", "default", "via", "2001:2:1::1"])
        .unwrap();
    add(&topo.nodes[0].ns, format!("{node6}/64"), "eth0");
    add(&topo.backends[0], format!("{backend6}/64"), "eth0");
    add(&topo.backends[0], format!("{vip6}/128"), "lo");
    topo.backends[0]
        .ip(&["-6", "route", "add", "default", "via", &router6.to_string()])
        .unwrap();
    topo.router
        .ip(&[
            "-6",
            "route",
            "add",
            &format!("{vip6}/128"),
            "via",
            &node6.to_string(),
        ])
        .unwrap();
    let _service = TcpService::start(&topo.backends[0].name, 80, "be1").unwrap();
    let config = topo
        .node_config(0, false)
        .vip(
            fixtures::vip("web6", vip6, 80)
                .key("maglev_table_size", 4093)
                .backend(backend6),
        )
        .to_string();
    topo.start_agent(0, Some(config)).unwrap();
    download_from_through_1280(
        IpAddr::V6(vip6),
        &topo.router,
        &topo.client.name,
        &topo.nodes[0].pin_dir(),
        Counter::IcmpTooBigToBackend,
        || topo.logs(),
    );
    // The backend learnt the path MTU of the client.
    let cache = topo.backends[0]
        .ip(&["-6", "route", "get", "2001:2:1::10"])
        .unwrap();
    assert!(cache.contains("mtu 1280"), "{cache}");
}

/// NAT66: the router's Packet Too Big about the LB's (rewritten) packet to the client goes to
/// the IPv6 VIP; the LB translates it back into one about the backend's packet to the SNAT
/// address and forwards it to the backend, which lowers its path MTU to the SNAT address.
#[test]
fn a_nat66_download_through_a_1280_byte_link_completes() {
    require_root!();
    let topo = NatTopology::new(1).unwrap();
    topo.add_ipv6().unwrap();
    let _service = TcpService::start(&topo.backends()[0].name, 8080, "be1").unwrap();
    let agent = start_nat_agent(
        &topo,
        fixtures::vip("api6", VIP6, 80)
            .nat()
            .backend_with(backend_addr6(0), &[("port", "8080")]),
    );
    download_from_through_1280(
        IpAddr::V6(VIP6),
        &topo.router,
        &topo.client.name,
        &topo.inner.pin_dir(),
        Counter::IcmpTooBigTranslated,
        || agent.log_text(),
    );
    let cache = topo.backends()[0]
        .ip(&["-6", "route", "get", &LB_ADDR6.to_string()])
        .unwrap();
    assert!(cache.contains("mtu 1280"), "{cache}");
    // The client's side never saw the error: it went to the backend.
    let client_cache = topo
        .client
        .ip(&["-6", "route", "get", &VIP6.to_string()])
        .unwrap();
    assert!(!client_cache.contains("mtu 1280"), "{client_cache}");
}
