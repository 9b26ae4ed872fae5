//! Flow sync between two LB nodes (`[sync]`): NAT connections that survive the master's death,
//! and a sync port that treats what arrives as hostile.
//!
//! Two xdp-lb nodes on the DSR bed's bridge, VRRP between them moving the VIP and the SNAT
//! address (198.18.0.200, a second virtual address: the backends answer whichever node is
//! master); each sends its new flows to the other.

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, DsrTopology, EchoClient, NetNs, TcpService, fixtures, in_netns, require_root,
    topology::{PassProgram, VIP, backend_addr},
};

const VIP_PORT: u16 = 443;
const BACKEND_PORT: u16 = 8080;
const SNAT: &str = "198.18.0.200";
const LB1_ADDR: &str = "198.18.0.2";
const LB2_ADDR: &str = "198.18.0.3";
const READY: &str = "xdp-lb is forwarding";

struct Bed {
    topo: DsrTopology,
    lb2: NetNs,
    _pass2: PassProgram,
    _services: Vec<TcpService>,
    key: PathBuf,
}

fn bed() -> Bed {
    let topo = DsrTopology::new(3).unwrap();
    let (lb2, pass2) = topo.vrrp_pair(LB2_ADDR.parse().unwrap()).unwrap();
    // NAT's kernel settings on both nodes (README, "NAT mode").
    for ns in [&topo.lb, &lb2] {
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.accept_local",
            "net.ipv4.conf.eth0.accept_local",
        ] {
            ns.sysctl(key, "1").unwrap();
        }
    }
    let services = (0..3)
        .map(|i| {
            TcpService::start(
                &topo.backends[i].name,
                BACKEND_PORT,
                &format!("be{}", i + 1),
            )
            .unwrap()
        })
        .collect();
    let key = topo.dir.join("sync.key");
    std::fs::write(&key, (0..32u8).collect::<Vec<_>>()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Bed {
        topo,
        lb2,
        _pass2: pass2,
        _services: services,
        key,
    }
}

fn socket(b: &Bed, node: usize) -> PathBuf {
    PathBuf::from(format!(
        "/run/xlbt/{}.sock",
        if node == 1 {
            &b.topo.lb.name
        } else {
            &b.lb2.name
        }
    ))
}

/// Node 1 or 2: the NAT VIP through SNAT, VRRP moving both addresses, sync to the other node.
fn start(b: &Bed, node: usize, priority: u8) -> Agent {
    start_with(b, node, priority, true)
}

/// [`start`], with or without `[sync]`.
fn start_with(b: &Bed, node: usize, priority: u8, sync: bool) -> Agent {
    let (ns, pins, me, peer) = if node == 1 {
        (&b.topo.lb, b.topo.pin_dir(), LB1_ADDR, LB2_ADDR)
    } else {
        (
            &b.lb2,
            PathBuf::from(format!("/sys/fs/bpf/{}", b.lb2.name)),
            LB2_ADDR,
            LB1_ADDR,
        )
    };
    let vip = (0..3).fold(
        fixtures::vip("api", VIP, VIP_PORT)
            .nat()
            .key("maglev_table_size", 4093)
            .check("interval", "500ms"),
        |v, i| v.backend_with(backend_addr(i), &[("port", &BACKEND_PORT.to_string())]),
    );
    let vrrp = fixtures::vrrp("vi-sync", "eth0", 52, priority)
        .key("version", 3u8)
        .key("advert_interval", "200ms")
        .addresses(&[&format!("{VIP}/24"), &format!("{SNAT}/24")]);
    let sync = if sync {
        format!(
            "\n[sync]\npeers = [\"{peer}\"]\nsource = \"{me}\"\nkey_file = \"{}\"\n",
            b.key.display()
        )
    } else {
        String::new()
    };
    let text = format!(
        "{}{sync}",
        b.topo
            .agent_config(&pins)
            .key("control_socket", socket(b, node))
            .key("listen", "")
            .key("snat_address", SNAT)
            .key("snat_port_range", "20000-29999")
            .vip(vip)
            .vrrp(vrrp),
    );
    let path = b.topo.dir.join(format!("lb{node}.toml"));
    std::fs::write(&path, text).unwrap();
    Agent::start(
        ns,
        &["run", "--config", path.to_str().unwrap()],
        b.topo.dir.join(format!("lb{node}.log")),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn status(socket: &Path) -> serde_json::Value {
    let (code, out, err) = xdp_lb_tests::topology::xdp_lb_cli(&[
        "status",
        "--socket",
        socket.to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if cond() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {timeout:?}");
}

#[test]
fn nat_connections_continue_on_the_backup_when_the_master_dies() {
    require_root!();
    assert_eq!(
        failover(true),
        Ok(200),
        "connections broke across the failover"
    );
}

/// The control: without `[sync]` the same failover resets the connections (the backup has no
/// translation for them), which is what the test above would see if sync did nothing.
#[test]
fn without_sync_the_same_failover_breaks_the_connections() {
    require_root!();
    let result = failover(false);
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.starts_with("200 of 200 broke")),
        "{result:?}"
    );
}

/// 200 long-lived NAT connections through the master; the master dies (SIGKILL, link down);
/// each connection talks again through the backup. Ok(connections that kept working), or
/// Err("N of 200 broke: ...").
fn failover(sync: bool) -> Result<usize, String> {
    let b = bed();
    let mut lb1 = start_with(&b, 1, 150, sync);
    let mut lb2 = start_with(&b, 2, 100, sync);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(5))
        .unwrap();

    // 200 long-lived NAT connections through lb1, each with a round trip (so each is
    // established, and reported).
    const N: usize = 200;
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
    let ns = format!("/run/netns/{}", b.topo.client.name);
    let worker = std::thread::spawn(move || -> Result<usize, String> {
        xdp_lb_tests::netns::enter_netns(&ns).map_err(|e| e.to_string())?;
        let vip = SocketAddr::from((VIP, VIP_PORT));
        let mut clients = Vec::new();
        for i in 0..N {
            let mut c = EchoClient::connect(vip, Duration::from_secs(5))
                .map_err(|e| format!("connection {i}: {e:#}"))?;
            c.round_trip()
                .map_err(|e| format!("connection {i}: {e:#}"))?;
            clients.push(c);
        }
        ready_tx.send(clients.len()).map_err(|e| e.to_string())?;
        go_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        // Every connection talks again, several times, on the backup now.
        let mut ok = 0;
        let mut failures = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            match (0..3).try_for_each(|_| c.round_trip()) {
                Ok(()) => ok += 1,
                Err(e) => failures.push(format!(
                    "{i} (port {}, {}): {e:#}",
                    c.local_port(),
                    c.backend
                )),
            }
        }
        if failures.is_empty() {
            Ok(ok)
        } else {
            Err(format!(
                "{} of {N} broke: {:?}",
                failures.len(),
                &failures[..failures.len().min(5)]
            ))
        }
    });
    let n = ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(n, N);
    let s2 = socket(&b, 2);
    if sync {
        // lb2 has them all (bounded wait): installed from lb1's messages.
        wait_for("lb2 holding the 200 flows", Duration::from_secs(5), || {
            status(&s2)["sync"]["installed"].as_u64().unwrap_or(0) >= N as u64
        });
        let st = status(&socket(&b, 1));
        eprintln!("lb1 sync: {}", st["sync"]);
    }

    // The master dies: SIGKILL, and its link goes down (its program stays attached otherwise).
    let killed_at = Instant::now();
    lb1.kill9();
    b.topo.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    eprintln!("lb2 master {:?} after the kill", killed_at.elapsed());
    go_tx.send(()).unwrap();
    let result = worker.join().unwrap();
    eprintln!(
        "sync {sync}: after the failover: {result:?}, {:?} after the kill",
        killed_at.elapsed()
    );
    eprintln!("lb2 sync: {}", status(&s2)["sync"]);
    assert!(lb2.stop().unwrap().success());
    result
}

