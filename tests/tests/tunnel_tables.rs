//! Tunnel packet tables through BPF_PROG_TEST_RUN (issue 29): the LB's encapsulation (IPIP,
//! GUE, IP6IP6, IPv4 in IPv6), its ICMP answers to packets too big for the tunnel, its MSS
//! clamp and its record of the health probes' answers, every header field and checksum
//! checked by the test's own arithmetic; and the backends' decapsulation program against
//! well-formed and malformed tunnel packets: none is handed up malformed.
//!
//! The program's FIB lookups see the caller's namespace: each test builds one (`lan`) with the
//! LB's segment, a router with a static neighbour entry, and routes to the backends' subnets.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use xdp_lb::decap::Decap;
use xdp_lb_common::{
    Counter, DecapCounter, PROBE_PORT_BASE, ProbeReply, flow_entropy, flow_label, gue_source_port,
    map_names,
};
use xdp_lb_tests::{
    NetNs, fixtures,
    harness::*,
    in_netns,
    packet::{CLIENT_MAC, LB_MAC, TCP_ACK, TCP_SYN, checksum, l4_checksum, l4_checksum6},
    require_root,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0xff, 0, 0, 0, 0, 0x10);
const ROUTER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
const GUE_PORT: u16 = 6080;

/// One VIP per mode, each with one backend, on ports 80 (IPIP), 81 (GUE), 82 (IPv4 in IPv6),
/// 83 (tunnel_mtu 1400), 84 (mss_clamp); IPv6 VIPs on 80 (IP6IP6), 81 (GUE), 83 (MTU).
fn config() -> String {
    let vip = |name: &str, addr: IpAddr, port: u16, mode: &str, backend: IpAddr| {
        fixtures::vip(name, addr, port)
            .key("forwarding", mode)
            .key("maglev_table_size", 251)
            .check("type", "none")
            .backend(backend)
    };
    let (v4, v6, b4, b6) = (VIP.into(), VIP6.into(), BACKEND.into(), BACKEND6.into());
    fixtures::config("lan0")
        .bed("@PIN_DIR@", 4096, 16)
        .key("tunnel_source", vec!["198.18.0.2", "2001:2::2"])
        .vip(vip("ipip", v4, 80, "ipip", b4))
        .vip(vip("gue", v4, 81, "gue", b4).key("gue_port", GUE_PORT))
        .vip(vip("4in6", v4, 82, "ipip", b6))
        .vip(vip("mtu", v4, 83, "ipip", b4).key("tunnel_mtu", 1400))
        .vip(
            vip("clamp", v4, 84, "ipip", b4)
                .key("tunnel_mtu", 1400)
                .key("mss_clamp", true),
        )
        .vip(vip("ip6ip6", v6, 80, "ipip", b6))
        .vip(vip("gue6", v6, 81, "gue", b6))
        .vip(vip("mtu6", v6, 83, "ipip", b6).key("tunnel_mtu", 1400))
        .to_string()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespace the program's FIB lookups see: lan0 on the LB's segment (both families), the
/// router 198.18.0.1 / 2001:2::1 resolved, the backends' subnets routed through it.
fn lan() -> NetNs {
    let ns = NetNs::new("tuntab").unwrap();
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "lan0"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "2001:2::2/64", "dev", "lan0", "nodad"])
        .unwrap();
    ns.ip(&["link", "set", "lan0", "up"]).unwrap();
    ns.ip(&["link", "set", "lan1", "up"]).unwrap();
    for router in ["198.18.0.1", "2001:2::1"] {
        ns.ip(&[
            "neigh",
            "add",
            router,
            "lladdr",
            &mac_text(ROUTER_MAC),
            "dev",
            "lan0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    ns.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.0.1"])
        .unwrap();
    ns.ip(&["-6", "route", "add", "2001:2:1::/64", "via", "2001:2::1"])
        .unwrap();
    for key in [
        "net.ipv4.conf.all.forwarding",
        "net.ipv4.conf.lo.forwarding",
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.lo.forwarding",
    ] {
        ns.sysctl(key, "1").unwrap();
    }
    ns
}

/// A TCP segment (header with `options`, then `payload`) with its checksum over `pseudo`.
fn tcp_segment(ports: (u16, u16), flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&5000u32.to_be_bytes());
    t[12] = (((20 + options.len()) / 4) << 4) as u8;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

