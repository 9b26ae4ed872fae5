//! The sync datagram: a fixed header, up to [`MAX_RECORDS`] fixed-size flow records, and an
//! HMAC-SHA-256 over everything before it. All integers big-endian.
//!
//! ```text
//!  0  4  magic "XLBS"
//!  4  1  version (1)
//!  5  1  kind: 1 flows, 2 snapshot request, 3 snapshot chunk, 4 snapshot end
//!  6  2  record count
//!  8  4  sender's node id
//! 12  8  sender's epoch (its start time, ns since the Unix epoch: a restart raises it)
//! 20  8  sequence number within the epoch, from 1
//! 28  .. records, RECORD_LEN bytes each
//!  -32   HMAC-SHA-256 (RFC 2104) of all the bytes before it, with the shared key
//! ```
//!
//! A record (80 bytes): family (4 or 6), IP protocol (TCP or UDP), kind (1 DSR flow, 2 NAT
//! flow, 3 closed), NAT state bits, then the client's address, the VIP's, the backend's and
//! (NAT) the SNAT address, each in 16 bytes (IPv4 in the first 4, the rest zero), their ports,
//! and the seconds since the flow's last packet. Addresses, not ids: the nodes' backend ids
//! need not agree; the receiver finds the backend by its address and port in its own config.
//!
//! The decoder is written for hostile input: the cheap checks (length, magic, version, count)
//! first, then the MAC in constant time (`ring::hmac::verify`), and only then the records,
//! each checked field by field. Every refusal names its reason for the counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;
use xdp_lb_common::{IPPROTO_TCP, IPPROTO_UDP};

pub const MAGIC: [u8; 4] = *b"XLBS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 28;
pub const RECORD_LEN: usize = 80;
pub const MAC_LEN: usize = 32;
/// Records per datagram: a datagram stays under 1400 bytes, inside any path's MTU (no IP
/// fragments, which a firewall or the other node's XDP program would not pass reliably).
pub const MAX_RECORDS: usize = 16;
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_RECORDS * RECORD_LEN + MAC_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Flow changes as they happen.
    Flows = 1,
    /// "Send me everything": a node that starts cold, or returns to take the VIP back.
    SnapshotRequest = 2,
    /// Part of a snapshot (flow records).
    SnapshotChunk = 3,
    /// The snapshot is complete: the receiver may now become master.
    SnapshotEnd = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Dsr = 1,
    Nat = 2,
    /// The flow ended (closed or expired) on the sender.
    Closed = 3,
}

/// NAT state bits of a record (as the flow's `FLOW_F_ESTABLISHED` and `FLOW_F_CLOSING`).
pub const STATE_ESTABLISHED: u8 = 1 << 0;
pub const STATE_CLOSING: u8 = 1 << 1;

/// One flow as the sender's tables hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub kind: RecordKind,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub state: u8,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    /// For `Closed`, may be unspecified (port 0).
    pub backend: SocketAddr,
    /// NAT only: the source the backend sees.
    pub snat: Option<SocketAddr>,
    pub idle_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub node: u32,
    pub epoch: u64,
    pub seq: u64,
    pub records: Vec<FlowRecord>,
}

/// Why a datagram was refused; `name` is the counter's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a header and a MAC, or than its record count says.
    Truncated,
    /// Longer than its record count says, or more records than a datagram carries.
    BadLength,
    BadMagic,
    BadVersion,
    BadKind,
    /// The MAC does not match: not from a node that has the key, or altered on the way.
    BadMac,
    /// Record `n` does not describe a flow (a field out of its range).
    BadRecord(usize),
}

impl WireError {
    pub fn name(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadLength => "bad_length",
            WireError::BadMagic => "bad_magic",
            WireError::BadVersion => "bad_version",
            WireError::BadKind => "bad_kind",
            WireError::BadMac => "bad_mac",
            WireError::BadRecord(_) => "bad_record",
        }
    }
}

