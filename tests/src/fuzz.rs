//! The fuzzer's judge (`cargo xtask fuzz`, `src/bin/fuzz.rs`): what a frame the program sent
//! must be, checked from scratch, independently of the code under test. Also its random
//! numbers and mutations, so that a seed replays a run exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::{checksum, l4_checksum, l4_checksum6};

/// xorshift64*: small, fast, and the same sequence for a seed on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Bytes where header fields live in our frames (Ethernet, IPv4 or IPv6, TCP/UDP), for the
/// mutations that aim at fields rather than anywhere.
const HOT: [usize; 24] = [
    12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 33, 34, 35, 36, 37, 46, 47, 53, 54,
];

/// One mutation of `f` (another corpus frame `other` for splices).
pub fn mutate(rng: &mut Rng, f: &mut Vec<u8>, other: &[u8]) {
    if f.is_empty() {
        f.push(0);
    }
    match rng.below(9) {
        // A few bits anywhere.
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        // A header byte set to a boundary value.
        1 => {
            let i = HOT[rng.below(HOT.len())].min(f.len() - 1);
            f[i] = [0, 1, 0x7f, 0x80, 0xff, 5, 6, 17, 4, 41, 0x45, 0x60][rng.below(12)];
        }
        // A random byte anywhere.
        2 => {
            let i = rng.below(f.len());
            f[i] = rng.next_u64() as u8;
        }
        // Truncated.
        3 => {
            let n = rng.below(f.len());
            f.truncate(n.max(1));
        }
        // Extended with junk.
        4 => {
            for _ in 0..1 + rng.below(64) {
                f.push(rng.next_u64() as u8);
            }
        }
        // A 16-bit field (a length, a port, a checksum) set to an edge.
        5 => {
            let i = HOT[rng.below(HOT.len())].min(f.len().saturating_sub(2));
            let v: u16 = [
                0,
                1,
                0xffff,
                0x8000,
                f.len() as u16,
                (f.len() as u16).wrapping_sub(14),
            ][rng.below(6)];
            if i + 2 <= f.len() {
                f[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        // Spliced with another frame at a random point.
        6 if !other.is_empty() => {
            let at = rng.below(f.len());
            let from = rng.below(other.len());
            f.truncate(at);
            f.extend_from_slice(&other[from..]);
        }
        // Bytes inserted in the middle (header chains shift).
        7 => {
            let at = rng.below(f.len());
            let n = [2, 4, 8, 20, 40][rng.below(5)];
            let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            f.splice(at..at, junk);
        }
        // Left as it is: the valid frame again (states change between runs).
        _ => {}
    }
}

/// The IP layer of a frame: where it starts and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ip {
    pub l3: usize,
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol and where it starts (after IPv6 extension headers).
    pub proto: u8,
    pub l4: usize,
    /// Where the IP packet ends (its lengths), within the frame.
    pub end: usize,
    /// A fragment: no L4 header to check.
    pub fragment: bool,
    /// IPv4: the header checksum holds.
    pub header_ok: bool,
}

/// After the Ethernet header and up to two VLAN tags: the ethertype and the offset.
fn l2(f: &[u8]) -> Option<(u16, usize)> {
    let mut at = 12;
    for _ in 0..3 {
        let t = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
        if t == 0x8100 || t == 0x88a8 {
            at += 4;
        } else {
            return Some((t, at + 2));
        }
    }
    None
}

/// The IP packet starting at `l3` (IPv4 or IPv6 by its version nibble), or why it is not one.
pub fn ip_at(f: &[u8], l3: usize) -> Result<Ip, String> {
    let b0 = *f.get(l3).ok_or("no IP header")?;
    match b0 >> 4 {
        4 => {
            let h = f.get(l3..l3 + 20).ok_or("IPv4 header cut")?;
            let ihl = (h[0] & 0xf) as usize * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if ihl < 20 || total < ihl || l3 + total > f.len() {
                return Err(format!(
                    "IPv4 lengths: ihl {ihl}, total {total}, {} bytes after it",
                    f.len() - l3
                ));
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            Ok(Ip {
                l3,
                v6: false,
                src: IpAddr::from([h[12], h[13], h[14], h[15]]),
                dst: IpAddr::from([h[16], h[17], h[18], h[19]]),
                proto: h[9],
                l4: l3 + ihl,
                end: l3 + total,
                fragment: frag & 0x3fff != 0,
                header_ok: checksum(&f[l3..l3 + ihl]) == 0,
            })
        }
        6 => {
            let h = f.get(l3..l3 + 40).ok_or("IPv6 header cut")?;
            let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
            if l3 + 40 + payload > f.len() {
                return Err(format!(
                    "IPv6 payload length {payload}, {} bytes after the header",
                    f.len() - l3 - 40
                ));
            }
            let (mut next, mut at, mut fragment) = (h[6], l3 + 40, false);
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        let e = f.get(at..at + 2).ok_or("extension header cut")?;
                        next = e[0];
                        at += (e[1] as usize + 1) * 8;
                    }
                    44 => {
                        fragment = true;
                        next = *f.get(at).ok_or("fragment header cut")?;
                        at += 8;
                    }
                    _ => break,
                }
            }
            let src: [u8; 16] = h[8..24].try_into().map_err(|_| "src")?;
            let dst: [u8; 16] = h[24..40].try_into().map_err(|_| "dst")?;
            Ok(Ip {
                l3,
                v6: true,
                src: IpAddr::from(Ipv6Addr::from(src)),
                dst: IpAddr::from(Ipv6Addr::from(dst)),
                proto: next,
                l4: at,
                end: l3 + 40 + payload,
                fragment,
                header_ok: true,
            })
        }
        v => Err(format!("IP version {v}")),
    }
}

