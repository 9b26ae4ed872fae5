//! The fuzzer's bed: the configuration (every mode and family), the routed namespace, and the
//! seed frames of every path (with the replies to the NAT flows they make).

use std::net::{Ipv4Addr, Ipv6Addr};

use xdp_lb_tests::{
    NetNs, fixtures,
    fuzz::client,
    harness::Loaded,
    packet::{
        Frame, TCP_ACK, TCP_SYN, arp_request, icmp_echo, icmp_error, ipv6_frame, tcp_header,
        tcp6_frame,
    },
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const GUARDED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(super) const GUE_PORT: u16 = 6080;

fn vip6() -> Ipv6Addr {
    "2001:2::100".parse().unwrap()
}

/// Every mode and family, with the node's addresses for NAT and the tunnels.
pub(super) fn config() -> String {
    let three =
        |name: &str, addr: &str, port: u16, mode: &str, backends: &dyn Fn(u32) -> String| {
            (1..=3).fold(
                fixtures::vip(name, addr, port)
                    .key("forwarding", mode)
                    .check("type", "none"),
                |v, i| v.backend(backends(i)),
            )
        };
    fixtures::config("lan0")
        .bed("@PIN_DIR@", 1 << 16, 16)
        .key("flow_table_size_ipv6", 1u32 << 14)
        .key("tunnel_source", vec!["198.18.0.2", "2001:2::2"])
        .key("snat_address", vec!["198.18.0.2", "2001:2::2"])
        .key("snat_port_range", "20000-20999")
        .vip(three("web", "198.18.0.100", 80, "dsr", &|i| {
            format!("198.18.0.{}", 10 + i)
        }))
        .vip(
            three("dns", "198.18.0.100", 53, "dsr", &|i| {
                format!("198.18.0.{}", 10 + i)
            })
            .key("protocol", "udp"),
        )
        .vip(three("api", "198.18.0.100", 443, "nat", &|i| {
            format!("198.18.1.{}", 10 + i)
        }))
        .vip(
            three("dnsnat", "198.18.0.100", 5353, "nat", &|i| {
                format!("198.18.1.{}", 10 + i)
            })
            .key("protocol", "udp"),
        )
        .vip(
            three("ipip", "198.18.0.100", 81, "ipip", &|i| {
                format!("198.18.2.{}", 10 + i)
            })
            .key("mss_clamp", true),
        )
        .vip(three("gue", "198.18.0.100", 82, "gue", &|i| {
            format!("198.18.3.{}", 10 + i)
        }))
        .vip(three("web6", "2001:2::100", 80, "dsr", &|i| {
            format!("2001:2::{}", 10 + i)
        }))
        .vip(three("api6", "2001:2::100", 443, "nat", &|i| {
            format!("2001:2:1::{}", 10 + i)
        }))
        .vip(three("tun6", "2001:2::100", 81, "ipip", &|i| {
            format!("2001:2:2::{}", 10 + i)
        }))
        .vip(
            three("guarded", "198.18.0.101", 80, "dsr", &|i| {
                format!("198.18.0.{}", 10 + i)
            })
            .list("deny", &["198.19.255.0/24"])
            .key("new_flows_per_source", "5/s")
            .key("new_flows_burst", 5u32),
        )
        .to_string()
}

/// The namespace whose FIB NAT and the tunnels consult (routes to the backends and clients).
pub(super) fn namespace() -> anyhow::Result<NetNs> {
    xdp_lb_tests::tunnel::routed_bed("fuzz")
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = Frame::tcp(src, sport, dst, dport);
    f.flags = flags;
    f.payload = vec![0x5a; payload];
    f.build()
}

/// The seed frames: one or more of every path.
pub(super) fn corpus() -> Vec<Vec<u8>> {
    let mut c = Vec::new();
    for (i, port) in [80u16, 443, 81, 82].into_iter().enumerate() {
        let src = client(i as u32 + 1);
        c.push(tcp(src, 40000, VIP, port, TCP_SYN, 0));
        c.push(tcp(src, 40000, VIP, port, TCP_ACK, 100));
        c.push(tcp(src, 40001, VIP, port, TCP_ACK | 0x08, 1400));
    }
    let mut tagged = Frame::tcp(client(9), 40002, VIP, 80);
    tagged.vlan = Some(7);
    c.push(tagged.build());
    tagged.outer_vlan = Some(100);
    c.push(tagged.build());
    let mut udp = Frame::tcp(client(10), 5353, VIP, 53);
    udp.proto = 17;
    udp.payload = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    c.push(udp.build());
    // The same to the UDP NAT VIP; SYNs with an MSS option (the tunnels' clamp).
    udp.dport = 5353;
    c.push(udp.build());
    for port in [81u16, 82, 80] {
        c.push(with_mss(
            &tcp(client(14), 40000, VIP, port, TCP_SYN, 0),
            1460,
        ));
    }
    c.push(tcp(
        Ipv4Addr::new(198, 19, 255, 9),
        40000,
        GUARDED,
        80,
        TCP_SYN,
        0,
    ));
    c.push(tcp(client(11), 40000, GUARDED, 80, TCP_SYN, 0));
    // Not a VIP's: the node's ssh, the VIP address on another port, ARP, ping, VRRP, sync.
    c.push(tcp(client(12), 40000, NODE, 22, TCP_SYN, 0));
    c.push(tcp(client(12), 40000, VIP, 8080, TCP_SYN, 0));
    c.push(arp_request(client(12), NODE));
    c.push(icmp_echo(client(12), VIP));
    let mut vrrp = Frame::tcp(NODE, 0, Ipv4Addr::new(224, 0, 0, 18), 0);
    vrrp.proto = 112;
    c.push(vrrp.build());
    let mut sync = Frame::tcp(Ipv4Addr::new(198, 18, 0, 3), 7947, NODE, 7947);
    sync.proto = 17;
    sync.payload = vec![0xaa; 64];
    c.push(sync.build());
    // ICMP "fragmentation needed" about a DSR flow; a fragment.
    c.push(icmp_error(
        Ipv4Addr::new(198, 18, 9, 1),
        VIP,
        80,
        client(1),
        40000,
        (3, 4, 1400),
        28,
    ));
    let mut frag = Frame::tcp(client(13), 40000, VIP, 80);
    frag.frag = 0x2000;
    c.push(frag.build());
    // IPv6: each VIP, with and without extension headers.
    let v6 = |i: u16| -> Ipv6Addr { format!("2001:2:9::{i}").parse().unwrap() };
    for (i, port) in [80u16, 443, 81].into_iter().enumerate() {
        c.push(tcp6_frame(
            (v6(i as u16 + 1), 40000),
            (vip6(), port),
            TCP_SYN,
            7,
        ));
        c.push(tcp6_frame(
            (v6(i as u16 + 1), 40000),
            (vip6(), port),
            TCP_ACK,
            7,
        ));
    }
    c.push(ipv6_frame(&[(0, 8), (60, 16)], 6, &tcp_header()));
    c.push(ipv6_frame(&[(44, 8)], 6, &tcp_header()));
    c
}

/// A TCP/IPv4 SYN frame (no VLAN, no options) with an MSS option added, lengths and checksums
/// made right.
fn with_mss(frame: &[u8], mss: u16) -> Vec<u8> {
    let (l3, l4) = (14, 34);
    let mut f = frame[..l4 + 20].to_vec();
    f.extend_from_slice(&[2, 4]);
    f.extend_from_slice(&mss.to_be_bytes());
    f[l4 + 12] = 6 << 4;
    let total = (f.len() - l3) as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let ip_sum = xdp_lb_tests::packet::checksum(&f[l3..l4]);
    f[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
    f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let sum = xdp_lb_tests::packet::l4_checksum(src, dst, 6, &f[l4..]);
    f[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// Replies to the NAT flows the corpus made: what the backends would send back.
pub(super) fn nat_replies(lb: &Loaded) -> Vec<Vec<u8>> {
    let mut c = Vec::new();
    let v4 = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    for (k, _) in lb
        .maps()
        .nat_flows()
        .chain(lb.maps().nat_embryonic())
        .take(8)
    {
        let flags = if c.len() % 2 == 0 {
            TCP_SYN | TCP_ACK
        } else {
            TCP_ACK
        };
        let (sp, dp) = (u16::from_be(k.src_port_be), u16::from_be(k.dst_port_be));
        c.push(tcp(v4(k.src_addr), sp, v4(k.dst_addr), dp, flags, 40));
    }
    for (k, _) in lb
        .maps()
        .nat_flows6()
        .chain(lb.maps().nat_embryonic6())
        .take(8)
    {
        let (sp, dp) = (u16::from_be(k.src_port_be), u16::from_be(k.dst_port_be));
        c.push(tcp6_frame(
            (Ipv6Addr::from(k.src_addr), sp),
            (Ipv6Addr::from(k.dst_addr), dp),
            TCP_SYN | TCP_ACK,
            0,
        ));
    }
    c
}
