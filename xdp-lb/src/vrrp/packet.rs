//! VRRP advertisements on the wire: VRRPv3 (RFC 5798 §5.1, RFC 9568) over IPv4 and IPv6, and
//! VRRPv2 (RFC 3768 §5.1, IPv4 only). Encoding, decoding and every receive check of RFC 5798
//! §7.1 that needs only the packet, each failing with its own [`RejectReason`] so it can be
//! counted. The addresses an advert carries are of the family it travels in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use xdp_lb_common::csum::{checksum_of, sum_be};

use crate::config::{ChecksumMode, Version};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP multicast group (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The VRRP multicast group for IPv6 (RFC 5798 §5.1.2.2): link-local scope.
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent with TTL 255 and a multicast advert with another TTL was forwarded by a
/// router, so it is not from our segment (RFC 5798 §5.1.1.3, §7.1).
pub const VRRP_TTL: u8 = 255;
const TYPE_ADVERTISEMENT: u8 = 1;
const V2_AUTH_DATA_LEN: usize = 8;

/// An advertisement's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: centiseconds (12 bits); v2: seconds × 100 (so both are centiseconds here).
    pub interval_cs: u16,
    /// All of the family the advert travels in.
    pub addresses: Vec<IpAddr>,
}

/// Why a received packet was not accepted. Each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Multicast advert with TTL ≠ 255.
    Ttl,
    /// Not the configured VRRP version.
    Version,
    /// Not an advertisement (type ≠ 1).
    Type,
    /// Another VRID (normal on a shared segment; counted, not logged).
    Vrid,
    Checksum,
    /// Shorter than the header and the addresses it announces.
    Short,
    /// Sent from one of our own addresses.
    Own,
    /// VRRPv2: advertisement interval different from ours (RFC 3768 §7.1).
    Interval,
    /// VRRPv2 with authentication (not supported; RFC 3768 §5.3.6 deprecates it).
    Auth,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Ttl,
        RejectReason::Version,
        RejectReason::Type,
        RejectReason::Vrid,
        RejectReason::Checksum,
        RejectReason::Short,
        RejectReason::Own,
        RejectReason::Interval,
        RejectReason::Auth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RejectReason::Ttl => "ttl",
            RejectReason::Version => "version",
            RejectReason::Type => "type",
            RejectReason::Vrid => "vrid",
            RejectReason::Checksum => "checksum",
            RejectReason::Short => "short",
            RejectReason::Own => "own",
            RejectReason::Interval => "interval",
            RejectReason::Auth => "auth",
        }
    }
}

