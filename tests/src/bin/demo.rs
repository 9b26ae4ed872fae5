//! `cargo xtask demo`: a self-contained tour. Builds the TESTBED topology in network
//! namespaces, runs `xdp-lb run` on two LB nodes, balances HTTP requests from the client over
//! three backends by DSR and by NAT, fails a backend and then the VRRP master over, prints who
//! answered and the LB's counters, and tears it all down — also on Ctrl-C.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xdp_lb::dataplane::Maps;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    Agent, DsrTopology, NetNs, TcpService, fixtures,
    service::request_tally,
    topology::{CLIENT_ADDR, LB_ADDR, PassProgram, VIP, backend_addr},
};

const PORT: u16 = 80;
/// The NAT VIP's port; the backends answer on PORT.
const NAT_PORT: u16 = 8080;
const REQUESTS: usize = 300;
const LB2_ADDR: &str = "198.18.0.3";

fn main() {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(err) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("demo: cannot install the Ctrl-C handler: {err}");
    }
    match demo(&interrupted) {
        Ok(()) => println!("\nDemo finished; namespaces, processes and pins are gone."),
        Err(err) => {
            eprintln!("\ndemo failed: {err:#}");
            std::process::exit(1);
        }
    }
}

fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C); cleaning up");
    }
    Ok(())
}

