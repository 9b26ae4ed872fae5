//! End to end in network namespaces: NAT mode through the real XDP program, to plain backends
//! (no VIP, no sysctls) on another subnet than the client and on another port than the VIP;
//! and the same traffic through haproxy `mode tcp` as the baseline that proves the topology.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, NatTopology, TcpService, fixtures, http_get, http_get_many, in_netns, require_root,
    service::Transfer,
    topology::{LB_ADDR6, VIP, VIP6, backend_addr, backend_addr6, xdp_lb_cli_in},
};

const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
const HAPROXY_PORT: u16 = 81;
const READY: &str = "xdp-lb is forwarding";
/// Weights of be1..be3: the expected shares are 25%, 50%, 25%.
const WEIGHTS: [u32; 3] = [1, 2, 1];
const CLOSING_TIMEOUT_S: u64 = 2;
const TEN_MB: u64 = 10 * 1024 * 1024;

fn config(topo: &NatTopology) -> String {
    let port = BACKEND_PORT.to_string();
    let api = WEIGHTS.iter().enumerate().fold(
        fixtures::vip("api", VIP, VIP_PORT)
            .nat()
            .check("interval", "500ms"),
        |vip, (i, w)| {
            vip.backend_with(
                backend_addr(i),
                &[("port", &port), ("weight", &w.to_string())],
            )
        },
    );
    topo.inner
        .agent_config(&topo.inner.pin_dir())
        .key("listen", "")
        .key("snat_port_range", "20000-29999")
        .key("nat_closing_timeout", format!("{CLOSING_TIMEOUT_S}s"))
        .vip(api)
        .to_string()
}

fn services(topo: &NatTopology) -> Vec<TcpService> {
    topo.backends()
        .iter()
        .enumerate()
        .map(|(i, be)| TcpService::start(&be.name, BACKEND_PORT, &format!("be{}", i + 1)).unwrap())
        .collect()
}

/// `n` new connections from the client namespace; stops at the first failure. Returns the
/// answering backend of each.
fn connections(topo: &NatTopology, port: u16, n: usize) -> Vec<anyhow::Result<String>> {
    in_netns(&topo.client.name, move || {
        http_get_many(SocketAddr::from((VIP, port)), n, Duration::from_secs(3))
    })
    .unwrap()
}

/// 10 MB each way, checked by digest at the far end.
fn transfers(topo: &NatTopology, port: u16) -> ((String, bool), (String, bool)) {
    in_netns(&topo.client.name, move || {
        let vip = SocketAddr::from((VIP, port));
        let transfer = |seed| Transfer {
            bytes: TEN_MB,
            seed,
            timeout: Duration::from_secs(10),
        };
        let up = transfer(7).upload(vip).unwrap();
        let down = transfer(11).download(vip).unwrap();
        (up, down)
    })
    .unwrap()
}

fn assert_all_answered(
    topo: &NatTopology,
    answers: &[anyhow::Result<String>],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut per_backend = BTreeMap::new();
    for (i, a) in answers.iter().enumerate() {
        let body = a.as_ref().unwrap_or_else(|e| {
            panic!(
                "connection {i} of {n} failed: {e:#}; the data plane's non-zero counters: {}",
                nonzero_counters(topo)
            )
        });
        *per_backend.entry(body.clone()).or_insert(0) += 1;
    }
    assert_eq!(answers.len(), n);
    per_backend
}

