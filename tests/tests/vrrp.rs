//! VRRP: two LB nodes on one bridge, the VIP failing over between them — xdp-lb with xdp-lb,
//! and xdp-lb with a real keepalived started by the test.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, DsrTopology, NetNs, TcpService, fixtures, http_get, in_netns, require_root,
    topology::{PassProgram, VIP},
};

const PORT: u16 = 80;
const READY: &str = "xdp-lb is forwarding";
const LB2_ADDR: &str = "198.18.0.3";

struct Bed {
    topo: DsrTopology,
    lb2: NetNs,
    _pass2: PassProgram,
    _services: Vec<TcpService>,
}

fn bed() -> Bed {
    let topo = DsrTopology::new(3).unwrap();
    let (lb2, pass2) = topo.vrrp_pair(LB2_ADDR.parse().unwrap()).unwrap();
    let services = (0..3)
        .map(|i| TcpService::start(&topo.backends[i].name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    Bed {
        topo,
        lb2,
        _pass2: pass2,
        _services: services,
    }
}

fn lb_ns(bed: &Bed, node: usize) -> &NetNs {
    if node == 1 { &bed.topo.lb } else { &bed.lb2 }
}

/// The config of node 1 or 2: the same VIP and backends, its own pins, socket and stats port
/// (each node is its own namespace, so the loopback port does not clash), and `vrrp`.
fn config(bed: &Bed, node: usize, vrrp: fixtures::Vrrp) -> PathBuf {
    config_with(bed, node, vec![vrrp])
}

/// [`config`] with several `[[vrrp]]` instances.
fn config_with(bed: &Bed, node: usize, instances: Vec<fixtures::Vrrp>) -> PathBuf {
    let (pins, socket) = if node == 1 {
        (bed.topo.pin_dir(), bed.topo.control_socket())
    } else {
        (
            PathBuf::from(format!("/sys/fs/bpf/{}", bed.lb2.name)),
            PathBuf::from(format!("/run/xlbt/{}.sock", bed.lb2.name)),
        )
    };
    let text = instances
        .into_iter()
        .fold(
            bed.topo
                .agent_config(&pins)
                .key("control_socket", socket)
                .vip(
                    bed.topo
                        .vip(PORT)
                        .key("maglev_table_size", 4093)
                        .check("interval", "500ms"),
                ),
            xdp_lb_tests::fixtures::Config::vrrp,
        )
        .to_string();
    let path = bed.topo.dir.join(format!("lb{node}-{}.toml", unique()));
    std::fs::write(&path, text).unwrap();
    path
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn vrrp(priority: u8, interval: &str) -> fixtures::Vrrp {
    fixtures::vrrp("vi-test", "eth0", 51, priority)
        .key("version", 3u8)
        .key("advert_interval", interval)
        .addresses(&[&format!("{VIP}/24")])
        .key("garp_repeat_delay", "1s")
}

fn start(bed: &Bed, node: usize, config: &std::path::Path, extra_args: &[&str]) -> Agent {
    let mut args = vec!["run", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    Agent::start(
        lb_ns(bed, node),
        &args,
        bed.topo.dir.join(format!("lb{node}-{}.log", unique())),
        READY,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn holds_vip(ns: &NetNs) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .unwrap()
        .contains(&format!("{VIP}/24"))
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if cond() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {timeout:?}");
}

fn reaches_vip(bed: &Bed) -> bool {
    in_netns(&bed.topo.client.name, || {
        http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(500)).is_ok()
    })
    .unwrap()
}

/// Master_Down_Interval for a 1 s advert interval and `priority` (RFC 5798 §6.1).
fn mdi(priority: u32) -> Duration {
    Duration::from_secs(3) + Duration::from_secs(1) * (256 - priority) / 256
}

#[test]
fn two_nodes_elect_the_higher_priority_and_fail_over_on_sigkill_sigterm_and_preempt() {
    require_root!();
    let b = bed();
    let c1 = config(&b, 1, vrrp(150, "1s"));
    let c2 = config(&b, 2, vrrp(100, "1s"));
    let started = Instant::now();
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    println!(
        "lb1 master after {:?} (Master_Down_Interval {:?})",
        started.elapsed(),
        mdi(150)
    );
    assert!(started.elapsed() <= mdi(150) + Duration::from_millis(1500));
    wait_for("the VIP on lb1", Duration::from_secs(1), || {
        holds_vip(&b.topo.lb)
    });
    assert!(
        holds_vip(&b.topo.lb) && !holds_vip(&b.lb2),
        "the VIP is on the master only"
    );
    assert!(
        !lb2.log_text().contains("to=\"MASTER\""),
        "{}",
        lb2.log_text()
    );
    assert!(reaches_vip(&b), "clients reach the VIP through the master");

    // SIGKILL the master: the backup takes over within Master_Down_Interval + 0.5 s.
    let killed = Instant::now();
    lb1.kill9();
    // The killed agent's kernel still holds the VIP and its pinned program still forwards;
    // take the node off the segment as a dead node would be, so the outage is real.
    b.topo.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    let probe_client = b.topo.client.name.clone();
    let probe = std::thread::spawn(move || {
        in_netns(&probe_client, move || {
            // Bounded: at most 10 s of probes, 100 ms apart.
            let mut first_ok_after_failure = None;
            let mut failed = false;
            while killed.elapsed() < Duration::from_secs(10) {
                let ok =
                    http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(200)).is_ok();
                if !ok {
                    failed = true;
                } else if failed {
                    first_ok_after_failure = Some(killed.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (failed, first_ok_after_failure)
        })
        .unwrap()
    });
    lb2.wait_for_log("to=\"MASTER\"", mdi(100) + Duration::from_secs(2))
        .unwrap();
    let takeover = killed.elapsed();
    let (failed, restored) = probe.join().unwrap();
    println!(
        "SIGKILL: lb2 master after {takeover:?}; client outage {:?}",
        if failed {
            restored
        } else {
            Some(Duration::ZERO)
        }
    );
    assert!(
        takeover <= mdi(100) + Duration::from_millis(500),
        "{takeover:?}"
    );
    assert!(
        restored.is_some() || !failed,
        "clients never got through lb2"
    );
    assert!(holds_vip(&b.lb2));

    // lb1 comes back (preempt = true): it takes the VIP back; lb2 releases it.
    b.topo.lb.ip(&["link", "set", "eth0", "up"]).unwrap();
    let mut lb1 = start(&b, 1, &c1, &[]);
    lb2.wait_for_log(
        "from=\"MASTER\" to=\"BACKUP\"",
        mdi(150) + Duration::from_secs(3),
    )
    .unwrap();
    wait_for("the VIP back on lb1 only", Duration::from_secs(2), || {
        holds_vip(&b.topo.lb) && !holds_vip(&b.lb2)
    });
    assert!(reaches_vip(&b));

    // SIGTERM the master: priority 0 makes the backup master within Skew_Time + 0.5 s.
    let stopped = Instant::now();
    assert!(lb1.stop().unwrap().success());
    let skew = Duration::from_secs(1) * (256 - 100) / 256;
    wait_for(
        "lb2 master after SIGTERM of lb1",
        skew + Duration::from_millis(1500),
        || lb2.log_text().matches("to=\"MASTER\"").count() >= 2,
    );
    let takeover = stopped.elapsed();
    println!("SIGTERM: lb2 master after {takeover:?} (Skew_Time {skew:?})");
    assert!(
        takeover <= skew + Duration::from_millis(500) + Duration::from_millis(300),
        "{takeover:?} (includes the agent's own stop)"
    );
    assert!(!holds_vip(&b.topo.lb), "a stopped master releases the VIP");
    wait_for("clients through lb2", Duration::from_secs(3), || {
        reaches_vip(&b)
    });
    assert!(lb2.stop().unwrap().success());
}

#[test]
fn preempt_false_leaves_a_live_lower_priority_master_in_place() {
    require_root!();
    let b = bed();
    let c2 = config(&b, 2, vrrp(100, "1s"));
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb2.wait_for_log("to=\"MASTER\"", mdi(100) + Duration::from_secs(2))
        .unwrap();
    let c1 = config(&b, 1, vrrp(150, "1s").key("preempt", false));
    let lb1 = start(&b, 1, &c1, &[]);
    std::thread::sleep(mdi(150) + Duration::from_secs(1));
    assert!(
        !lb1.log_text().contains("to=\"MASTER\""),
        "{}",
        lb1.log_text()
    );
    assert!(holds_vip(&b.lb2) && !holds_vip(&b.topo.lb));
    assert!(lb2.stop().unwrap().success());
}

#[test]
fn a_100ms_advert_interval_fails_over_within_half_a_second() {
    require_root!();
    let b = bed();
    let c1 = config(&b, 1, vrrp(150, "100ms"));
    let c2 = config(&b, 2, vrrp(100, "100ms"));
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    // lb2 has heard lb1 (and learnt its 100 ms interval) before lb1 dies.
    wait_for_adverts(&b, 3);
    let killed = Instant::now();
    lb1.kill9();
    b.topo.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(2))
        .unwrap();
    let takeover = killed.elapsed();
    println!("100 ms adverts, SIGKILL: lb2 master after {takeover:?}");
    assert!(takeover < Duration::from_millis(500), "{takeover:?}");
    assert!(lb2.stop().unwrap().success());
}

/// keepalived in `ns`, in the foreground, logging to a file; killed when dropped.
struct Keepalived {
    child: Child,
    log: PathBuf,
}

impl Keepalived {
    fn start(bed: &Bed, ns: &NetNs, priority: u8, extra_globals: &str) -> Self {
        Self::start_instance(bed, ns, priority, extra_globals, 51, &format!("{VIP}/24"))
    }

    /// keepalived with one instance of `vrid` holding `address` (IPv4 or IPv6: keepalived runs
    /// the instance over the address's family).
    fn start_instance(
        bed: &Bed,
        ns: &NetNs,
        priority: u8,
        extra_globals: &str,
        vrid: u8,
        address: &str,
    ) -> Self {
        let id = unique();
        let conf = bed.topo.dir.join(format!("keepalived-{id}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  vrrp_version 3\n  script_user root\n  enable_script_security\n{extra_globals}\n}}\n\
                 vrrp_instance vi-test {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n  priority {priority}\n\
                 advert_int 1\n  virtual_ipaddress {{\n    {address} dev eth0\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let log = bed.topo.dir.join(format!("keepalived-{id}.log"));
        let pid = bed.topo.dir.join(format!("keepalived-{id}.pid"));
        let vrrp_pid = bed.topo.dir.join(format!("keepalived-vrrp-{id}.pid"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
            ])
            .arg(format!("--use-file={}", conf.display()))
            .arg(format!("--pid={}", pid.display()))
            .arg(format!("--vrrp_pid={}", vrrp_pid.display()))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("keepalived (Debian's keepalived package; `cargo xtask setup` installs it)");
        Self { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keepalived_interop_v3_with_its_default_pseudo_header_checksum() {
    require_root!();
    let b = bed();
    // xdp-lb master (150), keepalived backup (100).
    let keepalived = Keepalived::start(&b, &b.lb2, 100, "");
    let c1 = config(&b, 1, vrrp(150, "1s").key("checksum", "pseudo-header"));
    let mut lb1 = start(&b, 1, &c1, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(holds_vip(&b.topo.lb), "{}", lb1.log_text());
    assert!(
        !holds_vip(&b.lb2),
        "keepalived must stay backup while xdp-lb advertises:\n{}",
        keepalived.log_text()
    );
    let (code, out, err) = xdp_lb_tests::topology::xdp_lb_cli(&[
        "status",
        "--json",
        "--socket",
        b.topo.control_socket().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vrrp = &status["vrrp"][0];
    assert_eq!(vrrp["state"], "MASTER", "{vrrp}");
    assert_eq!(
        vrrp["rejected"]["checksum"], 0,
        "keepalived's adverts must pass our checksum check: {vrrp}"
    );

    // xdp-lb stops: keepalived takes the VIP.
    assert!(lb1.stop().unwrap().success());
    wait_for("keepalived master", Duration::from_secs(3), || {
        holds_vip(&b.lb2)
    });
    // keepalived's node has no balancer here; its kernel answers for the VIP (ICMP).
    let vip = VIP.to_string();
    assert!(
        b.topo
            .client
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", &vip])
            .is_ok(),
        "the VIP answers from keepalived's node"
    );

    // xdp-lb comes back with the higher priority: it preempts, keepalived releases.
    let mut lb1 = start(&b, 1, &c1, &[]);
    wait_for(
        "xdp-lb preempts keepalived",
        mdi(150) + Duration::from_secs(3),
        || holds_vip(&b.topo.lb) && !holds_vip(&b.lb2),
    );
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(1))
        .unwrap();
    assert!(
        keepalived
            .log_text()
            .contains("Master received advert from 198.18.0.2 with higher priority 150"),
        "{}",
        keepalived.log_text()
    );
    drop(keepalived);
}

/// Sends a raw IPv4 packet (we write the IP header: TTL and source are ours to choose) from
/// `ns` to 224.0.0.18 on its eth0.
fn send_raw(ns: &NetNs, src: &str, ttl: u8, vrrp: Vec<u8>) {
    let src: std::net::Ipv4Addr = src.parse().unwrap();
    in_netns(&ns.name, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .unwrap();
        s.set_header_included_v4(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 112, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&[224, 0, 0, 18]);
        let total = (ip.len() + vrrp.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&vrrp);
        s.send_to(
            &ip,
            &SockAddr::from(std::net::SocketAddrV4::new([224, 0, 0, 18].into(), 0)),
        )
        .unwrap();
    })
    .unwrap();
}

fn status(socket: &std::path::Path) -> serde_json::Value {
    let (code, out, err) = xdp_lb_tests::topology::xdp_lb_cli(&[
        "status",
        "--json",
        "--socket",
        socket.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn malformed_and_spoofed_adverts_change_nothing_and_are_counted() {
    use xdp_lb::{
        config::{ChecksumMode, Version},
        vrrp::packet::{Advert, VRRP_GROUP},
    };
    require_root!();
    let b = bed();
    let c1 = config(&b, 1, vrrp(150, "1s"));
    let mut lb1 = start(&b, 1, &c1, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    let attacker = &b.topo.client; // a third namespace on the segment
    let from = "198.18.0.1";
    let src: std::net::Ipv4Addr = from.parse().unwrap();
    let advert = |priority: u8, vrid: u8| Advert {
        version: Version::V3,
        vrid,
        priority,
        interval_cs: 100,
        addresses: vec![std::net::IpAddr::V4(VIP)],
    };
    let (src_ip, group) = (std::net::IpAddr::V4(src), std::net::IpAddr::V4(VRRP_GROUP));
    let good = |priority: u8| advert(priority, 51).encode(ChecksumMode::Rfc9568, src_ip, group);
    let mut bad_checksum = good(255);
    bad_checksum[6] ^= 0xff;
    let mut version4 = good(255);
    version4[0] = 0x41;
    let cases: Vec<(&str, u8, Vec<u8>, &str)> = vec![
        ("TTL 64", 64, good(255), "ttl"),
        ("bad checksum", 255, bad_checksum, "checksum"),
        ("version 4", 255, version4, "version"),
        ("short", 255, good(255)[..6].to_vec(), "short"),
        (
            "foreign VRID",
            255,
            advert(255, 52).encode(ChecksumMode::Rfc9568, src_ip, group),
            "vrid",
        ),
        (
            "higher priority, pseudo-header checksum we do not use",
            255,
            advert(255, 51).encode(ChecksumMode::PseudoHeader, src_ip, group),
            "checksum",
        ),
    ];
    let socket = b.topo.control_socket();
    for (what, ttl, bytes, reason) in cases {
        let before = status(&socket)["vrrp"][0]["rejected"][reason]
            .as_u64()
            .unwrap();
        send_raw(attacker, from, ttl, bytes);
        wait_for(what, Duration::from_secs(2), || {
            status(&socket)["vrrp"][0]["rejected"][reason]
                .as_u64()
                .unwrap()
                == before + 1
        });
    }
    // Spoofing our own address: the kernel already drops a packet whose source is a local
    // address (a martian) before any socket sees it; the agent's own-address check is the
    // second line for adverts that loop back. Either way nothing may change.
    send_raw(
        attacker,
        "198.18.0.2",
        255,
        advert(255, 51).encode(ChecksumMode::Rfc9568, "198.18.0.2".parse().unwrap(), group),
    );
    std::thread::sleep(Duration::from_millis(300));
    let s = status(&socket);
    assert_eq!(
        s["vrrp"][0]["state"], "MASTER",
        "nothing above may move the master: {s}"
    );
    assert_eq!(
        s["vrrp"][0]["transitions"].as_u64(),
        Some(2),
        "INIT→BACKUP→MASTER only: {s}"
    );
    assert!(holds_vip(&b.topo.lb));
    // The same counters on /metrics, which promtool accepts.
    let metrics = in_netns(&b.topo.lb.name, || {
        xdp_lb_tests::service::http_fetch(
            SocketAddr::from(([127, 0, 0, 1], 9100)),
            "/metrics",
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .unwrap()
    .1;
    assert!(
        metrics.contains("xdp_lb_vrrp_state{vrrp_instance=\"vi-test\",state=\"MASTER\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("xdp_lb_vrrp_rejected_total{vrrp_instance=\"vi-test\",reason=\"ttl\"} 1"),
        "{metrics}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A valid higher-priority advert does move it (the counters above were not luck).
    send_raw(attacker, from, 255, good(255));
    lb1.wait_for_log("from=\"MASTER\" to=\"BACKUP\"", Duration::from_secs(2))
        .unwrap();
    assert!(!holds_vip(&b.topo.lb));
}

#[test]
fn track_dataplane_hands_the_vip_over_when_all_backends_die() {
    require_root!();
    let mut b = bed();
    let c1 = config(&b, 1, vrrp(150, "1s").key("track_dataplane", true));
    let c2 = config(&b, 2, vrrp(100, "1s").key("track_dataplane", false));
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    wait_for_adverts(&b, 1);
    // Every backend's service dies: lb1's VIP has no usable backend → Fault → lb2 master.
    b._services.clear();
    lb1.wait_for_log("to=\"FAULT\"", Duration::from_secs(5))
        .unwrap();
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(2))
        .unwrap();
    assert!(lb1.log_text().contains("has no usable backend"));
    wait_for("the VIP on lb2 only", Duration::from_secs(2), || {
        holds_vip(&b.lb2) && !holds_vip(&b.topo.lb)
    });
}

#[test]
fn unicast_mode_works_with_multicast_dropped_and_notify_runs_on_transitions() {
    require_root!();
    let b = bed();
    // Drop VRRP multicast on the bridge (the cloud case).
    let rules = b.topo.dir.join("drop-vrrp-multicast.nft");
    std::fs::write(&rules, "table bridge xlbt {\n  chain drop_vrrp {\n    type filter hook forward priority 0;\n    ip daddr 224.0.0.18 counter drop\n  }\n}\n").unwrap();
    b.topo
        .sw
        .exec(&["nft", "-f", rules.to_str().unwrap()])
        .unwrap();
    let notify_log = b.topo.dir.join("notify.log");
    let script = b.topo.dir.join("notify.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $2 $3\" >> {}\n", notify_log.display()),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let c1 = config(
        &b,
        1,
        vrrp(150, "1s")
            .unicast_peers(&[LB2_ADDR])
            .key("notify", script.clone()),
    );
    let c2 = config(&b, 2, vrrp(100, "1s").unicast_peers(&["198.18.0.2"]));
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !lb2.log_text().contains("to=\"MASTER\""),
        "lb2 must hear lb1's unicast adverts: {}",
        lb2.log_text()
    );
    assert!(holds_vip(&b.topo.lb) && !holds_vip(&b.lb2));
    assert!(lb1.stop().unwrap().success());
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(2))
        .unwrap();
    let notes = std::fs::read_to_string(&notify_log).unwrap_or_default();
    assert!(
        notes.contains("BACKUP 51 vi-test")
            && notes.contains("MASTER 51 vi-test")
            && notes.contains("INIT 51 vi-test"),
        "{notes}"
    );
    // lb2 heard lb1 over unicast while the bridge dropped VRRP multicast: prove the drop rule
    // bites on this path by sending one multicast advert across it.
    let lb2_status = status(std::path::Path::new(&format!(
        "/run/xlbt/{}.sock",
        b.lb2.name
    )));
    assert!(
        lb2_status["vrrp"][0]["adverts_received"].as_u64().unwrap() >= 2,
        "{lb2_status}"
    );
    send_raw(
        &b.topo.client,
        "198.18.0.1",
        255,
        vec![0x31, 99, 1, 0, 0, 100, 0, 0],
    );
    let counters = b
        .topo
        .sw
        .exec(&["nft", "list", "table", "bridge", "xlbt"])
        .unwrap();
    assert!(
        counters.contains("counter packets") && !counters.contains("packets 0 "),
        "the multicast drop rule did not match: {counters}"
    );
    let _ = lb2.stop();
}

#[test]
fn keepalived_interop_v2_and_the_reverse_roles() {
    require_root!();
    let b = bed();
    keepalived_master_then_xdp_lb(&b, "  vrrp_version 2", vrrp(100, "1s").key("version", 2u8));
}

/// keepalived master (priority 200), xdp-lb backup (100): xdp-lb follows keepalived's adverts
/// (and accepts every one of them), then takes the VIP when keepalived stops.
fn keepalived_master_then_xdp_lb(b: &Bed, keepalived_globals: &str, xdp_lb_vrrp: fixtures::Vrrp) {
    let keepalived = Keepalived::start(b, &b.lb2, 200, keepalived_globals);
    let c1 = config(b, 1, xdp_lb_vrrp);
    let mut lb1 = start(b, 1, &c1, &[]);
    wait_for("keepalived master", Duration::from_secs(6), || {
        holds_vip(&b.lb2)
    });
    std::thread::sleep(mdi(100) + Duration::from_secs(1));
    assert!(
        !lb1.log_text().contains("to=\"MASTER\""),
        "xdp-lb must follow keepalived's adverts: {}",
        lb1.log_text()
    );
    let s = status(&b.topo.control_socket());
    assert!(
        s["vrrp"][0]["adverts_received"].as_u64().unwrap() >= 3,
        "{s}"
    );
    assert_eq!(s["vrrp"][0]["rejected"]["checksum"], 0, "{s}");
    drop(keepalived); // SIGTERM: keepalived sends priority 0
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(2) + mdi(100))
        .unwrap();
    wait_for("the VIP on xdp-lb only", Duration::from_secs(2), || {
        holds_vip(&b.topo.lb) && !holds_vip(&b.lb2)
    });
    assert!(reaches_vip(b));
}

#[test]
fn keepalived_interop_v3_reverse_roles_and_v2_with_xdp_lb_master() {
    require_root!();
    // v3, keepalived master, xdp-lb backup (pseudo-header checksums).
    keepalived_master_then_xdp_lb(&bed(), "", vrrp(100, "1s").key("checksum", "pseudo-header"));
    // v2, xdp-lb master (150), keepalived backup (100).
    {
        let b = bed();
        let keepalived = Keepalived::start(&b, &b.lb2, 100, "  vrrp_version 2");
        let c1 = config(&b, 1, vrrp(150, "1s").key("version", 2u8));
        let mut lb1 = start(&b, 1, &c1, &[]);
        lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            holds_vip(&b.topo.lb) && !holds_vip(&b.lb2),
            "keepalived must stay backup:\n{}",
            keepalived.log_text()
        );
        assert!(lb1.stop().unwrap().success());
        wait_for("keepalived master", Duration::from_secs(3), || {
            holds_vip(&b.lb2)
        });
    }
}

#[test]
fn an_established_connection_survives_a_vip_failover() {
    require_root!();
    let b = bed();
    let c1 = config(&b, 1, vrrp(150, "1s"));
    let c2 = config(&b, 2, vrrp(100, "1s"));
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let ns = format!("/run/netns/{}", b.topo.client.name);
    let worker = std::thread::spawn(move || {
        xdp_lb_tests::netns::enter_netns(&ns).unwrap();
        let mut echo = xdp_lb_tests::EchoClient::connect(
            SocketAddr::from((VIP, PORT)),
            Duration::from_secs(5),
        )
        .unwrap();
        echo.round_trip().unwrap();
        done_tx.send(echo.backend.clone()).unwrap();
        // Wait (bounded) for the failover, then talk again on the same connection.
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        (0..5)
            .map(|_| echo.round_trip())
            .collect::<Result<Vec<_>, _>>()
    });
    let backend = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // lb2 has never seen this flow; it must hash it to the same backend.
    assert!(lb1.stop().unwrap().success());
    lb2.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    tx.send(()).unwrap();
    let result = worker.join().unwrap();
    assert!(
        result.is_ok(),
        "the connection to {backend} broke across the failover: {result:?}"
    );
    let s = status(std::path::Path::new(&format!(
        "/run/xlbt/{}.sock",
        b.lb2.name
    )));
    assert_eq!(s["vrrp"][0]["state"], "MASTER");
    assert!(lb2.stop().unwrap().success());
}

/// Waits (bounded) until lb2 has accepted `n` adverts.
fn wait_for_adverts(b: &Bed, n: u64) {
    let socket = PathBuf::from(format!("/run/xlbt/{}.sock", b.lb2.name));
    wait_for("lb2 hearing the master", Duration::from_secs(5), || {
        status(&socket)["vrrp"][0]["adverts_received"]
            .as_u64()
            .unwrap_or(0)
            >= n
    });
}

// ---- VRRPv3 over IPv6 (RFC 5798): ff02::12, link-local sources, hop limit 255, unsolicited
// neighbour advertisements ----

const VIP6: &str = "2001:2::100";

/// The bed with IPv6 on the segment: link-local addresses usable (DAD done) on both LB nodes,
/// and the client on 2001:2::/64 to reach the IPv6 virtual address.
fn bed6() -> Bed {
    let b = bed();
    b.topo
        .client
        .ip(&["-6", "addr", "add", "2001:2::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    for ns in [&b.topo.lb, &b.lb2, &b.topo.client] {
        wait_for(
            "a usable IPv6 link-local address",
            Duration::from_secs(5),
            || {
                let a = ns.ip(&["-6", "addr", "show", "dev", "eth0"]).unwrap();
                a.contains("fe80::") && !a.contains("tentative")
            },
        );
    }
    b
}

fn vrrp6(priority: u8, interval: &str) -> fixtures::Vrrp {
    fixtures::vrrp("vi-test6", "eth0", 52, priority)
        .key("advert_interval", interval)
        .addresses(&[&format!("{VIP6}/64")])
        .key("garp_repeat_delay", "1s")
}

fn holds_vip6(ns: &NetNs) -> bool {
    ns.ip(&["-6", "addr", "show", "dev", "eth0"])
        .unwrap()
        .contains(&format!("{VIP6}/64"))
}

/// The client's neighbour entry for the IPv6 VIP, after a ping: which MAC answers for it.
fn vip6_answers_from(bed: &Bed) -> Option<String> {
    bed.topo
        .client
        .exec(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", VIP6])
        .ok()?;
    let n = bed.topo.client.ip(&["-6", "neigh", "show", VIP6]).ok()?;
    let mac = n.split_whitespace().skip_while(|w| *w != "lladdr").nth(1)?;
    Some(mac.to_owned())
}

fn mac_of(ns: &NetNs) -> String {
    ns.mac("eth0")
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IPv4 and an IPv6 instance side by side on both nodes, 100 ms adverts: the higher
/// priority holds both; SIGKILL (and its link down) moves both within half a second, and the
/// unsolicited neighbour advertisement points the client at the new master at once.
#[test]
fn ipv6_instance_beside_an_ipv4_one_fails_over_within_half_a_second() {
    require_root!();
    let b = bed6();
    let c1 = config_with(&b, 1, vec![vrrp(150, "100ms"), vrrp6(150, "100ms")]);
    let c2 = config_with(&b, 2, vec![vrrp(100, "100ms"), vrrp6(100, "100ms")]);
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    wait_for("lb1 holds both VIPs", Duration::from_secs(3), || {
        holds_vip(&b.topo.lb) && holds_vip6(&b.topo.lb)
    });
    let socket2 = PathBuf::from(format!("/run/xlbt/{}.sock", b.lb2.name));
    wait_for("lb2 hearing both masters", Duration::from_secs(5), || {
        let s = status(&socket2);
        (0..2).all(|i| s["vrrp"][i]["adverts_received"].as_u64().unwrap_or(0) >= 3)
    });
    let s = status(&socket2);
    let v6 = s["vrrp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "vi-test6")
        .unwrap()
        .clone();
    assert_eq!(v6["state"], "BACKUP", "{v6}");
    for (reason, n) in v6["rejected"].as_object().unwrap() {
        assert_eq!(n, 0, "lb2 rejected IPv6 adverts ({reason}): {v6}");
    }
    assert!(!holds_vip6(&b.lb2));
    assert_eq!(vip6_answers_from(&b), Some(mac_of(&b.topo.lb)));

    let killed = Instant::now();
    lb1.kill9();
    b.topo.lb.ip(&["link", "set", "eth0", "down"]).unwrap();
    let took = wait_for("lb2 holds both VIPs", Duration::from_secs(2), || {
        holds_vip(&b.lb2) && holds_vip6(&b.lb2)
    });
    println!("IPv4 + IPv6 instances, 100 ms adverts, SIGKILL: lb2 holds both after {took:?}");
    // The client's cache is pointed at lb2 by the unsolicited NA (no solicitation needed). The
    // agent sends it just after adding the address, which is what `holds_vip6` sees, so the
    // NA may land a few milliseconds after that check: wait for it, within the same budget.
    let lb2_mac = mac_of(&b.lb2);
    wait_for(
        "the client's cache pointing at lb2",
        Duration::from_millis(300),
        || {
            b.topo
                .client
                .ip(&["-6", "neigh", "show", VIP6])
                .is_ok_and(|n| n.contains(&lb2_mac))
        },
    );
    assert!(
        killed.elapsed() < Duration::from_millis(500),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(vip6_answers_from(&b), Some(mac_of(&b.lb2)));
    assert!(lb2.stop().unwrap().success());
    assert!(
        !holds_vip6(&b.lb2),
        "a clean stop releases the IPv6 address"
    );
}

/// keepalived over IPv6 in both roles: xdp-lb master with keepalived backup (keepalived
/// stays backup; takes over when xdp-lb stops), then keepalived master with xdp-lb backup
/// (xdp-lb accepts every advert; takes over when keepalived stops).
#[test]
fn keepalived_interop_over_ipv6_in_both_roles() {
    require_root!();
    {
        let b = bed6();
        let keepalived = Keepalived::start_instance(&b, &b.lb2, 100, "", 52, &format!("{VIP6}/64"));
        let c1 = config(&b, 1, vrrp6(150, "1s"));
        let mut lb1 = start(&b, 1, &c1, &[]);
        lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        assert!(holds_vip6(&b.topo.lb), "{}", lb1.log_text());
        assert!(
            !holds_vip6(&b.lb2),
            "keepalived must stay backup while xdp-lb advertises over IPv6:\n{}",
            keepalived.log_text()
        );
        assert!(lb1.stop().unwrap().success());
        wait_for(
            "keepalived master over IPv6",
            Duration::from_secs(4),
            || holds_vip6(&b.lb2),
        );
    }
    {
        let b = bed6();
        let keepalived = Keepalived::start_instance(&b, &b.lb2, 200, "", 52, &format!("{VIP6}/64"));
        let c1 = config(&b, 1, vrrp6(100, "1s"));
        let mut lb1 = start(&b, 1, &c1, &[]);
        wait_for(
            "keepalived master over IPv6",
            Duration::from_secs(6),
            || holds_vip6(&b.lb2),
        );
        std::thread::sleep(mdi(100) + Duration::from_secs(1));
        assert!(
            !lb1.log_text().contains("to=\"MASTER\""),
            "xdp-lb must follow keepalived's IPv6 adverts: {}",
            lb1.log_text()
        );
        let s = status(&b.topo.control_socket());
        assert!(
            s["vrrp"][0]["adverts_received"].as_u64().unwrap() >= 3,
            "{s}"
        );
        for (reason, n) in s["vrrp"][0]["rejected"].as_object().unwrap() {
            assert_eq!(
                n, 0,
                "xdp-lb rejected keepalived's IPv6 adverts ({reason}): {s}"
            );
        }
        drop(keepalived); // SIGTERM: keepalived sends priority 0
        lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(2) + mdi(100))
            .unwrap();
        wait_for(
            "the IPv6 VIP on xdp-lb only",
            Duration::from_secs(2),
            || holds_vip6(&b.topo.lb) && !holds_vip6(&b.lb2),
        );
    }
}

/// Hostile IPv6 adverts from a third host: a routed one (hop limit 64) and one with a bad
/// checksum, both claiming priority 255, change nothing and are counted by reason.
#[test]
fn routed_or_garbled_ipv6_adverts_change_nothing_and_are_counted() {
    require_root!();
    let b = bed6();
    let c1 = config(&b, 1, vrrp6(150, "1s"));
    let mut lb1 = start(&b, 1, &c1, &[]);
    lb1.wait_for_log("to=\"MASTER\"", mdi(150) + Duration::from_secs(2))
        .unwrap();
    let attacker = b.topo.client.name.clone();
    in_netns(&attacker, || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let ifindex = xdp_lb::netlink::ifindex("eth0").unwrap();
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.set_multicast_if_v6(ifindex).unwrap();
        let group = std::net::SocketAddrV6::new(xdp_lb::vrrp::packet::VRRP_GROUP_V6, 0, 0, ifindex);
        let advert = xdp_lb::vrrp::packet::Advert {
            version: xdp_lb::config::Version::V3,
            vrid: 52,
            priority: 255,
            interval_cs: 100,
            addresses: vec![VIP6.parse().unwrap()],
        };
        // Encoded for a source it does not send from: the checksum cannot hold.
        let garbled = advert.encode(
            xdp_lb::config::ChecksumMode::Rfc9568,
            "fe80::dead".parse().unwrap(),
            std::net::IpAddr::V6(xdp_lb::vrrp::packet::VRRP_GROUP_V6),
        );
        s.set_multicast_hops_v6(64).unwrap();
        s.send_to(&garbled, &SockAddr::from(group)).unwrap();
        s.set_multicast_hops_v6(255).unwrap();
        s.send_to(&garbled, &SockAddr::from(group)).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = status(&b.topo.control_socket());
    let v6 = &s["vrrp"][0];
    assert_eq!(v6["state"], "MASTER", "{v6}");
    assert_eq!(v6["rejected"]["ttl"], 1, "the routed one: {v6}");
    assert_eq!(v6["rejected"]["checksum"], 1, "the garbled one: {v6}");
    assert!(holds_vip6(&b.topo.lb));
}