/// An IPv4 packet (header, no options) of `proto` carrying `l4`, whose L4 checksum at `check`
/// (if any) is filled in.
fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    df: bool,
    proto: u8,
    mut l4: Vec<u8>,
    check: Option<usize>,
) -> Vec<u8> {
    if let Some(at) = check {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let c = l4_checksum(src, dst, proto, &l4);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x4321u16.to_be_bytes());
    if df {
        ip[6] = 0x40;
    }
    ip[8] = 61;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

/// An IPv6 packet (no extension headers) of `next` carrying `l4`, checksum at `check` filled.
fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    tclass: u8,
    next: u8,
    mut l4: Vec<u8>,
    check: Option<usize>,
) -> Vec<u8> {
    if let Some(at) = check {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let c = l4_checksum6(src, dst, next, &l4);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60 | (tclass >> 4);
    ip[1] = tclass << 4;
    ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    ip[6] = next;
    ip[7] = 61;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    ip.extend_from_slice(&l4);
    ip
}

/// An Ethernet frame from `src` to `dst` MAC with `ethertype`.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// A client's TCP/IPv4 segment to the VIP's `port` (DSCP/ECN `tos`, DF).
fn client4(port: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    ipv4(
        CLIENT,
        VIP,
        0xba,
        true,
        6,
        tcp_segment((40000, port), flags, options, payload),
        Some(16),
    )
}

fn client6(port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    ipv6(
        CLIENT6,
        VIP6,
        0xba,
        6,
        tcp_segment((40000, port), flags, &[], payload),
        Some(16),
    )
}

/// The 5-tuple's entropy as the program computes it (`xdp_lb_common::flow_entropy`).
fn entropy4(sport: u16, dport: u16) -> u32 {
    let be = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
    let ports = (sport.to_be() as u32) << 16 | dport.to_be() as u32;
    flow_entropy(be(CLIENT), be(VIP), ports, 6)
}

fn entropy6(sport: u16, dport: u16) -> u32 {
    let fold = |a: Ipv6Addr| {
        let w = xdp_lb_common::ipv6_words(&a.octets());
        w[0] ^ w[1] ^ w[2] ^ w[3]
    };
    let ports = (sport.to_be() as u32) << 16 | dport.to_be() as u32;
    flow_entropy(fold(CLIENT6), fold(VIP6), ports, 6)
}

/// Runs `frame` twice: the first packet to a backend finds its next hop in the FIB and
/// builds the header the cache keeps, the second copies that header (the common packet's
/// path); both must leave the same bytes. The second's outcome.
fn run_twice(lb: &Loaded, frame: &[u8]) -> Run {
    let first = lb.run(frame).unwrap();
    let second = lb.run(frame).unwrap();
    assert_eq!(
        (first.action, &first.out),
        (second.action, &second.out),
        "the cached header's packet differs from the first"
    );
    second
}

/// The outer IPv4 header of an encapsulated frame, checked field by field: DSCP/ECN copied,
/// id 0, DF, TTL 64, `proto`, checksum valid, from the tunnel source to the backend.
fn check_outer4(out: &[u8], lan0: [u8; 6], proto: u8, inner_len: usize) -> usize {
    assert_eq!(&out[0..6], &ROUTER_MAC, "next hop: the router's MAC (FIB)");
    assert_eq!(&out[6..12], &lan0, "source MAC: lan0's (FIB)");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45, "version 4, no options");
    assert_eq!(ip[1], 0xba, "DSCP and ECN copied from the inner header");
    let extra = if proto == 17 { 8 } else { 0 };
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        20 + extra + inner_len
    );
    assert_eq!(&ip[4..8], &[0, 0, 0x40, 0], "id 0, DF, no fragment");
    assert_eq!((ip[8], ip[9]), (64, proto), "TTL 64, protocol");
    assert_eq!(checksum(ip), 0, "outer IPv4 checksum");
    assert_eq!(&ip[12..16], &SOURCE.octets(), "from the tunnel source");
    assert_eq!(&ip[16..20], &BACKEND.octets(), "to the backend");
    34
}

