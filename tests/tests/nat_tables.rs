//! NAT packet tables through BPF_PROG_TEST_RUN: both directions of a NAT flow, with the output
//! checked byte by byte and both checksums recomputed from scratch by the test (not by the
//! incremental arithmetic under test).
//!
//! BPF_PROG_TEST_RUN runs the program on the loopback device of the caller's namespace, and
//! `bpf_fib_lookup` consults that namespace's routes and neighbours, so each test builds a
//! namespace: `lan0` (198.18.0.2/24, the SNAT address) with static neighbours for a backend
//! and a router, and a client subnet (198.19.1.0/24) behind the router.

use std::net::Ipv4Addr;

use xdp_lb::nat::Timeouts;
use xdp_lb_common::{Counter, FLOW_F_UDP, IPPROTO_UDP, map_names};
use xdp_lb_tests::{
    NetNs, fixtures,
    harness::*,
    in_netns,
    packet::{Frame, LB_MAC, TCP_ACK, TCP_FIN, TCP_SYN, checksum, icmp_error, l4_checksum},
    require_root,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const BACKEND_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x0b];
/// A backend with no neighbour entry: its MAC is not known yet.
const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 13);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ROUTER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);

/// A NAT VIP to a backend on :6443 with four SNAT ports, a UDP one to the same backend on
/// :5353, and one whose backend never resolves.
fn config(flow_table_size: u32) -> String {
    fixtures::config("lan0")
        .bed("@PIN_DIR@", flow_table_size, 4)
        .key("snat_address", "198.18.0.2")
        .key("snat_port_range", "20000-20003")
        .vip(
            fixtures::vip("api", "198.18.0.100", 443)
                .nat()
                .key("maglev_table_size", 251)
                .check("type", "none")
                .backend_with("198.18.0.11", &[("port", "6443")]),
        )
        .vip(
            fixtures::vip("dns", "198.18.0.100", 53)
                .nat()
                .key("protocol", "udp")
                .key("maglev_table_size", 251)
                .check("type", "none")
                .backend_with("198.18.0.11", &[("port", "5353")]),
        )
        .vip(
            fixtures::vip("unresolved", "198.18.0.100", 444)
                .nat()
                .key("maglev_table_size", 251)
                .check("type", "none")
                .backend(UNRESOLVED),
        )
        .to_string()
}

/// A MAC as `ip neigh` takes it.
fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespace the program's FIB lookups see.
fn lan() -> NetNs {
    let ns = NetNs::new("nattab").unwrap();
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "lan0"])
        .unwrap();
    ns.ip(&["link", "set", "lan0", "up"]).unwrap();
    ns.ip(&["link", "set", "lan1", "up"]).unwrap();
    for (addr, m) in [(BACKEND, BACKEND_MAC), (ROUTER, ROUTER_MAC)] {
        ns.ip(&[
            "neigh",
            "add",
            &addr.to_string(),
            "lladdr",
            &mac_text(m),
            "dev",
            "lan0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    ns.ip(&["route", "add", "198.19.1.0/24", "via", "198.18.0.1"])
        .unwrap();
    // The FIB lookup runs from the ingress device's view: test runs enter through lo.
    ns.sysctl("net.ipv4.conf.all.forwarding", "1").unwrap();
    ns.sysctl("net.ipv4.conf.lo.forwarding", "1").unwrap();
    ns
}

/// A frame's fields, read back from bytes.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

/// Parses an untagged TCP/IPv4 frame and asserts both checksums by recomputing them.
fn read_and_verify(frame: &[u8]) -> Seen {
    let ip = &frame[14..34];
    assert_eq!(checksum(ip), 0, "IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = &frame[34..14 + total];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let mut zeroed = seg.to_vec();
    zeroed[16] = 0;
    zeroed[17] = 0;
    let expect = l4_checksum(src, dst, 6, &zeroed);
    assert_eq!(
        u16::from_be_bytes([seg[16], seg[17]]),
        expect,
        "TCP checksum recomputed over the rewritten pseudo-header and segment"
    );
    Seen {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src,
        dst,
        sport: u16::from_be_bytes([seg[0], seg[1]]),
        dport: u16::from_be_bytes([seg[2], seg[3]]),
        payload: seg[20..].to_vec(),
    }
}

fn packet(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Frame::tcp(src, sport, dst, dport);
    f.flags = flags;
    f.src_mac = ROUTER_MAC;
    f.payload = payload.to_vec();
    f.build()
}

#[test]
fn both_directions_are_rewritten_with_valid_checksums() {
    require_root!();
    let ns = lan();
    let lan0 = ns.mac("lan0").unwrap();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();

        // Client → VIP: SNAT-address:port → backend:6443, out of lan0 to the backend's MAC.
        let syn = packet(CLIENT, 40000, VIP, 443, TCP_SYN, b"");
        let r = lb.run(&syn).unwrap();
        assert_eq!(
            r.action, XDP_REDIRECT,
            "lan0 is not the ingress device (lo)"
        );
        let out = read_and_verify(&r.out);
        assert_eq!((out.dst_mac, out.src_mac), (BACKEND_MAC, lan0));
        assert_eq!((out.src, out.dst, out.dport), (SNAT, BACKEND, 6443));
        assert!((20000..=20003).contains(&out.sport), "{}", out.sport);
        let snat_port = out.sport;
        assert_eq!(lb.counter(Counter::NewFlow), 1);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        // Half-open: only the port's reservation exists, in the half-open LRU.
        assert_eq!(
            (
                lb.maps().nat_embryonic().count(),
                lb.maps().nat_flows().count(),
                lb.maps().flows().count()
            ),
            (1, 0, 0)
        );
        // The client's retransmitted SYN goes on through the same port; not a second flow.
        let r = lb.run(&syn).unwrap();
        assert_eq!(read_and_verify(&r.out).sport, snat_port);
        assert_eq!(lb.counter(Counter::NewFlow), 1);

        // Backend → SNAT-address:port: VIP:443 → client:40000, to the router's MAC (the client
        // is routed through it).
        let reply = packet(
            BACKEND,
            6443,
            SNAT,
            snat_port,
            TCP_SYN | TCP_ACK,
            &data[..333],
        );
        let r = lb.run(&reply).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        let out = read_and_verify(&r.out);
        assert_eq!((out.dst_mac, out.src_mac), (ROUTER_MAC, lan0));
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (VIP, 443, CLIENT, 40000)
        );
        assert_eq!(out.payload, &data[..333]);
        // The SYN-ACK proves nothing (it comes back whoever sent the SYN): still half-open.
        assert_eq!(
            (
                lb.maps().nat_embryonic().count(),
                lb.maps().nat_flows().count(),
                lb.maps().flows().count()
            ),
            (1, 0, 0)
        );

        // The next packet of the flow, with data: same binding, payload intact.
        let r = lb
            .run(&packet(CLIENT, 40000, VIP, 443, TCP_ACK, &data))
            .unwrap();
        let out = read_and_verify(&r.out);
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (SNAT, snat_port, BACKEND, 6443)
        );
        assert_eq!(out.payload, data);
        assert_eq!(lb.counter(Counter::NewFlow), 1, "no second flow");
        // The client's ACK promoted the flow: both directions in the flow tables.
        assert_eq!(
            (
                lb.maps().nat_embryonic().count(),
                lb.maps().nat_flows().count(),
                lb.maps().flows().count()
            ),
            (0, 1, 1)
        );
        // The flow caches its next hop and asks the FIB again once a second: a moved backend
        // MAC is followed within about a second.
        let again = lb
            .run(&packet(CLIENT, 40000, VIP, 443, TCP_ACK, b"a"))
            .unwrap();
        assert_eq!(read_and_verify(&again.out).dst_mac, BACKEND_MAC);
        let moved = [0x02, 0xbe, 0, 0, 0, 0x77];
        xdp_lb_tests::sh(&[
            "ip",
            "neigh",
            "replace",
            "198.18.0.11",
            "lladdr",
            "02:be:00:00:00:77",
            "dev",
            "lan0",
            "nud",
            "permanent",
        ])
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
        loop {
            let r = lb
                .run(&packet(CLIENT, 40000, VIP, 443, TCP_ACK, b"b"))
                .unwrap();
            if read_and_verify(&r.out).dst_mac == moved {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the new neighbour MAC was not picked up within 2.5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }

        // Not a binding (another port of the range): the host's own traffic, untouched.
        let other_port = if snat_port == 20000 { 20001 } else { 20000 };
        let stray = packet(BACKEND, 6443, SNAT, other_port, TCP_ACK, b"");
        let r = lb.run(&stray).unwrap();
        assert_eq!((r.action, r.out == stray), (XDP_PASS, true));

        // Mid-connection packet of a flow we do not know (e.g. created on the other LB node
        // before a failover): to the kernel, which resets it; no binding is made.
        let unknown = packet(CLIENT, 40001, VIP, 443, TCP_ACK, b"x");
        let r = lb.run(&unknown).unwrap();
        assert_eq!((r.action, r.out == unknown), (XDP_PASS, true));
        assert_eq!(lb.counter(Counter::PassNatNoFlow), 1);
        assert_eq!(lb.counter(Counter::NewFlow), 1);
    })
    .unwrap();
}

