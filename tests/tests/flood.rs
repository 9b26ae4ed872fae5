//! A random-source SYN flood at a VIP, end to end in namespaces (issue 13): the flood must take
//! away neither established connections (idle ones, through both a DSR and a NAT VIP) nor the
//! legitimate client's new connections.
//!
//! The layout is the one the issue measured: one LB, a DSR VIP on :80 and a NAT VIP on :8080
//! to the same three backends, `flow_table_size = 4096`, 20 idle long-lived connections through
//! each VIP. The flood comes from the client's side of the router, from random addresses of
//! 198.19.128.0/17 (blackholed at the router, so the backends' answers go nowhere), at about
//! 18 000 SYN/s for 5 s; the legitimate client (198.19.1.10) opens 100 connections meanwhile.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use xdp_lb_tests::{
    Agent, EchoClient, NatTopology, TcpService, fixtures, http_get, in_netns,
    packet::{FloodReport, SynFlood},
    require_root,
    topology::{VIP, backend_addr, inspect_stats},
};

const DSR_PORT: u16 = 80;
const NAT_PORT: u16 = 8080;
const FLOOD_RATE: u64 = 18_000;
const FLOOD_COUNT: u64 = 90_000;
const IDLE: usize = 20;
const LEGIT: usize = 100;
const FLOOD_SOURCES: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 128, 0), 17);

struct Bed {
    topo: NatTopology,
    _services: Vec<TcpService>,
    _agent: Agent,
}

fn bed() -> Bed {
    let topo = NatTopology::new(3).unwrap();
    let mut services = Vec::new();
    for (i, be) in topo.backends().iter().enumerate() {
        // DSR backends hold the VIP on lo and keep quiet about it in ARP (README, "Backends
        // for DSR"); the NAT VIP's backends need nothing.
        be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
            .unwrap();
        for scope in ["all", "eth0"] {
            be.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")
                .unwrap();
            be.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")
                .unwrap();
        }
        for port in [DSR_PORT, NAT_PORT] {
            services.push(TcpService::start(&be.name, port, &format!("be{}", i + 1)).unwrap());
        }
    }
    // The spoofed sources: routed nowhere, so the backends' SYN-ACKs die at the router.
    topo.router
        .ip(&["route", "add", "blackhole", "198.19.128.0/17"])
        .unwrap();
    for scope in ["all", "default", "r-client"] {
        topo.router
            .sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")
            .unwrap();
    }
    let dsr = (0..3).fold(
        fixtures::vip("web", VIP, DSR_PORT)
            .key("forwarding", "dsr")
            .check("interval", "1s"),
        |v, i| v.backend(backend_addr(i)),
    );
    let nat = (0..3).fold(
        fixtures::vip("api", VIP, NAT_PORT)
            .nat()
            .check("interval", "1s"),
        |v, i| v.backend(backend_addr(i)),
    );
    let config = topo
        .inner
        .agent_config(&topo.inner.pin_dir())
        .key("listen", "")
        .key("flow_table_size", 4096u32)
        .vip(dsr)
        .vip(nat)
        .to_string();
    let path = topo.dir().join("xdp-lb.toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start(
        topo.lb(),
        &["run", "--config", path.to_str().unwrap()],
        topo.dir().join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(20),
    )
    .unwrap();
    Bed {
        topo,
        _services: services,
        _agent: agent,
    }
}

fn counters(bed: &Bed) -> serde_json::Value {
    inspect_stats(bed.topo.lb(), &bed.topo.inner.pin_dir()).unwrap()
}