fn check_outer6(out: &[u8], lan0: [u8; 6], next: u8, inner_len: usize, label: u32) -> usize {
    assert_eq!(&out[0..6], &ROUTER_MAC);
    assert_eq!(&out[6..12], &lan0);
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    let ip = &out[14..54];
    let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    assert_eq!(word >> 28, 6, "version 6");
    assert_eq!(
        (word >> 20) & 0xff,
        0xba,
        "traffic class copied from the inner header"
    );
    assert_eq!(
        word & 0xf_ffff,
        label,
        "flow label from the inner 5-tuple (RFC 6438)"
    );
    let extra = if next == 17 { 8 } else { 0 };
    assert_eq!(
        u16::from_be_bytes([ip[4], ip[5]]) as usize,
        extra + inner_len
    );
    assert_eq!((ip[6], ip[7]), (next, 64), "next header, hop limit 64");
    assert_eq!(&ip[8..24], &SOURCE6.octets());
    assert_eq!(&ip[24..40], &BACKEND6.octets());
    54
}

#[test]
fn ipip_gue_and_ipv4_in_ipv6_headers_are_exact() {
    require_root!();
    let ns = lan();
    let lan0 = ns.mac("lan0").unwrap();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
        // IPIP: the client's packet, byte for byte, after a 20-byte outer header.
        let inner = client4(80, TCP_SYN, &[], b"");
        let r = run_twice(&lb, &eth(LB_MAC, CLIENT_MAC, 0x0800, &inner));
        assert_eq!(
            r.action,
            XDP_REDIRECT,
            "lan0 is not the ingress device: {:?}",
            lb.all_counters()
        );
        let at = check_outer4(&r.out, lan0, 4, inner.len());
        assert_eq!(
            &r.out[at..at + inner.len()],
            &inner[..],
            "the inner packet untouched"
        );

        // GUE: UDP from a port hashed from the 5-tuple to the VIP's GUE port, checksum 0.
        let inner = client4(81, TCP_SYN, &[], b"");
        let r = run_twice(&lb, &eth(LB_MAC, CLIENT_MAC, 0x0800, &inner));
        let at = check_outer4(&r.out, lan0, 17, inner.len());
        let udp = &r.out[at..at + 8];
        assert_eq!(
            u16::from_be_bytes([udp[0], udp[1]]),
            gue_source_port(entropy4(40000, 81)),
            "GUE source port: the flow's hash"
        );
        assert!(
            u16::from_be_bytes([udp[0], udp[1]]) >= 49152,
            "in the dynamic range"
        );
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), GUE_PORT);
        assert_eq!(
            u16::from_be_bytes([udp[4], udp[5]]) as usize,
            8 + inner.len()
        );
        assert_eq!(&udp[6..8], &[0, 0], "UDP checksum 0 over IPv4 (RFC 768)");
        assert_eq!(&r.out[at + 8..at + 8 + inner.len()], &inner[..]);
        // Another flow, another source port (RSS spreads flows).
        let other = ipv4(
            CLIENT,
            VIP,
            0xba,
            true,
            6,
            tcp_segment((40001, 81), TCP_SYN, &[], b""),
            Some(16),
        );
        let r2 = lb.run(&eth(LB_MAC, CLIENT_MAC, 0x0800, &other)).unwrap();
        assert_ne!(
            &r2.out[34..36],
            &udp[0..2],
            "flows differ in GUE source port"
        );

        // IPv4 in IPv6: an IPv4 VIP's packet to an IPv6 backend, next header 4.
        let inner = client4(82, TCP_SYN, &[], b"");
        let r = run_twice(&lb, &eth(LB_MAC, CLIENT_MAC, 0x0800, &inner));
        assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
        let at = check_outer6(
            &r.out,
            lan0,
            4,
            inner.len(),
            flow_label(entropy4(40000, 82)),
        );
        assert_eq!(&r.out[at..at + inner.len()], &inner[..]);
        assert_eq!(lb.counter(Counter::NewFlow), 4, "each flow made once");
    })
    .unwrap();
}

