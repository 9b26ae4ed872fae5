//! End to end in network namespaces: real TCP through the real XDP program (L2 DSR).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use xdp_lb_common::Counter;
use xdp_lb_tests::{
    Agent, DsrTopology, TcpService, http_get, http_get_many, in_netns,
    packet::{Frame, send_raw},
    require_root,
    topology::{CLIENT_ADDR, LB_ADDR, VIP},
};

const PORT: u16 = 80;
const READY: &str = "xdp-lb is forwarding";

fn start(topo: &DsrTopology) -> (Agent, Vec<TcpService>) {
    let services: Vec<TcpService> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, be)| TcpService::start(&be.name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    let config = topo.dir.join("xdp-lb.toml");
    std::fs::write(
        &config,
        topo.agent_config(&topo.pin_dir())
            .vip(topo.vip(PORT).key("maglev_table_size", 65537))
            .to_string(),
    )
    .unwrap();
    let agent = Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().unwrap()],
        topo.dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();
    (agent, services)
}

#[test]
fn three_hundred_connections_spread_over_three_backends() {
    require_root!();
    let topo = DsrTopology::new(3).unwrap();
    let (mut agent, services) = start(&topo);

    let answers = in_netns(&topo.client.name, || {
        http_get_many(SocketAddr::from((VIP, PORT)), 300, Duration::from_secs(3))
    })
    .unwrap();
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        let body = a.as_ref().unwrap_or_else(|e| {
            panic!(
                "request {i} failed: {e:#}\nagent log:\n{}",
                agent.log_text()
            )
        });
        *per_backend.entry(body.clone()).or_default() += 1;
    }
    println!("answers per backend: {per_backend:?}");
    assert_eq!(per_backend.values().sum::<usize>(), 300);
    for name in ["be1", "be2", "be3"] {
        let n = per_backend.get(name).copied().unwrap_or(0);
        // 33% ± 10% of 300.
        assert!(
            (70..=130).contains(&n),
            "{name} served {n} of 300: {per_backend:?}"
        );
    }
    // The services' own counts agree: every request went to a real backend.
    assert_eq!(
        services
            .iter()
            .map(xdp_lb_tests::TcpService::served)
            .sum::<u64>(),
        300
    );

    let status = agent.stop().unwrap();
    assert!(
        status.success(),
        "agent exit: {status}\n{}",
        agent.log_text()
    );
    assert!(
        !topo.pin_dir().exists(),
        "pins must be removed on a clean stop"
    );
}

