//! Packet tables through BPF_PROG_TEST_RUN: input frame → expected verdict, output bytes and
//! counter. The program and its maps are the real ones, filled by the real reconciler.

use std::{net::Ipv4Addr, time::Duration};

use xdp_lb::config::BackendConfig;
use xdp_lb_common::{Counter, map_names};
use xdp_lb_tests::{
    NetNs, fixtures,
    harness::*,
    in_netns,
    packet::{
        Frame, LB_MAC, TCP_ACK, arp_request, icmp_echo, icmp_error, ipv6_frame, ipv6_tcp,
        tcp_header,
    },
    require_root,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// A three-backend VIP on :80 and a VIP without backends on :81.
fn config() -> String {
    fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(fixtures::three_backends("web", 80).key("maglev_table_size", 4093))
        .vip(fixtures::vip("empty", VIP, 81))
        .to_string()
}

fn syn(sport: u16) -> Frame {
    Frame::tcp(CLIENT, sport, VIP, 80)
}

/// The frame a DSR forward must produce: only the MACs differ.
fn expect_forwarded(input: &[u8], output: &[u8], backend_mac: [u8; 6]) {
    assert_eq!(output.len(), input.len());
    assert_eq!(
        &output[0..6],
        &backend_mac,
        "destination MAC := the backend's"
    );
    assert_eq!(
        &output[6..12],
        &LB_MAC,
        "source MAC := the egress interface's"
    );
    assert_eq!(
        &output[12..],
        &input[12..],
        "IP and TCP are not touched in DSR"
    );
}

fn backend_index_of(mac: &[u8]) -> usize {
    (0..3)
        .find(|&i| backend_mac(i) == mac[..6])
        .expect("a backend MAC")
}

#[test]
fn syn_to_the_vip_is_forwarded_and_the_flow_sticks() {
    require_root!();
    let mut lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let first = syn(40000).build();
    let r = lb.run(&first).unwrap();
    assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
    let chosen = backend_index_of(&r.out);
    expect_forwarded(&first, &r.out, backend_mac(chosen));
    assert_eq!(lb.counter(Counter::NewFlow), 1);
    assert_eq!(lb.counter(Counter::Tx), 1);

    // Later packets of the flow go to the same backend, also after the backend set changes.
    let mut ack = syn(40000);
    ack.flags = TCP_ACK;
    ack.payload = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    for _ in 0..5 {
        let r = lb.run(&ack.build()).unwrap();
        assert_eq!((r.action, backend_index_of(&r.out)), (XDP_TX, chosen));
    }
    lb.config.vips[0].backends.push(BackendConfig {
        name: "fourth".into(),
        address: "198.18.0.14".parse().unwrap(),
        port: 80,
        weight: 1,
        state: Default::default(),
        slowstart: None,
    });
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    for _ in 0..5 {
        let r = lb.run(&ack.build()).unwrap();
        assert_eq!(
            (r.action, backend_index_of(&r.out)),
            (XDP_TX, chosen),
            "flow moved after adding a backend"
        );
    }
    assert_eq!(
        lb.counter(Counter::NewFlow),
        1,
        "only the first packet created a flow"
    );

    // Per-VIP and per-backend counters.
    assert_eq!(lb.maps().vip_traffic(0).packets, 11);
}

#[test]
fn many_flows_spread_over_backends_like_the_table() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let mut per_backend = [0usize; 3];
    for sport in 20000..23000u16 {
        let r = lb.run(&syn(sport).build()).unwrap();
        assert_eq!(r.action, XDP_TX);
        per_backend[backend_index_of(&r.out)] += 1;
    }
    for n in per_backend {
        assert!((900..=1100).contains(&n), "{per_backend:?}");
    }
    // The kernel chose what userspace predicts from the same hash and table.
    let (_, vip) = lb
        .maps()
        .vips()
        .into_iter()
        .find(|(_, v)| v.vip_id == 0)
        .unwrap();
    let table = lb.maps().maglev_table(&vip);
    for sport in [20000u16, 20001, 21234, 22999] {
        let h = xdp_lb_common::flow_hash(
            xdp_lb_common::ipv4_be(CLIENT.octets()),
            xdp_lb_common::ipv4_be(VIP.octets()),
            xdp_lb_common::port_be(sport),
            xdp_lb_common::port_be(80),
            6,
            vip.hash_seed,
        );
        let predicted = table[(h % vip.table_size) as usize];
        let r = lb.run(&syn(sport).build()).unwrap();
        let address = lb.config.vips[0].backends[backend_index_of(&r.out)].address;
        assert_eq!(lb.backend_id(0, address), predicted, "sport {sport}");
    }
}

#[test]
fn frames_that_are_not_for_a_vip_pass_untouched() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let mut udp = syn(40000);
    udp.proto = 17;
    let mut sctp = syn(40000);
    sctp.proto = 132;
    let mut other_port = syn(40000);
    other_port.dport = 22;
    let mut other_addr = syn(40000);
    other_addr.dst = Ipv4Addr::new(198, 18, 0, 2);
    let mut double_tagged = syn(40000);
    double_tagged.outer_vlan = Some(100);
    double_tagged.vlan = Some(200);
    let table: Vec<(&str, Vec<u8>, Counter)> = vec![
        (
            "TCP to another port of the VIP address",
            other_port.build(),
            Counter::PassNotVip,
        ),
        (
            "TCP to another address",
            other_addr.build(),
            Counter::PassNotVip,
        ),
        (
            "UDP to the TCP VIP's address and port (no UDP VIP there)",
            udp.build(),
            Counter::PassNotVip,
        ),
        ("SCTP to the VIP", sctp.build(), Counter::PassNotTcp),
        ("ARP", arp_request(CLIENT, VIP), Counter::PassNotIp),
        (
            "IPv6 TCP (no IPv6 VIP is balanced yet)",
            ipv6_tcp(),
            Counter::PassNotVip,
        ),
        (
            "TCP to the VIP in two VLAN tags (802.1ad + 802.1Q): one tag is all we forward",
            double_tagged.build(),
            Counter::PassNotIp,
        ),
    ];
    for (what, frame, counter) in table {
        let before = lb.counter(counter);
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_PASS, "{what}");
        assert_eq!(r.out, frame, "{what}: bytes must be unchanged");
        assert_eq!(lb.counter(counter), before + 1, "{what}: {counter:?}");
    }
}