#[test]
fn ports_are_unique_per_backend_and_exhaustion_is_a_counted_drop() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let mut lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        let mut ports = Vec::new();
        for i in 0..4 {
            let r = lb
                .run(&packet(CLIENT, 41000 + i, VIP, 443, TCP_SYN, b""))
                .unwrap();
            assert_eq!(r.action, XDP_REDIRECT);
            ports.push(read_and_verify(&r.out).sport);
        }
        ports.sort();
        assert_eq!(
            ports,
            vec![20000, 20001, 20002, 20003],
            "four flows, four ports"
        );
        // The range holds four ports for this backend: the fifth flow is dropped and counted.
        let r = lb
            .run(&packet(CLIENT, 41004, VIP, 443, TCP_SYN, b""))
            .unwrap();
        assert_eq!(r.action, XDP_DROP);
        assert_eq!(lb.counter(Counter::DropNatPortsExhausted), 1);

        // Expiry reclaims half-open flows after nat_syn_timeout (10 s; the sweep is given a
        // clock 12 s ahead: whole seconds on both sides), and their ports serve new flows again.
        let timeouts = Timeouts::of(&lb.config.agent);
        let now = xdp_lb::clock::coarse_now_s();
        let early = lb.reconciler.expire_nat_flows(&timeouts, now + 9).unwrap();
        assert_eq!((early.reclaimed, early.live["syn_sent"]), (0, 4));
        let late = lb.reconciler.expire_nat_flows(&timeouts, now + 12).unwrap();
        assert_eq!(late.reclaimed, 4);
        assert_eq!(lb.maps().flows().count(), 0, "client directions gone too");
        let r = lb
            .run(&packet(CLIENT, 41004, VIP, 443, TCP_SYN, b""))
            .unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
    })
    .unwrap();
}

#[test]
fn unresolved_next_hop_goes_to_the_kernel_rewritten() {
    require_root!();
    let ns = lan();
    let result = in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        let syn = packet(CLIENT, 42000, VIP, 444, TCP_SYN, b"");
        let r = lb.run(&syn).unwrap();
        let passed = (
            r.action,
            read_and_verify(&r.out),
            lb.counter(Counter::PassNatNoNeighbour),
        );
        // With forwarding off on the ingress device the kernel would not route it: dropped.
        std::fs::write("/proc/sys/net/ipv4/conf/lo/forwarding", "0").unwrap();
        let r = lb
            .run(&packet(CLIENT, 42001, VIP, 443, TCP_SYN, b""))
            .unwrap();
        (
            passed,
            r.action,
            lb.counter(Counter::DropNatForwardingDisabled),
        )
    })
    .unwrap();
    let ((action, out, counted), off_action, off_counted) = result;
    assert_eq!(
        action, XDP_PASS,
        "the kernel resolves the neighbour and forwards it"
    );
    assert_eq!((out.src, out.dst, out.dport), (SNAT, UNRESOLVED, 444));
    assert_eq!(out.dst_mac, LB_MAC, "MACs untouched: the kernel routes it");
    assert_eq!(counted, 1);
    assert_eq!((off_action, off_counted), (XDP_DROP, 1));
}