/// The checksum over `msg` (RFC 5798 §5.2.8). Over IPv6 it always covers the IPv6
/// pseudo-header (RFC 8200 §8.1: addresses, upper-layer length, next header); over IPv4 only
/// in the `PseudoHeader` form of VRRPv3 (VRRP.md: the interop trap).
fn checksum(msg: &[u8], version: Version, mode: ChecksumMode, src: IpAddr, dst: IpAddr) -> u16 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum_be(&s.octets(), acc);
            acc = sum_be(&d.octets(), acc);
            acc = sum_be(&(msg.len() as u32).to_be_bytes(), acc);
            acc += IPPROTO_VRRP as u32;
        }
        (s, d) if version == Version::V3 && mode == ChecksumMode::PseudoHeader => {
            acc = sum_be(&octets(s), acc);
            acc = sum_be(&octets(d), acc);
            acc += IPPROTO_VRRP as u32;
            acc += msg.len() as u32;
        }
        _ => {}
    }
    checksum_of(sum_be(msg, acc))
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Advert {
    /// The VRRP message (without the IP header), checksum filled in for `src` → `dst`.
    pub fn encode(&self, mode: ChecksumMode, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + 16 * self.addresses.len() + V2_AUTH_DATA_LEN);
        let version = match self.version {
            Version::V2 => 2u8,
            Version::V3 => 3u8,
        };
        m.push((version << 4) | TYPE_ADVERTISEMENT);
        m.push(self.vrid);
        m.push(self.priority);
        m.push(self.addresses.len() as u8);
        match self.version {
            Version::V3 => m.extend_from_slice(&(self.interval_cs & 0x0fff).to_be_bytes()),
            Version::V2 => {
                m.push(0); // auth type: none
                m.push((self.interval_cs / 100).clamp(1, 255) as u8);
            }
        }
        m.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            m.extend_from_slice(&octets(*a));
        }
        if self.version == Version::V2 {
            m.extend_from_slice(&[0; V2_AUTH_DATA_LEN]);
        }
        let c = checksum(&m, self.version, mode, src, dst);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// Decodes and checks a VRRP message received from `src` to `dst`. `expected` is the
    /// configured version; `vrid` ours.
    pub fn decode(
        msg: &[u8],
        expected: Version,
        vrid: u8,
        mode: ChecksumMode,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Advert, RejectReason> {
        let width = if src.is_ipv6() { 16 } else { 4 };
        if msg.len() < 8 {
            return Err(RejectReason::Short);
        }
        let version = match msg[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(RejectReason::Version),
        };
        if version != expected {
            return Err(RejectReason::Version);
        }
        if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(RejectReason::Type);
        }
        let count = msg[3] as usize;
        let needed = 8
            + width * count
            + if version == Version::V2 {
                V2_AUTH_DATA_LEN
            } else {
                0
            };
        if msg.len() < needed {
            return Err(RejectReason::Short);
        }
        let msg = &msg[..needed];
        if checksum(msg, version, mode, src, dst) != 0 {
            return Err(RejectReason::Checksum);
        }
        if msg[1] != vrid {
            return Err(RejectReason::Vrid);
        }
        let interval_cs = match version {
            Version::V3 => u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff,
            Version::V2 => {
                if msg[4] != 0 {
                    return Err(RejectReason::Auth);
                }
                msg[5] as u16 * 100
            }
        };
        let addresses = (0..count)
            .map(|i| {
                let o = 8 + width * i;
                if width == 16 {
                    let b: [u8; 16] = msg[o..o + 16].try_into().expect("16 bytes");
                    IpAddr::V6(b.into())
                } else {
                    IpAddr::V4(Ipv4Addr::new(msg[o], msg[o + 1], msg[o + 2], msg[o + 3]))
                }
            })
            .collect();
        Ok(Advert {
            version,
            vrid: msg[1],
            priority: msg[2],
            interval_cs,
            addresses,
        })
    }
}

