//! UDP packet tables through BPF_PROG_TEST_RUN (DSR; NAT's are in `nat_tables.rs`): a UDP VIP
//! beside a TCP VIP on the same address and port, each with its own backends; the UDP policy
//! (a header cut short, a length that lies, fragments); IPv6 UDP.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use xdp_lb::netlink::L2Next;
use xdp_lb_common::{Counter, IPPROTO_UDP};
use xdp_lb_tests::{
    fixtures,
    harness::*,
    packet::{Frame, LB_MAC, ipv6_frame},
    require_root,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// DNS on 198.18.0.100:53 twice: UDP to .11-.13, TCP to .21-.22; and 2001:2::100:53/udp.
fn config() -> String {
    fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(
            fixtures::three_backends("dns-udp", 53)
                .key("protocol", "udp")
                .key("maglev_table_size", 4093)
                .check("type", "none"),
        )
        .vip(
            fixtures::vip("dns-tcp", VIP, 53)
                .check("type", "none")
                .backend("198.18.0.21")
                .backend("198.18.0.22"),
        )
        .vip(
            fixtures::vip("dns6", "2001:2::100", 53)
                .key("protocol", "udp")
                .check("type", "none")
                .backend("2001:2::11")
                .backend("2001:2::12"),
        )
        .to_string()
}

/// Every backend address resolved to its own MAC, `backend_mac(n)` for the n-th address in
/// config order (the harness's default numbers backends per VIP, which would make the two
/// pools' MACs collide).
fn distinct_macs(lb: &Loaded) -> BTreeMap<IpAddr, L2Next> {
    lb.config
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.address))
        .enumerate()
        .map(|(n, address)| {
            let next = L2Next {
                ifindex: LOOPBACK_IFINDEX,
                mac: backend_mac(n),
                src_mac: LB_MAC,
            };
            (address, next)
        })
        .collect()
}

fn loaded() -> Loaded {
    let mut lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let macs = distinct_macs(&lb);
    lb.apply_with(&macs).unwrap();
    lb
}

/// The backend address a forwarded frame was sent to, from its destination MAC.
fn backend_of(lb: &Loaded, frame: &[u8]) -> IpAddr {
    distinct_macs(lb)
        .into_iter()
        .find(|(_, next)| next.mac == frame[..6])
        .map(|(a, _)| a)
        .expect("a backend's MAC")
}