/// The HMAC key, made once from the key file's bytes.
pub struct Key(hmac::Key);

impl Key {
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }
}

/// The datagram for `msg` (at most [`MAX_RECORDS`] records; the caller batches).
pub fn encode(msg: &Message, key: &Key) -> Vec<u8> {
    assert!(msg.records.len() <= MAX_RECORDS, "the caller batches");
    let mut d = Vec::with_capacity(HEADER_LEN + msg.records.len() * RECORD_LEN + MAC_LEN);
    d.extend_from_slice(&MAGIC);
    d.push(VERSION);
    d.push(msg.kind as u8);
    d.extend_from_slice(&(msg.records.len() as u16).to_be_bytes());
    d.extend_from_slice(&msg.node.to_be_bytes());
    d.extend_from_slice(&msg.epoch.to_be_bytes());
    d.extend_from_slice(&msg.seq.to_be_bytes());
    for r in &msg.records {
        encode_record(r, &mut d);
    }
    let tag = hmac::sign(&key.0, &d);
    d.extend_from_slice(tag.as_ref());
    d
}

fn encode_record(r: &FlowRecord, d: &mut Vec<u8>) {
    let start = d.len();
    d.push(if r.vip.is_ipv4() { 4 } else { 6 });
    d.push(r.proto);
    d.push(r.kind as u8);
    d.push(r.state);
    let snat = r
        .snat
        .unwrap_or(SocketAddr::new(unspecified(r.vip.ip()), 0));
    for a in [r.client.ip(), r.vip.ip(), r.backend.ip(), snat.ip()] {
        d.extend_from_slice(&addr16(a));
    }
    for p in [r.client.port(), r.vip.port(), r.backend.port(), snat.port()] {
        d.extend_from_slice(&p.to_be_bytes());
    }
    d.extend_from_slice(&r.idle_s.to_be_bytes());
    d.resize(start + RECORD_LEN, 0);
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Reads and authenticates a datagram. The replay check is the caller's (`replay.rs`), after
/// this succeeded.
pub fn decode(d: &[u8], key: &Key) -> Result<Message, WireError> {
    if d.len() < HEADER_LEN + MAC_LEN {
        return Err(WireError::Truncated);
    }
    if d[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if d[4] != VERSION {
        return Err(WireError::BadVersion);
    }
    let count = u16::from_be_bytes([d[6], d[7]]) as usize;
    if count > MAX_RECORDS {
        return Err(WireError::BadLength);
    }
    let want = HEADER_LEN + count * RECORD_LEN + MAC_LEN;
    if d.len() < want {
        return Err(WireError::Truncated);
    }
    if d.len() > want {
        return Err(WireError::BadLength);
    }
    let (body, tag) = d.split_at(d.len() - MAC_LEN);
    hmac::verify(&key.0, body, tag).map_err(|_| WireError::BadMac)?;
    let kind = match d[5] {
        1 => MessageKind::Flows,
        2 => MessageKind::SnapshotRequest,
        3 => MessageKind::SnapshotChunk,
        4 => MessageKind::SnapshotEnd,
        _ => return Err(WireError::BadKind),
    };
    let u64_at = |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().unwrap_or_default());
    let records = body[HEADER_LEN..]
        .chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, r)| decode_record(r).ok_or(WireError::BadRecord(i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        kind,
        node: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        epoch: u64_at(12),
        seq: u64_at(20),
        records,
    })
}