#[test]
fn expiry_walks_and_reclaims_tables_larger_than_one_batch() {
    require_root!();
    // The sweep reads NAT_FLOWS a few thousand entries per syscall (and deletes one by one): check
    // it over several batches, with fresh entries left alone and stale ones all reclaimed.
    let config = config(16384);
    let mut lb = Loaded::new(&config, LOOPBACK_IFINDEX).unwrap();
    let timeouts = Timeouts::of(&lb.config.agent);
    let now = xdp_lb::clock::coarse_now_s();
    let entry = |i: u32, last_seen_s: u32| {
        let key = xdp_lb_common::FlowKey {
            src_addr: xdp_lb_common::ipv4_be([198, 18, 0, 11]),
            dst_addr: xdp_lb_common::ipv4_be([198, 18, 0, 2]),
            src_port_be: xdp_lb_common::port_be(6443),
            dst_port_be: xdp_lb_common::port_be(1024 + (i % 60_000) as u16),
            proto: 6,
            _pad: [i as u8, (i >> 8) as u8, (i >> 16) as u8],
        };
        let value = xdp_lb_common::FlowValue {
            flags: xdp_lb_common::FLOW_F_NAT | xdp_lb_common::FLOW_F_REPLY,
            last_seen_s,
            nat_dst_addr_be: i,
            ..Default::default()
        };
        (key, value)
    };
    // Written as the program would have (behind the reconciler): the state under test.
    let mut nat_flows = lb.pinned_flow_table(map_names::NAT_FLOWS).unwrap();
    for i in 0..10_000 {
        let (k, v) = entry(i, if i % 2 == 0 { now } else { now - 60 });
        nat_flows.insert(k, v, 0).unwrap();
    }
    let swept = lb.reconciler.expire_nat_flows(&timeouts, now).unwrap();
    assert_eq!(swept.reclaimed, 5_000, "every stale half-open flow");
    assert_eq!(swept.live["syn_sent"], 5_000, "every fresh one kept");
    assert_eq!(lb.maps().nat_flows().count(), 5_000);
}

#[test]
fn a_closing_flow_its_client_reopens_with_a_syn_outlives_the_closing_timeout() {
    require_root!();
    // A client that reuses its source port sends a SYN on its own closing flow: the flow goes
    // on through the same binding (the backend sees one history per port) and is no longer
    // closing, so the sweep keeps it; a closed flow beside it is reclaimed.
    let ns = lan();
    in_netns(&ns.name, move || {
        let mut lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        let timeouts = Timeouts::of(&lb.config.agent);
        let open_and_close = |client_port: u16| {
            let syn = packet(CLIENT, client_port, VIP, 443, TCP_SYN, b"");
            let snat_port = read_and_verify(&lb.run(&syn).unwrap().out).sport;
            let synack = packet(BACKEND, 6443, SNAT, snat_port, TCP_SYN | TCP_ACK, b"");
            lb.run(&synack).unwrap();
            lb.run(&packet(CLIENT, client_port, VIP, 443, TCP_ACK, b""))
                .unwrap();
            let fin = packet(BACKEND, 6443, SNAT, snat_port, TCP_FIN | TCP_ACK, b"");
            lb.run(&fin).unwrap();
            snat_port
        };
        let reopened = open_and_close(40010);
        open_and_close(40011);
        assert_eq!(lb.maps().nat_flows().count(), 2);

        let again = lb
            .run(&packet(CLIENT, 40010, VIP, 443, TCP_SYN, b""))
            .unwrap();
        let out = read_and_verify(&again.out);
        assert_eq!(
            (out.src, out.sport, out.dst),
            (SNAT, reopened, BACKEND),
            "the same binding"
        );
        assert_eq!(lb.counter(Counter::NewFlow), 2, "no third flow");
        // The backend accepts the SYN (its TIME_WAIT socket allows a newer one): the reply
        // direction is no longer closing either.
        let synack = packet(BACKEND, 6443, SNAT, reopened, TCP_SYN | TCP_ACK, b"");
        let back = read_and_verify(&lb.run(&synack).unwrap().out);
        assert_eq!((back.src, back.dport), (VIP, 40010));

        let later = xdp_lb::clock::coarse_now_s() + timeouts.closing.as_secs().max(1) as u32 + 2;
        let swept = lb.reconciler.expire_nat_flows(&timeouts, later).unwrap();
        assert_eq!(swept.reclaimed, 1, "the flow that stayed closed");
        assert_eq!(swept.live["established"], 1, "the reopened flow");
        assert_eq!(swept.live["closing"], 0);
        assert_eq!(
            (lb.maps().nat_flows().count(), lb.maps().flows().count()),
            (1, 1)
        );
        assert_eq!(swept.closed.len(), 1);
        assert_eq!(swept.closed[0].client.port(), 40011);
    })
    .unwrap();
}

#[test]
fn the_clients_source_port_is_kept_when_the_range_has_it_free() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        // 20002 is in snat_port_range (20000-20003) and free: kept, like the kernel's NAT does.
        let r = lb
            .run(&packet(CLIENT, 20002, VIP, 443, TCP_SYN, b""))
            .unwrap();
        assert_eq!(read_and_verify(&r.out).sport, 20002);
        // Another client on the same port: taken for this backend, so another one.
        let other = Ipv4Addr::new(198, 19, 1, 11);
        let r = lb
            .run(&packet(other, 20002, VIP, 443, TCP_SYN, b""))
            .unwrap();
        let sport = read_and_verify(&r.out).sport;
        assert!(
            sport != 20002 && (20000..=20003).contains(&sport),
            "{sport}"
        );
    })
    .unwrap();
}

