//! VRRP advertisements on the wire: VRRPv3 (RFC 5798 §5.1, RFC 9568) and VRRPv2 (RFC 3768
//! §5.1), IPv4. Encoding, decoding and every receive check of RFC 5798 §7.1 that needs only
//! the packet, each failing with its own [`RejectReason`] so it can be counted.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use xdp_lb_common::csum::{checksum_of, sum_be};

use crate::config::{ChecksumMode, Version};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP multicast group (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
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
    pub addresses: Vec<Ipv4Addr>,
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

fn checksum(msg: &[u8], version: Version, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let mut acc = 0;
    if version == Version::V3 && mode == ChecksumMode::PseudoHeader {
        acc = sum_be(&src.octets(), acc);
        acc = sum_be(&dst.octets(), acc);
        acc += IPPROTO_VRRP as u32;
        acc += msg.len() as u32;
    }
    checksum_of(sum_be(msg, acc))
}

impl Advert {
    /// The VRRP message (without the IP header), checksum filled in for `src` → `dst`.
    pub fn encode(&self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + 4 * self.addresses.len() + V2_AUTH_DATA_LEN);
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
            m.extend_from_slice(&a.octets());
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
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Advert, RejectReason> {
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
            + 4 * count
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
                let o = 8 + 4 * i;
                Ipv4Addr::new(msg[o], msg[o + 1], msg[o + 2], msg[o + 3])
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

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn advert(version: Version) -> Advert {
        Advert {
            version,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            addresses: vec![Ipv4Addr::new(198, 18, 0, 100)],
        }
    }

    #[test]
    fn round_trips_in_every_version_and_checksum_form() {
        for version in [Version::V2, Version::V3] {
            for mode in [ChecksumMode::Rfc9568, ChecksumMode::PseudoHeader] {
                let a = advert(version);
                let m = a.encode(mode, SRC, VRRP_GROUP);
                assert_eq!(
                    Advert::decode(&m, version, 51, mode, SRC, VRRP_GROUP),
                    Ok(a.clone()),
                    "{version:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn the_two_v3_checksum_forms_do_not_accept_each_other() {
        let m = advert(Version::V3).encode(ChecksumMode::PseudoHeader, SRC, VRRP_GROUP);
        assert_eq!(
            Advert::decode(&m, Version::V3, 51, ChecksumMode::Rfc9568, SRC, VRRP_GROUP),
            Err(RejectReason::Checksum)
        );
        // The pseudo-header binds the addresses: the same bytes from another source fail.
        assert_eq!(
            Advert::decode(
                &m,
                Version::V3,
                51,
                ChecksumMode::PseudoHeader,
                Ipv4Addr::new(198, 18, 0, 3),
                VRRP_GROUP
            ),
            Err(RejectReason::Checksum)
        );
    }

    #[test]
    fn keepalived_v3_advert_bytes_decode() {
        // A VRRPv3 advert as keepalived 2.2 sends it (default: pseudo-header checksum):
        // vrid 51, priority 100, 1 s, 198.18.0.100, from 198.18.0.3 to 224.0.0.18. The checksum
        // 0xfd4b was computed by hand (RFC 1071 over pseudo-header + message), not by this code.
        let src = Ipv4Addr::new(198, 18, 0, 3);
        let m = [0x31, 51, 100, 1, 0x00, 0x64, 0xfd, 0x4b, 198, 18, 0, 100];
        let a = Advert::decode(
            &m,
            Version::V3,
            51,
            ChecksumMode::PseudoHeader,
            src,
            VRRP_GROUP,
        )
        .unwrap();
        assert_eq!(
            (a.priority, a.interval_cs, a.addresses.len()),
            (100, 100, 1)
        );
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let good = advert(Version::V3).encode(ChecksumMode::Rfc9568, SRC, VRRP_GROUP);
        let d =
            |m: &[u8]| Advert::decode(m, Version::V3, 51, ChecksumMode::Rfc9568, SRC, VRRP_GROUP);
        assert_eq!(d(&good[..7]), Err(RejectReason::Short));
        assert_eq!(
            d(&good[..10]),
            Err(RejectReason::Short),
            "fewer address bytes than the count says"
        );
        let mut v4 = good.clone();
        v4[0] = 0x41;
        assert_eq!(d(&v4), Err(RejectReason::Version));
        let v2 = advert(Version::V2).encode(ChecksumMode::Rfc9568, SRC, VRRP_GROUP);
        assert_eq!(d(&v2), Err(RejectReason::Version));
        let re = |mut m: Vec<u8>| {
            m[6] = 0;
            m[7] = 0;
            let c = checksum(&m, Version::V3, ChecksumMode::Rfc9568, SRC, VRRP_GROUP);
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
        let msg = advert(Version::V3).encode(ChecksumMode::Rfc9568, SRC, VRRP_GROUP);
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
        assert_eq!((src, dst, ttl, m), (SRC, VRRP_GROUP, 255, &msg[..]));
        assert_eq!(split_ipv4(&ip[..10]), None);
    }
}