#[test]
fn ip6ip6_and_gue6_headers_and_checksum_are_exact() {
    require_root!();
    let ns = lan();
    let lan0 = ns.mac("lan0").unwrap();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
        let inner = client6(80, TCP_SYN, b"");
        let r = run_twice(&lb, &eth(LB_MAC, CLIENT_MAC, 0x86dd, &inner));
        assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
        let at = check_outer6(
            &r.out,
            lan0,
            41,
            inner.len(),
            flow_label(entropy6(40000, 80)),
        );
        assert_eq!(&r.out[at..at + inner.len()], &inner[..]);

        // GUE over IPv6: the UDP checksum must be right (RFC 8200 §8.1), computed here over
        // the whole datagram, payload included.
        for payload in [&b""[..], b"GET / HTTP/1.0\r\n\r\n", &[0xa5; 999][..]] {
            let inner = client6(81, TCP_ACK, payload);
            let r = run_twice(&lb, &eth(LB_MAC, CLIENT_MAC, 0x86dd, &inner));
            let at = check_outer6(
                &r.out,
                lan0,
                17,
                inner.len(),
                flow_label(entropy6(40000, 81)),
            );
            let datagram = &r.out[at..at + 8 + inner.len()];
            assert_eq!(u16::from_be_bytes([datagram[2], datagram[3]]), 6080);
            assert_ne!(&datagram[6..8], &[0, 0], "a UDP checksum over IPv6");
            assert_eq!(
                l4_checksum6(SOURCE6, BACKEND6, 17, datagram),
                0,
                "the outer UDP checksum verifies ({} payload bytes)",
                payload.len()
            );
            assert_eq!(&datagram[8..], &inner[..]);
        }
    })
    .unwrap();
}

/// The quoted start of `inner` in an ICMP error built by the program, and its header.
#[test]
fn too_big_packets_are_answered_with_the_mtu_that_fits() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
        // tunnel_mtu 1400, IPIP: an inner packet of 1381 bytes is one too many.
        let big = client4(83, TCP_ACK, &[], &[0x5a; 1341]);
        assert_eq!(big.len(), 1381);
        let frame = eth(LB_MAC, CLIENT_MAC, 0x0800, &big);
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
        assert_eq!(&r.out[0..6], &CLIENT_MAC, "back to the sender's MAC");
        assert_eq!(&r.out[6..12], &LB_MAC);
        let ip = &r.out[14..34];
        assert_eq!(
            r.out.len(),
            14 + 20 + 8 + 28,
            "IPv4, ICMP header, 28 quoted bytes"
        );
        assert_eq!(checksum(ip), 0, "IPv4 checksum");
        assert_eq!((ip[0], ip[9]), (0x45, 1), "ICMP");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 56);
        assert_eq!(&ip[12..16], &VIP.octets(), "from the VIP");
        assert_eq!(&ip[16..20], &CLIENT.octets(), "to the client");
        let icmp = &r.out[34..];
        assert_eq!(
            (icmp[0], icmp[1]),
            (3, 4),
            "fragmentation needed and DF set"
        );
        assert_eq!(
            u16::from_be_bytes([icmp[6], icmp[7]]),
            1380,
            "next-hop MTU: what fits"
        );
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(
            &icmp[8..36],
            &big[..28],
            "the offending packet's first 28 bytes"
        );
        assert_eq!(lb.counter(Counter::TunnelIcmpTooBig), 1);

        // One byte less fits: encapsulated.
        let fits = client4(83, TCP_ACK, &[], &[0x5a; 1340]);
        let r = lb.run(&eth(LB_MAC, CLIENT_MAC, 0x0800, &fits)).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);

        // Without DF the sender lets routers fragment, which XDP cannot: dropped, counted.
        let no_df = ipv4(
            CLIENT,
            VIP,
            0,
            false,
            6,
            tcp_segment((40000, 83), TCP_ACK, &[], &[0x5a; 1341]),
            Some(16),
        );
        let before = lb.counter(Counter::DropTunnelTooBig);
        let r = lb.run(&eth(LB_MAC, CLIENT_MAC, 0x0800, &no_df)).unwrap();
        assert_eq!(r.action, XDP_DROP);
        assert_eq!(lb.counter(Counter::DropTunnelTooBig), before + 1);

        // IPv6, tunnel_mtu 1400 over IPv6: 1360 fits; the answer is a Packet Too Big.
        let big6 = client6(83, TCP_ACK, &[0x5a; 1301]);
        assert_eq!(big6.len(), 1361);
        let r = lb.run(&eth(LB_MAC, CLIENT_MAC, 0x86dd, &big6)).unwrap();
        assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
        assert_eq!(r.out.len(), 14 + 40 + 8 + 128);
        let ip = &r.out[14..54];
        assert_eq!((ip[0] >> 4, ip[6]), (6, 58));
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 136);
        assert_eq!(&ip[8..24], &VIP6.octets());
        assert_eq!(&ip[24..40], &CLIENT6.octets());
        let icmp = &r.out[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "Packet Too Big");
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1360
        );
        assert_eq!(l4_checksum6(VIP6, CLIENT6, 58, icmp), 0, "ICMPv6 checksum");
        assert_eq!(&icmp[8..], &big6[..128]);
        assert_eq!(lb.counter(Counter::TunnelIcmpTooBig), 2);
    })
    .unwrap();
}