#[test]
fn lb_own_address_keeps_working_with_xdp_attached() {
    require_root!();
    let topo = DsrTopology::new(1).unwrap();
    let (_agent, _services) = start(&topo);

    // A TCP service on the LB's own address, on the VIP's port and on another port.
    let lb_services: Vec<TcpService> = [8080u16]
        .iter()
        .map(|&p| TcpService::start(&topo.lb.name, p, "lb-itself").unwrap())
        .collect();
    let body = in_netns(&topo.client.name, || {
        http_get(SocketAddr::from((LB_ADDR, 8080)), Duration::from_secs(3))
    })
    .unwrap()
    .unwrap();
    assert_eq!(body, "lb-itself");
    assert_eq!(lb_services[0].served(), 1);

    // ICMP to the LB's own address.
    let out = topo.client.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &LB_ADDR.to_string(),
    ]);
    assert!(out.is_ok(), "ping failed: {out:?}");

    // A connection to a VIP port that is not configured reaches the LB's own stack: refused.
    let refused = in_netns(&topo.client.name, || {
        std::net::TcpStream::connect_timeout(&SocketAddr::from((VIP, 81)), Duration::from_secs(3))
    })
    .unwrap();
    assert!(refused.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn a_backend_whose_mac_changes_keeps_receiving_new_connections() {
    require_root!();
    let topo = DsrTopology::new(1).unwrap();
    let (mut agent, _services) = start(&topo);
    let get = |topo: &DsrTopology| {
        in_netns(&topo.client.name, || {
            http_get(SocketAddr::from((VIP, PORT)), Duration::from_secs(3))
        })
        .unwrap()
    };
    assert_eq!(get(&topo).unwrap(), "be1");

    // The backend's NIC is replaced (new MAC). It makes itself known the ordinary way, by
    // ARPing for the LB; the LB's kernel learns the new MAC and the agent must follow.
    let be = &topo.backends[0];
    be.ip(&["link", "set", "eth0", "address", "02:00:00:00:be:ef"])
        .unwrap();
    be.ip(&["neigh", "flush", "all"]).unwrap();
    be.exec(&["ping", "-c", "1", "-W", "2", &LB_ADDR.to_string()])
        .unwrap();
    agent
        .wait_for_log(
            "backend reachable: 02:00:00:00:be:ef",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        get(&topo).unwrap(),
        "be1",
        "new connections must reach the backend's new MAC"
    );
}

#[test]
fn xdp_mode_auto_falls_back_to_generic_and_driver_says_why_it_cannot() {
    require_root!();
    // Loopback has no native (driver-mode) XDP support.
    let ns = xdp_lb_tests::NetNs::new("noxdp").unwrap();
    let dir = xdp_lb_tests::topology::target_dir()
        .join("testbed")
        .join(format!("noxdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", ns.name);
    for (mode, expect_ok) in [("auto", true), ("driver", false)] {
        let config = dir.join(format!("{mode}.toml"));
        std::fs::write(
            &config,
            xdp_lb_tests::fixtures::config("lo")
                .key("xdp_mode", mode)
                .bed(&pin_dir, 1024, 1)
                .to_string(),
        )
        .unwrap();
        let started = Agent::start(
            &ns,
            &["run", "--config", config.to_str().unwrap()],
            dir.join(format!("{mode}.log")),
            READY,
            Duration::from_secs(10),
        );
        if expect_ok {
            let mut agent = started.unwrap();
            let log = agent.log_text();
            assert!(
                log.contains("falling back to generic mode") && log.contains("mode=\"generic\""),
                "{log}"
            );
            assert!(agent.stop().unwrap().success());
        } else {
            let err = format!("{:#}", started.err().expect("driver mode must fail on lo"));
            assert!(
                err.contains("exited (exit status: 1)")
                    && err.contains("attaching to lo in driver mode"),
                "{err}"
            );
            assert!(
                !std::path::Path::new(&pin_dir).join("VIPS").exists(),
                "a failed start must not leave pins"
            );
        }
    }
}

/// A double-tagged frame must never be forwarded with a tag lost. The agent turns its
/// interface's receive-VLAN offload off while it runs (a NIC would otherwise strip the outer
/// tag before XDP sees the frame) and back on at stop; the bed's switch hands frames on with
/// their tags in them, as a wire does. 802.1ad + 802.1Q SYNs to the VIP then go to the kernel
/// (`pass_not_ip`), and no flow is made.
#[test]
fn double_tagged_frames_are_never_forwarded_and_vlan_offload_is_off_while_running() {
    require_root!();
    let topo = DsrTopology::new(3).unwrap();
    let offloads = || {
        let k = topo.lb.exec(&["ethtool", "-k", "eth0"]).unwrap();
        ["rx-vlan-offload:", "rx-vlan-stag-hw-parse:"].map(|f| {
            k.lines()
                .find(|l| l.starts_with(f))
                .unwrap_or_else(|| panic!("{f} in {k}"))
                .contains(": on")
        })
    };
    assert_eq!(offloads(), [true, true], "veth's default");
    let (mut agent, _services) = start(&topo);
    assert_eq!(offloads(), [false, false], "off while the agent runs");
    assert!(
        agent.log_text().contains("turned receive-VLAN offload off"),
        "logged: {}",
        agent.log_text()
    );

    let maps = xdp_lb::dataplane::Maps::open_pinned(&topo.pin_dir()).unwrap();
    let counter = |c| maps.counter(c).unwrap();
    let before = [Counter::PassNotIp, Counter::NewFlow, Counter::Tx].map(counter);
    let lb_mac = topo.lb.mac("eth0").unwrap();
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut f = Frame::tcp(CLIENT_ADDR, 41000 + i, VIP, PORT);
            f.dst_mac = lb_mac;
            f.outer_vlan = Some(100);
            f.vlan = Some(200);
            f.build()
        })
        .collect();
    in_netns(&topo.client.name, move || send_raw("eth0", &frames))
        .unwrap()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while counter(Counter::PassNotIp) < before[0] + 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = [Counter::PassNotIp, Counter::NewFlow, Counter::Tx].map(counter);
    assert!(after[0] >= before[0] + 20, "passed: {before:?} → {after:?}");
    assert_eq!(
        (after[1], after[2]),
        (before[1], before[2]),
        "no flow made, nothing forwarded"
    );

    assert!(agent.stop().unwrap().success());
    assert_eq!(offloads(), [true, true], "restored at stop");
}