#[test]
fn malformed_and_fragmented_frames_are_never_forwarded() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let good = syn(40000).build();
    let eth = 14;

    let mut vlan_cut = good[..12].to_vec();
    vlan_cut.extend_from_slice(&[0x81, 0x00]); // a VLAN ethertype with no tag after it
    let ip_cut = good[..eth + 10].to_vec();
    let mut claims_more = good.clone();
    claims_more[eth + 2..eth + 4].copy_from_slice(&200u16.to_be_bytes());
    let mut ihl4 = good.clone();
    ihl4[eth] = 0x44;
    let mut tot_lt_ihl = good.clone();
    tot_lt_ihl[eth + 2..eth + 4].copy_from_slice(&10u16.to_be_bytes());
    // TCP cut short: IPv4 says 20 + 10 bytes and the frame holds exactly that.
    let mut tcp_cut = good[..eth + 30].to_vec();
    tcp_cut[eth + 2..eth + 4].copy_from_slice(&30u16.to_be_bytes());
    let mut doff4 = good.clone();
    doff4[eth + 20 + 12] = 4 << 4;
    // Data offset 15 (a 60-byte header) in a 40-byte IPv4 packet: the header claims more than
    // the packet holds (the frame's Ethernet padding does not count).
    let mut doff15 = good.clone();
    doff15[eth + 20 + 12] = 15 << 4;
    let mut more_fragments = syn(40000);
    more_fragments.frag = 0x2000;
    let mut later_fragment = syn(40000);
    later_fragment.frag = 0x0010;

    let table: Vec<(&str, Vec<u8>, u32, Counter)> = vec![
        (
            "VLAN ethertype without a tag",
            vlan_cut,
            XDP_DROP,
            Counter::DropTruncatedEth,
        ),
        (
            "IPv4 header cut short",
            ip_cut,
            XDP_DROP,
            Counter::DropTruncatedIp,
        ),
        (
            "total length beyond the frame",
            claims_more,
            XDP_DROP,
            Counter::DropTruncatedIp,
        ),
        ("IHL 4", ihl4, XDP_DROP, Counter::DropBadIpHeader),
        (
            "total length below IHL",
            tot_lt_ihl,
            XDP_DROP,
            Counter::DropBadIpHeader,
        ),
        (
            "TCP header cut short",
            tcp_cut,
            XDP_DROP,
            Counter::DropBadTcpHeader,
        ),
        (
            "TCP data offset 4",
            doff4,
            XDP_DROP,
            Counter::DropBadTcpHeader,
        ),
        (
            "TCP data offset beyond the packet",
            doff15,
            XDP_DROP,
            Counter::DropBadTcpHeader,
        ),
        (
            "first fragment (MF)",
            more_fragments.build(),
            XDP_PASS,
            Counter::PassFragment,
        ),
        (
            "later fragment",
            later_fragment.build(),
            XDP_PASS,
            Counter::PassFragment,
        ),
    ];
    for (what, frame, action, counter) in table {
        let before = lb.counter(counter);
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, action, "{what}: {:?}", lb.all_counters());
        assert_eq!(r.out, frame, "{what}: bytes must be unchanged");
        assert_eq!(lb.counter(counter), before + 1, "{what}: {counter:?}");
    }
    assert_eq!(lb.counter(Counter::Tx), 0);
    assert_eq!(lb.counter(Counter::NewFlow), 0);

    // The boundary: options up to exactly the end of the packet are a well-formed header.
    let mut options = syn(40001);
    options.payload = vec![1, 1, 1, 1]; // four NOP options
    let mut fits = options.build();
    fits[eth + 20 + 12] = 6 << 4;
    assert_eq!(
        lb.run(&fits).unwrap().action,
        XDP_TX,
        "{:?}",
        lb.all_counters()
    );
}

#[test]
fn vlan_tag_and_ip_options_are_forwarded_intact() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let mut tagged = syn(40001);
    tagged.vlan = Some(100);
    let mut options = syn(40002);
    options.ihl = 6;
    for (what, frame) in [
        ("VLAN 100", tagged.build()),
        ("IP options", options.build()),
    ] {
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_TX, "{what}: {:?}", lb.all_counters());
        let b = backend_index_of(&r.out);
        expect_forwarded(&frame, &r.out, backend_mac(b));
    }
}

#[test]
fn vip_without_backends_drops_and_counts() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let mut f = syn(40000);
    f.dport = 81;
    let r = lb.run(&f.build()).unwrap();
    assert_eq!(r.action, XDP_DROP);
    assert_eq!(lb.counter(Counter::DropNoBackend), 1);
}

#[test]
fn other_egress_interface_is_a_redirect() {
    require_root!();
    // Backends reached through another interface than the ingress one: XDP_REDIRECT via the
    // TX_PORTS devmap. The devmap only takes interfaces that exist in the caller's namespace,
    // so this runs in a namespace of its own with a veth pair in it.
    let ns = NetNs::new("redirect").unwrap();
    ns.ip(&[
        "link", "add", "out0", "type", "veth", "peer", "name", "out1",
    ])
    .unwrap();
    ns.ip(&["link", "set", "out0", "up"]).unwrap();
    let result = in_netns(&ns.name, || {
        let ifindex = xdp_lb::netlink::ifindex("out0").expect("out0 exists");
        let lb = Loaded::new(&config(), ifindex).unwrap();
        let frame = syn(40000).build();
        let r = lb.run(&frame).unwrap();
        (r, frame, lb.counter(Counter::Redirect))
    })
    .unwrap();
    let (r, frame, redirects) = result;
    assert_eq!(r.action, XDP_REDIRECT);
    expect_forwarded(&frame, &r.out, backend_mac(backend_index_of(&r.out)));
    assert_eq!(redirects, 1);

    // An egress interface the devmap cannot hold is refused when the maps are written.
    let err = Loaded::new(&config(), 999_999)
        .err()
        .expect("TX_PORTS must reject a missing interface");
    assert!(format!("{err:#}").contains("TX_PORTS"), "{err:#}");
}

