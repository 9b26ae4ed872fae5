//! `cargo xtask demo scale-out`: three active xdp-lb nodes behind a router's ECMP, each
//! announcing the VIP over BGP with BIRD. Shows the spread over the nodes, kills one node, and
//! shows its connections carried on by the others with their backends. Cleans up, also on
//! Ctrl-C.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use xdp_lb::dataplane::Maps;
use xdp_lb_common::Counter;
use xdp_lb_tests::{
    EchoClient, TcpService, in_netns,
    scale_out::{ScaleOut, VIP, node_addr},
    service::request_tally,
};

const PORT: u16 = 80;
const NODES: usize = 3;

fn main() {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(err) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("demo: cannot install the Ctrl-C handler: {err}");
    }
    match demo(&interrupted) {
        Ok(()) => println!("\nScale-out demo finished; namespaces, processes and pins are gone."),
        Err(err) => {
            eprintln!("\nscale-out demo failed: {err:#}");
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
    println!("xdp-lb scale-out demo\n=====================\n");
    println!("1. Building the topology (network namespaces):");
    let mut topo = ScaleOut::new(NODES, 3)?;
    println!(
        "     client 198.19.1.10 ── router 198.19.1.1 | 198.18.0.1  (BIRD: BGP + BFD 100 ms x 3, ECMP on the 5-tuple)\n\
         \x20                                   │ bridge br0\n\
         \x20    lb1..3 198.18.0.2..4 (BIRD + xdp-lb, DSR)    be1..3 198.18.0.11..13 (VIP on lo)\n\
         \x20    VIP {VIP}:{PORT}, announced by every node as a /32 route in kernel table 1000"
    );
    let _services: Vec<TcpService> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, be)| TcpService::start(&be.name, PORT, &format!("be{}", i + 1)))
        .collect::<Result<_, _>>()?;

    println!("\n2. Starting BIRD and `xdp-lb run` on each node:");
    for i in 0..NODES {
        topo.start_node(i, None)?;
        println!("     lb{} {} started", i + 1, node_addr(i));
    }
    let all: Vec<_> = (0..NODES).map(node_addr).collect();
    topo.wait_next_hops(&all, Duration::from_secs(20))?;
    println!("     the router's route to the VIP (one next hop per node):");
    for line in topo
        .router
        .ip(&["route", "show", &format!("{VIP}/32")])?
        .lines()
    {
        println!("       {}", line.trim());
    }
    check(interrupted)?;

    println!("\n3. 600 new connections from the client:");
    spread(&topo, interrupted, 600)?;
    check(interrupted)?;

    println!("\n4. 30 long-lived connections, then lb2 dies (its link goes down, then SIGKILL):");
    let mut clients = in_netns(&topo.client.name, || {
        (0..30)
            .map(|_| EchoClient::connect(SocketAddr::from((VIP, PORT)), Duration::from_secs(5)))
            .collect::<Result<Vec<_>, _>>()
    })??;
    for c in &mut clients {
        c.round_trip()?;
    }
    topo.sw.ip(&["link", "set", "p-lb2", "down"])?;
    let down = Instant::now();
    if let Some(agent) = topo.nodes[1].agent.as_mut() {
        agent.kill9();
    }
    if let Some(mut bird) = topo.nodes[1].bird.take() {
        let _ = bird.0.kill();
        let _ = bird.0.wait();
    }
    let rest = [node_addr(0), node_addr(2)];
    topo.wait_next_hops(&rest, Duration::from_secs(5))?;
    println!(
        "     the router dropped lb2's next hop {:.2} s after its link went down (BFD)",
        down.elapsed().as_secs_f64()
    );
    let mut kept = 0;
    for c in &mut clients {
        if c.round_trip().is_ok() {
            kept += 1;
        }
    }
    println!(
        "     {kept} of 30 connections carried on through lb1 and lb3, each with its backend \
         (every node builds the same Maglev table)"
    );
    check(interrupted)?;

    println!("\n5. 300 new connections over the two survivors:");
    spread(&topo, interrupted, 300)?;

    println!(
        "\n6. Stopping: each agent withdraws its route, forwards through announce.grace, detaches."
    );
    for node in &mut topo.nodes {
        if let Some(agent) = node.agent.as_mut().filter(|a| a.child.is_some()) {
            agent.stop()?;
        }
    }
    if kept < 30 {
        bail!(
            "{} connections broke; logs in {}",
            30 - kept,
            topo.dir.display()
        );
    }
    Ok(())
}

/// `count` requests from the client; prints the new flows per node and the answers per backend.
fn spread(topo: &ScaleOut, interrupted: &Arc<AtomicBool>, count: usize) -> anyhow::Result<()> {
    let new_flows = |i: usize| -> u64 {
        Maps::open_pinned(&topo.nodes[i].pin_dir())
            .map(|m| m.counter(Counter::NewFlow).unwrap_or(0))
            .unwrap_or(0)
    };
    let before: Vec<u64> = (0..NODES).map(new_flows).collect();
    let t = request_tally(
        &topo.client.name,
        SocketAddr::from((VIP, PORT)),
        count,
        interrupted.clone(),
    )?;
    for (i, was) in before.iter().enumerate() {
        let n = new_flows(i).saturating_sub(*was) as usize;
        let alive = topo.nodes[i]
            .agent
            .as_ref()
            .is_some_and(|a| a.child.is_some());
        println!(
            "     lb{}: {n:>4} new flows  {}{}",
            i + 1,
            "#".repeat(n / 8),
            if alive { "" } else { "(dead)" }
        );
    }
    for (name, n) in &t.per_backend {
        println!("     {name}: {n:>4} answers  {}", "#".repeat(n / 8));
    }
    println!(
        "     {} answered, {} failed, in {:.2} s",
        t.answered,
        t.failed,
        t.elapsed.as_secs_f64()
    );
    let failed = t.failed;
    if failed > 0 {
        bail!("{failed} requests failed; logs in {}", topo.dir.display());
    }
    Ok(())
}