/// One record, every field checked; None if any is out of range.
fn decode_record(r: &[u8]) -> Option<FlowRecord> {
    let v4 = match r[0] {
        4 => true,
        6 => false,
        _ => return None,
    };
    let proto = r[1];
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let kind = match r[2] {
        1 => RecordKind::Dsr,
        2 => RecordKind::Nat,
        3 => RecordKind::Closed,
        _ => return None,
    };
    let state = r[3];
    if state & !(STATE_ESTABLISHED | STATE_CLOSING) != 0 {
        return None;
    }
    let addr = |i: usize| -> Option<IpAddr> {
        let b: [u8; 16] = r[4 + 16 * i..20 + 16 * i].try_into().ok()?;
        if v4 {
            // An IPv4 address fills the first 4 bytes; the rest must be zero.
            (b[4..] == [0u8; 12]).then(|| Ipv4Addr::new(b[0], b[1], b[2], b[3]).into())
        } else {
            Some(Ipv6Addr::from(b).into())
        }
    };
    let port = |i: usize| u16::from_be_bytes([r[68 + 2 * i], r[69 + 2 * i]]);
    let (client, vip, backend, snat) = (addr(0)?, addr(1)?, addr(2)?, addr(3)?);
    let sock = |a: IpAddr, p: u16| SocketAddr::new(a, p);
    let (client, vip) = (sock(client, port(0)), sock(vip, port(1)));
    let (backend, snat) = (sock(backend, port(2)), sock(snat, port(3)));
    // A flow's own endpoints are real ones.
    if [client, vip]
        .iter()
        .any(|s| s.ip().is_unspecified() || s.port() == 0)
    {
        return None;
    }
    let backend_set = !backend.ip().is_unspecified() && backend.port() != 0;
    if kind != RecordKind::Closed && !backend_set {
        return None;
    }
    let snat_set = !snat.ip().is_unspecified() && snat.port() != 0;
    let snat_ok = match kind {
        RecordKind::Nat => snat_set,
        RecordKind::Dsr => !snat_set,
        // A closed NAT flow names its SNAT source (its port is free again), a DSR one not.
        RecordKind::Closed => true,
    };
    if !snat_ok {
        return None;
    }
    Some(FlowRecord {
        kind,
        proto,
        state,
        client,
        vip,
        backend,
        snat: snat_set.then_some(snat),
        idle_s: u32::from_be_bytes([r[76], r[77], r[78], r[79]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(&[0x42; 32])
    }

    fn sample() -> Message {
        let s = |a: &str| a.parse::<SocketAddr>().unwrap();
        Message {
            kind: MessageKind::Flows,
            node: 7,
            epoch: 1_700_000_000_000_000_000,
            seq: 42,
            records: vec![
                FlowRecord {
                    kind: RecordKind::Nat,
                    proto: IPPROTO_TCP,
                    state: STATE_ESTABLISHED,
                    client: s("198.19.1.10:40000"),
                    vip: s("198.18.0.100:443"),
                    backend: s("198.18.0.11:6443"),
                    snat: Some(s("198.18.0.200:20001")),
                    idle_s: 3,
                },
                FlowRecord {
                    kind: RecordKind::Dsr,
                    proto: IPPROTO_UDP,
                    state: 0,
                    client: s("[2001:2:1::10]:5353"),
                    vip: s("[2001:2::100]:53"),
                    backend: s("[2001:2::12]:53"),
                    snat: None,
                    idle_s: 0,
                },
                FlowRecord {
                    kind: RecordKind::Closed,
                    proto: IPPROTO_TCP,
                    state: STATE_CLOSING,
                    client: s("198.19.1.10:40001"),
                    vip: s("198.18.0.100:443"),
                    backend: s("0.0.0.0:0"),
                    snat: None,
                    idle_s: 0,
                },
            ],
        }
    }

    #[test]
    fn a_message_survives_the_round_trip() {
        let m = sample();
        let d = encode(&m, &key());
        assert_eq!(d.len(), HEADER_LEN + 3 * RECORD_LEN + MAC_LEN);
        assert_eq!(decode(&d, &key()), Ok(m));
        let full = Message {
            records: vec![sample().records[0]; MAX_RECORDS],
            ..sample()
        };
        let d = encode(&full, &key());
        assert!(d.len() <= MAX_DATAGRAM && MAX_DATAGRAM < 1400);
        assert_eq!(decode(&d, &key()).unwrap().records.len(), MAX_RECORDS);
    }

    #[test]
    fn another_key_or_any_changed_byte_is_refused() {
        let d = encode(&sample(), &key());
        assert_eq!(decode(&d, &Key::new(&[0x43; 32])), Err(WireError::BadMac));
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x01;
            let r = decode(&bad, &key());
            assert!(r.is_err(), "byte {i} changed and still accepted");
        }
    }

    #[test]
    fn cut_short_or_padded_datagrams_are_refused_by_reason() {
        let d = encode(&sample(), &key());
        for n in 0..d.len() {
            let r = decode(&d[..n], &key());
            assert!(matches!(r, Err(WireError::Truncated)), "{n} bytes: {r:?}");
        }
        let mut long = d.clone();
        long.push(0);
        assert_eq!(decode(&long, &key()), Err(WireError::BadLength));
        let mut many = d.clone();
        many[6..8].copy_from_slice(&(MAX_RECORDS as u16 + 1).to_be_bytes());
        assert_eq!(decode(&many, &key()), Err(WireError::BadLength));
        let mut magic = d.clone();
        magic[0] = b'Y';
        assert_eq!(decode(&magic, &key()), Err(WireError::BadMagic));
    }

    /// A record that is authentic (the sender has the key) but nonsense is refused by index:
    /// a buggy or compromised peer installs nothing odd.
    #[test]
    fn authentic_nonsense_is_refused_field_by_field() {
        let k = key();
        let resign = |mut d: Vec<u8>| {
            d.truncate(d.len() - MAC_LEN);
            let tag = hmac::sign(&k.0, &d);
            d.extend_from_slice(tag.as_ref());
            d
        };
        let good = encode(&sample(), &k);
        let rec = |i: usize, off: usize| HEADER_LEN + i * RECORD_LEN + off;
        let cases: Vec<(usize, u8)> = vec![
            (rec(0, 0), 5),     // family
            (rec(0, 1), 132),   // SCTP
            (rec(0, 2), 9),     // kind
            (rec(0, 3), 0x80),  // state bits
            (rec(0, 4 + 5), 1), // an IPv4 client address with bytes past the fourth
        ];
        for (at, value) in cases {
            let mut d = good.clone();
            d[at] = value;
            assert_eq!(
                decode(&resign(d), &k),
                Err(WireError::BadRecord(0)),
                "byte {at} = {value}"
            );
        }
        // A NAT record without its SNAT source, a DSR one with one, a flow without a backend.
        let mut d = good.clone();
        d[rec(0, 74)..rec(0, 76)].copy_from_slice(&[0, 0]);
        assert_eq!(decode(&resign(d), &k), Err(WireError::BadRecord(0)));
        let mut d = good.clone();
        d[rec(1, 2)] = RecordKind::Nat as u8;
        assert_eq!(decode(&resign(d), &k), Err(WireError::BadRecord(1)));
        let mut d = good.clone();
        d[rec(1, 72)..rec(1, 74)].copy_from_slice(&[0, 0]);
        assert_eq!(decode(&resign(d), &k), Err(WireError::BadRecord(1)));
        let mut d = good;
        d[5] = 9;
        assert_eq!(decode(&resign(d), &k), Err(WireError::BadKind));
    }

    #[test]
    fn random_bytes_never_panic_and_never_pass() {
        // xorshift: reproducible garbage of every length up to a full datagram.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let k = key();
        for n in 0..20_000usize {
            let len = n % (MAX_DATAGRAM + 8);
            let mut d = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d.push(x as u8);
            }
            if n % 3 == 0 && len >= 8 {
                // Past the cheap checks, so the MAC is what refuses it.
                d[..4].copy_from_slice(&MAGIC);
                d[4] = VERSION;
            }
            assert!(decode(&d, &k).is_err());
        }
    }
}