#[test]
fn mss_clamp_lowers_a_syns_mss_with_a_valid_checksum() {
    require_root!();
    let ns = lan();
    let lan0 = ns.mac("lan0").unwrap();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
        // Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale. 1380 fits
        // the 1400-byte tunnel: MSS 1340.
        let options = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        for (opts, clamped) in [
            (options.to_vec(), true),
            // After NOPs, at an odd offset: the checksum's words straddle it.
            ([&[1u8][..], &options[..19]].concat(), true),
            // 1200 fits already.
            ([2, 4, 0x04, 0xb0].to_vec(), false),
        ] {
            let syn = client4(84, TCP_SYN, &opts, b"");
            let before = lb.counter(Counter::TunnelMssClamped);
            let r = lb.run(&eth(LB_MAC, CLIENT_MAC, 0x0800, &syn)).unwrap();
            assert_eq!(r.action, XDP_REDIRECT);
            let at = check_outer4(&r.out, lan0, 4, syn.len());
            let inner = &r.out[at..at + syn.len()];
            let tcp = &inner[20..];
            assert_eq!(
                l4_checksum(CLIENT, VIP, 6, tcp),
                0,
                "TCP checksum after the clamp"
            );
            let mss_at = 20 + opts.iter().position(|b| *b == 2).unwrap() + 2;
            let mss = u16::from_be_bytes([tcp[mss_at], tcp[mss_at + 1]]);
            assert_eq!(mss, if clamped { 1340 } else { 1200 });
            assert_eq!(
                lb.counter(Counter::TunnelMssClamped),
                before + clamped as u64
            );
            // Everything else as the client sent it.
            let mut expected = syn.clone();
            expected[20 + mss_at..20 + mss_at + 2].copy_from_slice(&mss.to_be_bytes());
            assert_eq!(&inner[..36], &expected[..36]);
            assert_eq!(&inner[38..], &expected[38..]);
        }
    })
    .unwrap();
}

#[test]
fn a_probes_answer_is_recorded_and_dropped() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
        let id = lb.backend_id(0, BACKEND);
        let port = PROBE_PORT_BASE + id as u16;
        let mut answer = tcp_segment((80, port), TCP_SYN | TCP_ACK, &[], b"");
        answer[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let frame = eth(
            LB_MAC,
            ROUTER_MAC,
            0x0800,
            &ipv4(VIP, SOURCE, 0, true, 6, answer, Some(16)),
        );
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_DROP, "no socket waits for it");
        assert_eq!(lb.counter(Counter::TunnelProbeReply), 1);
        let data = aya::maps::MapData::from_pin(lb.pin_dir.join(map_names::TUNNEL_PROBES)).unwrap();
        let probes: aya::maps::Array<_, ProbeReply> = aya::maps::Map::from_map_data(data)
            .and_then(aya::maps::Array::try_from)
            .unwrap();
        let reply = probes.get(&id, 0).unwrap();
        assert_eq!(u32::from_be(reply.ack_be), 0xdead_beef);
        assert_eq!(u16::from_be(reply.sport_be), 80);
        assert_eq!(reply.tcp_flags, TCP_SYN | TCP_ACK);
        assert!(reply.seen_ns > 0);
        // From a port that no VIP has: the host's own traffic, passed untouched.
        let other = eth(
            LB_MAC,
            ROUTER_MAC,
            0x0800,
            &ipv4(
                VIP,
                SOURCE,
                0,
                true,
                6,
                tcp_segment((8080, port), TCP_SYN | TCP_ACK, &[], b""),
                Some(16),
            ),
        );
        let r = lb.run(&other).unwrap();
        assert_eq!((r.action, &r.out), (XDP_PASS, &other));
    })
    .unwrap();
}