#[test]
fn frames_for_another_hosts_mac_are_left_to_the_kernel() {
    require_root!();
    let mut lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    lb.check_local_mac(LOOPBACK_IFINDEX, LB_MAC).unwrap();
    // Addressed to us: balanced.
    let ours = syn(40000).build();
    assert_eq!(lb.run(&ours).unwrap().action, XDP_TX);
    // A switch flooded a frame for another host (e.g. the other LB node's MAC): not ours.
    let mut flooded = syn(40001);
    flooded.dst_mac = [0x02, 0x1b, 0, 0, 0, 0x03];
    let frame = flooded.build();
    let r = lb.run(&frame).unwrap();
    assert_eq!((r.action, r.out == frame), (XDP_PASS, true));
    assert_eq!(lb.counter(Counter::PassNotLocalMac), 1);
    assert_eq!(
        lb.counter(Counter::NewFlow),
        1,
        "the flooded frame created no flow"
    );
}

#[test]
fn the_vip_ports_filter_follows_the_config() {
    require_root!();
    // VIP_PORTS, the bit per (protocol, port) that the program tests before any hash: the
    // config's ports exactly, a moved VIP's new port set before it is live and its old one
    // cleared after, so a frame to a port no VIP uses is passed and one to a VIP's is not.
    let mut lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let words = |lb: &Loaded| -> Vec<(u32, u64)> {
        let data = aya::maps::MapData::from_pin(lb.pin_dir.join(map_names::VIP_PORTS)).unwrap();
        let ports: aya::maps::Array<_, u64> = aya::maps::Map::from_map_data(data)
            .unwrap()
            .try_into()
            .unwrap();
        (0..xdp_lb_common::VIP_PORTS_WORDS)
            .map(|i| (i, ports.get(&i, 0).unwrap()))
            .filter(|(_, w)| *w != 0)
            .collect()
    };
    let bits = |ports: &[(u8, u16)]| -> Vec<(u32, u64)> {
        let mut out = std::collections::BTreeMap::new();
        for (proto, port) in ports {
            let (word, bit) = xdp_lb_common::vip_port_bit(*proto, port.to_be());
            *out.entry(word).or_insert(0) |= bit;
        }
        out.into_iter().collect()
    };
    assert_eq!(words(&lb), bits(&[(6, 80), (6, 81)]));

    // "web" moves from :80 to :8080 and a UDP VIP appears on :53.
    let text = fixtures::config("lo")
        .bed(lb.pin_dir.display(), 4096, 4)
        .vip(fixtures::three_backends("web", 8080).key("maglev_table_size", 4093))
        .vip(fixtures::vip("empty", VIP, 81))
        .vip(
            fixtures::three_backends("dns", 53)
                .key("protocol", "udp")
                .check("type", "none"),
        )
        .to_string();
    lb.config = xdp_lb::config::parse(std::path::Path::new("test.toml"), &text).unwrap();
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    assert_eq!(words(&lb), bits(&[(6, 8080), (6, 81), (17, 53)]));
    let mut moved = syn(40000);
    moved.dport = 8080;
    let r = lb.run(&moved.build()).unwrap();
    assert_eq!(r.action, XDP_TX, "the VIP's new port is balanced");
    let before = lb.counter(Counter::PassNotVip);
    let r = lb.run(&syn(40001).build()).unwrap();
    assert_eq!(r.action, XDP_PASS, "its old port is not");
    assert_eq!(lb.counter(Counter::PassNotVip), before + 1);
}

#[test]
fn maps_pinned_by_an_incompatible_version_are_refused_and_left_alone() {
    require_root!();
    // Pin a map with another layout under the name VIPS (the bench object's flow map: 16-byte
    // keys where VIPS has 8), as an older version's leftovers would be.
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/xlbt{}-incompatible",
        std::process::id()
    ));
    std::fs::create_dir_all(&pin_dir).unwrap();
    let mut other = aya::Ebpf::load(xdp_lb_tests::BENCH_OBJECT).unwrap();
    let map = other.take_map("BENCH_FLOWS").unwrap();
    let data: aya::maps::MapData = match map {
        aya::maps::Map::LruHashMap(d) => d,
        _ => panic!("unexpected map type"),
    };
    data.pin(pin_dir.join("VIPS")).unwrap();
    let sizes = xdp_lb::dataplane::MapSizes {
        flow_table_size: 1024,
        flow_table_size_ipv6: 1024,
        max_vips: 4,
    };
    let err = xdp_lb::dataplane::Dataplane::load(&pin_dir, sizes)
        .err()
        .expect("must refuse");
    let shown = err.to_string();
    assert!(
        shown.contains("incompatible version") && shown.contains("map VIPS has 16-byte keys"),
        "{shown}"
    );
    assert!(
        pin_dir.join("VIPS").exists(),
        "the other version's pins must be left alone"
    );
    assert!(
        !pin_dir.join("FLOWS").exists(),
        "nothing may be created next to them"
    );
    let _ = std::fs::remove_file(pin_dir.join("VIPS"));
    let _ = std::fs::remove_dir(&pin_dir);
}

