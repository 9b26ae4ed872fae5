//! Legitimate connections under a random-source SYN flood (issue 13): xdp-lb's NAT and DSR VIPs
//! against the reference, the kernel's own SYN cookies on a plain host (a backend reached
//! directly, nothing in front of it).
//!
//! Each row floods its target at `RATE` SYN/s from random addresses of 198.19.128.0/17 (routed
//! nowhere: the answers die where they are made) while the client opens 20 new connections a
//! second to the same target, each given one second as in the measurement (a lost SYN
//! is a failure, not a retransmission).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use xdp_lb_tests::{
    DsrTopology, in_netns,
    packet::{FloodReport, SynFlood},
    service::http_fetch,
    topology::{VIP, backend_addr},
};

use crate::{DSR_PORT, NAT_PORT};

const RATE: u64 = 18_000;
const SOURCES: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 128, 0), 17);

pub(crate) struct FloodRow {
    pub(crate) name: &'static str,
    pub(crate) flood: FloodReport,
    pub(crate) ok: usize,
    pub(crate) tried: usize,
}

impl FloodRow {
    pub(crate) fn success_pct(&self) -> f64 {
        100.0 * self.ok as f64 / self.tried.max(1) as f64
    }
}

pub(crate) fn measure(topo: &DsrTopology, seconds: u32) -> anyhow::Result<Vec<FloodRow>> {
    let lb_mac = topo.lb.mac("eth0")?;
    let targets = [
        (
            "plain host, the kernel's SYN cookies (reference)",
            backend_addr(0),
            80,
            topo.backends[0].mac("eth0")?,
        ),
        ("xdp-lb, NAT", VIP, NAT_PORT, lb_mac),
        ("xdp-lb, L2 DSR", VIP, DSR_PORT, lb_mac),
    ];
    let src_mac = topo.client.mac("eth0")?;
    let seconds = u64::from(seconds.max(2));
    let tried = 20 * seconds as usize;
    let mut rows = Vec::new();
    for (name, dst, dport, dst_mac) in targets {
        eprintln!("compare: SYN flood at {name}");
        let flood = SynFlood {
            src_mac,
            dst_mac,
            sources: SOURCES,
            dst,
            dport,
            rate_per_s: RATE,
            count: RATE * seconds,
        };
        let client = topo.client.name.clone();
        let flooder = std::thread::spawn({
            let client = client.clone();
            move || in_netns(&client, move || flood.run("eth0"))
        });
        let ok = in_netns(&client, move || {
            // The flood first, then the client's connections spread over it.
            std::thread::sleep(Duration::from_millis(300));
            (0..tried)
                .filter(|_| {
                    std::thread::sleep(Duration::from_millis(40));
                    matches!(
                        http_fetch(SocketAddr::from((dst, dport)), "/", Duration::from_secs(1)),
                        Ok((200, _))
                    )
                })
                .count()
        })?;
        let flood = flooder
            .join()
            .map_err(|_| anyhow::anyhow!("the flooder panicked"))???;
        rows.push(FloodRow {
            name,
            flood,
            ok,
            tried,
        });
        // Let the half-open state of this row's flood settle before the next.
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(rows)
}