/// An ICMP error frame's translation, read back: outer source and destination, the quoted
/// packet's addresses and ports, the next-hop MTU; every checksum verified from scratch.
fn read_icmp(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, (Ipv4Addr, u16, Ipv4Addr, u16), u16) {
    let ip = &frame[14..34];
    assert_eq!(checksum(ip), 0, "outer IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let icmp = &frame[34..14 + total];
    assert_eq!(checksum(icmp), 0, "ICMP checksum over the whole message");
    let quoted = &icmp[8..28];
    assert_eq!(checksum(quoted), 0, "the quoted IPv4 header's checksum");
    let ports = &icmp[28..32];
    let at = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    (
        at(&ip[12..16]),
        at(&ip[16..20]),
        (
            at(&quoted[12..16]),
            u16::from_be_bytes([ports[0], ports[1]]),
            at(&quoted[16..20]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    )
}

/// Path-MTU discovery through NAT: a "fragmentation needed" about the LB's reply to the client
/// is translated for the backend, one about the LB's packet to the backend for the client; each
/// handed to the kernel to forward, checksums valid. Without a flow: passed as it was.
#[test]
fn icmp_fragmentation_needed_is_translated_for_the_other_side() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        // A NAT flow: SYN, the backend's SYN-ACK, the client's ACK.
        let r = lb
            .run(&packet(CLIENT, 40000, VIP, 443, TCP_SYN, b""))
            .unwrap();
        let snat_port = read_and_verify(&r.out).sport;
        lb.run(&packet(
            BACKEND,
            6443,
            SNAT,
            snat_port,
            TCP_SYN | TCP_ACK,
            b"",
        ))
        .unwrap();
        lb.run(&packet(CLIENT, 40000, VIP, 443, TCP_ACK, b""))
            .unwrap();
        let hop = Ipv4Addr::new(198, 19, 1, 1);

        // About the LB's reply VIP:443 → client:40000 (sent to the VIP by a router on the
        // client's side): for the backend, about its packet backend:6443 → SNAT:port.
        let icmp = icmp_error(hop, VIP, 443, CLIENT, 40000, (3, 4, 1280), 40);
        let r = lb.run(&icmp).unwrap();
        assert_eq!(r.action, XDP_PASS, "{:?}", lb.all_counters());
        assert_eq!(
            read_icmp(&r.out),
            (hop, BACKEND, (BACKEND, 6443, SNAT, snat_port), 1280)
        );
        assert_eq!(lb.counter(Counter::IcmpTooBigTranslated), 1);

        // About the LB's packet SNAT:port → backend:6443 (sent to the SNAT address by a router
        // on the backends' side): for the client, about its packet client:40000 → VIP:443.
        let icmp = icmp_error(ROUTER, SNAT, snat_port, BACKEND, 6443, (3, 4, 1400), 40);
        let r = lb.run(&icmp).unwrap();
        assert_eq!(r.action, XDP_PASS);
        assert_eq!(
            read_icmp(&r.out),
            (ROUTER, CLIENT, (CLIENT, 40000, VIP, 443), 1400)
        );
        assert_eq!(lb.counter(Counter::IcmpTooBigTranslated), 2);

        // No such flow: the kernel gets it as it came. (The flow took a random port of
        // 20000-20003; the error names another.)
        let unused_port = if snat_port == 20003 { 20002 } else { 20003 };
        for icmp in [
            icmp_error(hop, VIP, 443, CLIENT, 40999, (3, 4, 1280), 40),
            icmp_error(ROUTER, SNAT, unused_port, BACKEND, 6443, (3, 4, 1280), 40),
        ] {
            let r = lb.run(&icmp).unwrap();
            assert_eq!((r.action, &r.out), (XDP_PASS, &icmp));
        }
        assert_eq!(lb.counter(Counter::PassIcmp), 2);
        assert_eq!(lb.counter(Counter::IcmpTooBigTranslated), 2);
    })
    .unwrap();
}

/// NAT66 through BPF_PROG_TEST_RUN, in a namespace like `lan`'s over IPv6: `lan0`
/// 2001:2::2/64 (the SNAT address), the backend and the router as static neighbours, the
/// clients' 2001:2:1::/64 behind the router.
mod nat66 {
    use std::net::Ipv6Addr;

    use xdp_lb_tests::packet::{ipv6_frame, l4_checksum6, tcp_header};

