//! The peers xdp-lb is compared with, and the processes of the bed: nginx backends, haproxy
//! `mode tcp` on a second LB node, nftables DNAT + masquerade on a third.

use std::{net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use xdp_lb_tests::{
    NetNs,
    peers::{Proc, spawn_in},
    topology::backend_addr,
};

use crate::{HAPROXY_PORT, NAT_LB, NFT_PORT, PEER_LB};

/// haproxy on a second LB node, nftables on a third (a nat table turns conntrack on for
/// everything in its namespace, which would tax the other rows). Removed when dropped.
pub(crate) struct Peers {
    /// Stopped first (fields drop in order), then the namespaces go.
    pub(crate) haproxy: Proc,
    _haproxy_node: NetNs,
    _nft_node: NetNs,
}

impl Peers {
    pub(crate) fn start(topo: &xdp_lb_tests::DsrTopology, dir: &Path) -> anyhow::Result<Self> {
        let peer = NetNs::new("peer")?;
        topo.plug(&peer, "p-peer", PEER_LB)?;
        let natbox = NetNs::new("nat")?;
        topo.plug(&natbox, "p-nat", NAT_LB)?;
        natbox.sysctl("net.ipv4.ip_forward", "1")?;
        // NAPI on its veth (as a real NIC has): without it a veth queues received frames on
        // the CPU's backlog, which a burst of live frames overflows at once (66 of 200 000 got
        // in).
        natbox.exec(&["ethtool", "-K", "eth0", "gro", "on"])?;
        // Tuned as an operator of a NAT box would: conntrack keeps TIME_WAIT entries for 120 s,
        // which at this rate fills the table within a round and drops new connections.
        natbox.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")?;
        // A new connection per request at tens of thousands per second exhausts the default
        // ephemeral range within a round (TIME_WAIT lasts 60 s): widen it and allow reuse where
        // connections originate (the client, and the proxy's side towards the backends).
        for ns in [&topo.client, &peer] {
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        let backends: Vec<Ipv4Addr> = (0..3).map(backend_addr).collect();
        let haproxy_cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &haproxy_cfg,
            format!(
                "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
                 frontend f\n  bind {PEER_LB}:{HAPROXY_PORT}\n  default_backend b\nbackend b\n  balance roundrobin\n{}",
                backends
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("  server be{i} {a}:80\n"))
                    .collect::<String>()
            ),
        )?;
        let haproxy = spawn_in(
            &peer,
            &[
                "haproxy",
                "-db",
                "-f",
                haproxy_cfg.to_str().context("path")?,
            ],
            &dir.join("haproxy.log"),
        )?;
        let nft = dir.join("dnat.nft");
        std::fs::write(
            &nft,
            format!(
                "table ip xlbt_nat {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n\
                     ip daddr {NAT_LB} tcp dport {NFT_PORT} dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }} : 80\n  }}\n\
                   chain post {{\n    type nat hook postrouting priority srcnat;\n    ip daddr 198.18.0.0/24 tcp dport 80 masquerade\n  }}\n}}\n",
                backends[0], backends[1], backends[2]
            ),
        )?;
        natbox.exec(&["nft", "-f", nft.to_str().context("path")?])?;
        Ok(Self {
            haproxy,
            _haproxy_node: peer,
            _nft_node: natbox,
        })
    }
}