// ---- The decapsulation program ----

/// The decapsulation program, loaded, with the backend's addresses as its own.
fn decap(pin: &str) -> Decap {
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{pin}-{}", std::process::id()));
    let mut d = Decap::load(&dir, Some(GUE_PORT)).unwrap();
    let local: BTreeSet<IpAddr> = [IpAddr::from(BACKEND), IpAddr::from(BACKEND6)].into();
    d.set_local(&local).unwrap();
    d
}

fn outer4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4(SOURCE, BACKEND, 0, true, proto, payload.to_vec(), None)
}

fn gue4(port: u16, inner: &[u8]) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&50000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&port.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(inner);
    outer4(17, &udp)
}

fn outer6(next: u8, payload: &[u8]) -> Vec<u8> {
    ipv6(SOURCE6, BACKEND6, 0, next, payload.to_vec(), None)
}

#[test]
fn decap_hands_up_the_inner_packet_exactly() {
    require_root!();
    let mut d = decap("decaptab-ok");
    let inner4 = client4(80, TCP_SYN, &[], b"");
    let inner6 = client6(80, TCP_SYN, b"payload");
    let mut gue6 = vec![0u8; 8];
    gue6[0..2].copy_from_slice(&50000u16.to_be_bytes());
    gue6[2..4].copy_from_slice(&GUE_PORT.to_be_bytes());
    gue6[4..6].copy_from_slice(&((8 + inner6.len()) as u16).to_be_bytes());
    gue6.extend_from_slice(&inner6);
    let cases: [(&str, Vec<u8>, &[u8], DecapCounter); 5] = [
        (
            "IPIP",
            eth(LB_MAC, ROUTER_MAC, 0x0800, &outer4(4, &inner4)),
            &inner4,
            DecapCounter::Ipip,
        ),
        (
            "GUE over IPv4",
            eth(LB_MAC, ROUTER_MAC, 0x0800, &gue4(GUE_PORT, &inner4)),
            &inner4,
            DecapCounter::Gue,
        ),
        (
            "IP6IP6",
            eth(LB_MAC, ROUTER_MAC, 0x86dd, &outer6(41, &inner6)),
            &inner6,
            DecapCounter::Ip6ip6,
        ),
        (
            "IPv4 in IPv6",
            eth(LB_MAC, ROUTER_MAC, 0x86dd, &outer6(4, &inner4)),
            &inner4,
            DecapCounter::Ip4in6,
        ),
        (
            "GUE over IPv6",
            eth(LB_MAC, ROUTER_MAC, 0x86dd, &outer6(17, &gue6)),
            &inner6,
            DecapCounter::Gue,
        ),
    ];
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/decaptab-ok-{}", std::process::id()));
    for (what, frame, inner, counter) in cases {
        let before = count(&pin_dir, counter);
        let r = run_program(d.program().unwrap(), &frame, 1).unwrap();
        assert_eq!(r.action, XDP_PASS, "{what}");
        assert_eq!(&r.out[0..12], &frame[0..12], "{what}: the same MACs");
        let ethertype = if inner[0] >> 4 == 6 {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        assert_eq!(
            &r.out[12..14],
            &ethertype,
            "{what}: the inner family's EtherType"
        );
        assert_eq!(
            &r.out[14..14 + inner.len()],
            inner,
            "{what}: the inner packet, exactly"
        );
        assert_eq!(count(&pin_dir, counter), before + 1, "{what}: counted");
    }
    d.stop();
}

fn count(pin_dir: &std::path::Path, c: DecapCounter) -> u64 {
    xdp_lb::decap::counters(pin_dir)
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == c)
        .map_or(0, |(_, v)| v)
}

