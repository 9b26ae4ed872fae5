//! Health checks through the tunnel (`health_check.through_tunnel`): after the check's own
//! probe succeeds, a TCP SYN to the VIP's address and the check's port goes to the backend
//! inside the VIP's encapsulation (IPIP, IP6IP6, IPv4 in IPv6, or GUE to its port), from this
//! node's tunnel source and port `PROBE_PORT_BASE + backend id`. The backend, once it has
//! decapsulated it, answers from the VIP straight to that address, as it answers clients;
//! the XDP program records the answer in `TUNNEL_PROBES` and drops it (`tunnel/probe.rs` in
//! the program: no socket of this host waits for it, and the kernel would answer it with a
//! RST). The probe reads the record, checks its acknowledgement number, and resets the
//! backend's half-open connection.
//!
//! So a backend is up only if clients' packets can reach its service the way the data path
//! sends them: a backend whose decapsulation is missing, whose VIP is not on its loopback, or
//! whose service does not listen on the VIP goes down with that reason. The packets go out
//! through the kernel (raw and UDP sockets), which routes them as it routes the data path's.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use xdp_lb_common::{PROBE_PORT_BASE, ProbeReply, csum, map_names};

use super::failure::ProbeFailure;
use crate::clock::monotonic_ns;

/// How often the record is read while the answer is awaited.
const POLL: Duration = Duration::from_millis(5);
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Where a backend's check sends its probe through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPath {
    pub backend_id: u32,
    /// The backend's address (the outer destination).
    pub backend: IpAddr,
    /// The VIP and port the SYN is addressed to.
    pub vip: IpAddr,
    pub port: u16,
    /// GUE's port; None: IPIP / IP6IP6 / IPv4 in IPv6.
    pub gue_port: Option<u16>,
    /// The inner source: this node's tunnel source of the VIP's family, where the answer
    /// comes back to.
    pub inner_source: IpAddr,
    /// This node's tunnel source of the backend's family (the outer source, as the data path
    /// sends from it).
    pub outer_source: Option<IpAddr>,
    /// The pinned `TUNNEL_PROBES` map.
    pub probes_pin: PathBuf,
}

impl TunnelPath {
    fn mode(&self) -> &'static str {
        match (self.gue_port, self.vip, self.backend) {
            (Some(_), ..) => "GUE",
            (None, IpAddr::V4(_), IpAddr::V4(_)) => "IPIP",
            (None, IpAddr::V4(_), IpAddr::V6(_)) => "IPv4-in-IPv6",
            (None, ..) => "IP6IP6",
        }
    }
}

/// One probe through the tunnel, within `timeout`.
pub(super) async fn probe(path: &TunnelPath, timeout: Duration) -> Result<(), ProbeFailure> {
    let path = path.clone();
    tokio::task::spawn_blocking(move || probe_blocking(&path, timeout))
        .await
        .map_err(|e| ProbeFailure::Tunnel(format!("probe task: {e}")))?
}