#[test]
fn the_bench_generator_varies_source_ports_and_keeps_checksums_valid() {
    require_root!();
    // `cargo xtask bench --compare` sends these frames through the kernel's NAT, which drops
    // a frame whose TCP checksum is wrong: check the generator's incremental update.
    let mut ebpf = aya::Ebpf::load(xdp_lb_tests::BENCH_OBJECT).unwrap();
    let mut f = Frame::tcp(CLIENT, 40000, VIP, 8082);
    f.flags = TCP_ACK;
    let frame = f.build();
    // Taken out of the object (the program keeps its reference), to write it between runs.
    let mut template: aya::maps::Array<_, [u8; 74]> =
        aya::maps::Array::try_from(ebpf.take_map("GEN_TEMPLATE").unwrap()).unwrap();
    template
        .set(0, xdp_lb_tests::packet::gen_template(&frame).unwrap(), 0)
        .unwrap();
    let p: &mut aya::programs::Xdp = ebpf.program_mut("xdp_gen").unwrap().try_into().unwrap();
    p.load().unwrap();
    // Whatever the page held before (a recycled live frame), the template is what leaves.
    let garbage = vec![0xa5u8; 60];
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let r = run_program(p, &garbage, 1).unwrap();
        assert_eq!(r.action, XDP_TX);
        assert_eq!(
            r.out[..34],
            frame[..34],
            "Ethernet and IPv4 from the template"
        );
        let seg = &r.out[34..54];
        let src = Ipv4Addr::new(r.out[26], r.out[27], r.out[28], r.out[29]);
        let dst = Ipv4Addr::new(r.out[30], r.out[31], r.out[32], r.out[33]);
        let mut zeroed = seg.to_vec();
        zeroed[16] = 0;
        zeroed[17] = 0;
        assert_eq!(
            u16::from_be_bytes([seg[16], seg[17]]),
            xdp_lb_tests::packet::l4_checksum(src, dst, 6, &zeroed),
            "TCP checksum after the port change"
        );
        ports.insert(u16::from_be_bytes([seg[0], seg[1]]));
    }
    // The IPv6 template: 74 bytes, the TCP checksum over the IPv6 pseudo-header.
    let (src6, dst6): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "2001:2:91::2".parse().unwrap(),
        "2001:2:90::100".parse().unwrap(),
    );
    let frame6 = xdp_lb_tests::packet::tcp6_frame((src6, 40000), (dst6, 8082), TCP_ACK, 0xb3cc);
    template
        .set(0, xdp_lb_tests::packet::gen_template(&frame6).unwrap(), 0)
        .unwrap();
    let garbage6 = vec![0xa5u8; 74];
    let mut ports6 = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let r = run_program(p, &garbage6, 1).unwrap();
        assert_eq!(r.action, XDP_TX);
        assert_eq!(
            r.out[..54],
            frame6[..54],
            "Ethernet and IPv6 from the template"
        );
        let mut zeroed = r.out[54..74].to_vec();
        zeroed[16] = 0;
        zeroed[17] = 0;
        assert_eq!(
            u16::from_be_bytes([r.out[70], r.out[71]]),
            xdp_lb_tests::packet::l4_checksum6(src6, dst6, 6, &zeroed),
            "IPv6 TCP checksum after the port change"
        );
        ports6.insert(u16::from_be_bytes([r.out[54], r.out[55]]));
    }
    assert!(ports6.len() > 1, "IPv6 source ports vary: {ports6:?}");
    assert!(ports.len() > 1, "source ports vary: {ports:?}");
}

/// Per-VIP allow and deny lists: looked up for new flows only, the longest prefix decides, an
/// allow list refuses what it does not name, a VIP without lists admits everyone; a reload
/// that denies a source purges its flows and leaves the others'.
#[test]
fn allow_and_deny_lists_decide_new_flows_by_the_longest_prefix() {
    require_root!();
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(
            fixtures::three_backends("web", 80)
                .key("maglev_table_size", 4093)
                .list("allow", &["198.18.0.0/16", "198.18.5.7"])
                .list("deny", &["198.18.5.0/24"]),
        )
        .vip(fixtures::three_backends("open", 81).key("maglev_table_size", 4093))
        .to_string();
    let mut lb = Loaded::new(&text, LOOPBACK_IFINDEX).unwrap();
    let from = |src: [u8; 4], sport: u16, port: u16| {
        Frame::tcp(Ipv4Addr::from(src), sport, VIP, port).build()
    };
    let cases = [
        (
            "in the allowed /16",
            [198, 18, 1, 1],
            80,
            XDP_TX,
            Counter::NewFlow,
        ),
        (
            "in the denied /24",
            [198, 18, 5, 8],
            80,
            XDP_DROP,
            Counter::DropDenied,
        ),
        (
            "the allowed /32 inside it",
            [198, 18, 5, 7],
            80,
            XDP_TX,
            Counter::NewFlow,
        ),
        (
            "not in the allow list",
            [198, 19, 0, 1],
            80,
            XDP_DROP,
            Counter::DropNotAllowed,
        ),
        (
            "a VIP without lists",
            [198, 19, 0, 1],
            81,
            XDP_TX,
            Counter::NewFlow,
        ),
    ];
    for (what, src, port, action, counter) in cases {
        let before = lb.counter(counter);
        let r = lb.run(&from(src, 40000, port)).unwrap();
        assert_eq!(r.action, action, "{what}: {:?}", lb.all_counters());
        assert_eq!(lb.counter(counter), before + 1, "{what}");
    }
    let web = lb.maps().vip_traffic(0);
    assert_eq!(
        (web.denied, web.not_allowed),
        (1, 1),
        "counted on the VIP, per list"
    );
    assert_eq!(lb.maps().flows().count(), 3, "no state for refused sources");

    // A reload denies 198.18.1.0/24: that source's established flow goes, the others stay.
    let ack = |src: [u8; 4]| {
        let mut f = Frame::tcp(Ipv4Addr::from(src), 40000, VIP, 80);
        f.flags = TCP_ACK;
        f.build()
    };
    lb.config.vips[0]
        .deny
        .push("198.18.1.0/24".parse::<xdp_lb::config::Cidr>().unwrap());
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    let new_flows = lb.counter(Counter::NewFlow);
    assert_eq!(
        lb.run(&ack([198, 18, 5, 7])).unwrap().action,
        XDP_TX,
        "still admitted"
    );
    assert_eq!(
        lb.run(&ack([198, 18, 1, 1])).unwrap().action,
        XDP_DROP,
        "denied now"
    );
    assert_eq!(
        lb.counter(Counter::NewFlow),
        new_flows,
        "the admitted flow was kept"
    );
    assert_eq!(lb.maps().flows().count(), 2);
}

/// A TCP segment with `flags` from `src`:`sport` to the IPv6 VIP (2001:2::100:80).
fn tcp6_from(src: &str, sport: u16, flags: u8) -> Vec<u8> {
    let mut tcp = xdp_lb_tests::packet::tcp_header();
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[13] = flags;
    let mut f = ipv6_frame(&[], 6, &tcp);
    f[22..38].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    f
}