/// The data plane's non-zero counters, for a failure's message.
fn nonzero_counters(topo: &NatTopology) -> String {
    match xdp_lb_tests::topology::inspect_stats(topo.lb(), &topo.inner.pin_dir()) {
        Ok(stats) => stats["stats"]["counters"]
            .as_object()
            .map(|counters| {
                counters
                    .iter()
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| stats.to_string()),
        Err(e) => format!("(inspect stats failed: {e:#})"),
    }
}

fn nat_flows(topo: &NatTopology) -> u64 {
    xdp_lb_tests::topology::inspect_stats(topo.lb(), &topo.inner.pin_dir()).unwrap()["stats"]
        ["nat_flows"]
        .as_u64()
        .expect("nat_flows in stats")
}

/// Waits until every NAT binding is reclaimed, at most `nat_closing_timeout` plus the agent's
/// 1 s sweep and 2 s of whole-second clocks (see `xdp_lb::nat::expired`) after `closed_at`;
/// returns how long after it.
fn wait_until_reclaimed(topo: &NatTopology, closed_at: Instant) -> Duration {
    let deadline = Duration::from_secs(CLOSING_TIMEOUT_S + 3) + Duration::from_millis(500);
    loop {
        let n = nat_flows(topo);
        if n == 0 {
            return closed_at.elapsed();
        }
        assert!(
            closed_at.elapsed() < deadline,
            "{n} NAT flows still held {:?} after the connections closed (nat_closing_timeout {CLOSING_TIMEOUT_S}s)",
            closed_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nat_balances_plain_backends_on_another_subnet_and_port() {
    require_root!();
    let topo = NatTopology::new(3).unwrap();
    let _services = services(&topo);
    let config_path = topo.dir().join("xdp-lb.toml");
    std::fs::write(&config_path, config(&topo)).unwrap();
    let mut agent = Agent::start(
        topo.lb(),
        &["run", "--config", config_path.to_str().unwrap()],
        topo.dir().join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();

    // 4000 new connections (the issue asks for 1000; more make the ±10% share check robust:
    // the 25% backend's count has a standard deviation of ~27 against a tolerance of 100).
    const N: usize = 4000;
    let answers = connections(&topo, VIP_PORT, N);
    let per_backend = assert_all_answered(&topo, &answers, N);
    let closed_at = Instant::now();
    let total_weight: u32 = WEIGHTS.iter().sum();
    for (i, w) in WEIGHTS.iter().enumerate() {
        let expected = N as f64 * *w as f64 / total_weight as f64;
        let got = *per_backend.get(&format!("be{}", i + 1)).unwrap_or(&0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.10,
            "be{} answered {got} of {N}, expected {expected} ± 10% (weights {WEIGHTS:?}): {per_backend:?}",
            i + 1
        );
    }

    // Closed connections' entries are reclaimed after nat_closing_timeout: still there right
    // after the last one closed, gone after the timeout plus at most the agent's 1 s sweep
    // and 2 s of whole-second clocks (see `xdp_lb::nat::expired`).
    let right_after = nat_flows(&topo);
    assert!(
        right_after > 0,
        "the last connections' bindings are still held"
    );
    let reclaimed_after = wait_until_reclaimed(&topo, closed_at);
    eprintln!(
        "{right_after} NAT flows right after the last close; all reclaimed after {reclaimed_after:?}"
    );
    assert!(
        reclaimed_after >= Duration::from_secs(CLOSING_TIMEOUT_S) - Duration::from_millis(100),
        "reclaimed after {reclaimed_after:?}, before nat_closing_timeout ({CLOSING_TIMEOUT_S}s)"
    );

    // 10 MB each way arrive byte-identical.
    let ((up_be, up_ok), (down_be, down_ok)) = transfers(&topo, VIP_PORT);
    assert!(
        up_ok,
        "10 MB upload through NAT (to {up_be}) arrived corrupted or short"
    );
    assert!(
        down_ok,
        "10 MB download through NAT (from {down_be}) arrived corrupted or short"
    );

    // Hairpin: a backend connecting to the VIP is balanced like any client (possibly to itself).
    let hairpin = in_netns(&topo.backends()[0].name, || {
        let vip = SocketAddr::from((VIP, VIP_PORT));
        (0..30)
            .map(|_| http_get(vip, Duration::from_secs(3)))
            .collect::<Vec<_>>()
    })
    .unwrap();
    let hairpin_backends = assert_all_answered(&topo, &hairpin, 30);
    eprintln!("hairpin from be1 answered by {hairpin_backends:?}");

    let (_, status, _) = xdp_lb_cli_in(
        topo.lb(),
        &[
            "status",
            "--socket",
            topo.inner.control_socket().to_str().unwrap(),
            "--json",
        ],
    )
    .unwrap();
    assert!(
        status.contains("\"snat_address\""),
        "status shows NAT: {status}"
    );
    let log = agent.log_text();
    for counter in [
        "drop_nat_ports_exhausted",
        "drop_nat_table_full",
        "drop_nat_no_route",
        "drop_nat_forwarding_disabled",
    ] {
        assert!(
            !log.contains(&format!("{counter}=")),
            "{counter} counted: {log}"
        );
    }
    let status = agent.stop().unwrap();
    assert!(status.success());
    let log = agent.log_text();
    assert!(
        !log.contains("drop_nat_"),
        "no NAT drops in the final counters: {log}"
    );
}

/// NAT66: an IPv6 VIP to plain IPv6 backends on another port, through the same kind of
/// topology (client behind a router), beside an IPv4 NAT VIP. The SNAT address is the
/// interface's (`agent.snat_address` unset): the agent picks LB_ADDR6, not the VIP.
#[test]
fn nat66_balances_ipv6_backends_carries_10_mb_each_way_and_hairpins() {
    require_root!();
    let topo = NatTopology::new(3).unwrap();
    topo.add_ipv6().unwrap();
    let _services = services(&topo);
    let port = BACKEND_PORT.to_string();
    let api6 = (0..3).fold(
        fixtures::vip("api6", VIP6, VIP_PORT)
            .nat()
            .check("interval", "500ms"),
        |vip, i| vip.backend_with(backend_addr6(i), &[("port", &port)]),
    );
    let api4 = (0..3).fold(fixtures::vip("api4", VIP, VIP_PORT).nat(), |vip, i| {
        vip.backend_with(backend_addr(i), &[("port", &port)])
    });
    let config = topo
        .inner
        .agent_config(&topo.inner.pin_dir())
        .key("listen", "")
        .key("snat_port_range", "20000-29999")
        .key("nat_closing_timeout", format!("{CLOSING_TIMEOUT_S}s"))
        .vip(api4)
        .vip(api6)
        .to_string();
    let config_path = topo.dir().join("xdp-lb.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut agent = start_agent(&topo, &config_path, "agent.log");
    agent
        .wait_for_log(&format!("snat_address={LB_ADDR6}"), Duration::from_secs(1))
        .expect("the agent picks the interface's IPv6 address as NAT66's source");

    // 300 new IPv6 connections, a third each within ±10 points.
    const N: usize = 300;
    let vip6 = SocketAddr::from((VIP6, VIP_PORT));
    let answers = in_netns(&topo.client.name, move || {
        http_get_many(vip6, N, Duration::from_secs(3))
    })
    .unwrap();
    let per_backend = assert_all_answered(&topo, &answers, N);
    eprintln!("NAT66: {N} connections answered by {per_backend:?}");
    for i in 1..=3 {
        let got = *per_backend.get(&format!("be{i}")).unwrap_or(&0) as f64 / N as f64;
        assert!(
            (got - 1.0 / 3.0).abs() <= 0.10,
            "be{i} answered {:.1}% of {N}, expected 33% ± 10: {per_backend:?}",
            got * 100.0
        );
    }
    // And IPv4 NAT beside it.
    let answers = connections(&topo, VIP_PORT, 30);
    assert_all_answered(&topo, &answers, 30);

    // 10 MB each way arrive byte-identical.
    let ((up_be, up_ok), (down_be, down_ok)) = in_netns(&topo.client.name, move || {
        let transfer = |seed| Transfer {
            bytes: TEN_MB,
            seed,
            timeout: Duration::from_secs(10),
        };
        (
            transfer(7).upload(vip6).unwrap(),
            transfer(11).download(vip6).unwrap(),
        )
    })
    .unwrap();
    assert!(
        up_ok,
        "10 MB upload through NAT66 (to {up_be}) arrived corrupted or short"
    );
    assert!(
        down_ok,
        "10 MB download through NAT66 (from {down_be}) arrived corrupted or short"
    );

    // Hairpin: a backend connecting to the IPv6 VIP is balanced like any client.
    let hairpin = in_netns(&topo.backends()[0].name, move || {
        (0..30)
            .map(|_| http_get(vip6, Duration::from_secs(3)))
            .collect::<Vec<_>>()
    })
    .unwrap();
    let hairpin_backends = assert_all_answered(&topo, &hairpin, 30);
    eprintln!("NAT66 hairpin from be1 answered by {hairpin_backends:?}");

    // The flows, as inspect shows them: SNAT address and port, state, backend port.
    let flow = in_netns(&topo.client.name, move || {
        let mut c = xdp_lb_tests::EchoClient::connect(vip6, Duration::from_secs(3)).unwrap();
        c.round_trip().unwrap();
        c
    })
    .unwrap();
    let (_, flows, _) = xdp_lb_cli_in(
        topo.lb(),
        &[
            "inspect",
            "--pin-dir",
            topo.inner.pin_dir().to_str().unwrap(),
            "flows",
            "--vip",
            "api6",
            "--limit",
            "100000",
        ],
    )
    .unwrap();
    assert!(
        flows.contains(&format!("[{LB_ADDR6}]:")) && flows.contains("established"),
        "inspect flows shows the NAT66 binding: {flows}"
    );
    assert!(flows.contains(&format!(":{BACKEND_PORT}")), "{flows}");
    drop(flow);
    // Status names NAT66's source, and the expiry sweep counts the IPv6 flows by state
    // (the first sweeps may predate them: polled, bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status, _) = xdp_lb_cli_in(
            topo.lb(),
            &[
                "status",
                "--socket",
                topo.inner.control_socket().to_str().unwrap(),
                "--json",
            ],
        )
        .unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let nat = &status["nat"];
        assert_eq!(nat["snat_address_ipv6"], LB_ADDR6.to_string(), "{status}");
        let live = nat["flows"]["closing"].as_u64().unwrap_or(0)
            + nat["flows"]["established"].as_u64().unwrap_or(0);
        if live >= N as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the NAT sweep counts {live} live flows, expected the IPv6 ones too: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every connection has closed: the sweep reclaims the IPv6 bindings too, after
    // nat_closing_timeout (bounded as in the IPv4 test).
    wait_until_reclaimed(&topo, Instant::now());
    let status = agent.stop().unwrap();
    assert!(status.success());
    let log = agent.log_text();
    assert!(
        !log.contains("drop_nat_"),
        "no NAT drops in the final counters: {log}"
    );
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn haproxy_baseline_carries_the_same_traffic_through_the_same_topology() {
    require_root!();
    let topo = NatTopology::new(3).unwrap();
    let _services = services(&topo);
    let cfg = topo.dir().join("haproxy.cfg");
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "  server be{} {}:{BACKEND_PORT} weight {}\n",
                i + 1,
                backend_addr(i),
                WEIGHTS[i]
            )
        })
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind {VIP}:{HAPROXY_PORT}\n  default_backend b\nbackend b\n  balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(topo.dir().join("haproxy.log")).unwrap();
    let _haproxy = Proc(
        Command::new("ip")
            .args(["netns", "exec", &topo.lb().name, "haproxy", "-db", "-f"])
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("haproxy (cargo xtask setup installs it)"),
    );
    // Bounded wait until haproxy listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections(&topo, HAPROXY_PORT, 1)[0].is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = connections(&topo, HAPROXY_PORT, 1000);
    let per_backend = assert_all_answered(&topo, &answers, 1000);
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    let ((_, up_ok), (_, down_ok)) = transfers(&topo, HAPROXY_PORT);
    assert!(up_ok && down_ok, "10 MB each way through haproxy");
}

/// A long-lived connection through the VIP doing a round trip every 20 ms on its own thread in
/// the client namespace, until `finish`.
struct LongLived {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    trips: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
    backend: String,
}

impl LongLived {
    fn open(topo: &NatTopology) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering},
        };
        let stop = Arc::new(AtomicBool::new(false));
        let trips = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = topo.client.path();
        let (stop2, trips2) = (stop.clone(), trips.clone());
        let thread = std::thread::spawn(move || {
            xdp_lb_tests::netns::enter_netns(&path).unwrap();
            let mut c = xdp_lb_tests::EchoClient::connect(
                SocketAddr::from((VIP, VIP_PORT)),
                Duration::from_secs(3),
            )
            .unwrap();
            tx.send(c.backend.clone()).unwrap();
            let mut errors = Vec::new();
            // Bounded: at most 60 s of round trips.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match c.round_trip() {
                    Ok(()) => {
                        trips2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        let backend = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            stop,
            trips,
            thread: Some(thread),
            backend,
        }
    }

    fn wait_for_more_trips(&self, more: u64) {
        let start = self.trips.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.trips.load(std::sync::atomic::Ordering::Relaxed) < start + more {
            assert!(
                Instant::now() < deadline,
                "the long-lived connection stalled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn start_agent(topo: &NatTopology, config_path: &std::path::Path, log: &str) -> Agent {
    Agent::start(
        topo.lb(),
        &["run", "--config", config_path.to_str().unwrap()],
        topo.dir().join(log),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn nat_flows_live_through_health_changes_reload_and_agent_restart() {
    require_root!();
    let topo = NatTopology::new(3).unwrap();
    let mut services: Vec<Option<TcpService>> = services(&topo).into_iter().map(Some).collect();
    let config_path = topo.dir().join("xdp-lb.toml");
    // This one serves /metrics (in the LB namespace) to check the NAT families.
    let text = config(&topo).replace("listen = \"\"", "listen = \"127.0.0.1:9109\"");
    std::fs::write(&config_path, &text).unwrap();
    let mut agent = start_agent(&topo, &config_path, "agent.log");

    let conn = LongLived::open(&topo);
    conn.wait_for_more_trips(5);

    // Health: another backend's service stops; its TCP check on the backend port (8080, not
    // the VIP's 80) fails and new connections avoid it.
    let victim = (0..3)
        .find(|i| format!("be{}", i + 1) != conn.backend)
        .unwrap();
    services[victim] = None;
    // The maps change right after the DOWN line: wait for the reconciler's line of it.
    agent
        .wait_for_log(
            &format!("health: {} down", backend_addr(victim)),
            Duration::from_secs(10),
        )
        .unwrap();
    let answers = connections(&topo, VIP_PORT, 100);
    let per = assert_all_answered(&topo, &answers, 100);
    assert!(
        !per.contains_key(&format!("be{}", victim + 1)),
        "a down backend got new connections: {per:?}"
    );

    // Reload (a NAT timeout changes): applied, the connection unaffected.
    std::fs::write(
        &config_path,
        text.replace(
            &format!("nat_closing_timeout = \"{CLOSING_TIMEOUT_S}s\""),
            "nat_closing_timeout = \"3s\"",
        ),
    )
    .unwrap();
    let (code, out, err) = xdp_lb_cli_in(
        topo.lb(),
        &[
            "reload",
            "--socket",
            topo.inner.control_socket().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "reload: {out}{err}");
    conn.wait_for_more_trips(5);

    // The agent dies: the pinned program keeps translating the connection; a new agent adopts
    // the maps (NAT flows included) and keeps them.
    agent.kill9();
    conn.wait_for_more_trips(10);
    let mut agent = start_agent(&topo, &config_path, "agent-restarted.log");
    assert!(agent.log_text().contains("adopting the maps"));
    conn.wait_for_more_trips(20);
    let (code, flows, err) = xdp_lb_cli_in(
        topo.lb(),
        &[
            "inspect",
            "--pin-dir",
            topo.inner.pin_dir().to_str().unwrap(),
            "flows",
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        flows.contains("established"),
        "inspect flows shows the NAT state: {flows}"
    );
    // /metrics counts the NAT flows by state (after the new agent's first expiry sweep).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = in_netns(&topo.lb().name, || {
            xdp_lb_tests::service::http_fetch(
                SocketAddr::from(([127, 0, 0, 1], 9109)),
                "/metrics",
                Duration::from_secs(2),
            )
        })
        .unwrap()
        .unwrap_or((0, String::new()));
        if status == 200
            && body.lines().any(|l| {
                l.starts_with("xdp_lb_nat_flows{state=\"established\"} ") && !l.ends_with(" 0")
            })
        {
            assert!(body.contains("xdp_lb_nat_flows_reclaimed_total"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no established NAT flow in /metrics: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let errors = conn.finish();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(agent.stop().unwrap().success());
}