#[test]
fn decap_never_hands_up_a_malformed_packet() {
    require_root!();
    let mut d = decap("decaptab-bad");
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/decaptab-bad-{}", std::process::id()));
    let inner = client4(80, TCP_SYN, &[], b"");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut i = inner.clone();
        f(&mut i);
        eth(LB_MAC, ROUTER_MAC, 0x0800, &outer4(4, &i))
    };
    let mut truncated_outer = eth(LB_MAC, ROUTER_MAC, 0x0800, &outer4(4, &inner));
    truncated_outer.truncate(14 + 20 + 10);
    let mut outer_too_long = outer4(4, &inner);
    let claimed = (outer_too_long.len() + 40) as u16;
    outer_too_long[2..4].copy_from_slice(&claimed.to_be_bytes());
    let c = checksum(&{
        let mut h = outer_too_long[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    outer_too_long[10..12].copy_from_slice(&c.to_be_bytes());
    let ipip_in_ipip = eth(LB_MAC, ROUTER_MAC, 0x0800, &outer4(4, &outer4(4, &inner)));
    let gue_in_gue = eth(
        LB_MAC,
        ROUTER_MAC,
        0x0800,
        &gue4(
            GUE_PORT,
            &ipv4(
                CLIENT,
                VIP,
                0,
                true,
                17,
                {
                    let mut udp = vec![0u8; 8];
                    udp[2..4].copy_from_slice(&GUE_PORT.to_be_bytes());
                    udp[4..6].copy_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
                    udp.extend_from_slice(&inner);
                    udp
                },
                None,
            ),
        ),
    );
    let not_local = eth(
        LB_MAC,
        ROUTER_MAC,
        0x0800,
        &ipv4(
            SOURCE,
            Ipv4Addr::new(198, 18, 1, 99),
            0,
            true,
            4,
            inner.clone(),
            None,
        ),
    );
    let cases: Vec<(&str, Vec<u8>, DecapCounter)> = vec![
        (
            "the outer IPv4 total length beyond the frame",
            eth(LB_MAC, ROUTER_MAC, 0x0800, &outer_too_long),
            DecapCounter::DropTruncatedOuter,
        ),
        (
            "the inner packet cut short",
            truncated_outer,
            DecapCounter::DropTruncatedOuter,
        ),
        (
            "the inner total length lies (longer)",
            with(&|i| i[2..4].copy_from_slice(&(inner.len() as u16 + 8).to_be_bytes())),
            DecapCounter::DropBadInner,
        ),
        (
            "the inner total length lies (shorter)",
            with(&|i| i[2..4].copy_from_slice(&(inner.len() as u16 - 4).to_be_bytes())),
            DecapCounter::DropBadInner,
        ),
        (
            "the inner IHL below 5",
            with(&|i| i[0] = 0x44),
            DecapCounter::DropBadInner,
        ),
        (
            "the inner IHL beyond the packet",
            with(&|i| i[0] = 0x4f),
            DecapCounter::DropBadInner,
        ),
        (
            "the inner version is not 4",
            with(&|i| i[0] = 0x65),
            DecapCounter::DropBadInner,
        ),
        (
            "the TCP data offset below 5",
            with(&|i| i[32] = 4 << 4),
            DecapCounter::DropBadInner,
        ),
        (
            "the TCP data offset beyond the segment",
            with(&|i| i[32] = 15 << 4),
            DecapCounter::DropBadInner,
        ),
        ("IPIP in IPIP", ipip_in_ipip, DecapCounter::DropNested),
        ("GUE in GUE", gue_in_gue, DecapCounter::DropNested),
        (
            "GUE to another port",
            eth(LB_MAC, ROUTER_MAC, 0x0800, &gue4(6081, &inner)),
            DecapCounter::PassNotTunnel,
        ),
        (
            "a tunnel to an address not ours",
            not_local,
            DecapCounter::PassNotLocal,
        ),
        (
            "plain TCP",
            eth(LB_MAC, ROUTER_MAC, 0x0800, &inner),
            DecapCounter::PassNotTunnel,
        ),
    ];
    for (what, frame, counter) in cases {
        let before = count(&pin_dir, counter);
        let r = run_program(d.program().unwrap(), &frame, 1).unwrap();
        let expected = if counter.passes() { XDP_PASS } else { XDP_DROP };
        assert_eq!(r.action, expected, "{what}: {counter:?}");
        assert_eq!(
            count(&pin_dir, counter),
            before + 1,
            "{what}: counted as {counter:?}"
        );
        if counter.passes() {
            assert_eq!(r.out, frame, "{what}: passed untouched");
        }
    }
    d.stop();
}
