//! What a new master tells its segment: a gratuitous ARP for each IPv4 virtual address and an
//! unsolicited neighbour advertisement for each IPv6 one, so that switches and neighbours learn
//! the new master's MAC (RFC 5798 §6.4.1, RFC 4861 §7.2.6). (Not to be confused with the
//! routing announcements of `[announce]`, `route_announce.rs`.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdp_lb_common::csum::{checksum_of, sum_be};

/// A gratuitous ARP request: sender and target protocol address both the VIP, broadcast.
fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 §4.4, §7.2.6) for `vip`: from the VIP to
/// all nodes (ff02::1), hop limit 255, Override set and Solicited clear, with our MAC as the
/// target link-layer address, so neighbours replace what they had cached for the VIP.
fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // type, code, checksum, flags: O
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    // The ICMPv6 checksum covers the IPv6 pseudo-header (RFC 8200 §8.1, RFC 4443 §2.3).
    let mut acc = sum_be(&vip.octets(), 0);
    acc = sum_be(&all_nodes.octets(), acc);
    acc = sum_be(&(icmp.len() as u32).to_be_bytes(), acc);
    acc += 58; // next header: ICMPv6
    let c = checksum_of(sum_be(&icmp, acc));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]); // all-nodes multicast MAC (RFC 2464 §7)
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58);
    f.push(255); // hop limit: receivers drop NDP with less (RFC 4861 §7.1.2)
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// `count` rounds of one frame per address: gratuitous ARP for IPv4 virtual addresses,
/// unsolicited neighbour advertisements for IPv6 ones.
pub(super) fn send_garps(name: &str, ifindex: u32, mac: [u8; 6], vips: &[IpAddr], count: u32) {
    let frames: Vec<Vec<u8>> = vips
        .iter()
        .map(|vip| match vip {
            IpAddr::V4(v4) => garp_frame(mac, *v4),
            IpAddr::V6(v6) => unsolicited_na_frame(mac, *v6),
        })
        .collect();
    // SAFETY: plain socket(2). Protocol 0: a socket for sending only.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        tracing::warn!(instance = %name, error = %std::io::Error::last_os_error(), "cannot open a packet socket for gratuitous ARP / neighbour advertisements");
        return;
    }
    for _ in 0..count {
        for frame in &frames {
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: valid buffer and address for the duration of the call.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc < 0 {
                tracing::warn!(instance = %name, error = %std::io::Error::last_os_error(), "sending a gratuitous ARP / neighbour advertisement failed");
            }
        }
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_is_a_broadcast_arp_request_for_the_vip() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[198, 18, 0, 100], "sender = VIP");
        assert_eq!(&f[38..42], &[198, 18, 0, 100], "target = VIP");
    }

    #[test]
    fn unsolicited_na_overrides_for_the_vip_with_a_valid_checksum() {
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let f = unsolicited_na_frame([2, 0, 0, 0, 0, 1], vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        let icmp = &f[54..];
        assert_eq!(
            (icmp[0], icmp[4]),
            (136, 0x20),
            "NA with Override, not Solicited"
        );
        assert_eq!(&icmp[8..24], &vip.octets(), "target = VIP");
        assert_eq!(&icmp[24..26], &[2, 1]);
        // Verified independently: the sum over pseudo-header and message is 0xffff.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]); // source and destination
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert_eq!(xdp_lb_common::csum::internet_checksum(&pseudo), 0);
    }
}