/// The same lists on an IPv6 VIP (in `ACL6`): the longest IPv6 prefix decides for new flows,
/// refused sources leave no state, and a reload that denies a source purges its `FLOWS6`
/// entries.
#[test]
fn ipv6_allow_and_deny_lists_decide_new_flows_by_the_longest_prefix() {
    require_root!();
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(
            fixtures::vip("web6", "2001:2::100", 80)
                .key("maglev_table_size", 4093)
                .backend("2001:2::11")
                .backend("2001:2::12")
                .list("allow", &["2001:2::/32", "2001:2:5::7"])
                .list("deny", &["2001:2:5::/64"]),
        )
        .to_string();
    let mut lb = Loaded::new(&text, LOOPBACK_IFINDEX).unwrap();
    let from = |src: &str, flags: u8| tcp6_from(src, 40000, flags);
    let cases = [
        (
            "in the allowed /32",
            "2001:2:1::1",
            XDP_TX,
            Counter::NewFlow,
        ),
        (
            "in the denied /64",
            "2001:2:5::8",
            XDP_DROP,
            Counter::DropDenied,
        ),
        (
            "the allowed /128 inside it",
            "2001:2:5::7",
            XDP_TX,
            Counter::NewFlow,
        ),
        (
            "not in the allow list",
            "2001:3::1",
            XDP_DROP,
            Counter::DropNotAllowed,
        ),
    ];
    for (what, src, action, counter) in cases {
        let before = lb.counter(counter);
        let r = lb.run(&from(src, xdp_lb_tests::packet::TCP_SYN)).unwrap();
        assert_eq!(r.action, action, "{what}: {:?}", lb.all_counters());
        assert_eq!(lb.counter(counter), before + 1, "{what}");
    }
    let web6 = lb.maps().vip_traffic(0);
    assert_eq!(
        (web6.denied, web6.not_allowed),
        (1, 1),
        "counted on the VIP"
    );
    assert_eq!(
        lb.maps().flows6().count(),
        2,
        "no state for refused sources"
    );
    // A reload denies 2001:2:1::/64: that source's flow goes, the other stays.
    lb.config.vips[0]
        .deny
        .push("2001:2:1::/64".parse::<xdp_lb::config::Cidr>().unwrap());
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    assert_eq!(
        lb.run(&from("2001:2:5::7", TCP_ACK)).unwrap().action,
        XDP_TX
    );
    assert_eq!(
        lb.run(&from("2001:2:1::1", TCP_ACK)).unwrap().action,
        XDP_DROP
    );
    assert_eq!(
        lb.maps().flows6().count(),
        1,
        "the denied source's flow was purged"
    );
}

/// `new_flows_per_source` on an IPv6 VIP: sources in one `limit_prefix_v6` prefix share a
/// bucket (`SOURCE_BUCKETS6`); the burst passes, the next new flow is refused and counted, a
/// source in another prefix has its own bucket, and established flows are never limited.
#[test]
fn ipv6_sources_share_a_bucket_per_v6_prefix() {
    require_root!();
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(
            fixtures::vip("web6", "2001:2::100", 80)
                .key("maglev_table_size", 4093)
                .backend("2001:2::11")
                .key("new_flows_per_source", "1/m")
                .key("new_flows_burst", 3u32)
                .key("limit_prefix_v6", 64u32),
        )
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX).unwrap();
    let from = tcp6_from;
    let syn = xdp_lb_tests::packet::TCP_SYN;
    // Three new flows from two hosts of one /64: the burst.
    for (src, port) in [
        ("2001:2:1::1", 40001),
        ("2001:2:1::2", 40002),
        ("2001:2:1::1", 40003),
    ] {
        assert_eq!(
            lb.run(&from(src, port, syn)).unwrap().action,
            XDP_TX,
            "{src}:{port}"
        );
    }
    // The fourth, from yet another host of that /64: over the limit.
    assert_eq!(
        lb.run(&from("2001:2:1::3", 40004, syn)).unwrap().action,
        XDP_DROP
    );
    assert_eq!(lb.counter(Counter::DropRateLimited), 1);
    // Another /64 has its own bucket.
    assert_eq!(
        lb.run(&from("2001:2:2::1", 40005, syn)).unwrap().action,
        XDP_TX
    );
    // An established flow of the limited prefix goes on.
    assert_eq!(
        lb.run(&from("2001:2:1::1", 40001, TCP_ACK)).unwrap().action,
        XDP_TX
    );
    assert_eq!(lb.counter(Counter::DropRateLimited), 1);
    assert_eq!(lb.maps().source_buckets(), 2, "one bucket per /64");
}

