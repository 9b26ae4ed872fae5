//! Health checks, drain, live reload and agent restart — with real processes and real TCP in
//! network namespaces.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xdp_lb::dataplane::Maps;
use xdp_lb_tests::{
    Agent, DsrTopology, EchoClient, TcpService, fixtures, http_get, in_netns, require_root,
    topology::{VIP, backend_addr, xdp_lb_cli},
};

const PORT: u16 = 80;
const READY: &str = "xdp-lb is forwarding";
/// Fast checks so the test runs in seconds; the windows below follow from these.
const INTERVAL_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 3;

/// The bed's VIP without backends: a small table and fast checks of `kind`.
fn checked_vip(kind: &str) -> fixtures::Vip {
    fixtures::vip("web", VIP, PORT)
        .key("maglev_table_size", 4093)
        .check("type", kind)
        .check("interval", format!("{INTERVAL_MS}ms"))
        .check("timeout", format!("{INTERVAL_MS}ms"))
        .check("rise", RISE)
        .check("fall", FALL)
        .check("http_path", "/healthz")
}

struct Bed {
    topo: DsrTopology,
    services: Vec<Option<TcpService>>,
    agent: Agent,
    config: std::path::PathBuf,
}

impl Bed {
    /// `n` backends on the topology, the first `configured` of them in the config.
    fn new(n: usize, configured: usize, kind: &str) -> Self {
        let topo = DsrTopology::new(n).unwrap();
        let services = (0..n)
            .map(|i| Some(TcpService::start(&topo.backends[i].name, PORT, &name(i)).unwrap()))
            .collect();
        let config = topo.dir.join("xdp-lb.toml");
        std::fs::write(&config, config_text(&topo, configured, kind, &[])).unwrap();
        let agent = start_agent(&topo, &config, "agent.log");
        Bed {
            topo,
            services,
            agent,
            config,
        }
    }

    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.topo.client.name, f).unwrap()
    }

    /// `count` new connections; the answers per backend.
    fn spread(&self, count: usize) -> BTreeMap<String, usize> {
        let answers = self.client(move || {
            (0..count)
                .map(|_| http_get(SocketAddr::from((VIP, PORT)), Duration::from_secs(2)))
                .collect::<Vec<_>>()
        });
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for a in answers {
            *per.entry(a.unwrap_or_else(|e| format!("error: {e:#}")))
                .or_default() += 1;
        }
        per
    }

    fn reload(&self, text: &str) -> (i32, String, String) {
        std::fs::write(&self.config, text).unwrap();
        xdp_lb_cli(&["reload", "--config", self.config.to_str().unwrap()]).unwrap()
    }
}

fn name(i: usize) -> String {
    format!("be{}", i + 1)
}

/// The config with the first `configured` backends; `states` sets (index, state) pairs.
fn config_text(
    topo: &DsrTopology,
    configured: usize,
    kind: &str,
    states: &[(usize, &str)],
) -> String {
    config_with(topo, configured, checked_vip(kind), states)
}

/// The config with `vip` and the first `configured` backends.
fn config_with(
    topo: &DsrTopology,
    configured: usize,
    vip: fixtures::Vip,
    states: &[(usize, &str)],
) -> String {
    let vip = (0..configured).fold(vip, |vip, i| {
        let state = states
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, s)| format!("{s:?}"));
        let mut keys = vec![("weight", "1")];
        if let Some(s) = &state {
            keys.push(("state", s));
        }
        vip.backend_with(backend_addr(i), &keys)
    });
    topo.agent_config(&topo.pin_dir()).vip(vip).to_string()
}

