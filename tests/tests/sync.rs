//! Flow sync between two LB nodes (`[sync]`): connections that survive the master's death, a
//! returning master that waits for the flows before it takes the VIP back, snapshots, and a
//! sync port that treats what arrives as hostile.
//!
//! Two xdp-lb nodes on the DSR bed's bridge, VRRP between them moving the VIP and the SNAT
//! address (198.18.0.200, a second virtual address: the backends answer whichever node is
//! master); each sends its new flows to the other. A NAT VIP on :443 (backends' :8080) and a
//! DSR VIP on :80.

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, DsrTopology, EchoClient, NetNs, TcpService, fixtures, in_netns,
    packet::SynFlood,
    require_root,
    topology::{PassProgram, VIP, backend_addr, xdp_lb_cli},
};

const NAT_PORT: u16 = 443;
const BACKEND_PORT: u16 = 8080;
/// The DSR VIP's port (the backends hold the VIP on their loopback, as DSR needs).
const DSR_PORT: u16 = 80;
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
    // Each backend serves the NAT VIP's port and the DSR VIP's.
    let services = (0..3)
        .flat_map(|i| {
            let be = topo.backends[i].name.clone();
            [BACKEND_PORT, DSR_PORT]
                .map(move |port| TcpService::start(&be, port, &format!("be{}", i + 1)).unwrap())
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

fn lb_ns(b: &Bed, node: usize) -> &NetNs {
    if node == 1 { &b.topo.lb } else { &b.lb2 }
}

fn socket(b: &Bed, node: usize) -> PathBuf {
    PathBuf::from(format!("/run/xlbt/{}.sock", lb_ns(b, node).name))
}

fn pin_dir(b: &Bed, node: usize) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{}", lb_ns(b, node).name))
}

/// How a node differs from [`start`]'s.
struct Opts {
    sync: bool,
    /// The DSR VIP's backends: the first this many.
    dsr_backends: usize,
    /// More `[sync]` keys.
    sync_keys: &'static str,
    /// `agent.nat_closing_timeout`, if not the default.
    closing_timeout: Option<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            sync: true,
            dsr_backends: 3,
            sync_keys: "",
            closing_timeout: None,
        }
    }
}

fn config_path(b: &Bed, node: usize) -> PathBuf {
    b.topo.dir.join(format!("lb{node}.toml"))
}

/// Node 1 or 2 with `[sync]` to the other node.
fn start(b: &Bed, node: usize, priority: u8) -> Agent {
    start_with(b, node, priority, &Opts::default())
}