/// `new_flows_per_source`: a source's new flows above its rate are refused (±10% of the rate
/// at a steady offered load), other sources are unaffected, established flows never limited,
/// and sources of one `limit_prefix_v4` share a bucket.
#[test]
fn the_per_source_limit_holds_its_rate_and_spares_others() {
    require_root!();
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 65536, 4)
        .vip(
            fixtures::three_backends("web", 80)
                .key("maglev_table_size", 4093)
                .key("new_flows_per_source", "100/s")
                .key("new_flows_burst", 10u32),
        )
        .vip(
            fixtures::three_backends("net", 81)
                .key("maglev_table_size", 4093)
                .key("new_flows_per_source", "1/m")
                .key("new_flows_burst", 5u32)
                .key("limit_prefix_v4", 24u32),
        )
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX).unwrap();
    let syn = |src: [u8; 4], sport: u16, port: u16| {
        Frame::tcp(Ipv4Addr::from(src), sport, VIP, port).build()
    };
    // Source A offers ~500 new flows a second for 2 s; source B 25 a second meanwhile.
    let (mut a_ok, mut b_ok, mut b_sent) = (0u32, 0u32, 0u32);
    let started = std::time::Instant::now();
    let mut sport = 1024u16;
    while started.elapsed() < Duration::from_secs(2) {
        sport += 1;
        if lb.run(&syn([198, 18, 1, 1], sport, 80)).unwrap().action == XDP_TX {
            a_ok += 1;
        }
        if sport.is_multiple_of(20) {
            b_sent += 1;
            if lb.run(&syn([198, 18, 2, 2], sport, 80)).unwrap().action == XDP_TX {
                b_ok += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 10.0 + 100.0 * elapsed;
    println!(
        "source A: {a_ok} of {} admitted in {elapsed:.2} s (expected {expected:.0})",
        sport - 1024
    );
    assert!(
        (a_ok as f64 - expected).abs() <= 0.1 * 100.0 * elapsed + 1.0,
        "A: {a_ok} admitted, expected {expected:.0} ± 10% of the rate"
    );
    assert_eq!(b_ok, b_sent, "B stays under the limit: every flow admitted");
    assert_eq!(
        lb.maps().vip_traffic(0).rate_limited,
        lb.counter(Counter::DropRateLimited)
    );
    // An established flow of A is never limited.
    let mut ack = Frame::tcp(Ipv4Addr::new(198, 18, 1, 1), 1025, VIP, 80);
    ack.flags = TCP_ACK;
    for _ in 0..50 {
        assert_eq!(lb.run(&ack.build()).unwrap().action, XDP_TX);
    }
    // Two sources of one /24 share a bucket of 5.
    let shared = (0..10u16)
        .filter(|i| {
            let src = [198, 18, 3, 1 + (*i % 2) as u8];
            lb.run(&syn(src, 2000 + i, 81)).unwrap().action == XDP_TX
        })
        .count();
    assert_eq!(shared, 5, "one bucket for the /24");
}

/// `agent.flow_insert_rate`: a CPU records at most that many new DSR flows a second; the rest
/// are forwarded by their Maglev choice all the same (and so are their next packets).
#[test]
fn the_insert_cap_forwards_new_flows_without_recording_them() {
    require_root!();
    // One CPU, so that one per-CPU budget is what the test spends.
    // SAFETY: a zeroed cpu_set_t with CPU 0 set; this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let text = fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .key("flow_insert_rate", 5u32)
        .vip(fixtures::three_backends("web", 80).key("maglev_table_size", 4093))
        .to_string();
    let lb = Loaded::new(&text, LOOPBACK_IFINDEX).unwrap();
    let mut chosen = Vec::new();
    for sport in 30000..30020u16 {
        let r = lb.run(&syn(sport).build()).unwrap();
        assert_eq!(r.action, XDP_TX, "forwarded whether recorded or not");
        chosen.push(backend_index_of(&r.out));
    }
    assert_eq!(lb.maps().flows().count(), 5, "five recorded this second");
    assert_eq!(lb.counter(Counter::FlowNotRecorded), 15);
    // An unrecorded flow's next packet goes where its first went.
    let mut ack = syn(30019);
    ack.flags = TCP_ACK;
    let r = lb.run(&ack.build()).unwrap();
    assert_eq!((r.action, backend_index_of(&r.out)), (XDP_TX, chosen[19]));
}

/// Path-MTU discovery through a DSR VIP: a router's "fragmentation needed" about a segment a
/// backend sent from the VIP reaches that backend (its flow entry, else its Maglev choice),
/// unchanged but for the MACs; every other ICMP goes to the kernel, counted.
#[test]
fn icmp_fragmentation_needed_reaches_the_backend_that_owns_the_flow() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let router = Ipv4Addr::new(198, 18, 0, 254);
    let too_big = |vport, cport| icmp_error(router, VIP, vport, CLIENT, cport, (3, 4, 1280), 40);

    // An established flow: its backend gets the error.
    let r = lb.run(&syn(40000).build()).unwrap();
    let chosen = backend_index_of(&r.out);
    let icmp = too_big(80, 40000);
    let r = lb.run(&icmp).unwrap();
    assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
    expect_forwarded(&icmp, &r.out, backend_mac(chosen));
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 1);

    // A flow this node has no entry for (it came through another node): the Maglev choice,
    // the backend its next packet gets here; the error records no flow.
    let icmp = too_big(80, 40001);
    let r = lb.run(&icmp).unwrap();
    assert_eq!(r.action, XDP_TX);
    let owner = backend_index_of(&r.out);
    assert_eq!(
        lb.counter(Counter::NewFlow),
        1,
        "an ICMP error opens no flow"
    );
    let r = lb.run(&syn(40001).build()).unwrap();
    assert_eq!(
        backend_index_of(&r.out),
        owner,
        "the SYN of that flow picks the same"
    );
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 2);

    // Found by `cargo xtask fuzz` (seed 1): an IPv4 length beyond the frame was sent on to
    // the backend as it was, malformed.
    let mut too_long = too_big(80, 40000);
    too_long[16..18].copy_from_slice(&1080u16.to_be_bytes());
    let sum = xdp_lb_tests::packet::checksum(&{
        let mut h = too_long[14..34].to_vec();
        h[10..12].copy_from_slice(&[0, 0]);
        h
    });
    too_long[24..26].copy_from_slice(&sum.to_be_bytes());
    let cases: [(&str, Vec<u8>); 7] = [
        ("ping to the VIP", icmp_echo(CLIENT, VIP)),
        (
            "fragmentation needed, its IPv4 length beyond the frame",
            too_long,
        ),
        (
            "host unreachable about a VIP flow",
            icmp_error(router, VIP, 80, CLIENT, 40000, (3, 1, 0), 40),
        ),
        (
            "fragmentation needed, quote cut short",
            icmp_error(router, VIP, 80, CLIENT, 40000, (3, 4, 1280), 24),
        ),
        ("about a VIP without backends", too_big(81, 40000)),
        ("about a port that is no VIP", too_big(8080, 40000)),
        (
            "to an address that is no VIP",
            icmp_error(
                router,
                Ipv4Addr::new(198, 18, 0, 2),
                80,
                CLIENT,
                40000,
                (3, 4, 1280),
                40,
            ),
        ),
    ];
    for (what, frame) in cases {
        let before = lb.counter(Counter::PassIcmp);
        let r = lb.run(&frame).unwrap();
        assert_eq!(r.action, XDP_PASS, "{what}");
        assert_eq!(r.out, frame, "{what}: passed untouched");
        assert_eq!(lb.counter(Counter::PassIcmp), before + 1, "{what}");
    }
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 2);
}