fn datagram(sport: u16, payload: &[u8]) -> Frame {
    let mut f = Frame::tcp(CLIENT, sport, VIP, 53);
    f.proto = IPPROTO_UDP;
    f.payload = payload.to_vec();
    f
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

#[test]
fn udp_and_tcp_vips_on_one_address_and_port_keep_their_own_backends() {
    require_root!();
    let lb = loaded();
    let udp_pool = [ip("198.18.0.11"), ip("198.18.0.12"), ip("198.18.0.13")];
    let tcp_pool = [ip("198.18.0.21"), ip("198.18.0.22")];
    let mut per_backend = BTreeMap::<IpAddr, usize>::new();
    for sport in 20000..23000u16 {
        let frame = datagram(sport, b"query").build();
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
        assert_eq!(&r.out[12..], &frame[12..], "DSR rewrites only the MACs");
        let backend = backend_of(&lb, &r.out);
        assert!(udp_pool.contains(&backend), "UDP went to {backend}");
        *per_backend.entry(backend).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    for n in per_backend.values() {
        assert!((900..=1100).contains(n), "{per_backend:?}");
    }
    assert_eq!(lb.counter(Counter::NewFlow), 3000);
    let udp_flows = lb
        .maps()
        .flows()
        .filter(|(k, _)| k.proto == IPPROTO_UDP)
        .count();
    assert_eq!(udp_flows, 3000, "each datagram's 5-tuple is a flow");

    // A UDP flow keeps its backend: the same 5-tuple again, a hit.
    let again = datagram(21234, b"again").build();
    let first = backend_of(&lb, &lb.run(&again).unwrap().out);
    for _ in 0..5 {
        assert_eq!(backend_of(&lb, &lb.run(&again).unwrap().out), first);
    }
    assert_eq!(lb.counter(Counter::NewFlow), 3000);

    // TCP to the same address and port: the other VIP's backends.
    for sport in 30000..30050u16 {
        let r = lb.run(&Frame::tcp(CLIENT, sport, VIP, 53).build()).unwrap();
        assert_eq!(r.action, XDP_TX);
        let backend = backend_of(&lb, &r.out);
        assert!(tcp_pool.contains(&backend), "TCP went to {backend}");
    }
}

#[test]
fn udp_that_lies_or_is_cut_short_is_dropped_and_fragments_pass() {
    require_root!();
    let lb = loaded();
    let good = datagram(40000, b"0123456789").build();
    let (eth, ip_len) = (14, 20);
    let udp = eth + ip_len;
    let total = u16::from_be_bytes([good[eth + 2], good[eth + 3]]) as usize;

    let with_udp_len = |len: u16| {
        let mut f = good.clone();
        f[udp + 4..udp + 6].copy_from_slice(&len.to_be_bytes());
        f
    };
    // IP says 4 bytes of UDP: the 8-byte header does not fit in the datagram.
    let mut cut = good[..udp + 4].to_vec();
    cut[eth + 2..eth + 4].copy_from_slice(&((ip_len + 4) as u16).to_be_bytes());
    fix_ip_checksum(&mut cut);
    // IP's total length beyond the frame's end.
    let mut ip_beyond = good.clone();
    ip_beyond[eth + 2..eth + 4].copy_from_slice(&((total + 100) as u16).to_be_bytes());
    fix_ip_checksum(&mut ip_beyond);
    let mut first_fragment = datagram(40000, b"0123456789");
    first_fragment.frag = 0x2000; // MF
    let mut later_fragment = datagram(40000, b"0123456789");
    later_fragment.frag = 185; // offset 1480 bytes

    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("UDP header cut short", cut, Counter::DropBadUdpHeader),
        (
            "IP total length beyond the frame",
            ip_beyond,
            Counter::DropTruncatedIp,
        ),
        (
            "UDP length shorter than the datagram",
            with_udp_len(12),
            Counter::DropBadUdpHeader,
        ),
        (
            "UDP length longer than the datagram",
            with_udp_len(200),
            Counter::DropBadUdpHeader,
        ),
        (
            "UDP length below the header's 8 bytes",
            with_udp_len(4),
            Counter::DropBadUdpHeader,
        ),
        (
            "a first fragment (MF)",
            first_fragment.build(),
            Counter::PassFragment,
        ),
        (
            "a later fragment (offset, no UDP header)",
            later_fragment.build(),
            Counter::PassFragment,
        ),
        (
            "UDP to another port of the VIP address",
            {
                let mut f = datagram(40000, b"x");
                f.dport = 54;
                f.build()
            },
            Counter::PassNotVip,
        ),
    ];
    lb.assert_verdicts(&cases);
    assert_eq!(lb.counter(Counter::NewFlow), 0, "no flow from bad input");

    // A datagram with checksum 0 ("none", RFC 768) is a good one over IPv4.
    let mut no_checksum = good.clone();
    no_checksum[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    let r = lb.run(&no_checksum).unwrap();
    assert_eq!(r.action, XDP_TX);
    assert_eq!(&r.out[12..], &no_checksum[12..]);
}

#[test]
fn ipv6_udp_is_balanced_and_its_zero_checksum_goes_to_the_kernel() {
    require_root!();
    let lb = loaded();
    let pool = [ip("2001:2::11"), ip("2001:2::12")];
    let udp6 = |sport: u16, check: u16| {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&53u16.to_be_bytes());
        l4.extend_from_slice(&13u16.to_be_bytes());
        l4.extend_from_slice(&check.to_be_bytes());
        l4.extend_from_slice(b"hello");
        ipv6_frame(&[], IPPROTO_UDP, &l4)
    };
    let mut seen = BTreeMap::<IpAddr, usize>::new();
    for sport in 40000..40200u16 {
        // The parser does not verify the checksum (the backend's stack does): any non-zero one.
        let frame = udp6(sport, 0x1234);
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
        assert_eq!(&r.out[12..], &frame[12..]);
        *seen.entry(backend_of(&lb, &r.out)).or_default() += 1;
    }
    assert!(seen.keys().all(|b| pool.contains(b)), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        lb.maps()
            .flows6()
            .filter(|(k, _)| k.proto == IPPROTO_UDP)
            .count(),
        200
    );

    let zero = udp6(40000, 0);
    let r = lb.run(&zero).unwrap();
    assert_eq!((r.action, &r.out), (XDP_PASS, &zero));
    assert_eq!(lb.counter(Counter::PassUdp6ZeroChecksum), 1);
}

/// Recomputes the IPv4 header checksum of an untagged frame after a test edited the header.
fn fix_ip_checksum(frame: &mut [u8]) {
    frame[24] = 0;
    frame[25] = 0;
    let c = xdp_lb_tests::packet::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}
