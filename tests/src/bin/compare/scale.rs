//! Scale out (issue 14): new connections/s through 1, 2 and 3 active xdp-lb nodes behind a
//! router's ECMP to the same three nginx backends, and the time from a node's death to the
//! router's reroute (BIRD, BFD 100 ms × 3). The topology is `scale_out::ScaleOut`; the number
//! of active nodes is set with `xdp-lb drain`/`undrain` (the others stay up, withdrawn), rounds
//! interleaved so that noise hits every row alike.

use std::time::{Duration, Instant};

use anyhow::ensure;
use xdp_lb_tests::{
    peers::{Proc, nginx},
    scale_out::{ScaleOut, VIP, node_addr},
    topology::xdp_lb_cli_in,
};

use crate::{
    Args,
    wrk::{LbCpu, wrk},
};

const NODES: usize = 3;

pub(crate) struct ScaleFigures {
    /// [active nodes − 1][round]: new connections per second (wrk, `Connection: close`).
    pub(crate) rates: Vec<Vec<f64>>,
    /// [active nodes − 1]: packets each node forwarded in the last round (the proof that the
    /// row ran through that many nodes; not new flows: after the first rounds every client port
    /// the kernel reuses finds its earlier flow in the tables, a hit).
    pub(crate) spread: Vec<Vec<u64>>,
    /// Seconds from a node's link going down to the router dropping its next hop, per round.
    pub(crate) reroute: Vec<f64>,
}

fn set_draining(topo: &ScaleOut, i: usize, on: bool) -> anyhow::Result<()> {
    let socket = topo.nodes[i].control_socket();
    let verb = if on { "drain" } else { "undrain" };
    let (code, out, err) = xdp_lb_cli_in(
        &topo.nodes[i].ns,
        &[verb, "--socket", socket.to_str().unwrap_or("")],
    )?;
    ensure!(code == 0, "xdp-lb {verb} on lb{}: {out}{err}", i + 1);
    Ok(())
}

fn forwarded(topo: &ScaleOut, i: usize) -> u64 {
    xdp_lb::dataplane::Maps::open_pinned(&topo.nodes[i].pin_dir())
        .ok()
        .and_then(|m| m.counter(xdp_lb_common::Counter::Tx).ok())
        .unwrap_or(0)
}

pub(crate) fn measure(args: &Args) -> anyhow::Result<ScaleFigures> {
    let mut topo = ScaleOut::new(NODES, 3)?;
    let dir = topo.dir.clone();
    let _nginx: Vec<Proc> = (0..3)
        .map(|i| nginx(&topo.backends[i], &dir, &format!("be{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    for i in 0..NODES {
        topo.start_node(i, None)?;
    }
    let all: Vec<_> = (0..NODES).map(node_addr).collect();
    topo.wait_next_hops(&all, Duration::from_secs(20))?;
    let url = format!("http://{VIP}/");

    let mut rates = vec![Vec::new(); NODES];
    let mut spread = vec![Vec::new(); NODES];
    for round in 0..args.rounds {
        for k in 0..NODES {
            // Rotate the order per round: no row always runs first (warm-up) or last.
            let active = (k + round) % NODES + 1;
            for i in 0..NODES {
                set_draining(&topo, i, i >= active)?;
            }
            let hops: Vec<_> = (0..active).map(node_addr).collect();
            topo.wait_next_hops(&hops, Duration::from_secs(5))?;
            let before: Vec<u64> = (0..NODES).map(|i| forwarded(&topo, i)).collect();
            let r = wrk(&topo.client, &url, args, false, LbCpu::None)?;
            ensure!(
                r.requests > 0.0,
                "{active} node(s): wrk carried nothing; logs in {}",
                dir.display()
            );
            rates[active - 1].push(r.requests_per_sec);
            spread[active - 1] = (0..NODES)
                .map(|i| forwarded(&topo, i).saturating_sub(before[i]))
                .collect();
            ensure!(
                spread[active - 1][..active].iter().all(|&p| p > 0),
                "{active} node(s) active, but not every one forwarded: {:?}",
                spread[active - 1]
            );
        }
    }
    for i in 0..NODES {
        set_draining(&topo, i, false)?;
    }
    topo.wait_next_hops(&all, Duration::from_secs(5))?;

    // A node dies, as in the scale-out test: its link first, then SIGKILL; then it comes back
    // for the next round.
    let mut reroute = Vec::new();
    let last = NODES - 1;
    let port = format!("p-lb{}", last + 1);
    let survivors: Vec<_> = (0..last).map(node_addr).collect();
    for _ in 0..args.rounds {
        topo.sw.ip(&["link", "set", &port, "down"])?;
        let down = Instant::now();
        if let Some(agent) = topo.nodes[last].agent.as_mut() {
            agent.kill9();
        }
        if let Some(mut bird) = topo.nodes[last].bird.take() {
            let _ = bird.0.kill();
            let _ = bird.0.wait();
        }
        topo.wait_next_hops(&survivors, Duration::from_secs(5))?;
        reroute.push(down.elapsed().as_secs_f64());
        topo.sw.ip(&["link", "set", &port, "up"])?;
        topo.start_node(last, None)?;
        topo.wait_next_hops(&all, Duration::from_secs(20))?;
    }
    Ok(ScaleFigures {
        rates,
        spread,
        reroute,
    })
}