    use super::*;

    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
    const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
    const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x10);

    fn config6() -> String {
        fixtures::config("lan0")
            .bed("@PIN_DIR@", 4096, 4)
            .key("snat_address", "2001:2::2")
            .key("snat_port_range", "20000-20003")
            .vip(
                fixtures::vip("api6", VIP6, 443)
                    .nat()
                    .key("maglev_table_size", 251)
                    .check("type", "none")
                    .list("deny", &["2001:2:1::66"])
                    .backend_with(BACKEND6, &[("port", "6443")]),
            )
            .vip(
                fixtures::vip("dns6", VIP6, 53)
                    .nat()
                    .key("protocol", "udp")
                    .key("maglev_table_size", 251)
                    .check("type", "none")
                    .backend_with(BACKEND6, &[("port", "5353")]),
            )
            .to_string()
    }

    /// A UDP/IPv6 datagram with a valid (never zero) checksum.
    fn datagram6(
        (src, sport): (Ipv6Addr, u16),
        (dst, dport): (Ipv6Addr, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&sport.to_be_bytes());
        d.extend_from_slice(&dport.to_be_bytes());
        d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        let sum = match l4_checksum6(src, dst, IPPROTO_UDP, &d) {
            0 => 0xffff,
            c => c,
        };
        d[6..8].copy_from_slice(&sum.to_be_bytes());
        let mut f = ipv6_frame(&[], IPPROTO_UDP, &d);
        f[6..12].copy_from_slice(&ROUTER_MAC);
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        f
    }

    /// A UDP/IPv6 datagram's addresses and ports, its checksum verified by recomputation.
    fn read_udp6(frame: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16, Vec<u8>) {
        let payload_len = u16::from_be_bytes([frame[18], frame[19]]) as usize;
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        let d = &frame[54..54 + payload_len];
        let mut zeroed = d.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let expect = match l4_checksum6(src, dst, IPPROTO_UDP, &zeroed) {
            0 => 0xffff,
            c => c,
        };
        assert_eq!(
            u16::from_be_bytes([d[6], d[7]]),
            expect,
            "UDP checksum over IPv6"
        );
        let port = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        (src, port(0), dst, port(2), d[8..].to_vec())
    }

    #[test]
    fn nat66_translates_udp_both_ways() {
        require_root!();
        let ns = lan6();
        in_netns(&ns.name, move || {
            let lb = Loaded::new(&config6(), LOOPBACK_IFINDEX).unwrap();
            let query = datagram6((CLIENT6, 41000), (VIP6, 53), b"query");
            let r = lb.run(&query).unwrap();
            assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
            let (src, sport, dst, dport, payload) = read_udp6(&r.out);
            assert_eq!((src, dst, dport), (SNAT6, BACKEND6, 5353));
            assert_eq!(payload, b"query");
            assert_eq!(lb.maps().nat_embryonic6().count(), 1, "half-open");
            let answer = datagram6((BACKEND6, 5353), (SNAT6, sport), b"answer");
            let r = lb.run(&answer).unwrap();
            assert_eq!(r.action, XDP_REDIRECT);
            assert_eq!(
                read_udp6(&r.out),
                (VIP6, 53, CLIENT6, 41000, b"answer".to_vec())
            );
            // The second datagram promotes it.
            let r = lb
                .run(&datagram6((CLIENT6, 41000), (VIP6, 53), b"again"))
                .unwrap();
            assert_eq!(read_udp6(&r.out).1, sport);
            assert_eq!(
                (
                    lb.maps().nat_embryonic6().count(),
                    lb.maps().nat_flows6().count()
                ),
                (0, 1)
            );
            assert_eq!(lb.counter(Counter::NewFlow), 1);
        })
        .unwrap();
    }

    fn lan6() -> NetNs {
        let ns = NetNs::new("nattab6").unwrap();
        ns.ip(&[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
        ])
        .unwrap();
        ns.ip(&["-6", "addr", "add", "2001:2::2/64", "dev", "lan0", "nodad"])
            .unwrap();
        ns.ip(&["link", "set", "lan0", "up"]).unwrap();
        ns.ip(&["link", "set", "lan1", "up"]).unwrap();
        for (addr, m) in [("2001:2::11", BACKEND_MAC), ("2001:2::1", ROUTER_MAC)] {
            ns.ip(&[
                "-6",
                "neigh",
                "add",
                addr,
                "lladdr",
                &mac_text(m),
                "dev",
                "lan0",
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        ns.ip(&["-6", "route", "add", "2001:2:1::/64", "via", "2001:2::1"])
            .unwrap();
        // As for IPv4: the FIB lookup runs from the ingress device's (lo's) view.
        ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        ns.sysctl("net.ipv6.conf.lo.forwarding", "1").unwrap();
        ns
    }

    /// A TCP/IPv6 frame with a valid checksum; `dest_opts`: one 8-byte destination-options
    /// header before TCP.
    fn packet6(
        (src, sport): (Ipv6Addr, u16),
        (dst, dport): (Ipv6Addr, u16),
        flags: u8,
        payload: &[u8],
        dest_opts: bool,
    ) -> Vec<u8> {
        let mut seg = tcp_header();
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&dport.to_be_bytes());
        seg[13] = flags;
        seg.extend_from_slice(payload);
        let sum = l4_checksum6(src, dst, 6, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        let exts: &[(u8, usize)] = if dest_opts { &[(60, 8)] } else { &[] };
        let mut f = ipv6_frame(exts, 6, &seg);
        f[6..12].copy_from_slice(&ROUTER_MAC);
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        f
    }

    #[derive(Debug)]
    struct Seen6 {
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
        /// The extension headers between the fixed header and TCP, as they left.
        exts: Vec<u8>,
        payload: Vec<u8>,
    }

    /// Parses a TCP/IPv6 frame (at most one destination-options header) and asserts the TCP
    /// checksum by recomputing it over the rewritten pseudo-header.
    fn read_and_verify6(frame: &[u8]) -> Seen6 {
        assert_eq!(frame[12..14], [0x86, 0xdd]);
        let payload_len = u16::from_be_bytes([frame[18], frame[19]]) as usize;
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        let mut off = 54;
        if frame[20] == 60 {
            off += (frame[55] as usize + 1) * 8;
        }
        let seg = &frame[off..54 + payload_len];
        let mut zeroed = seg.to_vec();
        zeroed[16] = 0;
        zeroed[17] = 0;
        assert_eq!(
            u16::from_be_bytes([seg[16], seg[17]]),
            l4_checksum6(src, dst, 6, &zeroed),
            "TCP checksum recomputed over the rewritten IPv6 pseudo-header and segment"
        );
        Seen6 {
            dst_mac: frame[0..6].try_into().unwrap(),
            src,
            dst,
            sport: u16::from_be_bytes([seg[0], seg[1]]),
            dport: u16::from_be_bytes([seg[2], seg[3]]),
            exts: frame[54..off].to_vec(),
            payload: seg[20..].to_vec(),
        }
    }

    #[test]
    fn nat66_rewrites_both_directions_with_valid_checksums() {
        require_root!();
        let ns = lan6();
        in_netns(&ns.name, move || {
            let lb = Loaded::new(&config6(), LOOPBACK_IFINDEX).unwrap();
            // Client → VIP: [SNAT]:port → [backend]:6443, to the backend's MAC.
            let syn = packet6((CLIENT6, 41000), (VIP6, 443), TCP_SYN, b"", false);
            let r = lb.run(&syn).unwrap();
            assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
            let out = read_and_verify6(&r.out);
            assert_eq!(out.dst_mac, BACKEND_MAC);
            assert_eq!((out.src, out.dst, out.dport), (SNAT6, BACKEND6, 6443));
            assert!((20000..=20003).contains(&out.sport), "{}", out.sport);
            let snat_port = out.sport;
            assert_eq!(lb.counter(Counter::NewFlow), 1);
            // The backend's SYN-ACK: [VIP]:443 → [client]:41000, to the router.
            let data: Vec<u8> = (0..=255u8).cycle().take(777).collect();
            let reply = packet6(
                (BACKEND6, 6443),
                (SNAT6, snat_port),
                TCP_SYN | TCP_ACK,
                &data[..333],
                false,
            );
            let r = lb.run(&reply).unwrap();
            assert_eq!(r.action, XDP_REDIRECT);
            let out = read_and_verify6(&r.out);
            assert_eq!(out.dst_mac, ROUTER_MAC);
            assert_eq!(
                (out.src, out.sport, out.dst, out.dport),
                (VIP6, 443, CLIENT6, 41000)
            );
            assert_eq!(out.payload, &data[..333]);
            // The client's ACK, with data and a destination-options header: promotes the
            // flow; the extension header leaves as it came.
            let ack = packet6((CLIENT6, 41000), (VIP6, 443), TCP_ACK, &data, true);
            let r = lb.run(&ack).unwrap();
            assert_eq!(r.action, XDP_REDIRECT);
            let out = read_and_verify6(&r.out);
            assert_eq!((out.src, out.sport, out.dst), (SNAT6, snat_port, BACKEND6));
            assert_eq!(out.exts, ack[54..62], "the destination options are kept");
            assert_eq!(out.payload, data);
            let nat6: Vec<_> = lb
                .maps()
                .flows6()
                .filter(|(_, v)| v.flags & xdp_lb_common::FLOW_F_NAT != 0)
                .collect();
            assert_eq!(nat6.len(), 1, "the promoted flow's client direction");
            assert_eq!(lb.maps().nat_flows6().count(), 1, "its reply direction");
            assert_eq!(lb.maps().nat_embryonic6().count(), 0, "no longer half-open");
            // A denied source's SYN is dropped before any state (no half-open entry, no port).
            let denied = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x66);
            let r = lb
                .run(&packet6((denied, 41000), (VIP6, 443), TCP_SYN, b"", false))
                .unwrap();
            assert_eq!(r.action, XDP_DROP);
            assert_eq!(lb.counter(Counter::DropDenied), 1);
            assert_eq!(lb.maps().nat_embryonic6().count(), 0);
            // A packet of a connection nobody knows goes to the kernel (which resets it).
            let stray = packet6((CLIENT6, 41999), (VIP6, 443), TCP_ACK, b"", false);
            let r = lb.run(&stray).unwrap();
            assert_eq!(r.action, XDP_PASS);
            assert_eq!(lb.counter(Counter::PassNatNoFlow), 1);
        })
        .unwrap();
    }
}

/// A UDP datagram's fields, with both checksums verified by recomputation; `udp_check` as
/// carried (0: "no checksum", RFC 768).
fn read_udp(frame: &[u8]) -> (Seen, u16) {
    let ip = &frame[14..34];
    assert_eq!(checksum(ip), 0, "IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = &frame[34..14 + total];
    assert_eq!(u16::from_be_bytes([seg[4], seg[5]]) as usize, seg.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let check = u16::from_be_bytes([seg[6], seg[7]]);
    if check != 0 {
        let mut zeroed = seg.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let expect = match l4_checksum(src, dst, IPPROTO_UDP, &zeroed) {
            0 => 0xffff, // RFC 768: a computed 0 is sent as all ones
            c => c,
        };
        assert_eq!(check, expect, "UDP checksum recomputed after the rewrite");
    }
    let seen = Seen {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src,
        dst,
        sport: u16::from_be_bytes([seg[0], seg[1]]),
        dport: u16::from_be_bytes([seg[2], seg[3]]),
        payload: seg[8..].to_vec(),
    };
    (seen, check)
}

fn datagram(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Frame::tcp(src, sport, dst, dport);
    f.proto = IPPROTO_UDP;
    f.src_mac = ROUTER_MAC;
    f.payload = payload.to_vec();
    f.build()
}

/// The same datagram without a checksum (0: allowed over IPv4, RFC 768).
fn without_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[40] = 0;
    frame[41] = 0;
    frame
}

#[test]
fn udp_is_translated_both_ways_half_open_until_the_clients_second_datagram() {
    require_root!();
    let ns = lan();
    let lan0 = ns.mac("lan0").unwrap();
    in_netns(&ns.name, move || {
        let lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        let counts = |lb: &Loaded| {
            (
                lb.maps().nat_embryonic().count(),
                lb.maps().nat_flows().count(),
                lb.maps().flows().count(),
            )
        };

        // The query: SNAT-address:port → backend:5353, a valid checksum updated by delta.
        let query = datagram(CLIENT, 40000, VIP, 53, b"a DNS query");
        let r = lb.run(&query).unwrap();
        assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
        let (out, check) = read_udp(&r.out);
        assert_ne!(check, 0);
        assert_eq!((out.dst_mac, out.src_mac), (BACKEND_MAC, lan0));
        assert_eq!((out.src, out.dst, out.dport), (SNAT, BACKEND, 5353));
        assert_eq!(out.payload, b"a DNS query");
        let snat_port = out.sport;
        assert!((20000..=20003).contains(&snat_port), "{snat_port}");
        assert_eq!(lb.counter(Counter::NewFlow), 1);
        // One datagram proves nothing about its source: half-open, as a SYN is.
        assert_eq!(counts(&lb), (1, 0, 0));
        let (_, embryo) = lb.maps().nat_embryonic().next().unwrap();
        assert_ne!(embryo.flags & FLOW_F_UDP, 0, "flagged UDP for its timeout");

        // The answer, without a checksum: VIP:53 → client:40000, the checksum kept 0.
        let answer = without_checksum(datagram(BACKEND, 5353, SNAT, snat_port, b"the answer"));
        let r = lb.run(&answer).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        let (out, check) = read_udp(&r.out);
        assert_eq!(check, 0, "no checksum stays no checksum");
        assert_eq!((out.dst_mac, out.src_mac), (ROUTER_MAC, lan0));
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (VIP, 53, CLIENT, 40000)
        );
        assert_eq!(out.payload, b"the answer");
        assert_eq!(counts(&lb), (1, 0, 0), "still half-open");

        // The client's second datagram (no checksum either) promotes the flow: both directions
        // in the flow tables, the same port, no second flow.
        let second = without_checksum(datagram(CLIENT, 40000, VIP, 53, b"another query"));
        let r = lb.run(&second).unwrap();
        let (out, check) = read_udp(&r.out);
        assert_eq!(check, 0);
        assert_eq!((out.src, out.sport, out.dport), (SNAT, snat_port, 5353));
        assert_eq!(counts(&lb), (0, 1, 1));
        assert_eq!(lb.counter(Counter::NewFlow), 1);
        for (_, v) in lb.maps().nat_flows().chain(lb.maps().flows()) {
            assert_ne!(v.flags & FLOW_F_UDP, 0);
        }
        // Established both ways now, with checksums: the answer's too is updated by delta.
        let r = lb
            .run(&datagram(BACKEND, 5353, SNAT, snat_port, b"answer two"))
            .unwrap();
        let (out, check) = read_udp(&r.out);
        assert_ne!(check, 0);
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (VIP, 53, CLIENT, 40000)
        );

        // TCP to the same backend and SNAT port numbers is another flow: the protocols' ports
        // are separate, as the kernel's are.
        let r = lb
            .run(&packet(CLIENT, 40000, VIP, 443, TCP_SYN, b""))
            .unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(lb.counter(Counter::NewFlow), 2);
    })
    .unwrap();
}

