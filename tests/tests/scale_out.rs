//! Active-active: several xdp-lb nodes behind a router's ECMP, each announcing the VIP over
//! BGP with BIRD (README, "Scale out"). Real BIRD processes, real TCP through the real XDP
//! program on every node.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use xdp_lb::{dataplane::Maps, status::AgentStatus};
use xdp_lb_common::{Counter, flow_hash, ipv4_be, port_be};
use xdp_lb_tests::{
    EchoClient, TcpService, http_get_many, in_netns, require_root,
    scale_out::{CLIENT_ADDR, Node, ROUTER_ADDR, ScaleOut, TABLE, VIP, node_addr},
    service::http_fetch,
    topology::{backend_addr, xdp_lb_cli_in},
};

const PORT: u16 = 80;

fn services(topo: &ScaleOut) -> Vec<TcpService> {
    topo.backends
        .iter()
        .enumerate()
        .map(|(i, be)| TcpService::start(&be.name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect()
}

/// `total` node namespaces, `backends` backends serving, the first `running` nodes started
/// (default config) and announced on the router.
fn running(total: usize, backends: usize, running: usize) -> (ScaleOut, Vec<TcpService>) {
    let mut topo = ScaleOut::new(total, backends).unwrap();
    let services = services(&topo);
    for i in 0..running {
        topo.start_node(i, None).unwrap();
    }
    let all: Vec<usize> = (0..running).collect();
    topo.wait_next_hops(&nodes(&all), Duration::from_secs(15))
        .unwrap();
    (topo, services)
}

fn nodes(which: &[usize]) -> Vec<Ipv4Addr> {
    which.iter().map(|&i| node_addr(i)).collect()
}

fn status(node: &Node) -> AgentStatus {
    let socket = node.control_socket();
    let (code, out, err) = xdp_lb_cli_in(
        &node.ns,
        &["status", "--json", "--socket", socket.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str(&out).unwrap()
}

fn cli(node: &Node, verb: &str) -> (i32, String, String) {
    let socket = node.control_socket();
    xdp_lb_cli_in(&node.ns, &[verb, "--socket", socket.to_str().unwrap()]).unwrap()
}

fn counter(node: &Node, c: Counter) -> u64 {
    Maps::open_pinned(&node.pin_dir())
        .unwrap()
        .counter(c)
        .unwrap()
}

/// The client ports of the flows in a node's flow table.
fn flow_ports(node: &Node) -> BTreeSet<u16> {
    Maps::open_pinned(&node.pin_dir())
        .unwrap()
        .flows()
        .filter(|(k, _)| k.src_addr == ipv4_be(CLIENT_ADDR.octets()))
        .map(|(k, _)| u16::from_be(k.src_port_be))
        .collect()
}

/// `n` long-lived echo connections from the client, each to the backend the LB chose.
fn echo_clients(topo: &ScaleOut, n: usize) -> Vec<EchoClient> {
    in_netns(&topo.client.name, move || {
        (0..n)
            .map(|i| {
                EchoClient::connect(SocketAddr::from((VIP, PORT)), Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("echo connection {i}: {e:#}"))
            })
            .collect::<Vec<_>>()
    })
    .unwrap()
}

/// One round trip on every connection: every byte comes back from the same backend.
fn round_trips(topo: &ScaleOut, clients: &mut [EchoClient], when: &str) {
    for (i, c) in clients.iter_mut().enumerate() {
        if let Err(e) = c.round_trip() {
            panic!(
                "{when}: connection {i} (port {}, backend {}) failed: {e:#}\n{}",
                c.local_port(),
                c.backend,
                topo.logs()
            );
        }
    }
}

/// `n` new connections from the client; every answer counted per backend.
fn connections(topo: &ScaleOut, n: usize) -> BTreeMap<String, usize> {
    let answers = in_netns(&topo.client.name, move || {
        http_get_many(SocketAddr::from((VIP, PORT)), n, Duration::from_secs(3))
    })
    .unwrap();
    let mut per_backend = BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        let body = a
            .as_ref()
            .unwrap_or_else(|e| panic!("request {i} failed: {e:#}\n{}", topo.logs()));
        *per_backend.entry(body.trim().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(per_backend.values().sum::<usize>(), n, "{per_backend:?}");
    per_backend
}

/// Three nodes announce, the router has three next hops, and 3000 connections spread over
/// the nodes and the backends. The three agents' maps (one of them configured with the
/// backends in the opposite order) choose the same backend for every 5-tuple.
#[test]
fn three_nodes_spread_connections_and_choose_alike() {
    require_root!();
    let mut topo = ScaleOut::new(3, 3).unwrap();
    let _services = services(&topo);
    for i in 0..3 {
        let mut config = topo.node_config(i, i == 2);
        if i == 0 {
            config = config.key("listen", "127.0.0.1:9100");
        }
        topo.start_node(i, Some(config.to_string())).unwrap();
    }
    topo.wait_next_hops(&nodes(&[0, 1, 2]), Duration::from_secs(15))
        .unwrap();
    let s = status(&topo.nodes[0]);
    assert_eq!(s.vips[0].announce.as_deref(), Some("announced"));
    let a = s.announce.as_ref().expect("announce status");
    assert_eq!(
        (a.table, a.draining, a.announced.clone()),
        (TABLE, false, vec![std::net::IpAddr::V4(VIP)])
    );
    assert_eq!(a.engine, xdp_lb::route_announce::Engine::Reachable);
    // /metrics and /stats say the same.
    let (metrics, stats) = in_netns(&topo.nodes[0].ns.name, || {
        let at = SocketAddr::from(([127, 0, 0, 1], 9100));
        let get = |path| http_fetch(at, path, Duration::from_secs(3)).unwrap().1;
        (get("/metrics"), get("/stats"))
    })
    .unwrap();
    for line in [
        "xdp_lb_vip_announced{vip=\"web\"} 1",
        "xdp_lb_draining 0",
        "xdp_lb_routing_engine_reachable 1",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics:\n{metrics}");
    }
    assert!(
        stats.contains("announced") && stats.contains("routing engine reachable"),
        "{stats}"
    );

    let before: Vec<u64> = topo
        .nodes
        .iter()
        .map(|n| counter(n, Counter::NewFlow))
        .collect();
    let per_backend = connections(&topo, 3000);
    let per_node: Vec<u64> = topo
        .nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| counter(n, Counter::NewFlow) - b)
        .collect();
    println!("3000 connections: per node {per_node:?}, per backend {per_backend:?}");
    // A client port the kernel hands out again finds its earlier flow still in the table (a
    // hit, not a new flow): a few of the 3000 may count nowhere, none twice.
    let total = per_node.iter().sum::<u64>();
    assert!((2900..=3000).contains(&total), "{per_node:?}");
    for (i, n) in per_node.iter().enumerate() {
        // ECMP hashes the 5-tuple: a third each, give or take (at least 15%).
        assert!(*n >= 450, "node {} took {n} of 3000: {per_node:?}", i + 1);
    }
    for (name, n) in &per_backend {
        assert!(
            (700..=1300).contains(n),
            "{name} served {n}: {per_backend:?}"
        );
    }

    // The same choice on every node: the hash seed and the Maglev table, read as backend
    // addresses, agree for every 5-tuple tried.
    let choices: Vec<Vec<Ipv4Addr>> = topo
        .nodes
        .iter()
        .map(|node| {
            let maps = Maps::open_pinned(&node.pin_dir()).unwrap();
            let (_, info) = maps.vips().into_iter().next().expect("one VIP");
            let table = maps.maglev_table(&info);
            let addresses: BTreeMap<u32, Ipv4Addr> = maps
                .backends()
                .into_iter()
                .map(|(id, b)| (id, Ipv4Addr::from(u32::from_be(b.addr_be))))
                .collect();
            (0..2000u16)
                .map(|p| {
                    let h = flow_hash(
                        ipv4_be([198, 51, 100, (p % 250) as u8]),
                        ipv4_be(VIP.octets()),
                        port_be(20000 + p),
                        port_be(PORT),
                        6,
                        info.hash_seed,
                    );
                    addresses[&table[(h % info.table_size) as usize]]
                })
                .collect()
        })
        .collect();
    assert_eq!(choices[0], choices[1], "nodes 1 and 2 choose differently");
    assert_eq!(
        choices[0], choices[2],
        "node 3 (backends listed in another order) chooses differently"
    );
    let used: BTreeSet<_> = choices[0].iter().collect();
    assert_eq!(used.len(), 3, "the tuples reach every backend");
}

/// A node dies (its link goes down, then its agent and BIRD are SIGKILLed): BFD has the router
/// drop it within a second, and 50 long-lived connections spread over all three nodes keep
/// every byte and their backend.
#[test]
fn a_dead_node_is_routed_around_and_every_connection_survives() {
    require_root!();
    let (mut topo, _services) = running(3, 3, 3);
    let mut clients = echo_clients(&topo, 50);
    round_trips(&topo, &mut clients, "before");
    let on_node: Vec<usize> = topo
        .nodes
        .iter()
        .map(|n| {
            let ports = flow_ports(n);
            clients
                .iter()
                .filter(|c| ports.contains(&c.local_port()))
                .count()
        })
        .collect();
    println!("50 connections per node: {on_node:?}");
    assert!(
        on_node.iter().all(|&n| n > 0),
        "every node carries some: {on_node:?}"
    );

    // A crash as it happens: the wire first (TESTBED.md: killing BIRD first would close its
    // session with a FIN and the router would withdraw at once, which no crash does).
    topo.sw.ip(&["link", "set", "p-lb2", "down"]).unwrap();
    let down = Instant::now();
    topo.nodes[1].agent().kill9();
    if let Some(mut bird) = topo.nodes[1].bird.take() {
        let _ = bird.0.kill();
        let _ = bird.0.wait();
    }
    topo.wait_next_hops(&nodes(&[0, 2]), Duration::from_secs(5))
        .unwrap();
    let reroute = down.elapsed();
    println!("router dropped the dead node after {reroute:?}");
    assert!(reroute < Duration::from_secs(1), "reroute took {reroute:?}");

    round_trips(&topo, &mut clients, "after the node died");
    round_trips(&topo, &mut clients, "again");
    // The survivors picked up the dead node's flows with the same backends.
    let resumed: usize = [0, 2]
        .iter()
        .map(|&i| {
            let ports = flow_ports(&topo.nodes[i]);
            clients
                .iter()
                .filter(|c| ports.contains(&c.local_port()))
                .count()
        })
        .sum();
    assert_eq!(
        resumed, 50,
        "every connection is in a survivor's flow table"
    );

    // The node comes back: link up, BIRD and an agent started again (adopting the pins its
    // killed agent left). "Announced" on the node (its route in the agent's table) comes first; the
    // router has it again once BIRD's session is up, which `error wait time 1, 3` allows within
    // seconds (BIRD's default, 60 s and growing, would refuse the node that long).
    topo.sw.ip(&["link", "set", "p-lb2", "up"]).unwrap();
    let back = Instant::now();
    topo.start_node(1, None).unwrap();
    let forwarding = back.elapsed();
    let vip = VIP.to_string();
    let table = TABLE.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topo.nodes[1]
        .ns
        .ip(&["route", "show", "table", &table])
        .unwrap()
        .contains(&vip)
    {
        assert!(Instant::now() < deadline, "the node never announced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let announced = back.elapsed();
    topo.wait_next_hops(&nodes(&[0, 1, 2]), Duration::from_secs(15))
        .unwrap();
    let rejoined = back.elapsed();
    println!(
        "after the restart began: forwarding {forwarding:?}, announced on the node {announced:?}, in the router's route {rejoined:?}"
    );
    assert!(
        rejoined < Duration::from_secs(10),
        "rejoin took {rejoined:?}"
    );
    round_trips(&topo, &mut clients, "after the node rejoined");
}

/// One node loses its path to every backend: only it withdraws, and announces again when the
/// path is back. Its status says why.
#[test]
fn a_node_without_backends_withdraws_alone() {
    require_root!();
    let (topo, _services) = running(3, 2, 3);
    let lb2 = &topo.nodes[1].ns;
    for b in 0..2 {
        lb2.ip(&[
            "route",
            "add",
            "blackhole",
            &format!("{}/32", backend_addr(b)),
        ])
        .unwrap();
    }
    topo.wait_next_hops(&nodes(&[0, 2]), Duration::from_secs(5))
        .unwrap();
    let s = status(&topo.nodes[1]);
    assert_eq!(
        s.vips[0].announce.as_deref(),
        Some("withdrawn: no usable backend"),
        "{s:?}"
    );
    assert!(s.announce.unwrap().announced.is_empty());
    assert_eq!(
        status(&topo.nodes[0]).vips[0].announce.as_deref(),
        Some("announced")
    );
    // Traffic goes on through the others.
    connections(&topo, 100);
    for b in 0..2 {
        lb2.ip(&[
            "route",
            "del",
            "blackhole",
            &format!("{}/32", backend_addr(b)),
        ])
        .unwrap();
    }
    topo.wait_next_hops(&nodes(&[0, 1, 2]), Duration::from_secs(10))
        .unwrap();
    let log = topo.nodes[1].agent.as_ref().unwrap().log_text();
    assert!(
        log.contains("announce: VIP withdrawn") && log.contains("no usable backend"),
        "{log}"
    );
}

/// `xdp-lb drain`: the announcement goes, established connections go on (moved to the other
/// nodes, same backends), new flows land elsewhere; `undrain` brings the node back; SIGTERM
/// withdraws before it stops forwarding.
#[test]
fn drain_undrain_and_a_graceful_stop() {
    require_root!();
    let (mut topo, _services) = running(3, 3, 3);
    let mut clients = echo_clients(&topo, 30);
    round_trips(&topo, &mut clients, "before");

    let (code, out, err) = cli(&topo.nodes[0], "drain");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("draining"), "{out}");
    topo.wait_next_hops(&nodes(&[1, 2]), Duration::from_secs(3))
        .unwrap();
    let s = status(&topo.nodes[0]);
    assert!(s.announce.as_ref().unwrap().draining);
    assert_eq!(s.vips[0].announce.as_deref(), Some("withdrawn: draining"));
    assert!(s.attached.is_some(), "a draining node keeps forwarding");
    round_trips(&topo, &mut clients, "after the drain");
    let before = counter(&topo.nodes[0], Counter::NewFlow);
    connections(&topo, 300);
    assert_eq!(
        counter(&topo.nodes[0], Counter::NewFlow),
        before,
        "no new flow reaches a draining node"
    );
    let (code, out, _) = cli(&topo.nodes[0], "drain");
    assert_eq!((code, out.trim()), (0, "already draining"));

    let (code, out, err) = cli(&topo.nodes[0], "undrain");
    assert_eq!(code, 0, "{out}{err}");
    topo.wait_next_hops(&nodes(&[0, 1, 2]), Duration::from_secs(3))
        .unwrap();
    round_trips(&topo, &mut clients, "after undrain");

    // SIGTERM: the routers hear of it first; the agent forwards through announce.grace (1 s).
    let term = Instant::now();
    topo.nodes[2].agent().signal(libc::SIGTERM);
    topo.wait_next_hops(&nodes(&[0, 1]), Duration::from_secs(3))
        .unwrap();
    let withdrawn = term.elapsed();
    let exit = topo.nodes[2].agent().stop().unwrap();
    let stopped = term.elapsed();
    println!("SIGTERM: withdrawn after {withdrawn:?}, exited after {stopped:?}");
    assert!(exit.success());
    assert!(
        stopped >= Duration::from_secs(1) && withdrawn < stopped,
        "withdrawn {withdrawn:?}, stopped {stopped:?}"
    );
    assert!(
        topo.nodes[2]
            .agent()
            .log_text()
            .contains("forwarding for announce.grace before detaching")
    );
    round_trips(&topo, &mut clients, "after a node stopped");
}

/// A node joins: new flows reach it; established connections keep their backend (those the
/// router moves to it are found in its Maglev table).
#[test]
fn a_joining_node_takes_new_flows_and_keeps_established_ones() {
    require_root!();
    let (mut topo, _services) = running(3, 3, 2);
    let mut clients = echo_clients(&topo, 40);
    round_trips(&topo, &mut clients, "before");
    topo.start_node(2, None).unwrap();
    topo.wait_next_hops(&nodes(&[0, 1, 2]), Duration::from_secs(15))
        .unwrap();
    round_trips(&topo, &mut clients, "after the join");
    let moved = {
        let ports = flow_ports(&topo.nodes[2]);
        clients
            .iter()
            .filter(|c| ports.contains(&c.local_port()))
            .count()
    };
    println!("{moved} of 40 established connections moved to the new node");
    let before = counter(&topo.nodes[2], Counter::NewFlow);
    connections(&topo, 300);
    let new = counter(&topo.nodes[2], Counter::NewFlow) - before;
    println!("the new node took {new} of 300 new connections");
    assert!(new >= 45, "the new node took {new} of 300");
}

/// The routing engine not running: the agent forwards anyway, says "routing engine not
/// reachable" in status and log, keeps the route in its table, and recovers when BIRD starts.
/// A reload that removes the VIP withdraws it.
#[test]
fn no_routing_engine_then_one_then_a_reload_without_the_vip() {
    require_root!();
    let mut topo = ScaleOut::new(1, 2).unwrap();
    let _services = services(&topo);
    topo.start_agent(0, None).unwrap();
    let node = &topo.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = status(node);
        if matches!(
            s.announce.as_ref().unwrap().engine,
            xdp_lb::route_announce::Engine::NotReachable(_)
        ) || Instant::now() > deadline
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let a = s.announce.unwrap();
    assert!(
        a.engine.describe().starts_with("not reachable"),
        "{:?}",
        a.engine
    );
    assert_eq!(a.announced, vec![VIP], "the route waits in the table");
    let table = node
        .ns
        .ip(&["route", "show", "table", &TABLE.to_string()])
        .unwrap();
    assert!(
        table.contains(&format!("{VIP} dev eth0 proto 250 scope link")),
        "{table}"
    );
    let log = node.agent.as_ref().unwrap().log_text();
    assert!(
        log.contains("announce: routing engine not reachable"),
        "{log}"
    );
    let (_, text, _) = cli(node, "status");
    assert!(
        text.contains("announce: routing engine not reachable"),
        "{text}"
    );
    // Forwarding goes on: a static route on the router stands in for the missing BGP.
    let via = node_addr(0).to_string();
    let vip = format!("{VIP}/32");
    topo.router
        .ip(&["route", "add", &vip, "via", &via, "metric", "500"])
        .unwrap();
    connections(&topo, 50);
    topo.router
        .ip(&["route", "del", &vip, "metric", "500"])
        .unwrap();

    let bird_start = Instant::now();
    topo.start_bird(0).unwrap();
    // "Announced" is the route in the agent's table (there all along); the router has it once
    // BIRD has learnt the table and its BGP session is up.
    topo.wait_next_hops(&[node_addr(0)], Duration::from_secs(15))
        .unwrap();
    println!(
        "the router routes the VIP to the node {:?} after BIRD started",
        bird_start.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&topo.nodes[0]).announce.unwrap().engine
        != xdp_lb::route_announce::Engine::Reachable
    {
        assert!(Instant::now() < deadline, "engine never reachable");
        std::thread::sleep(Duration::from_millis(100));
    }
    connections(&topo, 50);

    // A reload that removes the VIP withdraws it at once.
    let without = xdp_lb_tests::fixtures::config("eth0")
        .key("xdp_mode", "driver")
        .bed(topo.nodes[0].pin_dir().display(), 65536, 4)
        .key("control_socket", topo.nodes[0].control_socket())
        .key("listen", "")
        .announce("table", TABLE)
        .announce("engine_socket", topo.nodes[0].bird_socket(&topo.dir))
        .to_string();
    let path = topo.dir.join("without.toml");
    std::fs::write(&path, without).unwrap();
    let socket = topo.nodes[0].control_socket();
    let (code, out, err) = xdp_lb_cli_in(
        &topo.nodes[0].ns,
        &[
            "reload",
            "--config",
            path.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    topo.wait_next_hops(&[], Duration::from_secs(3)).unwrap();
}

/// NAT VIPs on several active nodes (README, "Scale out"): each node's NAT flows use its own
/// SNAT address and stay with it; a flow that ECMP moves to another node is reset by that
/// node (the VIP on its lo, no socket) — continuity needs state sync.
#[test]
fn nat_flows_stay_with_their_node_and_a_moved_flow_is_reset() {
    require_root!();
    let mut topo = ScaleOut::new(2, 2).unwrap();
    let _services = services(&topo);
    for i in 0..2 {
        let n = &topo.nodes[i].ns;
        // NAT's kernel prerequisites (README, "NAT mode"), and the VIP on lo (not answered in
        // ARP) so that a packet of a flow this node does not know is reset by its kernel.
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.accept_local",
            "net.ipv4.conf.eth0.accept_local",
            "net.ipv4.conf.all.arp_ignore",
            "net.ipv4.conf.eth0.arp_ignore",
        ] {
            n.sysctl(key, "1").unwrap();
        }
        n.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
            .unwrap();
        n.ip(&["route", "add", "default", "via", &ROUTER_ADDR.to_string()])
            .unwrap();
        let config = topo
            .node_config(i, false)
            .to_string()
            .replace("forwarding = \"dsr\"", "forwarding = \"nat\"");
        topo.start_node(i, Some(config)).unwrap();
    }
    topo.wait_next_hops(&nodes(&[0, 1]), Duration::from_secs(15))
        .unwrap();
    let mut clients = echo_clients(&topo, 30);
    round_trips(&topo, &mut clients, "before");
    let on_node1 = flow_ports(&topo.nodes[0]);
    let (mut moved, mut stayed): (Vec<EchoClient>, Vec<EchoClient>) = clients
        .into_iter()
        .partition(|c| on_node1.contains(&c.local_port()));
    println!(
        "{} connections on node 1, {} on node 2",
        moved.len(),
        stayed.len()
    );
    assert!(!moved.is_empty() && !stayed.is_empty());

    let (code, _, err) = cli(&topo.nodes[0], "drain");
    assert_eq!(code, 0, "{err}");
    topo.wait_next_hops(&nodes(&[1]), Duration::from_secs(3))
        .unwrap();
    round_trips(&topo, &mut stayed, "node 2's own NAT flows");
    for c in &mut moved {
        let e = c
            .round_trip()
            .expect_err("a NAT flow moved to another node");
        let io = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        assert_eq!(
            io,
            Some(std::io::ErrorKind::ConnectionReset),
            "a moved NAT flow is reset, not left hanging: {e:#}"
        );
    }
}
