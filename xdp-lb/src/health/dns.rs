//! The `dns` check (keepalived's DNS_CHECK): one query over UDP to the backend, up when a
//! response to *that* query arrives with the expected rcode. The message is small enough to
//! build by hand (RFC 1035 §4.1); nothing of the answer section is parsed.

use std::{
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
};

use tokio::net::UdpSocket;

use super::failure::ProbeFailure;
use crate::config::DnsCheckConfig;

/// RFC 1035 §4.1.1: the fixed header is 12 octets.
const HEADER_LEN: usize = 12;
/// The largest answer we read; a plain DNS/UDP message is at most 512 octets (RFC 1035 §2.3.4),
/// EDNS0 answers more, and a truncated read still carries the header we need.
const MAX_ANSWER: usize = 4096;
/// Datagrams from the backend that are not our answer (a late answer to an earlier probe, a
/// garbled one) are skipped, a bounded number of times.
const MAX_STRAY: usize = 16;

/// The names of the rcodes of RFC 1035 §4.1.1 and RFC 2136, for the log.
fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// The query for `check` with message id `id`: recursion desired (a resolver backend answers
/// from its cache or forwards; an authoritative one ignores the bit), class IN.
pub(super) fn query(check: &DnsCheckConfig, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + check.name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // QR=0, OPCODE=QUERY, RD=1
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT=1, AN/NS/ARCOUNT=0
    // The name was checked by the config (labels of 1..=63 octets).
    for label in check.name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&check.qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // CLASS IN
    q
}

/// What a datagram says about query `id`: None when it is not the answer to it (another id, a
/// query rather than a response, shorter than a header), else its rcode.
pub(super) fn answer_rcode(answer: &[u8], id: u16) -> Option<u8> {
    if answer.len() < HEADER_LEN || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0 {
        return None;
    }
    Some(answer[3] & 0x0f)
}

/// A fresh message id per probe (RFC 5452 §9.2: ids are not guessable). The socket is also
/// connected, so only the backend's address and port can answer.
fn message_id() -> u16 {
    RandomState::new().hash_one(std::time::Instant::now()) as u16
}

/// One probe. The caller bounds it with the check's timeout.
pub(super) async fn probe(check: &DnsCheckConfig, addr: SocketAddr) -> Result<(), ProbeFailure> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| ProbeFailure::Socket(e.to_string()))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| ProbeFailure::Socket(format!("connect: {e}")))?;
    let id = message_id();
    socket
        .send(&query(check, id))
        .await
        .map_err(|e| describe(&e, ProbeFailure::Send))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    for _ in 0..MAX_STRAY {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| describe(&e, ProbeFailure::Read))?;
        match answer_rcode(&buf[..n], id) {
            Some(rcode) if rcode == check.rcode => return Ok(()),
            Some(rcode) => return Err(ProbeFailure::DnsRcode(rcode_name(rcode))),
            None => continue,
        }
    }
    Err(ProbeFailure::NoAnswer)
}

/// ICMP port unreachable surfaces on a connected UDP socket as ECONNREFUSED: nothing listens.
fn describe(e: &std::io::Error, doing: fn(String) -> ProbeFailure) -> ProbeFailure {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ProbeFailure::PortUnreachable,
        _ => doing(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rcode: u8) -> DnsCheckConfig {
        DnsCheckConfig {
            name: "whoami.example".into(),
            qtype: 1,
            rcode,
        }
    }

    #[test]
    fn the_query_is_rfc1035_wire_format() {
        let q = query(&check(0), 0xbeef);
        assert_eq!(
            q,
            [
                &[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x06whoami\x07example\x00",
                &[0, 1, 0, 1],
            ]
            .concat()
        );
    }

    #[test]
    fn the_root_is_one_zero_octet() {
        let root = DnsCheckConfig {
            name: String::new(),
            qtype: 6,
            rcode: 0,
        };
        assert_eq!(&query(&root, 1)[12..], &[0, 0, 6, 0, 1]);
    }

    #[test]
    fn only_a_response_with_our_id_counts() {
        let mut a = query(&check(0), 7);
        assert_eq!(answer_rcode(&a, 7), None, "a query is not an answer");
        a[2] |= 0x80;
        a[3] = 0x83; // RA, NXDOMAIN
        assert_eq!(answer_rcode(&a, 7), Some(3));
        assert_eq!(answer_rcode(&a, 8), None);
        assert_eq!(answer_rcode(&a[..11], 7), None);
    }

    /// A responder that answers every query with `rcode`, after one stray datagram.
    async fn responder(rcode: u8) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut a = buf[..n].to_vec();
                let _ = s.send_to(b"garbage", from).await;
                a[2] |= 0x80;
                a[3] = rcode;
                let _ = s.send_to(&a, from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_compare_the_rcode() {
        assert_eq!(probe(&check(0), responder(0).await).await, Ok(()));
        assert_eq!(
            probe(&check(0), responder(3).await).await,
            Err(ProbeFailure::DnsRcode("NXDOMAIN".into()))
        );
        assert_eq!(probe(&check(3), responder(3).await).await, Ok(()));
    }

    #[tokio::test]
    async fn nothing_listening_is_port_unreachable() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), probe(&check(0), closed))
            .await
            .expect("the ICMP error ends the probe");
        assert_eq!(r, Err(ProbeFailure::PortUnreachable));
    }
}
