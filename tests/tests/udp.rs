//! UDP end to end in network namespaces, with real DNS servers (dnsmasq) and a real resolver
//! client (dig): DNS over a UDP DSR VIP beside a TCP VIP on the same address and port, the
//! dns health check taking a dead resolver out; DNS and a 10 MB datagram stream each way
//! through a UDP NAT VIP, and the idle NAT UDP flow's expiry.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, DsrTopology, NatTopology, fixtures, in_netns, require_root,
    topology::{LB_ADDR, VIP, backend_addr, inspect_stats, xdp_lb_cli_in},
    udp::{UdpEcho, dig, dig_batch, dnsmasq, udp_stream},
};

const READY: &str = "xdp-lb is forwarding";
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 3;

/// The address backend `i`'s dnsmasq answers `whoami.test` with: it names the backend.
fn answer(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1 + i as u8))
}

/// Which backend answered, from dig's +short line (None: no answer).
fn backend_of(line: &str) -> Option<usize> {
    (0..3).find(|&i| line.trim() == answer(i).to_string())
}

/// Per-backend counts of `lines`; panics at the first query not answered.
fn tally(lines: &[String], n: usize) -> BTreeMap<usize, usize> {
    assert_eq!(lines.len(), n, "one line per query: {lines:?}");
    let mut per = BTreeMap::new();
    for (q, line) in lines.iter().enumerate() {
        let b = backend_of(line).unwrap_or_else(|| panic!("query {q} of {n}: {line:?}"));
        *per.entry(b).or_insert(0) += 1;
    }
    per
}

fn dns_check(vip: fixtures::Vip) -> fixtures::Vip {
    vip.check("type", "dns")
        .check("dns_name", "whoami.test")
        .check("interval", format!("{INTERVAL_MS}ms"))
        .check("timeout", format!("{INTERVAL_MS}ms"))
        .check("rise", 2)
        .check("fall", FALL)
}