/// IPv6 by the IPv4 policy (RFC 8200): extension headers walked (at most four), a fragment
/// header passed, anything cut short or lying about its length dropped, each counted. No IPv6
/// VIP is balanced yet, so a well-formed TCP packet is passed as not for a VIP.
#[test]
fn ipv6_frames_are_checked_and_counted_by_the_ipv4_policy() {
    require_root!();
    let lb = Loaded::new(&config(), LOOPBACK_IFINDEX).unwrap();
    let tcp = tcp_header();
    let (hop, routing, fragment, dest) = (0u8, 43u8, 44u8, 60u8);
    let with_payload_len = |mut f: Vec<u8>, len: u16| {
        f[18..20].copy_from_slice(&len.to_be_bytes());
        f
    };
    let plain = ipv6_frame(&[], 6, &tcp);
    let mut version4 = plain.clone();
    version4[14] = 0x40;
    let mut long_doff = tcp.clone();
    long_doff[12] = 0xf0;
    // An extension header claiming 2048 bytes in a packet that has 8.
    let mut ext_too_long = ipv6_frame(&[(dest, 8)], 6, &tcp);
    ext_too_long[54 + 1] = 255;
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("TCP", plain.clone(), Counter::PassNotVip),
        (
            "hop-by-hop, destination options, routing, destination options, TCP",
            ipv6_frame(&[(hop, 8), (dest, 16), (routing, 24), (dest, 8)], 6, &tcp),
            Counter::PassNotVip,
        ),
        (
            "five extension headers",
            ipv6_frame(
                &[(hop, 8), (dest, 8), (routing, 8), (dest, 8), (dest, 8)],
                6,
                &tcp,
            ),
            Counter::PassIpv6ExtLimit,
        ),
        (
            "a fragment header",
            ipv6_frame(&[(fragment, 8)], 6, &tcp),
            Counter::PassFragment,
        ),
        (
            "a fragment header after hop-by-hop",
            ipv6_frame(&[(hop, 8), (fragment, 8)], 6, &tcp),
            Counter::PassFragment,
        ),
        (
            "ICMPv6",
            ipv6_frame(&[], 58, &[128, 0, 0, 0, 0, 1, 0, 1]),
            Counter::PassIcmp,
        ),
        (
            "UDP not to a VIP",
            ipv6_frame(&[], 17, &[0, 53, 0, 53, 0, 8, 0x12, 0x34]),
            Counter::PassNotVip,
        ),
        (
            "UDP with checksum 0 (not allowed over IPv6 but for tunnels: RFC 8200 §8.1)",
            ipv6_frame(&[], 17, &[0, 53, 0, 53, 0, 8, 0, 0]),
            Counter::PassUdp6ZeroChecksum,
        ),
        (
            "UDP whose length field lies",
            ipv6_frame(&[], 17, &[0, 53, 0, 53, 0, 9, 0x12, 0x34]),
            Counter::DropBadUdpHeader,
        ),
        ("SCTP", ipv6_frame(&[], 132, &tcp), Counter::PassNotTcp),
        (
            "header cut short",
            plain[..14 + 30].to_vec(),
            Counter::DropTruncatedIp,
        ),
        (
            "payload length beyond the frame",
            with_payload_len(plain.clone(), 400),
            Counter::DropTruncatedIp,
        ),
        (
            "payload length 0",
            with_payload_len(plain.clone(), 0),
            Counter::DropBadIpHeader,
        ),
        (
            "version 4 in an IPv6 frame",
            version4,
            Counter::DropBadIpHeader,
        ),
        (
            "an extension header beyond the payload",
            ext_too_long,
            Counter::DropTruncatedIp,
        ),
        (
            "TCP cut short",
            ipv6_frame(&[], 6, &tcp[..10]),
            Counter::DropBadTcpHeader,
        ),
        (
            "a TCP data offset beyond the payload",
            ipv6_frame(&[], 6, &long_doff),
            Counter::DropBadTcpHeader,
        ),
    ];
    lb.assert_verdicts(&cases);
}

/// An IPv4 and an IPv6 VIP side by side (three backends each), as a dual-stack node has them.
fn dual_stack_config() -> String {
    fixtures::config("lo")
        .bed("@PIN_DIR@", 4096, 4)
        .vip(fixtures::three_backends("web", 80).key("maglev_table_size", 4093))
        .vip(
            fixtures::vip("web6", "2001:2::100", 80)
                .key("maglev_table_size", 4093)
                .backend("2001:2::11")
                .backend("2001:2::12")
                .backend("2001:2::13"),
        )
        .to_string()
}

/// A TCP segment from 2001:2::1 `sport` to the IPv6 VIP's port 80, after `exts`.
fn syn6(sport: u16, exts: &[(u8, usize)]) -> Vec<u8> {
    segment6(sport, exts, tcp_header()[13])
}

/// As `syn6`, with TCP `flags`.
fn segment6(sport: u16, exts: &[(u8, usize)], flags: u8) -> Vec<u8> {
    let mut tcp = tcp_header();
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[13] = flags;
    ipv6_frame(exts, 6, &tcp)
}