/// The frame's IP layer.
pub fn ip(f: &[u8]) -> Result<Ip, String> {
    let (t, l3) = l2(f).ok_or("Ethernet header cut")?;
    match t {
        0x0800 | 0x86dd => ip_at(f, l3),
        t => Err(format!("ethertype {t:#06x}")),
    }
}

/// Whether the TCP or UDP segment of `ip` carries a right checksum (None: not TCP/UDP, a
/// fragment, or too short to have one). UDP over IPv4 may carry none (0).
pub fn l4_ok(f: &[u8], ip: &Ip) -> Option<bool> {
    if ip.fragment || !matches!(ip.proto, 6 | 17) || ip.l4 > ip.end {
        return None;
    }
    let seg = &f[ip.l4..ip.end];
    if (ip.proto == 6 && seg.len() < 20) || (ip.proto == 17 && seg.len() < 8) {
        return None;
    }
    if ip.proto == 17 && !ip.v6 && seg[6..8] == [0, 0] {
        return Some(true);
    }
    let sum = match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => l4_checksum(s, d, ip.proto, seg),
        (IpAddr::V6(s), IpAddr::V6(d)) => l4_checksum6(s, d, ip.proto, seg),
        _ => return None,
    };
    Some(sum == 0)
}

/// The innermost IP packet of a frame: through IPIP (4), IP6IP6 / 4in6 (41) and GUE (UDP to
/// `gue_port`, the inner packet right after the UDP header: GUE variant 1).
pub fn innermost(f: &[u8], gue_port: u16) -> Result<(Ip, Option<Ip>), String> {
    let outer = ip(f)?;
    let inner_at = match outer.proto {
        4 | 41 => Some(outer.l4),
        17 if f.get(outer.l4 + 2..outer.l4 + 4) == Some(&gue_port.to_be_bytes()) => {
            Some(outer.l4 + 8)
        }
        _ => None,
    };
    match inner_at {
        Some(at) if !outer.fragment => Ok((outer.clone(), Some(ip_at(&f[..outer.end], at)?))),
        _ => Ok((outer, None)),
    }
}

