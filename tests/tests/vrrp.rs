//! VRRP: two LB nodes on one bridge, the VIP failing over between them — xdp-lb with xdp-lb,
//! and xdp-lb with a real keepalived started by the test.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xdp_lb_tests::{
    Agent, DsrTopology, NetNs, TcpService, http_get, in_netns, require_root,
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
    // The VIP is VRRP's to place, not the topology's.
    topo.lb
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .unwrap();
    let lb2 = NetNs::new("lb2").unwrap();
    topo.plug(&lb2, "p-lb2", LB2_ADDR.parse().unwrap()).unwrap();
    let pass2 = PassProgram::attach(&topo.sw, "p-lb2").unwrap();
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
fn config(bed: &Bed, node: usize, vrrp: &str) -> PathBuf {
    let base = bed.topo.config(
        &bed.topo.pin_dir(),
        PORT,
        "maglev_table_size = 4093\n[vip.health_check]\ninterval = \"500ms\"",
    );
    let lb2_pins = format!("/sys/fs/bpf/{}", bed.lb2.name);
    let lb2_sock = format!("/run/xlbt/{}.sock", bed.lb2.name);
    let text = if node == 1 {
        base
    } else {
        base.replace(&bed.topo.pin_dir().display().to_string(), &lb2_pins)
            .replace(&bed.topo.control_socket().display().to_string(), &lb2_sock)
    };
    let path = bed.topo.dir.join(format!("lb{node}-{}.toml", unique()));
    std::fs::write(&path, format!("{text}\n{vrrp}\n")).unwrap();
    path
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn vrrp(priority: u8, interval: &str, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"vi-test\"\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\nversion = 3\n\
         advert_interval = \"{interval}\"\nvirtual_addresses = [\"{VIP}/24\"]\ngarp_repeat_delay = \"1s\"\n{extra}\n"
    )
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
    let c1 = config(&b, 1, &vrrp(150, "1s", ""));
    let c2 = config(&b, 2, &vrrp(100, "1s", ""));
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
    std::thread::sleep(Duration::from_millis(300));
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
    let c2 = config(&b, 2, &vrrp(100, "1s", ""));
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb2.wait_for_log("to=\"MASTER\"", mdi(100) + Duration::from_secs(2))
        .unwrap();
    let c1 = config(&b, 1, &vrrp(150, "1s", "preempt = false"));
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
    let c1 = config(&b, 1, &vrrp(150, "100ms", ""));
    let c2 = config(&b, 2, &vrrp(100, "100ms", ""));
    let mut lb1 = start(&b, 1, &c1, &[]);
    let mut lb2 = start(&b, 2, &c2, &[]);
    lb1.wait_for_log("to=\"MASTER\"", Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
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
        let id = unique();
        let conf = bed.topo.dir.join(format!("keepalived-{id}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  vrrp_version 3\n  script_user root\n  enable_script_security\n{extra_globals}\n}}\n\
                 vrrp_instance vi-test {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n\
                 advert_int 1\n  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n"
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
    let c1 = config(&b, 1, &vrrp(150, "1s", "checksum = \"pseudo-header\""));
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