/// IPv6 DSR: a SYN to the IPv6 VIP goes to a backend with only its MACs changed, the flow
/// sticks (in FLOWS6) while the backend set changes, flows spread over the backends like the
/// IPv4 VIP's, extension headers ride along untouched, and the IPv4 VIP beside it is
/// unaffected. A backend taken out re-hashes its IPv6 flows.
#[test]
fn ipv6_vip_is_balanced_by_dsr_beside_an_ipv4_one() {
    require_root!();
    let mut lb = Loaded::new(&dual_stack_config(), LOOPBACK_IFINDEX).unwrap();
    let first = syn6(40000, &[]);
    let r = lb.run(&first).unwrap();
    assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
    let chosen = backend_index_of(&r.out);
    expect_forwarded(&first, &r.out, backend_mac(chosen));
    assert_eq!(lb.counter(Counter::NewFlow), 1);
    assert_eq!(lb.maps().flows6().count(), 1, "the flow is in FLOWS6");
    assert_eq!(lb.maps().flows().count(), 0, "and not in the IPv4 table");
    let v6_id = lb
        .maps()
        .vips()
        .iter()
        .find(|(k, _)| matches!(k, xdp_lb_common::AnyVipKey::V6(_)))
        .unwrap()
        .1
        .vip_id;

    // Hop-by-hop and destination options before TCP: a later segment of the same flow,
    // forwarded intact.
    let dest = 60u8;
    let with_exts = segment6(40000, &[(0, 8), (dest, 16)], TCP_ACK);
    let r = lb.run(&with_exts).unwrap();
    assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
    expect_forwarded(&with_exts, &r.out, backend_mac(chosen));
    assert_eq!(lb.counter(Counter::NewFlow), 1, "the same 5-tuple");

    // A fourth backend joins: the established flow stays.
    lb.config.vips[1].backends.push(BackendConfig {
        name: "2001:2::14".into(),
        address: "2001:2::14".parse().unwrap(),
        port: 80,
        weight: 1,
        state: Default::default(),
        slowstart: None,
    });
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    let later = segment6(40000, &[], TCP_ACK);
    for _ in 0..3 {
        let r = lb.run(&later).unwrap();
        assert_eq!((r.action, backend_index_of(&r.out)), (XDP_TX, chosen));
    }
    lb.config.vips[1].backends.pop();
    lb.apply(LOOPBACK_IFINDEX).unwrap();

    // 3000 source ports spread within 10% of a third each.
    let mut per_backend = [0usize; 3];
    for sport in 20000..23000u16 {
        let r = lb.run(&syn6(sport, &[])).unwrap();
        assert_eq!(r.action, XDP_TX);
        per_backend[backend_index_of(&r.out)] += 1;
    }
    for n in per_backend {
        assert!((900..=1100).contains(&n), "{per_backend:?}");
    }
    assert_eq!(lb.maps().vip_traffic(v6_id).new_flows, 3001);

    // The IPv4 VIP beside it balances as before.
    let r = lb.run(&syn(40000).build()).unwrap();
    assert_eq!(r.action, XDP_TX);
    assert_eq!(lb.maps().flows().count(), 1);

    // The chosen backend is disabled: its IPv6 flows are purged and re-hashed elsewhere.
    let address = lb.config.vips[1].backends[chosen].address;
    lb.config.vips[1].backends[chosen].state = xdp_lb::config::AdminState::Disabled;
    lb.apply(LOOPBACK_IFINDEX).unwrap();
    assert!(
        lb.maps()
            .flows6()
            .all(|(_, v)| v.backend_id != lb.backend_id(1, address)),
        "no flow names the disabled backend"
    );
    let r = lb.run(&later).unwrap();
    assert_eq!(r.action, XDP_TX);
    assert_ne!(backend_index_of(&r.out), chosen);

    // Not the VIP's port, or another address: passed untouched.
    let mut other_port = syn6(40001, &[]);
    other_port[14 + 40 + 3] = 81;
    let before = lb.counter(Counter::PassNotVip);
    let r = lb.run(&other_port).unwrap();
    assert_eq!((r.action, r.out), (XDP_PASS, other_port));
    assert_eq!(lb.counter(Counter::PassNotVip), before + 1);
}

/// An ICMPv6 Packet Too Big from a router (2001:2::fe) to the IPv6 VIP about the segment a
/// DSR backend sent from it (VIP:80 → 2001:2::1:`client_port`), `inner_src` as the embedded
/// source.
fn packet_too_big6(client_port: u16, inner_src: &str) -> Vec<u8> {
    let v6 = |a: &str| a.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut tcp = tcp_header();
    tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&client_port.to_be_bytes());
    let mut inner = vec![0x60, 0, 0, 0, 0x05, 0xc8, 6, 64];
    inner.extend_from_slice(&v6(inner_src));
    inner.extend_from_slice(&v6("2001:2::1"));
    inner.extend_from_slice(&tcp);
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00]; // MTU 1280
    icmp.extend_from_slice(&inner);
    let mut f = ipv6_frame(&[], 58, &icmp);
    f[22..38].copy_from_slice(&v6("2001:2::fe"));
    f
}

/// Path-MTU discovery through the balancer over IPv6 (RFC 8201): a Packet Too Big about a DSR
/// flow reaches the backend that owns it (its FLOWS6 entry), unchanged but for the MACs; one
/// about a flow the table does not hold goes to the Maglev choice its next packet would get;
/// one about a packet the VIP did not send, or any other ICMPv6, goes to the kernel.
#[test]
fn icmpv6_packet_too_big_reaches_the_backend_that_owns_the_flow() {
    require_root!();
    let lb = Loaded::new(&dual_stack_config(), LOOPBACK_IFINDEX).unwrap();
    let r = lb.run(&syn6(40000, &[])).unwrap();
    assert_eq!(r.action, XDP_TX);
    let owner = backend_index_of(&r.out);

    let ptb = packet_too_big6(40000, "2001:2::100");
    let r = lb.run(&ptb).unwrap();
    assert_eq!(r.action, XDP_TX, "{:?}", lb.all_counters());
    expect_forwarded(&ptb, &r.out, backend_mac(owner));
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 1);
    assert_eq!(
        lb.counter(Counter::NewFlow),
        1,
        "no flow made by an ICMP error"
    );

    // A flow not in the table: the backend a SYN of it would get (checked afterwards).
    let r = lb.run(&packet_too_big6(40123, "2001:2::100")).unwrap();
    assert_eq!(r.action, XDP_TX);
    let predicted = backend_index_of(&r.out);
    let r = lb.run(&syn6(40123, &[])).unwrap();
    assert_eq!(backend_index_of(&r.out), predicted);
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 2);

    // About a packet another address sent: the kernel's.
    let stray = packet_too_big6(40000, "2001:2::99");
    let before = lb.counter(Counter::PassIcmp);
    let r = lb.run(&stray).unwrap();
    assert_eq!((r.action, r.out), (XDP_PASS, stray));
    assert_eq!(lb.counter(Counter::PassIcmp), before + 1);
    // Another ICMPv6 type (destination unreachable) with the same content: the kernel's.
    let mut unreachable = packet_too_big6(40000, "2001:2::100");
    unreachable[54] = 1;
    let r = lb.run(&unreachable).unwrap();
    assert_eq!(r.action, XDP_PASS);
    // Cut short inside the embedded header: the kernel's, never forwarded.
    let short = ptb[..14 + 40 + 8 + 20].to_vec();
    let mut short = short;
    short[18..20].copy_from_slice(&(28u16).to_be_bytes());
    let r = lb.run(&short).unwrap();
    assert_eq!(r.action, XDP_PASS);
    assert_eq!(lb.counter(Counter::IcmpTooBigToBackend), 2);
}