fn start_agent(topo: &DsrTopology, config: &std::path::Path, log: &str) -> Agent {
    Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().unwrap()],
        topo.dir.join(log),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn a_killed_backend_is_out_within_fall_times_interval_and_back_after_rise() {
    require_root!();
    let mut bed = Bed::new(3, 3, "tcp");
    let window = Duration::from_millis(FALL * INTERVAL_MS + 1000);

    let killed_at = Instant::now();
    bed.services[1] = None; // be2's service dies: new connections to it are refused.
    // A bounded stream of new connections, one every 20 ms for window + 1.5 s.
    let results = bed.client(move || {
        let mut out = Vec::new();
        while killed_at.elapsed() < window + Duration::from_millis(1500) {
            let at = killed_at.elapsed();
            out.push((
                at,
                http_get(SocketAddr::from((VIP, PORT)), Duration::from_secs(1)),
            ));
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    });
    let failures: Vec<Duration> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(t, _)| *t)
        .collect();
    let last_failure = failures.iter().max().copied().unwrap_or_default();
    println!(
        "{} connections, {} failed, last failure at {last_failure:?} (window {window:?})",
        results.len(),
        failures.len()
    );
    assert!(
        last_failure <= window,
        "connections still failed after the window: {failures:?}"
    );
    for (at, r) in &results {
        if *at > window {
            assert!(r.as_ref().is_ok_and(|b| b != "be2"), "at {at:?}: {r:?}");
        }
    }
    bed.agent
        .wait_for_log("backend DOWN", Duration::from_secs(1))
        .unwrap();
    assert!(
        bed.agent
            .log_text()
            .contains("consecutive failed checks, last: connect refused")
    );

    // The service comes back: after rise × interval + 1 s it takes new connections again.
    bed.services[1] = Some(TcpService::start(&bed.topo.backends[1].name, PORT, "be2").unwrap());
    std::thread::sleep(Duration::from_millis(RISE * INTERVAL_MS + 1000));
    let per = bed.spread(90);
    println!("after recovery: {per:?}");
    assert!(per.get("be2").copied().unwrap_or(0) >= 15, "{per:?}");
    assert_eq!(
        per.values().sum::<usize>(),
        per.iter()
            .filter(|(k, _)| k.starts_with("be"))
            .map(|(_, v)| v)
            .sum::<usize>(),
        "{per:?}"
    );
    bed.agent
        .wait_for_log("backend UP", Duration::from_secs(1))
        .unwrap();
}