fn probe_blocking(path: &TunnelPath, timeout: Duration) -> Result<(), ProbeFailure> {
    let setup = |e: String| ProbeFailure::Tunnel(format!("tunnel probe: {e}"));
    let probes = open_probes(path).map_err(setup)?;
    let socket = outer_socket(path).map_err(|e| setup(e.to_string()))?;
    let seq: u32 = rand_u32();
    let sport = PROBE_PORT_BASE + path.backend_id as u16;
    let send_syn = || {
        let sent_ns = monotonic_ns();
        send(&socket, path, &segment(path, sport, seq, TCP_SYN)).map(|()| sent_ns)
    };
    let mut sent_ns = send_syn().map_err(|e| setup(e.to_string()))?;
    let mut stale_resets = 0;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(reply) = probes.get(&path.backend_id, 0)
            && reply.seen_ns >= sent_ns
        {
            let ack = u32::from_be(reply.ack_be);
            let syn_ack = reply.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
            if ack == seq.wrapping_add(1) && (syn_ack || reply.tcp_flags & TCP_RST != 0) {
                if reply.tcp_flags & TCP_RST != 0 {
                    return Err(ProbeFailure::TunnelRefused(path.mode()));
                }
                // The backend holds a half-open connection for the probe: reset it.
                let _ = send(&socket, path, &segment(path, sport, ack, TCP_RST));
                return Ok(());
            }
            if reply.tcp_flags & TCP_RST == 0 && stale_resets < 2 {
                // The backend still holds an earlier probe's half-open connection (same ports)
                // and answers our SYN for that one (an ACK, or its SYN-ACK again): its reset
                // got lost. Reset it at the sequence number it expects, and ask again.
                stale_resets += 1;
                let _ = send(&socket, path, &segment(path, sport, ack, TCP_RST));
                sent_ns = send_syn().map_err(|e| setup(e.to_string()))?;
            }
        }
        if Instant::now() >= deadline {
            return Err(ProbeFailure::TunnelNoAnswer(
                path.mode(),
                humantime::format_duration(timeout).to_string(),
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn open_probes(path: &TunnelPath) -> Result<Array<MapData, ProbeReply>, String> {
    let name = map_names::TUNNEL_PROBES;
    let data = MapData::from_pin(&path.probes_pin).map_err(|e| format!("{name}: {e}"))?;
    Map::from_map_data(data)
        .and_then(Array::try_from)
        .map_err(|e| format!("{name}: {e}"))
}

/// The socket the outer packet leaves by: raw IP of the tunnel's protocol (the kernel adds
/// the outer header), or UDP to the GUE port.
fn outer_socket(path: &TunnelPath) -> std::io::Result<Socket> {
    let domain = if path.backend.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = match path.gue_port {
        Some(_) => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        None => {
            let inner = if path.vip.is_ipv6() { 41 } else { 4 };
            Socket::new(domain, Type::RAW, Some(Protocol::from(inner)))?
        }
    };
    if let Some(src) = path.outer_source {
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    }
    Ok(socket)
}

fn send(socket: &Socket, path: &TunnelPath, packet: &[u8]) -> std::io::Result<()> {
    let port = path.gue_port.unwrap_or(0);
    socket
        .send_to(packet, &SockAddr::from(SocketAddr::new(path.backend, port)))
        .map(drop)
}

/// The inner packet: IP header and a TCP segment without options, `flags` set.
fn segment(path: &TunnelPath, sport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&path.port.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let pseudo = match (path.inner_source, path.vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 6, 0, 20]);
            p
        }
        (s, d) => {
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&ipv6_octets(s));
            p.extend_from_slice(&ipv6_octets(d));
            p.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
            p
        }
    };
    let check = csum::checksum_of(csum::sum_be(&tcp, csum::sum_be(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    let mut packet = match (path.inner_source, path.vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&40u16.to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let check = csum::internet_checksum(&h);
            h[10..12].copy_from_slice(&check.to_be_bytes());
            h.to_vec()
        }
        (s, d) => {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&ipv6_octets(s));
            h[24..40].copy_from_slice(&ipv6_octets(d));
            h
        }
    };
    packet.extend_from_slice(&tcp);
    packet
}

fn ipv6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// A random 32-bit number (the SYN's sequence number: an answer must acknowledge it).
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: a buffer of the length passed.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        (monotonic_ns() as u32).wrapping_mul(0x9e37_79b1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(vip: &str, src: &str) -> TunnelPath {
        TunnelPath {
            backend_id: 3,
            backend: "198.18.1.11".parse().unwrap(),
            vip: vip.parse().unwrap(),
            port: 80,
            gue_port: None,
            inner_source: src.parse().unwrap(),
            outer_source: None,
            probes_pin: PathBuf::new(),
        }
    }

    #[test]
    fn the_probe_segment_has_valid_checksums() {
        let p = path("198.18.0.100", "198.18.0.2");
        let s = segment(&p, PROBE_PORT_BASE + 3, 0x0102_0304, TCP_SYN);
        assert_eq!(s.len(), 40);
        assert_eq!(csum::internet_checksum(&s[..20]), 0, "IPv4 header checksum");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&s[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        assert_eq!(
            csum::checksum_of(csum::sum_be(&s[20..], csum::sum_be(&pseudo, 0))),
            0,
            "TCP checksum"
        );
        assert_eq!(u16::from_be_bytes([s[20], s[21]]), PROBE_PORT_BASE + 3);
        assert_eq!(s[33], TCP_SYN);
        let p6 = path("2001:2::100", "2001:2::2");
        let s6 = segment(&p6, PROBE_PORT_BASE, 7, TCP_SYN | TCP_ACK);
        assert_eq!((s6.len(), s6[0] >> 4, s6[6]), (60, 6, 6));
        let mut pseudo6 = Vec::new();
        pseudo6.extend_from_slice(&s6[8..40]);
        pseudo6.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        assert_eq!(
            csum::checksum_of(csum::sum_be(&s6[40..], csum::sum_be(&pseudo6, 0))),
            0
        );
    }
}