#[test]
fn idle_udp_flows_expire_after_nat_udp_timeout_and_not_before() {
    require_root!();
    let ns = lan();
    in_netns(&ns.name, move || {
        let mut lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
        // Two established UDP flows (two datagrams each) and one half-open (one datagram).
        for sport in [41000, 41001] {
            for _ in 0..2 {
                let r = lb.run(&datagram(CLIENT, sport, VIP, 53, b"q")).unwrap();
                assert_eq!(r.action, XDP_REDIRECT);
            }
        }
        lb.run(&datagram(CLIENT, 41002, VIP, 53, b"q")).unwrap();
        assert_eq!(lb.maps().nat_flows().count(), 2);
        assert_eq!(lb.maps().nat_embryonic().count(), 1);

        // nat_udp_timeout is 30 s by default; the sweep's clock is whole seconds on both sides.
        let timeouts = Timeouts::of(&lb.config.agent);
        assert_eq!(timeouts.udp.as_secs(), 30);
        let now = xdp_lb::clock::coarse_now_s();
        let early = lb.reconciler.expire_nat_flows(&timeouts, now + 29).unwrap();
        assert_eq!((early.reclaimed, early.live["udp"]), (0, 3), "never early");
        let late = lb.reconciler.expire_nat_flows(&timeouts, now + 32).unwrap();
        // The two flows (both directions) and the half-open one.
        assert_eq!(late.reclaimed, 3, "{late:?}");
        assert_eq!(late.live["udp"], 0);
        assert_eq!(
            (
                lb.maps().nat_flows().count(),
                lb.maps().flows().count(),
                lb.maps().nat_embryonic().count()
            ),
            (0, 0, 0)
        );
    })
    .unwrap();
}