#[test]
fn an_http_check_answering_503_marks_the_backend_down_and_200_brings_it_back() {
    require_root!();
    let mut bed = Bed::new(3, 3, "http");
    let be1 = bed.services[0].as_ref().unwrap();
    be1.set_health_status(503);
    bed.agent
        .wait_for_log(
            "backend DOWN",
            Duration::from_millis(FALL * INTERVAL_MS + 1000),
        )
        .unwrap();
    assert!(
        bed.agent.log_text().contains("last: HTTP 503"),
        "{}",
        bed.agent.log_text()
    );
    let per = bed.spread(60);
    assert_eq!(per.get("be1"), None, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), 60);

    // `status` shows it.
    let socket = bed.topo.control_socket();
    let (code, out, err) =
        xdp_lb_cli(&["status", "--json", "--socket", socket.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b = &status["vips"][0]["backends"][0];
    assert_eq!(
        (
            b["address"].as_str(),
            b["health"].as_str(),
            b["last_check"].as_str()
        ),
        (Some("198.18.0.11"), Some("down"), Some("HTTP 503"))
    );

    bed.services[0].as_ref().unwrap().set_health_status(200);
    bed.agent
        .wait_for_log(
            "backend UP",
            Duration::from_millis(RISE * INTERVAL_MS + 1000),
        )
        .unwrap();
    let per = bed.spread(60);
    assert!(per.get("be1").copied().unwrap_or(0) > 5, "{per:?}");
}

/// A long-lived connection, exercised every 20 ms on its own thread until stopped; returns the
/// backend it is on, and at the end the errors and the longest gap between round trips.
struct LongLived {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(Vec<String>, Duration, u64)>>,
    backend: String,
    /// Successful round trips so far.
    trips: Arc<std::sync::atomic::AtomicU64>,
}

impl LongLived {
    fn open(bed: &Bed) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let trips_shared = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let trips2 = trips_shared.clone();
        let ns = format!("/run/netns/{}", bed.topo.client.name);
        let handle = std::thread::spawn(move || {
            xdp_lb_tests::netns::enter_netns(&ns).unwrap();
            let mut echo =
                EchoClient::connect(SocketAddr::from((VIP, PORT)), Duration::from_secs(5)).unwrap();
            tx.send(echo.backend.clone()).unwrap();
            let (mut errors, mut max_gap, mut trips) = (Vec::new(), Duration::ZERO, 0u64);
            let mut last = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match echo.round_trip() {
                    Ok(()) => {
                        trips += 1;
                        trips2.store(trips, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        break;
                    }
                }
                max_gap = max_gap.max(last.elapsed());
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(20));
            }
            (errors, max_gap, trips)
        });
        let backend = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            stop,
            handle: Some(handle),
            backend,
            trips: trips_shared,
        }
    }

    /// Waits (bounded) until `n` more round trips have succeeded from now.
    fn wait_for_more_trips(&self, n: u64, timeout: Duration) {
        let target = self.trips.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + timeout;
        while self.trips.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the connection made no progress for {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> (Vec<String>, Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

#[test]
fn a_long_lived_connection_survives_backend_churn_reload_and_an_agent_kill() {
    require_root!();
    // Four backends on the wire; the config starts with three.
    let mut bed = Bed::new(4, 3, "tcp");
    let conn = LongLived::open(&bed);
    let a: usize = conn.backend[2..].parse::<usize>().unwrap() - 1;
    let b = (a + 1) % 3;
    println!(
        "long-lived connection on {}, churning be{}",
        conn.backend,
        b + 1
    );

    // B goes down and comes back.
    bed.services[b] = None;
    bed.agent
        .wait_for_log("backend DOWN", Duration::from_secs(3))
        .unwrap();
    bed.services[b] = Some(TcpService::start(&bed.topo.backends[b].name, PORT, &name(b)).unwrap());
    bed.agent
        .wait_for_log("backend UP", Duration::from_secs(3))
        .unwrap();

    // A reload adds D: new connections spread ~25% each, the long-lived one stays on A.
    let (code, out, err) = bed.reload(&config_text(&bed.topo, 4, "tcp", &[]));
    assert_eq!(code, 0, "reload: {out}{err}");
    assert!(out.contains("reloaded"), "{out}");
    let per = bed.spread(400);
    println!("after adding be4: {per:?}");
    for i in 0..4 {
        let n = per.get(&name(i)).copied().unwrap_or(0);
        assert!((60..=140).contains(&n), "{}: {n} of 400 ({per:?})", name(i));
    }

    // The agent dies; the pinned program keeps forwarding; a new agent adopts it.
    bed.agent.kill9();
    let per = bed.spread(30);
    assert_eq!(
        per.values().sum::<usize>(),
        30,
        "forwarding must go on without the agent: {per:?}"
    );
    assert!(per.keys().all(|k| k.starts_with("be")), "{per:?}");
    // As if the pins were an older version's, from before VIP_PORTS (the running program keeps
    // its own): the new agent makes it and fills it before its program goes live.
    std::fs::remove_file(bed.topo.pin_dir().join(xdp_lb_common::map_names::VIP_PORTS)).unwrap();
    bed.agent = start_agent(&bed.topo, &bed.config, "agent-restarted.log");
    let log = bed.agent.log_text();
    assert!(
        log.contains("adopting the maps") && log.contains("mode=\"adopted\""),
        "{log}"
    );
    // The connection keeps working under the new agent.
    conn.wait_for_more_trips(10, Duration::from_secs(5));

    let (errors, max_gap, trips) = conn.finish();
    println!(
        "long-lived connection: {trips} round trips, longest gap {max_gap:?}, errors {errors:?}"
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        max_gap < Duration::from_millis(500),
        "the connection stalled for {max_gap:?}"
    );
    assert!(trips > 50);

    // A clean stop removes everything.
    assert!(bed.agent.stop().unwrap().success());
    assert!(
        !bed.topo.pin_dir().join("link").exists() && !bed.topo.pin_dir().join("FLOWS").exists()
    );
}

/// Everything the maps say about the VIPs and backends, for before/after comparisons.
fn snapshot(pin_dir: &std::path::Path) -> String {
    let maps = Maps::open_pinned(pin_dir).unwrap();
    let mut out = String::new();
    let mut vips = maps.vips();
    vips.sort_by_key(|(k, _)| *k);
    for (k, v) in vips {
        let table = maps.maglev_table(&v);
        let hash = table
            .iter()
            .fold(0u64, |h, x| h.wrapping_mul(31).wrapping_add(*x as u64));
        out.push_str(&format!("{k:?} {v:?} table#{hash:x}\n"));
    }
    for (id, b) in maps.backends() {
        out.push_str(&format!("{id} {b:?}\n"));
    }
    out
}

#[test]
fn a_broken_reload_changes_nothing_and_says_why() {
    require_root!();
    let mut bed = Bed::new(3, 3, "tcp");
    let before = snapshot(&bed.topo.pin_dir());
    let good = std::fs::read_to_string(&bed.config).unwrap();
    let broken = good.replacen("maglev_table_size = 4093", "maglev_table_size = 4096", 1);
    let (code, _, err) = bed.reload(&broken);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("reload rejected")
            && err.contains("vip[0].maglev_table_size: 4096 is not a prime"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:", bed.config.display())),
        "the error names the file: {err}"
    );
    assert_eq!(
        snapshot(&bed.topo.pin_dir()),
        before,
        "a rejected reload must not touch the maps"
    );
    // SIGHUP with the broken file: same.
    bed.agent.signal(libc::SIGHUP);
    bed.agent
        .wait_for_log("reload rejected", Duration::from_secs(3))
        .unwrap();
    assert_eq!(snapshot(&bed.topo.pin_dir()), before);
    assert_eq!(bed.spread(30).values().sum::<usize>(), 30);
}

#[test]
fn drain_keeps_the_established_connection_and_sends_new_ones_elsewhere() {
    require_root!();
    let bed = Bed::new(3, 3, "tcp");
    let conn = LongLived::open(&bed);
    let x: usize = conn.backend[2..].parse::<usize>().unwrap() - 1;
    let (code, out, err) = bed.reload(&config_text(&bed.topo, 3, "tcp", &[(x, "drain")]));
    assert_eq!(code, 0, "{out}{err}");
    let per = bed.spread(90);
    println!("{} draining: {per:?}", name(x));
    assert_eq!(per.get(&name(x)), None, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), 90, "{per:?}");
    // The draining backend keeps serving its established connection.
    conn.wait_for_more_trips(5, Duration::from_secs(5));
    let (errors, _, trips) = conn.finish();
    assert!(
        errors.is_empty() && trips > 5,
        "{errors:?} after {trips} round trips"
    );
}

#[test]
fn all_backends_down_drops_new_connections_and_logs_it_once() {
    require_root!();
    let mut bed = Bed::new(2, 2, "tcp");
    let per = bed.spread(20);
    assert_eq!(per.values().sum::<usize>(), 20);
    // All backends down: new connections are dropped (and counted), logged once.
    bed.services[0] = None;
    bed.services[1] = None;
    bed.agent
        .wait_for_log("VIP has no usable backend", Duration::from_secs(3))
        .unwrap();
    let r = bed.client(|| http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(500)));
    assert!(r.is_err());
    let maps = Maps::open_pinned(&bed.topo.pin_dir()).unwrap();
    assert!(maps.counter(xdp_lb_common::Counter::DropNoBackend).unwrap() >= 1);
    assert_eq!(
        bed.agent
            .log_text()
            .matches("VIP has no usable backend")
            .count(),
        1,
        "logged once per transition"
    );
}

#[test]
fn disabled_takes_a_backend_out_and_purges_its_flows() {
    require_root!();
    let mut bed = Bed::new(3, 3, "tcp");
    let conn = LongLived::open(&bed);
    let x: usize = conn.backend[2..].parse::<usize>().unwrap() - 1;
    let (code, out, err) = bed.reload(&config_text(&bed.topo, 3, "tcp", &[(x, "disabled")]));
    assert_eq!(code, 0, "{out}{err}");
    bed.agent
        .wait_for_log("flows_purged=1", Duration::from_secs(2))
        .unwrap();
    let per = bed.spread(60);
    assert_eq!(per.get(&name(x)), None, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), 60, "{per:?}");
    // Its flow now goes to another backend, which knows no such connection.
    let (errors, _, _) = conn.finish();
    assert!(
        !errors.is_empty(),
        "the disabled backend's connection should have been moved off it"
    );
    let _ = backend_addr(0);
}