fn start_with(b: &Bed, node: usize, priority: u8, o: &Opts) -> Agent {
    write_config(b, node, priority, o);
    Agent::start(
        lb_ns(b, node),
        &["run", "--config", config_path(b, node).to_str().unwrap()],
        b.topo.dir.join(format!("lb{node}-{}.log", unique())),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The NAT VIP through SNAT, the DSR VIP, VRRP moving the VIP and the SNAT address.
fn write_config(b: &Bed, node: usize, priority: u8, o: &Opts) {
    let (me, peer) = if node == 1 {
        (LB1_ADDR, LB2_ADDR)
    } else {
        (LB2_ADDR, LB1_ADDR)
    };
    let api = (0..3).fold(
        fixtures::vip("api", VIP, NAT_PORT)
            .nat()
            .key("maglev_table_size", 4093)
            .check("interval", "500ms"),
        |v, i| v.backend_with(backend_addr(i), &[("port", &BACKEND_PORT.to_string())]),
    );
    let web = (0..o.dsr_backends).fold(
        fixtures::vip("web", VIP, DSR_PORT)
            .key("maglev_table_size", 4093)
            .check("interval", "500ms"),
        |v, i| v.backend(backend_addr(i)),
    );
    let vrrp = fixtures::vrrp("vi-sync", "eth0", 52, priority)
        .key("version", 3u8)
        .key("advert_interval", "200ms")
        .addresses(&[&format!("{VIP}/24"), &format!("{SNAT}/24")]);
    let sync = if o.sync {
        format!(
            "\n[sync]\npeers = [\"{peer}\"]\nsource = \"{me}\"\nkey_file = \"{}\"\n{}\n",
            b.key.display(),
            o.sync_keys
        )
    } else {
        String::new()
    };
    let mut agent = b.topo.agent_config(&pin_dir(b, node));
    if let Some(t) = o.closing_timeout {
        agent = agent.key("nat_closing_timeout", t);
    }
    let text = format!(
        "{}{sync}",
        agent
            .key("control_socket", socket(b, node))
            // /stats, for its panels (each node in a namespace of its own).
            .key("listen", "127.0.0.1:9100")
            .key("snat_address", SNAT)
            .key("snat_port_range", "20000-29999")
            .vip(api)
            .vip(web)
            .vrrp(vrrp),
    );
    std::fs::write(config_path(b, node), text).unwrap();
}

fn status(socket: &Path) -> serde_json::Value {
    let (code, out, err) =
        xdp_lb_cli(&["status", "--socket", socket.to_str().unwrap(), "--json"]).unwrap();
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn sync_status(b: &Bed, node: usize) -> serde_json::Value {
    status(&socket(b, node))["sync"].clone()
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

/// The master dies as a crashed host would: SIGKILL (its program stays attached otherwise)
/// and its link down.
fn crash(b: &Bed, agent: &mut Agent, node: usize) {
    agent.kill9();
    lb_ns(b, node).ip(&["link", "set", "eth0", "down"]).unwrap();
}

/// A crashed node as it comes back after a reboot: no maps, no program, no VRRP addresses,
/// its link up.
fn reboot(b: &Bed, node: usize) {
    xdp_lb::dataplane::remove_pins(&pin_dir(b, node)).unwrap();
    let ns = lb_ns(b, node);
    for a in [format!("{VIP}/24"), format!("{SNAT}/24")] {
        let _ = ns.ip(&["addr", "del", &a, "dev", "eth0"]);
    }
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
}

/// Long-lived connections held by a thread in the client namespace.
struct Conns {
    tx: mpsc::Sender<Cmd>,
    rx: mpsc::Receiver<Result<usize, String>>,
}

enum Cmd {
    /// Open this many more to this address, one round trip each.
    Open(SocketAddr, usize),
    /// Three round trips on every connection.
    Check,
    /// Close them all (FIN).
    Close,
}

impl Conns {
    fn new(b: &Bed) -> Self {
        let (tx, cmds) = mpsc::channel::<Cmd>();
        let (results, rx) = mpsc::channel();
        let ns = format!("/run/netns/{}", b.topo.client.name);
        std::thread::spawn(move || {
            xdp_lb_tests::netns::enter_netns(&ns).unwrap();
            let mut conns: Vec<EchoClient> = Vec::new();
            while let Ok(cmd) = cmds.recv_timeout(Duration::from_secs(120)) {
                let result = match cmd {
                    Cmd::Open(to, n) => (0..n)
                        .try_for_each(|i| {
                            let mut c = EchoClient::connect(to, Duration::from_secs(5))
                                .map_err(|e| format!("opening {i} of {n}: {e:#}"))?;
                            c.round_trip().map_err(|e| format!("opening {i}: {e:#}"))?;
                            conns.push(c);
                            Ok(())
                        })
                        .map(|()| conns.len()),
                    Cmd::Close => {
                        let n = conns.len();
                        conns.clear();
                        Ok(n)
                    }
                    Cmd::Check => {
                        let failures: Vec<String> = conns
                            .iter_mut()
                            .enumerate()
                            .filter_map(|(i, c)| {
                                (0..3).try_for_each(|_| c.round_trip()).err().map(|e| {
                                    format!("{i} (port {}, {}): {e:#}", c.local_port(), c.backend)
                                })
                            })
                            .collect();
                        if failures.is_empty() {
                            Ok(conns.len())
                        } else {
                            Err(format!(
                                "{} of {} broke: {:?}",
                                failures.len(),
                                conns.len(),
                                &failures[..failures.len().min(5)]
                            ))
                        }
                    }
                };
                if results.send(result).is_err() {
                    return;
                }
            }
        });
        Conns { tx, rx }
    }

    fn run(&self, cmd: Cmd) -> Result<usize, String> {
        self.tx.send(cmd).map_err(|e| e.to_string())?;
        self.rx
            .recv_timeout(Duration::from_secs(90))
            .map_err(|e| e.to_string())?
    }

    fn open(&self, port: u16, n: usize) -> usize {
        self.run(Cmd::Open(SocketAddr::from((VIP, port)), n))
            .unwrap()
    }

    fn check(&self) -> Result<usize, String> {
        self.run(Cmd::Check)
    }
}

/// Waits (bounded) until `node` has installed at least `n` of its peer's flows.
fn wait_installed(b: &Bed, node: usize, n: u64) {
    wait_for(
        &format!("lb{node} holding {n} synced flows"),
        Duration::from_secs(5),
        || sync_status(b, node)["installed"].as_u64().unwrap_or(0) >= n,
    );
}

/// When a flow ends on the master (closed, then reclaimed by its expiry), the backup drops its
/// copy too, and with it the SNAT port, rather than holding it for `nat_established_timeout`.
/// Plain `status` on lb1, with 50 NAT connections open: every section the JSON has, and the
/// SNAT ports per backend adding up to the connections (after an expiry sweep has counted them).
fn plain_status_shows_every_section(b: &Bed) {
    let ports = || -> u64 {
        let s = status(&socket(b, 1));
        assert_eq!(s["version"], 1, "the JSON layout's version");
        s["vips"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["backends"].as_array().unwrap().iter())
            .filter_map(|b| b["nat_ports"].as_u64())
            .sum()
    };
    wait_for("50 SNAT ports counted", Duration::from_secs(5), || {
        ports() == 50
    });
    let (code, out, err) =
        xdp_lb_cli(&["status", "--socket", socket(b, 1).to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    for section in [
        "status layout 1",
        "VRRP ",
        "adverts sent ",
        "sync: peers ",
        "  sent: ",
        "  received: ",
        "refused datagrams: ",
        "  installed ",
        "NAT: SNAT ",
        "live flows: ",
        "nat ports",
    ] {
        assert!(
            out.contains(section),
            "plain status lacks {section:?}:\n{out}"
        );
    }
    // The column under its (right-aligned) header, in each backend table of a NAT VIP.
    let mut table_ports = 0;
    let mut column = None;
    for l in out.lines() {
        if let Some(at) = l.find("nat ports") {
            column = Some(at..at + "nat ports".len());
        } else if !l.starts_with("  ") {
            column = None;
        } else if let Some(c) = &column {
            table_ports += l
                .get(c.clone())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    assert_eq!(
        table_ports, 50,
        "the backends' SNAT ports in the table:\n{out}"
    );

    // /stats has a panel for each: VRRP, sync and NAT.
    let (code, page) = xdp_lb_tests::in_netns(&lb_ns(b, 1).name, || {
        xdp_lb_tests::service::http_fetch(
            std::net::SocketAddr::from(([127, 0, 0, 1], 9100)),
            "/stats",
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .unwrap();
    assert_eq!(code, 200);
    for panel in [
        "<div class=\"panel\" id=\"vrrp-vi-sync\"><h2>VRRP vi-sync",
        "class=\"MASTER\"",
        "<div class=\"panel\" id=\"sync\"><h2>Sync</h2><div>peers 198.18.0.3",
        "installed 0, known",
        "<div class=\"panel\" id=\"nat\"><h2>NAT</h2><div>SNAT 198.18.0.200",
        "established 50",
    ] {
        assert!(page.contains(panel), "/stats lacks {panel:?}:\n{page}");
    }

    // The Grafana dashboard names only what this agent (NAT, VRRP, sync) exports; the
    // [announce] families and the refused sync datagrams (none here) have no samples and are
    // checked against their labels.
    let (code, metrics) = xdp_lb_tests::in_netns(&lb_ns(b, 1).name, || {
        xdp_lb_tests::service::http_fetch(
            std::net::SocketAddr::from(([127, 0, 0, 1], 9100)),
            "/metrics",
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .unwrap();
    assert_eq!(code, 200);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("packaging/grafana/xdp-lb.json")).unwrap(),
    )
    .unwrap();
    let checked = xdp_lb_tests::dashboard::check(
        &dashboard,
        &xdp_lb_tests::dashboard::exported(&metrics),
        &[
            ("xdp_lb_vip_announced", &["vip"]),
            ("xdp_lb_draining", &[]),
            ("xdp_lb_routing_engine_reachable", &[]),
            ("xdp_lb_sync_rejected_total", &["reason"]),
        ],
    )
    .unwrap_or_else(|e| panic!("packaging/grafana/xdp-lb.json: {e}"));
    println!("dashboard: {checked} expressions checked against /metrics");
}

#[test]
fn closed_flows_leave_the_peers_copy_too() {
    require_root!();
    let b = bed();
    // lb1 reclaims a closed flow after 1 s; lb2 would keep a closing copy for 30 minutes on
    // its own (the closing state is synced too): only lb1's message can remove it this soon.
    let o1 = Opts {
        closing_timeout: Some("1s"),
        ..Opts::default()
    };
    let o2 = Opts {
        closing_timeout: Some("30m"),
        ..Opts::default()
    };
    let _lb1 = start_with(&b, 1, 150, &o1);
    let _lb2 = start_with(&b, 2, 100, &o2);
    wait_for("lb1 master", Duration::from_secs(10), || {
        status(&socket(&b, 1))["vrrp"][0]["state"] == "MASTER"
    });
    let conns = Conns::new(&b);
    conns.open(NAT_PORT, 50);
    wait_installed(&b, 2, 50);
    plain_status_shows_every_section(&b);
    let nat_flows = |node: usize| {
        xdp_lb_tests::topology::inspect_stats(lb_ns(&b, node), &pin_dir(&b, node)).unwrap()["stats"]
            ["nat_flows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(nat_flows(2), 50, "lb2's copies");
    let closed_at = Instant::now();
    assert_eq!(conns.run(Cmd::Close), Ok(50));
    // lb1 reclaims them nat_closing_timeout (1 s) after the close, within its sweep's
    // granularity (1 s sweep, 2 s of whole-second clocks); lb2's copies go at the same time.
    let gone = wait_for("lb2's copies removed", Duration::from_secs(8), || {
        nat_flows(2) == 0
    });
    eprintln!(
        "lb2's copies gone {:?} after the close; lb2: {}",
        closed_at.elapsed(),
        sync_status(&b, 2)
    );
    assert!(gone < Duration::from_secs(8));
    assert_eq!(sync_status(&b, 2)["removed"], 50);
    assert_eq!(nat_flows(1), 0);
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

/// 200 long-lived NAT connections through the master; the master crashes; each connection
/// talks again through the backup. Ok(200), or Err("N of 200 broke: ...").
fn failover(sync: bool) -> Result<usize, String> {
    let b = bed();
    let o = Opts {
        sync,
        ..Opts::default()
    };
    let mut lb1 = start_with(&b, 1, 150, &o);
    let mut lb2 = start_with(&b, 2, 100, &o);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(10))
        .unwrap();
    let conns = Conns::new(&b);
    assert_eq!(conns.open(NAT_PORT, 200), 200);
    if sync {
        wait_installed(&b, 2, 200);
        eprintln!("lb1 sync: {}", sync_status(&b, 1));
    }
    let killed_at = Instant::now();
    crash(&b, &mut lb1, 1);
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    let master_after = killed_at.elapsed();
    let result = conns.check();
    eprintln!(
        "sync {sync}: lb2 master {master_after:?} after the kill; then {result:?}, {:?} after the kill",
        killed_at.elapsed()
    );
    eprintln!("lb2 sync: {}", sync_status(&b, 2));
    assert!(lb2.stop().unwrap().success());
    result
}

/// A crashed master comes back (rebooted: no maps) with the higher priority: it asks the new
/// master for a snapshot, and takes the VIP back only when it has every flow — the ones made
/// before the crash and the ones made on the backup meanwhile — so nothing is reset twice.
#[test]
fn a_returning_master_waits_for_the_snapshot_then_takes_over_without_a_reset() {
    require_root!();
    let b = bed();
    let mut lb1 = start(&b, 1, 150);
    let mut lb2 = start(&b, 2, 100);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(10))
        .unwrap();
    let conns = Conns::new(&b);
    conns.open(NAT_PORT, 100);
    wait_installed(&b, 2, 100);
    crash(&b, &mut lb1, 1);
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    assert_eq!(conns.check(), Ok(100));
    // Made on lb2 while lb1 is away: lb1 can only learn them from the snapshot.
    assert_eq!(conns.open(NAT_PORT, 50), 150);

    reboot(&b, 1);
    let mut lb1 = start(&b, 1, 150);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(10))
        .unwrap();
    let log = lb1.log_text();
    let snapshot_at = log
        .find("sync: snapshot complete")
        .expect("the snapshot arrived");
    let master_at = log.find("to=\"MASTER\"").unwrap();
    assert!(
        snapshot_at < master_at,
        "lb1 took the VIP before it had the flows:\n{log}"
    );
    let s1 = sync_status(&b, 1);
    eprintln!("lb1 after its return: {s1}");
    let snapshot = s1["snapshot"].as_str().unwrap();
    assert!(snapshot.starts_with("150 flows from 198.18.0.3"), "{s1}");
    lb2.wait_for_log("to=\"BACKUP\"", Duration::from_secs(3))
        .unwrap();
    assert_eq!(
        conns.check(),
        Ok(150),
        "connections broke when lb1 took over"
    );
}

/// DSR flows keep their backend across a failover even when the backends changed after they
/// were opened: the backup's Maglev table would send a third of them elsewhere (to the backend
/// added meanwhile), but it has their flow entries.
#[test]
fn dsr_flows_made_before_a_backend_was_added_keep_it_across_a_failover() {
    require_root!();
    let b = bed();
    let two = Opts {
        dsr_backends: 2,
        ..Opts::default()
    };
    let mut lb1 = start_with(&b, 1, 150, &two);
    let mut lb2 = start_with(&b, 2, 100, &two);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(10))
        .unwrap();
    let conns = Conns::new(&b);
    conns.open(DSR_PORT, 60);
    wait_installed(&b, 2, 60);
    // be3 joins the DSR VIP on both nodes: new tables, in which about a third of the 60
    // flows hash to be3 ((2/3)^60: none would be a 1e-11 chance).
    for node in [1, 2] {
        write_config(
            &b,
            node,
            if node == 1 { 150 } else { 100 },
            &Opts::default(),
        );
        let (code, _, err) = xdp_lb_cli(&[
            "reload",
            "--config",
            config_path(&b, node).to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(conns.check(), Ok(60), "the reload moved established flows");
    crash(&b, &mut lb1, 1);
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    assert_eq!(
        conns.check(),
        Ok(60),
        "DSR flows lost their backend in the failover"
    );
}

/// A peer that dies leaves the other node forwarding as before: old connections talk, new
/// ones open, and the sync keeps sending (into the void) without holding anything up.
#[test]
fn a_dead_peer_leaves_forwarding_untouched() {
    require_root!();
    let b = bed();
    let _lb1 = start(&b, 1, 150);
    let mut lb2 = start(&b, 2, 100);
    let conns = Conns::new(&b);
    wait_for("lb1 master", Duration::from_secs(10), || {
        status(&socket(&b, 1))["vrrp"][0]["state"] == "MASTER"
    });
    conns.open(NAT_PORT, 50);
    lb2.kill9();
    let sent_before = sync_status(&b, 1)["stream"]["flows_sent"].as_u64().unwrap();
    assert_eq!(conns.open(NAT_PORT, 100), 150);
    assert_eq!(conns.check(), Ok(150));
    let s1 = sync_status(&b, 1);
    assert!(
        s1["stream"]["flows_sent"].as_u64().unwrap() >= sent_before + 100,
        "{s1}"
    );
}

/// A node that starts beside one holding 10 000 flows has them all, by snapshot, within a
/// second of asking.
#[test]
fn a_10000_flow_snapshot_installs_in_under_a_second() {
    require_root!();
    let b = bed();
    // lb1 alone: nobody answers its own snapshot request; it goes ahead after 1 s.
    let alone = Opts {
        sync_keys: "snapshot_wait = \"1s\"",
        ..Opts::default()
    };
    let _lb1 = start_with(&b, 1, 150, &alone);
    wait_for("lb1 master", Duration::from_secs(10), || {
        status(&socket(&b, 1))["vrrp"][0]["state"] == "MASTER"
    });
    // 10 000 DSR flows from random sources (SYNs; the backends' answers go nowhere).
    let flood = SynFlood {
        src_mac: b.topo.client.mac("eth0").unwrap(),
        dst_mac: b.topo.lb.mac("eth0").unwrap(),
        sources: ("198.19.0.0".parse().unwrap(), 16),
        dst: VIP,
        dport: DSR_PORT,
        rate_per_s: 20_000,
        count: 10_000,
    };
    let report = in_netns(&b.topo.client.name, move || flood.run("eth0"))
        .unwrap()
        .unwrap();
    assert_eq!(report.sent, 10_000);
    let flows = wait_for("lb1 holding the flows", Duration::from_secs(5), || {
        xdp_lb_tests::topology::inspect_stats(&b.topo.lb, &pin_dir(&b, 1)).unwrap()["stats"]
            ["flow_table_entries"]
            .as_u64()
            .unwrap_or(0)
            >= 9_900
    });
    eprintln!("lb1 holds the flood's flows after {flows:?}");
    let lb2 = start(&b, 2, 100);
    let mut lb2 = lb2;
    lb2.wait_for_log("sync: snapshot complete", Duration::from_secs(5))
        .unwrap();
    let s2 = sync_status(&b, 2);
    eprintln!("lb2: {s2}");
    let snapshot = s2["snapshot"].as_str().unwrap().to_owned();
    // "N flows from 198.18.0.2 in T ms"
    let words: Vec<&str> = snapshot.split_whitespace().collect();
    let (n, ms): (u64, u64) = (words[0].parse().unwrap(), words[5].parse().unwrap());
    assert!(n >= 9_900, "{snapshot}");
    assert!(ms < 1_000, "{snapshot}");
    assert!(s2["installed"].as_u64().unwrap() >= 9_900, "{s2}");
}

#[test]
fn forged_garbled_and_replayed_sync_datagrams_change_nothing_and_are_counted() {
    require_root!();
    use xdp_lb::sync::wire::{
        FlowRecord, Key, Message, MessageKind, RecordKind, STATE_ESTABLISHED, encode,
    };
    let b = bed();
    let _lb1 = start(&b, 1, 150);
    let _lb2 = start(&b, 2, 100);
    // The two nodes' start-up snapshots are done (bounded), so what follows is all ours.
    wait_for("lb2's snapshot", Duration::from_secs(10), || {
        sync_status(&b, 2)["snapshot"] != "waiting"
    });
    let before = sync_status(&b, 2);
    let record = FlowRecord {
        kind: RecordKind::Nat,
        proto: 6,
        state: STATE_ESTABLISHED,
        client: "198.18.0.1:40000".parse().unwrap(),
        vip: SocketAddr::from((VIP, NAT_PORT)),
        backend: SocketAddr::from((backend_addr(0), BACKEND_PORT)),
        snat: Some(format!("{SNAT}:20001").parse().unwrap()),
        idle_s: 0,
    };
    // An epoch after lb1's own (its start time in ns): a later "restart" of lb1.
    let msg = |seq| Message {
        kind: MessageKind::Flows,
        node: 1,
        epoch: u64::MAX / 2,
        seq,
        records: vec![record],
    };
    let forged = encode(&msg(1), &Key::new(&[9u8; 32]));
    let real_key = xdp_lb::config::sync_key::load(&b.key).unwrap();
    let genuine = encode(&msg(1), &Key::new(real_key.bytes()));
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
        .unwrap();
    };
    // From lb1's namespace (a peer's address, so the source check passes): a datagram signed
    // with another key, a garbled one, a cut one, the genuine one, and it again twice (replays);
    // from the client (not a peer): the genuine one.
    send_from(
        &b.topo.lb,
        vec![forged, garbled, genuine[..50].to_vec(), genuine.clone()],
    );
    send_from(&b.topo.lb, vec![genuine.clone(), genuine.clone()]);
    send_from(&b.topo.client, vec![genuine]);
    let refused = |s: &serde_json::Value| -> u64 {
        s["stream"]["rejected"].as_object().map_or(0, |m| {
            m.values().filter_map(serde_json::Value::as_u64).sum()
        })
    };
    wait_for("lb2 counting them", Duration::from_secs(3), || {
        refused(&sync_status(&b, 2)) >= refused(&before) + 6
    });
    let after = sync_status(&b, 2);
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

    // Authentic but through an SNAT address that is not lb2's (a peer behind ECMP with its own):
    // no copy, counted as unknown.
    let foreign = Message {
        seq: 2,
        records: vec![FlowRecord {
            client: "198.18.0.1:40001".parse().unwrap(),
            snat: Some("198.18.0.77:20001".parse().unwrap()),
            ..record
        }],
        ..msg(2)
    };
    send_from(
        &b.topo.lb,
        vec![encode(&foreign, &Key::new(real_key.bytes()))],
    );
    let unknown = |s: &serde_json::Value| s["unknown"].as_u64().unwrap();
    wait_for(
        "lb2 refusing the foreign SNAT",
        Duration::from_secs(3),
        || unknown(&sync_status(&b, 2)) > unknown(&after),
    );
    let last = sync_status(&b, 2);
    assert_eq!(last["installed"], after["installed"], "{last}");
}

/// Behind ECMP (`[announce]`), a node that starts announces nothing before it has the other
/// nodes' flows: its VIP is withdrawn, "waiting for the sync snapshot", until the snapshot
/// wait ends (here: no peer answers, 5 s), then announced.
#[test]
fn an_announcing_node_waits_for_the_snapshot_before_it_announces() {
    require_root!();
    let b = bed();
    let text = format!(
        "{}\n[sync]\npeers = [\"{LB2_ADDR}\"]\nsource = \"{LB1_ADDR}\"\nkey_file = \"{}\"\nsnapshot_wait = \"5s\"\n",
        b.topo
            .agent_config(&pin_dir(&b, 1))
            .key("control_socket", socket(&b, 1))
            .key("listen", "")
            .vip((0..3).fold(fixtures::vip("web", VIP, DSR_PORT), |v, i| {
                v.backend(backend_addr(i))
            }),)
            .announce("engine_socket", ""),
        b.key.display()
    );
    let path = config_path(&b, 1);
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let mut lb1 = Agent::start(
        &b.topo.lb,
        &["run", "--config", path.to_str().unwrap()],
        b.topo.dir.join("lb1-announce.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();
    let verdict = || status(&socket(&b, 1))["vips"][0]["announce"].clone();
    let early = verdict();
    // The agent starts in well under a second here; 5 s leaves room for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "too slow to look"
    );
    assert_eq!(early, "withdrawn: waiting for the sync snapshot", "{early}");
    let after = wait_for("the VIP announced", Duration::from_secs(9), || {
        verdict() == "announced"
    });
    eprintln!(
        "announced {:?} after start ({after:?} after the first look)",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    lb1.wait_for_log("no peer completed a snapshot", Duration::from_secs(1))
        .unwrap();
}