/// Floods `port` while the legitimate client opens `LEGIT` connections to it; returns the
/// flood's report and how many legitimate connections succeeded.
fn flood_and_connect(bed: &Bed, port: u16) -> (FloodReport, usize) {
    let flood = SynFlood {
        src_mac: bed.topo.client.mac("eth0").unwrap(),
        dst_mac: bed.topo.router.mac("r-client").unwrap(),
        sources: FLOOD_SOURCES,
        dst: VIP,
        dport: port,
        rate_per_s: FLOOD_RATE,
        count: FLOOD_COUNT,
    };
    let client = bed.topo.client.name.clone();
    let flooder = std::thread::spawn({
        let client = client.clone();
        move || in_netns(&client, move || flood.run("eth0")).unwrap()
    });
    let ok = in_netns(&client, move || {
        // Let the flood fill the tables first.
        std::thread::sleep(Duration::from_millis(700));
        (0..LEGIT)
            .filter(|_| {
                std::thread::sleep(Duration::from_millis(25));
                http_get(SocketAddr::from((VIP, port)), Duration::from_secs(3)).is_ok()
            })
            .count()
    })
    .unwrap();
    let report = flooder.join().unwrap().unwrap();
    (report, ok)
}

fn flood_breaks_nothing(port: u16) {
    let bed = bed();
    let client = bed.topo.client.name.clone();
    let mut idle: Vec<EchoClient> = in_netns(&client, || {
        [DSR_PORT, NAT_PORT]
            .iter()
            .flat_map(|&p| {
                (0..IDLE).map(move |_| {
                    EchoClient::connect(SocketAddr::from((VIP, p)), Duration::from_secs(3)).unwrap()
                })
            })
            .collect()
    })
    .unwrap();
    for c in &mut idle {
        c.round_trip().unwrap();
    }
    let before = counters(&bed);

    let (report, ok) = flood_and_connect(&bed, port);

    let after = counters(&bed);
    let delta = |k: &str| {
        after["stats"]["counters"][k].as_u64().unwrap_or(0)
            - before["stats"]["counters"][k].as_u64().unwrap_or(0)
    };
    println!(
        "flood at :{port}: {} SYNs in {:.1} s ({:.0}/s); {ok} of {LEGIT} legitimate connections; \
         LB new_flow +{}, flow table {} of {}, NAT flows {} (+{} half-open)",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.rate_per_s(),
        delta("new_flow"),
        after["stats"]["flow_table_entries"],
        after["stats"]["flow_table_size"],
        after["stats"]["nat_flows"],
        after["stats"]["nat_half_open"],
    );
    assert!(
        report.rate_per_s() >= 15_000.0,
        "the flood ran at {:.0}/s: the test did not test",
        report.rate_per_s()
    );
    // Proof that the flood reached the XDP program rather than dying on the way: (most of)
    // its SYNs were new flows or counted drops there.
    assert!(
        delta("new_flow") + delta("drop_nat_table_full") + delta("drop_nat_ports_exhausted")
            >= report.sent * 9 / 10,
        "the flood did not reach the LB: {after}"
    );
    // The flood's half-open NAT flows never became flows: only the real ones are in NAT_FLOWS
    // (the idle ones, and the legitimate ones if they went to the NAT VIP, still closing).
    let nat_flows = after["stats"]["nat_flows"].as_u64().unwrap();
    assert!(
        nat_flows <= (IDLE + LEGIT) as u64 + 10,
        "{nat_flows} NAT flows after the flood"
    );
    assert!(
        ok * 100 >= LEGIT * 99,
        "{ok} of {LEGIT} legitimate connections during the flood"
    );
    let broken: Vec<String> = idle
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| c.round_trip().err().map(|e| format!("#{i}: {e}")))
        .collect();
    assert!(
        broken.is_empty(),
        "idle established connections broken by the flood (0..20 DSR, 20..40 NAT): {broken:?}"
    );
}

#[test]
fn a_syn_flood_at_a_dsr_vip_breaks_nothing() {
    require_root!();
    flood_breaks_nothing(DSR_PORT);
}

#[test]
fn a_syn_flood_at_a_nat_vip_breaks_nothing() {
    require_root!();
    flood_breaks_nothing(NAT_PORT);
}