#[test]
fn keep_dataplane_leaves_forwarding_running_for_the_next_agent() {
    require_root!();
    let mut bed = Bed::new(2, 2, "tcp");
    bed.agent.stop().unwrap();
    // Started again with --keep-dataplane, then stopped cleanly: pins and forwarding remain.
    let mut agent = Agent::start(
        &bed.topo.lb,
        &[
            "run",
            "--keep-dataplane",
            "--config",
            bed.config.to_str().unwrap(),
        ],
        bed.topo.dir.join("agent-keep.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(
        !agent.log_text().contains("adopting"),
        "a clean stop must have left nothing to adopt"
    );
    assert!(agent.stop().unwrap().success());
    assert!(agent.log_text().contains("stopping with --keep-dataplane"));
    assert!(bed.topo.pin_dir().join("link").exists() && bed.topo.pin_dir().join("FLOWS").exists());
    assert_eq!(
        bed.spread(20).values().sum::<usize>(),
        20,
        "forwarding continues with no agent"
    );
    // The next agent adopts them; its clean stop removes everything.
    bed.agent = start_agent(&bed.topo, &bed.config, "agent-after-keep.log");
    assert!(bed.agent.log_text().contains("mode=\"adopted\""));
    assert_eq!(bed.spread(20).values().sum::<usize>(), 20);
    assert!(bed.agent.stop().unwrap().success());
    assert!(
        !bed.topo.pin_dir().exists(),
        "a clean stop removes the pins"
    );
}

/// haproxy's `slowstart`: a backend that comes back takes its share of new connections step by
/// step over the period, while established connections keep their backends.
#[test]
fn slow_start_ramps_a_recovering_backends_share_of_new_connections() {
    require_root!();
    let mut bed = Bed::new(3, 3, "tcp");
    let text = config_with(&bed.topo, 3, checked_vip("tcp").key("slowstart", "6s"), &[]);
    let (code, _, err) = bed.reload(&text);
    assert_eq!(code, 0, "{err}");
    bed.services[1] = None;
    bed.agent
        .wait_for_log("backend DOWN", Duration::from_secs(3))
        .unwrap();
    // Long-lived connections to the two that stay: the ramp must not move them.
    let mut clients = bed
        .client(|| {
            (0..6)
                .map(|_| EchoClient::connect(SocketAddr::from((VIP, PORT)), Duration::from_secs(2)))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .unwrap();
    assert!(clients.iter().all(|c| c.backend != "be2"));

    bed.services[1] = Some(TcpService::start(&bed.topo.backends[1].name, PORT, "be2").unwrap());
    bed.agent
        .wait_for_log(
            "slow start: the backend takes its share",
            Duration::from_secs(3),
        )
        .unwrap();
    let up_at = Instant::now();
    // be2's share of `n` new connections, at a point of the 6 s ramp.
    let share_at = |bed: &Bed, after: Duration, n: usize| {
        if let Some(wait) = after.checked_sub(up_at.elapsed()) {
            std::thread::sleep(wait);
        }
        let per = bed.spread(n);
        *per.get("be2").unwrap_or(&0) as f64 / n as f64
    };
    let early = share_at(&bed, Duration::from_millis(300), 200);
    let middle = share_at(&bed, Duration::from_millis(3300), 200);
    // After the ramp, 600: a third's standard deviation is then 0.019, the bound below 4σ away
    // (with 200 it was 2.4σ: a full run failed on 50 of 200).
    let done = share_at(&bed, Duration::from_secs(8), 600);
    println!("be2's share of new connections: {early:.2} → {middle:.2} → {done:.2}");
    assert!(early < 0.12, "at the start of the ramp: {early}");
    assert!(
        middle > early + 0.06 && middle < 0.30,
        "halfway: {early} → {middle}"
    );
    assert!(done > 0.25, "after the ramp: a full third, got {done}");
    for c in &mut clients {
        c.round_trip().unwrap();
    }
    assert!(bed.agent.stop().unwrap().success());
}