/// `[sync]` on both sides of the wire, without the wire: what the program reports when a NAT
/// flow is established, and a flow installed as a peer's (`install_synced`) translated by the
/// program in both directions, checksums recomputed.
mod sync {
    use std::{net::IpAddr, os::unix::fs::PermissionsExt as _};

    use xdp_lb::dataplane::SyncedFlow;
    use xdp_lb_common::{
        FLOW_F_CLOSING, FLOW_F_ESTABLISHED, IPPROTO_TCP, SYNC_EVENT_NAT, SYNC_EVENT_NAT_CLOSING,
        SyncEvent,
    };

    use super::*;

    /// Loads the NAT bed's config with `[sync]` (one peer, a root-only key, read when the
    /// config is and removed after).
    fn loaded_with_sync() -> Loaded {
        let key = std::env::temp_dir().join(format!("xlbt-sync-{}.key", std::process::id()));
        std::fs::write(&key, [0x5a; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "{}\n[sync]\npeers = [\"198.18.0.3\"]\nkey_file = \"{}\"\n",
            config(4096),
            key.display()
        );
        let lb = Loaded::new(&text, LOOPBACK_IFINDEX);
        let _ = std::fs::remove_file(&key);
        lb.unwrap()
    }

    #[test]
    fn an_established_nat_flow_is_reported_with_its_snat_port() {
        require_root!();
        let ns = lan();
        in_netns(&ns.name, move || {
            let lb = loaded_with_sync();
            let data = aya::maps::MapData::from_pin(lb.pin_dir.join("SYNC_EVENTS")).unwrap();
            let mut ring: aya::maps::RingBuf<_> = aya::maps::Map::RingBuf(data).try_into().unwrap();
            let r = lb
                .run(&packet(CLIENT, 40000, VIP, 443, TCP_SYN, b""))
                .unwrap();
            let snat_port = read_and_verify(&r.out).sport;
            assert!(ring.next().is_none(), "half-open flows are not reported");
            lb.run(&packet(CLIENT, 40000, VIP, 443, TCP_ACK, b""))
                .unwrap();
            let item = ring.next().expect("the established flow is reported");
            assert_eq!(item.len(), size_of::<SyncEvent>());
            // SAFETY: length checked; plain integers.
            let e: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            assert_eq!(
                (e.kind, e.family, e.proto),
                (SYNC_EVENT_NAT, 4, IPPROTO_TCP)
            );
            assert_eq!(&e.src_addr[..4], &CLIENT.octets());
            assert_eq!(&e.dst_addr[..4], &VIP.octets());
            assert_eq!(
                (u16::from_be(e.src_port_be), u16::from_be(e.dst_port_be)),
                (40000, 443)
            );
            assert_eq!(u16::from_be(e.snat_port_be), snat_port);
            assert_eq!(e.backend_id, lb.backend_id(0, BACKEND));
            drop(item);

            // The flow starts closing: reported by its client's 5-tuple when each direction's
            // entry sees its first FIN (the backend's here, through the reply entry, then the
            // client's), and not again.
            let fin = TCP_ACK | 0x01;
            for f in [
                packet(BACKEND, 6443, SNAT, snat_port, fin, b""),
                packet(CLIENT, 40000, VIP, 443, fin, b""),
                packet(CLIENT, 40000, VIP, 443, fin, b""),
            ] {
                lb.run(&f).unwrap();
            }
            for _ in 0..2 {
                let item = ring.next().expect("the closing flow is reported");
                // SAFETY: as above.
                let c: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                assert_eq!(c.kind, SYNC_EVENT_NAT_CLOSING);
                assert_eq!(&c.src_addr[..4], &CLIENT.octets());
                assert_eq!(&c.dst_addr[..4], &VIP.octets());
                assert_eq!(
                    (u16::from_be(c.src_port_be), u16::from_be(c.dst_port_be)),
                    (40000, 443)
                );
                assert_eq!(u16::from_be(c.snat_port_be), snat_port);
            }
            assert!(ring.next().is_none(), "a repeated FIN changes nothing");
        })
        .unwrap();
    }

    #[test]
    fn a_peers_nat_flow_is_translated_both_ways() {
        require_root!();
        let ns = lan();
        in_netns(&ns.name, move || {
            let mut lb = Loaded::new(&config(4096), LOOPBACK_IFINDEX).unwrap();
            let v4 = |a: Ipv4Addr| IpAddr::V4(a);
            let flow = SyncedFlow {
                proto: IPPROTO_TCP,
                client: (v4(CLIENT), 41234),
                vip: (v4(VIP), 443),
                vip_id: lb.ids.vips[&lb.config.vips[0].key()],
                backend_id: lb.backend_id(0, BACKEND),
                backend: (v4(BACKEND), 6443),
                snat: Some((v4(SNAT), 20002)),
                state: FLOW_F_ESTABLISHED,
                idle_s: 5,
            };
            let now = (xdp_lb::clock::monotonic_ns(), xdp_lb::clock::coarse_now_s());
            let report = lb.reconciler.install_synced(&[flow], now.0, now.1).unwrap();
            assert_eq!(report.installed, 1);
            // Again: known, nothing changes.
            let again = lb.reconciler.install_synced(&[flow], now.0, now.1).unwrap();
            assert_eq!((again.installed, again.known), (0, 1));
            // Another flow wanting the same SNAT port for the same backend: a conflict.
            let other = SyncedFlow {
                client: (v4(CLIENT), 41235),
                ..flow
            };
            let clash = lb
                .reconciler
                .install_synced(&[other], now.0, now.1)
                .unwrap();
            assert_eq!(clash.conflicts, 1);

            // The client's data, never seen here before: on as SNAT:20002 → backend:6443.
            let data = b"GET /apis HTTP/1.1\r\n\r\n";
            let r = lb
                .run(&packet(CLIENT, 41234, VIP, 443, TCP_ACK, data))
                .unwrap();
            assert_eq!(r.action, XDP_REDIRECT, "{:?}", lb.all_counters());
            let out = read_and_verify(&r.out);
            assert_eq!(
                (out.src, out.sport, out.dst, out.dport),
                (SNAT, 20002, BACKEND, 6443)
            );
            assert_eq!(out.payload, data);
            // The backend's answer: back as VIP:443 → client.
            let r = lb
                .run(&packet(BACKEND, 6443, SNAT, 20002, TCP_ACK, b"200 OK"))
                .unwrap();
            let out = read_and_verify(&r.out);
            assert_eq!(
                (out.src, out.sport, out.dst, out.dport),
                (VIP, 443, CLIENT, 41234)
            );
            assert_eq!(lb.counter(Counter::NewFlow), 0, "no new flow: the peer's");
            // Its age came along: the sweep sees it established, idle about 5 s.
            let timeouts = Timeouts::of(&lb.config.agent);
            let sweep = lb
                .reconciler
                .expire_nat_flows(&timeouts, xdp_lb::clock::coarse_now_s())
                .unwrap();
            assert_eq!(sweep.live["established"], 1);
            // The peer says it is closing now: the copy closes too.
            let closing = SyncedFlow {
                state: FLOW_F_ESTABLISHED | FLOW_F_CLOSING,
                idle_s: 0,
                ..flow
            };
            let r = lb
                .reconciler
                .install_synced(&[closing], now.0, now.1)
                .unwrap();
            assert_eq!(r.known, 1);
            let sweep = lb
                .reconciler
                .expire_nat_flows(&timeouts, xdp_lb::clock::coarse_now_s())
                .unwrap();
            assert_eq!((sweep.live["closing"], sweep.live["established"]), (1, 0));
            // And closed: both entries go, the SNAT port with them.
            let gone = lb.reconciler.remove_synced(&[xdp_lb::nat::ClosedFlow {
                proto: IPPROTO_TCP,
                client: (CLIENT, 41234).into(),
                vip: (VIP, 443).into(),
            }]);
            assert_eq!(gone, 1);
            assert_eq!(
                (lb.maps().flows().count(), lb.maps().nat_flows().count()),
                (0, 0)
            );
        })
        .unwrap();
    }
}