#[test]
fn forged_garbled_and_replayed_sync_datagrams_change_nothing_and_are_counted() {
    require_root!();
    let b = bed();
    let _lb1 = start(&b, 1, 150);
    let _lb2 = start(&b, 2, 100);
    let s2 = socket(&b, 2);
    let before = status(&s2)["sync"].clone();
    // From lb1's namespace (a peer's address, so the source check passes): a datagram signed
    // with another key, a garbled one, a cut one; from the client (not a peer): anything.
    let key = xdp_lb::sync::wire::Key::new(&[9u8; 32]);
    let record = xdp_lb::sync::wire::FlowRecord {
        kind: xdp_lb::sync::wire::RecordKind::Nat,
        proto: 6,
        state: xdp_lb::sync::wire::STATE_ESTABLISHED,
        client: "198.18.0.1:40000".parse().unwrap(),
        vip: SocketAddr::from((VIP, VIP_PORT)),
        backend: SocketAddr::from((backend_addr(0), BACKEND_PORT)),
        snat: Some(format!("{SNAT}:20001").parse().unwrap()),
        idle_s: 0,
    };
    let msg = |seq| xdp_lb::sync::wire::Message {
        kind: xdp_lb::sync::wire::MessageKind::Flows,
        node: 1,
        epoch: 1,
        seq,
        records: vec![record],
    };
    let forged = xdp_lb::sync::wire::encode(&msg(1), &key);
    let real_key = xdp_lb::sync::key::load(&b.key).unwrap();
    let genuine = xdp_lb::sync::wire::encode(&msg(1), &xdp_lb::sync::wire::Key::new(&real_key));
    let mut garbled = genuine.clone();
    garbled[40] ^= 0xff;
    let to = SocketAddr::from(([198, 18, 0, 3], 7947));
    let send_from = |ns: &NetNs, datagrams: Vec<Vec<u8>>| {
        in_netns(&ns.name, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for d in datagrams {
                s.send_to(&d, to).unwrap();
            }
        })
        .unwrap()
    };
    send_from(
        &b.topo.lb,
        vec![forged, garbled, genuine[..50].to_vec(), genuine.clone()],
    );
    // The genuine one again: a replay.
    send_from(&b.topo.lb, vec![genuine.clone(), genuine.clone()]);
    send_from(&b.topo.client, vec![genuine]);
    wait_for("lb2 counting them", Duration::from_secs(3), || {
        status(&s2)["sync"]["stream"]["datagrams_received"]
            .as_u64()
            .unwrap_or(0)
            >= before["stream"]["datagrams_received"].as_u64().unwrap_or(0) + 7
    });
    let after = status(&s2)["sync"].clone();
    eprintln!("lb2 sync after the hostile datagrams: {after}");
    let rejected = &after["stream"]["rejected"];
    assert_eq!(rejected["bad_mac"], 2, "{after}");
    assert_eq!(rejected["truncated"], 1, "{after}");
    assert_eq!(rejected["replayed"], 2, "{after}");
    assert_eq!(rejected["unknown_peer"], 1, "{after}");
    // Only the genuine one installed its flow.
    assert_eq!(
        after["installed"].as_u64().unwrap() - before["installed"].as_u64().unwrap(),
        1,
        "{after}"
    );
}