fn demo(interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    println!("xdp-lb demo\n===========\n");
    println!("1. Building the topology (network namespaces joined by a bridge):");
    let topo = DsrTopology::new(3)?;
    // Two LB nodes; VRRP decides which one holds the VIP.
    topo.lb
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])?;
    let lb2 = NetNs::new("lb2")?;
    topo.plug(&lb2, "p-lb2", LB2_ADDR.parse()?)?;
    let _pass2 = PassProgram::attach(&topo.sw, "p-lb2")?;
    println!(
        "     client {CLIENT_ADDR}  ──┐\n     lb1    {LB_ADDR}  ──┤\n     lb2    {LB2_ADDR}  ──┤  bridge br0 (ns {})\n     be1..3 {}..{} ──┘\n\
         VIP {VIP}:{PORT}: on the VRRP master's eth0; on each backend's lo (L2 DSR)\n     \
         VIP {VIP}:{NAT_PORT}: the same address, by NAT to the backends' port {PORT}\n",
        topo.sw.name,
        backend_addr(0),
        backend_addr(2)
    );
    check(interrupted)?;

    println!("2. Starting a tiny HTTP service on each backend that answers with its name.");
    let mut services: Vec<Option<TcpService>> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, be)| TcpService::start(&be.name, PORT, &format!("be{}", i + 1)).map(Some))
        .collect::<anyhow::Result<_>>()?;
    check(interrupted)?;

    let pin_dir = topo.pin_dir();
    let config_path = topo.dir.join("xdp-lb.toml");
    // Both nodes: the same VIPs and backends, each its own pins, socket and VRRP priority.
    let checks = |vip: fixtures::Vip| {
        vip.key("maglev_table_size", 65537)
            .check("type", "http")
            .check("http_path", "/healthz")
            .check("interval", "500ms")
            .check("fall", 2u32)
            .check("rise", 2u32)
    };
    // A second VIP on the same address, by NAT: port 8080 to the backends' port 80.
    let port = PORT.to_string();
    let web_nat = (0..3).fold(
        checks(fixtures::vip("web-nat", VIP, NAT_PORT).nat()),
        |vip, i| vip.backend_with(backend_addr(i), &[("port", &port)]),
    );
    let node_config = |pins: &std::path::Path, socket: PathBuf, priority: u8| {
        topo.agent_config(pins)
            .key("control_socket", socket)
            .vip(checks(topo.vip(PORT)))
            .vip(web_nat.clone())
            .vrrp(
                fixtures::vrrp("vi-demo", "eth0", 51, priority)
                    .key("advert_interval", "1s")
                    .addresses(&[&format!("{VIP}/24")]),
            )
            .to_string()
    };
    // NAT's kernel prerequisites on both LB nodes (README, "NAT mode").
    for ns in [&topo.lb, &lb2] {
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.accept_local",
            "net.ipv4.conf.eth0.accept_local",
        ] {
            ns.sysctl(key, "1")?;
        }
    }
    let config = node_config(&pin_dir, topo.control_socket(), 150);
    std::fs::write(&config_path, &config)?;
    let lb2_pins = PathBuf::from(format!("/sys/fs/bpf/{}", lb2.name));
    let lb2_config = node_config(
        &lb2_pins,
        PathBuf::from(format!("/run/xlbt/{}.sock", lb2.name)),
        100,
    );
    let lb2_config_path = topo.dir.join("xdp-lb-lb2.toml");
    std::fs::write(&lb2_config_path, &lb2_config)?;
    println!(
        "3. Starting `xdp-lb run --config {}` on lb1 (VRRP priority 150) with:\n",
        config_path.display()
    );
    for line in config.lines() {
        println!("     {line}");
    }
    println!(
        "\n   and the same on lb2 with VRRP priority 100 (and its own pin directory and socket)."
    );
    let log = topo.dir.join("agent.log");
    let mut agent = Agent::start(
        &topo.lb,
        &["run", "--config", config_path.to_str().context("path")?],
        log.clone(),
        "xdp-lb is forwarding",
        Duration::from_secs(30),
    )?;
    let mut agent2 = Agent::start(
        &lb2,
        &["run", "--config", lb2_config_path.to_str().context("path")?],
        topo.dir.join("agent-lb2.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(30),
    )?;
    agent.wait_for_log("to=\"MASTER\"", Duration::from_secs(8))?;
    println!("\n   lb1's log ({}):", log.display());
    for line in agent.log_text().lines() {
        println!("     {line}");
    }
    let vrrp_lines = |a: &Agent| {
        a.log_text()
            .lines()
            .filter(|l| l.contains("VRRP transition"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    println!("   lb2's VRRP log:");
    for line in vrrp_lines(&agent2) {
        println!("     {line}");
    }
    check(interrupted)?;

    println!(
        "\n4. Sending {REQUESTS} HTTP requests from the client to http://{VIP}:{PORT}/ (one connection each):"
    );
    let failed = requests(&topo, interrupted, REQUESTS, PORT)?;
    let served: u64 = services
        .iter()
        .flatten()
        .map(xdp_lb_tests::TcpService::served)
        .sum();
    println!("     (the backends' own count: {served})");
    check(interrupted)?;
    println!(
        "\n   The same through the NAT VIP, http://{VIP}:{NAT_PORT}/: the LB rewrites each connection to\n   its own address and a port of its SNAT range towards the backends' port {PORT}, and their\n   answers back (the backends need no VIP for this one):"
    );
    let failed = failed + requests(&topo, interrupted, REQUESTS, NAT_PORT)?;
    check(interrupted)?;

    println!("\n   Backend failover: stopping be2's service. Its HTTP health check (every 500 ms,");
    println!("   down after 2 failures) takes it out of the Maglev table; its flows are purged.");
    services[1] = None;
    // Both VIPs check be2: go on once the maps themselves say neither forwards to it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !be2_out_of_every_vip(&pin_dir) {
        if Instant::now() > deadline {
            bail!("be2 was not taken out of both VIPs within 5 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for line in agent
        .log_text()
        .lines()
        .filter(|l| l.contains("backend DOWN") || l.contains("cause=\"health"))
    {
        println!("     {line}");
    }
    println!("   Sending {REQUESTS} more requests:");
    let failed = failed + requests(&topo, interrupted, REQUESTS, PORT)?;
    check(interrupted)?;

    println!(
        "\n5. The LB's counters, read from the pinned maps in {}:",
        pin_dir.display()
    );
    print_counters(&pin_dir)?;

    println!(
        "\n6. VIP failover: stopping lb1 (the VRRP master) with SIGTERM. It sends a priority-0"
    );
    println!(
        "   advert and releases the VIP; lb2 takes over after Skew_Time (~0.6 s) and announces it"
    );
    println!("   with gratuitous ARP. lb1 also detaches its program and removes its pins.");
    let stopped = Instant::now();
    let status = agent.stop()?;
    agent2.wait_for_log("to=\"MASTER\"", Duration::from_secs(5))?;
    let takeover = stopped.elapsed();
    println!(
        "     lb1 exit status: {status}; pins left: {}",
        pin_dir.exists()
    );
    for line in vrrp_lines(&agent2) {
        println!("     {line}");
    }
    println!(
        "     lb2 is master {:.2} s after the stop. Sending {REQUESTS} requests through lb2:",
        takeover.as_secs_f64()
    );
    let failed = failed + requests(&topo, interrupted, REQUESTS, PORT)?;
    check(interrupted)?;

    println!("\n7. Stopping lb2.");
    let status2 = agent2.stop()?;
    println!("     exit status: {status2}");
    if failed > 0 {
        bail!("{failed} requests failed; agent log: {}", log.display());
    }
    Ok(())
}

/// Sends `count` requests from the client to the VIP; prints who answered; returns failures.
fn requests(
    topo: &DsrTopology,
    interrupted: &Arc<AtomicBool>,
    count: usize,
    port: u16,
) -> anyhow::Result<usize> {
    let t = request_tally(
        &topo.client.name,
        SocketAddr::from((VIP, port)),
        count,
        interrupted.clone(),
    )?;
    for (name, n) in &t.per_backend {
        println!("     {name}: {n:>4}  {}", "#".repeat(n / 4));
    }
    println!(
        "     {} answered, {} failed, in {:.2} s ({:.0} connections/s)",
        t.answered,
        t.failed,
        t.elapsed.as_secs_f64(),
        t.answered as f64 / t.elapsed.as_secs_f64()
    );
    let failed = t.failed;
    Ok(failed)
}

/// Whether no backend entry for be2's address may carry flows (both VIPs took it out).
fn be2_out_of_every_vip(pin_dir: &std::path::Path) -> bool {
    let Ok(maps) = Maps::open_pinned(pin_dir) else {
        return false;
    };
    let be2 = xdp_lb_common::ipv4_be(backend_addr(1).octets());
    maps.backends()
        .iter()
        .all(|(_, b)| b.addr_be != be2 || b.flags & xdp_lb_common::BACKEND_F_FORWARD == 0)
}

fn print_counters(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let maps = Maps::open_pinned(pin_dir)?;
    for (key, vip) in maps.vips() {
        let c = maps.vip_traffic(vip.vip_id);
        let (p, b, f) = (c.packets, c.bytes, c.new_flows);
        let mode = if vip.flags & xdp_lb_common::VIP_F_NAT != 0 {
            "NAT, both directions"
        } else {
            "DSR, client side"
        };
        println!(
            "     VIP {VIP}:{} ({mode}): {p} packets, {b} bytes, {f} new flows; {} backends",
            u16::from_be_bytes(key.port_be().to_ne_bytes()),
            vip.backend_count
        );
    }
    for (id, info) in maps.backends() {
        let c = maps.backend_traffic(id);
        let (p, f) = (c.packets, c.new_flows);
        let addr = std::net::Ipv4Addr::from(info.addr_be.to_ne_bytes());
        println!("     backend {addr}: {p} packets, {f} new flows");
    }
    let mut line = Vec::new();
    for c in Counter::ALL {
        let v = maps.counter(c)?;
        if v > 0 {
            line.push(format!("{}={v}", c.name()));
        }
    }
    println!("     verdicts: {}", line.join(" "));
    Ok(())
}