fn start_agent(lb: &xdp_lb_tests::NetNs, dir: &std::path::Path, config: String) -> Agent {
    let path = dir.join("xdp-lb.toml");
    std::fs::write(&path, config).unwrap();
    Agent::start(
        lb,
        &["run", "--config", path.to_str().unwrap()],
        dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn dns_over_a_udp_dsr_vip_is_balanced_and_a_dead_resolver_is_checked_out() {
    require_root!();
    let topo = DsrTopology::new(3).unwrap();
    let mut resolvers: Vec<_> = (0..3)
        .map(|i| {
            let listen = [IpAddr::V4(VIP), IpAddr::V4(backend_addr(i))];
            Some(
                dnsmasq(
                    &topo.backends[i],
                    &topo.dir,
                    &format!("be{}", i + 1),
                    &listen,
                    53,
                    answer(i),
                )
                .unwrap(),
            )
        })
        .collect();
    // DNS on VIP:53 twice: UDP to all three resolvers, TCP to be3's alone.
    let udp = (0..3).fold(
        dns_check(fixtures::vip("dns", VIP, 53).key("protocol", "udp")),
        |v, i| v.backend(backend_addr(i)),
    );
    let tcp = fixtures::vip("dns-tcp", VIP, 53)
        .check("interval", format!("{INTERVAL_MS}ms"))
        .backend(backend_addr(2));
    let config = topo
        .agent_config(&topo.pin_dir())
        .vip(udp)
        .vip(tcp)
        .to_string();
    let mut agent = start_agent(&topo.lb, &topo.dir, config);
    let server = SocketAddr::from((VIP, 53));

    // 600 queries, each from a fresh source port: every one answered, shares 33% ± 10%.
    const N: usize = 600;
    let lines = dig_batch(&topo.client, &topo.dir, server, N, false).unwrap();
    let per = tally(&lines, N);
    eprintln!("{N} queries over UDP: {per:?}");
    for i in 0..3 {
        let got = per.get(&i).copied().unwrap_or(0) as f64 / N as f64;
        assert!(
            (0.233..=0.433).contains(&got),
            "be{} answered {:.1}% of {N}: {per:?}",
            i + 1,
            got * 100.0
        );
    }
    // Each query was a flow of its own (its 5-tuple; a few source ports may repeat).
    let stats = inspect_stats(&topo.lb, &topo.pin_dir()).unwrap();
    let flows = stats["stats"]["flow_table_entries"].as_u64().unwrap();
    assert!(flows >= 550, "{flows} flows for {N} queries: {stats}");
    assert_eq!(stats["stats"]["counters"]["drop_bad_udp_header"], 0);

    // The same address and port over TCP: the TCP VIP's one backend answers every query.
    let tcp_lines = dig_batch(&topo.client, &topo.dir, server, 30, true).unwrap();
    assert_eq!(tally(&tcp_lines, 30), BTreeMap::from([(2, 30)]));

    // be2's resolver dies: the dns check takes it out within fall × interval + 1 s, and
    // queries keep being answered (by the others) after that.
    let window = Duration::from_millis(FALL * INTERVAL_MS + 1000);
    let killed_at = Instant::now();
    resolvers[1] = None;
    let mut results = Vec::new();
    while killed_at.elapsed() < window + Duration::from_millis(1500) {
        let at = killed_at.elapsed();
        let out = dig(
            &topo.client,
            server,
            &["+short", "+tries=1", "+time=1", "whoami.test"],
        )
        .unwrap();
        results.push((at, backend_of(&out)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed: Vec<Duration> = results
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(t, _)| *t)
        .collect();
    eprintln!(
        "{} queries after the kill, {} unanswered, the last at {:?} (window {window:?})",
        results.len(),
        failed.len(),
        failed.iter().max()
    );
    for (at, b) in &results {
        if *at > window {
            assert!(
                matches!(b, Some(0 | 2)),
                "at {at:?} after the kill: {b:?} ({results:?})"
            );
        }
    }
    assert!(
        results.iter().filter(|(at, _)| *at > window).count() >= 10,
        "{results:?}"
    );
    agent
        .wait_for_log("backend DOWN", Duration::from_secs(1))
        .unwrap();
    let log = agent.log_text();
    assert!(log.contains("port unreachable"), "{log}");
}

#[test]
fn udp_through_nat_dns_to_port_5353_a_10_mb_stream_each_way_and_idle_expiry() {
    require_root!();
    let topo = NatTopology::new(3).unwrap();
    let _resolvers: Vec<_> = (0..3)
        .map(|i| {
            let listen = [IpAddr::V4(backend_addr(i))];
            dnsmasq(
                &topo.backends()[i],
                topo.dir(),
                &format!("be{}", i + 1),
                &listen,
                5353,
                answer(i),
            )
            .unwrap()
        })
        .collect();
    let _echoes: Vec<_> = topo
        .backends()
        .iter()
        .map(|be| UdpEcho::start(&be.name, 7007).unwrap())
        .collect();
    let dns = (0..3).fold(
        dns_check(fixtures::vip("dns", VIP, 53).key("protocol", "udp").nat()),
        |v, i| v.backend_with(backend_addr(i), &[("port", "5353")]),
    );
    let echo = (0..3).fold(
        fixtures::vip("echo", VIP, 7)
            .key("protocol", "udp")
            .nat()
            .check("type", "none"),
        |v, i| v.backend_with(backend_addr(i), &[("port", "7007")]),
    );
    const UDP_TIMEOUT_S: u64 = 2;
    let config = topo
        .inner
        .agent_config(&topo.inner.pin_dir())
        .key("listen", "")
        .key("snat_port_range", "20000-29999")
        .key("nat_udp_timeout", format!("{UDP_TIMEOUT_S}s"))
        .vip(dns)
        .vip(echo)
        .to_string();
    let _agent = start_agent(topo.lb(), topo.dir(), config);

    // DNS through NAT, to the resolvers' port 5353.
    const N: usize = 600;
    let lines = dig_batch(
        &topo.client,
        topo.dir(),
        SocketAddr::from((VIP, 53)),
        N,
        false,
    )
    .unwrap();
    let per = tally(&lines, N);
    eprintln!("{N} queries through NAT: {per:?}");
    for i in 0..3 {
        let got = per.get(&i).copied().unwrap_or(0) as f64 / N as f64;
        assert!((0.233..=0.433).contains(&got), "be{}: {per:?}", i + 1);
    }

    // 10 MB each way as 1400-byte datagrams on one flow, 64 in flight: every datagram back,
    // byte for byte.
    const TEN_MB: u64 = 10 * 1024 * 1024;
    let report = in_netns(&topo.client.name, || {
        udp_stream(
            SocketAddr::from((VIP, 7)),
            TEN_MB,
            1400,
            64,
            Duration::from_secs(2),
        )
    })
    .unwrap()
    .unwrap();
    let ended = Instant::now();
    let rate = report.bytes as f64 * 8.0 / report.took.as_secs_f64() / 1e6;
    eprintln!("10 MB each way through UDP NAT: {report:?}, {rate:.0} Mbit/s each way");
    assert_eq!(report.sent, report.received, "{report:?}");
    assert_eq!(report.mismatched, 0, "{report:?}");
    assert_eq!(report.digest_sent, report.digest_received, "{report:?}");

    // inspect shows the stream's flow: UDP, through the SNAT address, to port 7007.
    let pins = topo.inner.pin_dir();
    let (_, flows, _) = xdp_lb_cli_in(
        topo.lb(),
        &[
            "inspect",
            "--pin-dir",
            pins.to_str().unwrap(),
            "flows",
            "--vip",
            "echo",
        ],
    )
    .unwrap();
    assert!(
        flows.contains("udp") && flows.contains(&format!("{LB_ADDR}:")) && flows.contains(":7007"),
        "{flows}"
    );

    // Idle: the flow lives nat_udp_timeout after its last datagram, never less, and is
    // reclaimed within the sweep's granularity after (1 s sweep, 2 s of whole-second clocks).
    let deadline = Duration::from_secs(UDP_TIMEOUT_S + 3) + Duration::from_millis(500);
    let gone_after = loop {
        let stats = inspect_stats(topo.lb(), &pins).unwrap();
        let held = stats["stats"]["nat_flows"].as_u64().unwrap();
        if held == 0 {
            break ended.elapsed();
        }
        assert!(
            ended.elapsed() < deadline,
            "{held} NAT UDP flows held {:?} after the last datagram",
            ended.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("the idle UDP flow was reclaimed {gone_after:?} after its last datagram");
    assert!(
        gone_after >= Duration::from_secs(UDP_TIMEOUT_S),
        "reclaimed after {gone_after:?}, before nat_udp_timeout"
    );
    // The DNS queries (one datagram each: half-open) are long gone too.
    let stats = inspect_stats(topo.lb(), &pins).unwrap();
    assert_eq!(stats["stats"]["nat_half_open"], 0, "{stats}");
}