/// What the run of one frame must satisfy when the program sent it (XDP_TX or
/// XDP_REDIRECT): `input` went in, `out` came out. An empty answer: all holds.
pub fn judge_sent(input: &[u8], out: &[u8], gue_port: u16) -> Result<(), String> {
    let (outer, inner) =
        innermost(out, gue_port).map_err(|e| format!("the frame sent does not parse: {e}"))?;
    let Ok(inp) = ip(input) else {
        return Err("a frame that does not parse as IP was sent".into());
    };
    // A header the program built (a tunnel's outer one) is right; one it passed on is as right
    // as it came (DSR does not judge the client's checksums: the receiver does).
    if !outer.header_ok && (inner.is_some() || inp.header_ok) {
        return Err("the IPv4 header checksum of the frame sent is wrong".into());
    }
    // The IP packet fills the frame, but for what came after it on the way in (an Ethernet
    // trailer or padding, passed on as it was) and Ethernet's minimum padding.
    let slack = out.len() - outer.end;
    let slack_in = input.len() - inp.end;
    if slack > slack_in && out.len() > 64 + 8 {
        return Err(format!(
            "{slack} bytes after the IP packet in a {}-byte frame ({slack_in} after it on the way in)",
            out.len()
        ));
    }
    let sent = inner.as_ref().unwrap_or(&outer);
    if let Some(inner) = &inner {
        // A tunnel: the client's packet inside, as it came (but for a clamped MSS and the TCP
        // checksum that follows it).
        if !inner.header_ok && inp.header_ok {
            return Err("the inner IPv4 header checksum is wrong".into());
        }
        let a = &input[inp.l3..inp.end];
        let b = &out[inner.l3..inner.end];
        if a.len() != b.len() {
            return Err(format!(
                "the inner packet is {} bytes, the client's {}",
                b.len(),
                a.len()
            ));
        }
        let allowed = |i: usize| {
            let l4 = inp.l4 - inp.l3;
            inp.proto == 6 && (i == l4 + 16 || i == l4 + 17 || (i >= l4 + 20 && i < l4 + 60))
        };
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i] && !allowed(i)) {
            return Err(format!(
                "the inner packet differs from the client's at byte {i}"
            ));
        }
    } else if out.len() == input.len() {
        // DSR or NAT: the same frame, changed only where the mode may change it.
        let same_addresses = inp.src == outer.src && inp.dst == outer.dst;
        let allowed = |i: usize| -> bool {
            if i < 12 {
                return true; // MACs
            }
            if same_addresses {
                return false; // DSR: the MACs only
            }
            let r = i.wrapping_sub(inp.l3);
            let ip_fields = if inp.v6 {
                r == 7 || (8..40).contains(&r)
            } else {
                r == 8 || r == 10 || r == 11 || (12..20).contains(&r)
            };
            let l = i.wrapping_sub(inp.l4);
            let l4_fields = l < 4
                || (inp.proto == 6 && (l == 16 || l == 17))
                || (inp.proto == 17 && (l == 6 || l == 7));
            ip_fields || l4_fields
        };
        if let Some(i) = (0..input.len()).find(|&i| input[i] != out[i] && !allowed(i)) {
            return Err(format!(
                "byte {i} changed ({:#04x} → {:#04x}) where {} may not change it",
                input[i],
                out[i],
                if same_addresses {
                    "DSR (MACs only)"
                } else {
                    "NAT (addresses, ports, checksums, TTL)"
                }
            ));
        }
    }
    // A right L4 checksum stays right through any rewrite (NAT's incremental update, a
    // clamped MSS).
    if l4_ok(input, &inp) == Some(true) && l4_ok(out, sent) == Some(false) {
        return Err("the L4 checksum was right on the way in and is wrong on the way out".into());
    }
    Ok(())
}

/// An IPv4 address in the test's client range, for corpus frames.
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Frame;

    #[test]
    fn the_judge_accepts_a_mac_rewrite_and_refuses_what_dsr_may_not_do() {
        let f = Frame::tcp(client(1), 4000, Ipv4Addr::new(198, 18, 0, 100), 80).build();
        let mut out = f.clone();
        out[0..6].copy_from_slice(&[2, 0xbe, 0, 0, 0, 1]);
        assert_eq!(judge_sent(&f, &out, 6080), Ok(()));
        let mut bad = out.clone();
        bad[50] ^= 1; // a TCP flag
        assert!(judge_sent(&f, &bad, 6080).unwrap_err().contains("DSR"));
        let mut bad = out.clone();
        bad[24] ^= 1; // the IPv4 checksum
        assert!(
            judge_sent(&f, &bad, 6080)
                .unwrap_err()
                .contains("header checksum")
        );
    }

    #[test]
    fn mutations_replay_from_their_seed() {
        let f = Frame::tcp(client(1), 4000, Ipv4Addr::new(198, 18, 0, 100), 80).build();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut v = f.clone();
            for _ in 0..50 {
                mutate(&mut rng, &mut v, &f);
            }
            v
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