/// A received IPv4 packet as a raw socket delivers it: the IP header, then the VRRP message.
/// Returns (source, destination, TTL, VRRP message).
pub fn split_ipv4(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if ihl < 20 || packet.len() < ihl || total < ihl {
        return None;
    }
    let end = total.min(packet.len());
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst, packet[8], &packet[ihl..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const G: IpAddr = IpAddr::V4(VRRP_GROUP);

    fn advert(version: Version) -> Advert {
        Advert {
            version,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
        }
    }

    #[test]
    fn round_trips_in_every_version_and_checksum_form() {
        for version in [Version::V2, Version::V3] {
            for mode in [ChecksumMode::Rfc9568, ChecksumMode::PseudoHeader] {
                let a = advert(version);
                let m = a.encode(mode, SRC, G);
                assert_eq!(
                    Advert::decode(&m, version, 51, mode, SRC, G),
                    Ok(a.clone()),
                    "{version:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn the_two_v3_checksum_forms_do_not_accept_each_other() {
        let m = advert(Version::V3).encode(ChecksumMode::PseudoHeader, SRC, G);
        assert_eq!(
            Advert::decode(&m, Version::V3, 51, ChecksumMode::Rfc9568, SRC, G),
            Err(RejectReason::Checksum)
        );
        // The pseudo-header binds the addresses: the same bytes from another source fail.
        assert_eq!(
            Advert::decode(
                &m,
                Version::V3,
                51,
                ChecksumMode::PseudoHeader,
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3)),
                G
            ),
            Err(RejectReason::Checksum)
        );
    }

    #[test]
    fn keepalived_v3_advert_bytes_decode() {
        // A VRRPv3 advert as keepalived 2.2 sends it (default: pseudo-header checksum):
        // vrid 51, priority 100, 1 s, 198.18.0.100, from 198.18.0.3 to 224.0.0.18. The checksum
        // 0xfd4b was computed by hand (RFC 1071 over pseudo-header + message), not by this code.
        let src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
        let m = [0x31, 51, 100, 1, 0x00, 0x64, 0xfd, 0x4b, 198, 18, 0, 100];
        let a = Advert::decode(&m, Version::V3, 51, ChecksumMode::PseudoHeader, src, G).unwrap();
        assert_eq!(
            (a.priority, a.interval_cs, a.addresses.len()),
            (100, 100, 1)
        );
    }

    /// VRRPv3 over IPv6: 16-byte addresses and a checksum over the IPv6 pseudo-header,
    /// checked here against a sum computed independently from the RFC 8200 §8.1 layout.
    #[test]
    fn ipv6_adverts_round_trip_with_the_pseudo_header() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst = IpAddr::V6(VRRP_GROUP_V6);
        let a = Advert {
            version: Version::V3,
            vrid: 52,
            priority: 100,
            interval_cs: 10,
            addresses: vec![
                "2001:2::100".parse().unwrap(),
                "2001:2::101".parse().unwrap(),
            ],
        };
        // Either checksum setting: over IPv6 the pseudo-header is always in.
        let m = a.encode(ChecksumMode::Rfc9568, src, dst);
        assert_eq!(m.len(), 8 + 32);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        pseudo.extend_from_slice(&VRRP_GROUP_V6.octets());
        pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
        pseudo.extend_from_slice(&m);
        assert_eq!(xdp_lb_common::csum::internet_checksum(&pseudo), 0);
        for mode in [ChecksumMode::Rfc9568, ChecksumMode::PseudoHeader] {
            assert_eq!(
                Advert::decode(&m, Version::V3, 52, mode, src, dst),
                Ok(a.clone())
            );
        }
        let other: IpAddr = "fe80::2".parse().unwrap();
        assert_eq!(
            Advert::decode(&m, Version::V3, 52, ChecksumMode::Rfc9568, other, dst),
            Err(RejectReason::Checksum)
        );
        assert_eq!(
            Advert::decode(&m[..30], Version::V3, 52, ChecksumMode::Rfc9568, src, dst),
            Err(RejectReason::Short),
            "two 16-byte addresses announced"
        );
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let good = advert(Version::V3).encode(ChecksumMode::Rfc9568, SRC, G);
        let d = |m: &[u8]| Advert::decode(m, Version::V3, 51, ChecksumMode::Rfc9568, SRC, G);
        assert_eq!(d(&good[..7]), Err(RejectReason::Short));
        assert_eq!(
            d(&good[..10]),
            Err(RejectReason::Short),
            "fewer address bytes than the count says"
        );
        let mut v4 = good.clone();
        v4[0] = 0x41;
        assert_eq!(d(&v4), Err(RejectReason::Version));
        let v2 = advert(Version::V2).encode(ChecksumMode::Rfc9568, SRC, G);
        assert_eq!(d(&v2), Err(RejectReason::Version));
        let re = |mut m: Vec<u8>| {
            m[6] = 0;
            m[7] = 0;
            let c = checksum(&m, Version::V3, ChecksumMode::Rfc9568, SRC, G);
            m[6..8].copy_from_slice(&c.to_be_bytes());
            m
        };
        let mut t2 = good.clone();
        t2[0] = 0x32;
        assert_eq!(d(&re(t2)), Err(RejectReason::Type));
        let mut other = good.clone();
        other[1] = 52;
        assert_eq!(d(&re(other)), Err(RejectReason::Vrid));
        let mut bad = good.clone();
        bad[2] = 255; // higher priority, stale checksum
        assert_eq!(d(&bad), Err(RejectReason::Checksum));
    }

    #[test]
    fn ip_header_is_split_off() {
        let msg = advert(Version::V3).encode(ChecksumMode::Rfc9568, SRC, G);
        let mut ip = vec![
            0x45,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            255,
            IPPROTO_VRRP,
            0,
            0,
            198,
            18,
            0,
            2,
            224,
            0,
            0,
            18,
        ];
        let total = (ip.len() + msg.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&msg);
        let (src, dst, ttl, m) = split_ipv4(&ip).unwrap();
        assert_eq!(
            (IpAddr::V4(src), IpAddr::V4(dst), ttl, m),
            (SRC, G, 255, &msg[..])
        );
        assert_eq!(split_ipv4(&ip[..10]), None);
    }
}
