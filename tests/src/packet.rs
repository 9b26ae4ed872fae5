//! Building test frames byte by byte (independently of the code under test) and checking
//! checksums with a straightforward RFC 1071 implementation.

use std::net::Ipv4Addr;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0, 0x02];

/// A TCP/IPv4 frame description; `build` renders it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// An 802.1Q tag (VLAN id).
    pub vlan: Option<u16>,
    /// An 802.1ad service tag before it (QinQ): the frame is double-tagged.
    pub outer_vlan: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub ihl: u8,
    pub frag: u16,
    pub ip_id: u16,
    pub payload: Vec<u8>,
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_FIN: u8 = 0x01;

impl Frame {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: LB_MAC,
            vlan: None,
            outer_vlan: None,
            src,
            dst,
            proto: 6,
            sport,
            dport,
            flags: TCP_SYN,
            ihl: 5,
            frag: 0,
            ip_id: 0x1234,
            payload: Vec::new(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        if self.proto == 6 {
            l4.extend_from_slice(&self.sport.to_be_bytes());
            l4.extend_from_slice(&self.dport.to_be_bytes());
            l4.extend_from_slice(&1000u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.push(5 << 4); // data offset
            l4.push(self.flags);
            l4.extend_from_slice(&64240u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
        } else {
            // UDP
            l4.extend_from_slice(&self.sport.to_be_bytes());
            l4.extend_from_slice(&self.dport.to_be_bytes());
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(&self.payload);
        let csum_at = if self.proto == 6 { 16 } else { 6 };
        let sum = l4_checksum(self.src, self.dst, self.proto, &l4);
        l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());

        let ihl_bytes = self.ihl as usize * 4;
        let mut ip = vec![0u8; ihl_bytes.max(20)];
        ip[0] = 0x40 | (self.ihl & 0x0f);
        let total = (ip.len() + l4.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        for b in ip.iter_mut().skip(20) {
            *b = 1; // IP option NOP (RFC 791 §3.1)
        }
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(vid) = self.outer_vlan {
            f.extend_from_slice(&0x88a8u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        // Pad to the Ethernet minimum like a NIC would.
        while f.len() < 60 {
            f.push(0);
        }
        f
    }
}

/// An ICMP error from `router` to `vip` about a TCP segment `vip:vport → client:cport` that
/// the VIP (a DSR backend) sent: type 3 code 4 "fragmentation needed" (RFC 1191) with next-hop
/// `mtu` unless `kind` and `code` say otherwise. It embeds the segment's IPv4 header and TCP
/// header as a router does; `embedded` cuts that to so many bytes.
pub fn icmp_error(
    router: Ipv4Addr,
    vip: Ipv4Addr,
    vport: u16,
    client: Ipv4Addr,
    cport: u16,
    (kind, code, mtu): (u8, u8, u16),
    embedded: usize,
) -> Vec<u8> {
    let mut inner = Frame::tcp(vip, vport, client, cport);
    inner.flags = TCP_ACK;
    inner.payload = vec![0x5a; 1400];
    let inner = inner.build();
    // The original IPv4 packet starts after the 14-byte Ethernet header; a router quotes its
    // header and the start of its payload.
    let quoted = &inner[14..14 + embedded.min(40)];
    let mut icmp = vec![kind, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(router, vip, 1, &icmp)
}

/// An ICMP echo request (ping) from `src` to `dst`.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"xdp-lb ping");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, 1, &icmp)
}

/// An Ethernet frame (client MAC → LB MAC) carrying `payload` in an IPv4 packet of `proto`.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// RFC 1071 Internet checksum (the one implementation, in xdp-lb-common).
pub use xdp_lb_common::csum::internet_checksum as checksum;

/// TCP/UDP checksum with the IPv4 pseudo-header (RFC 9293 §3.1).
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut p = Vec::with_capacity(12 + segment.len());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    p.extend_from_slice(segment);
    checksum(&p)
}

/// The TCP/UDP checksum over the IPv6 pseudo-header (RFC 8200 §8.1) and `segment`.
pub fn l4_checksum6(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    proto: u8,
    segment: &[u8],
) -> u16 {
    let mut p = Vec::with_capacity(40 + segment.len());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p.extend_from_slice(segment);
    checksum(&p)
}

/// A TCP/IPv6 frame (74 bytes: no extension header, no options, no payload) with a valid TCP
/// checksum and the 20-bit `flow_label`: the bench generator's IPv6 template.
pub fn tcp6_frame(
    (src, sport): (std::net::Ipv6Addr, u16),
    (dst, dport): (std::net::Ipv6Addr, u16),
    flags: u8,
    flow_label: u32,
) -> Vec<u8> {
    let mut tcp = tcp_header();
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[13] = flags;
    let sum = l4_checksum6(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut f = ipv6_frame(&[], 6, &tcp);
    f[14..18].copy_from_slice(&(0x6000_0000 | (flow_label & 0xf_ffff)).to_be_bytes());
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    f
}

/// The bench generator's template (`GEN_TEMPLATE` in test-ebpf): `frame` (an IPv4 frame of 60
/// bytes or an IPv6 one of 74) padded to the map value's 74 bytes.
pub fn gen_template(frame: &[u8]) -> anyhow::Result<[u8; 74]> {
    anyhow::ensure!(
        frame.len() == 60 || frame.len() == 74,
        "a generator frame is 60 (IPv4) or 74 (IPv6) bytes, not {}",
        frame.len()
    );
    let mut t = [0u8; 74];
    t[..frame.len()].copy_from_slice(frame);
    Ok(t)
}

/// An ARP request frame (for "not IPv4 → pass").
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// An IPv6 frame from 2001:2::1 to 2001:2::100: the extension headers `exts` (each its type
/// — hop-by-hop 0, routing 43, fragment 44, destination options 60 — and its length in bytes,
/// a multiple of 8), then `l4` as protocol `upper`. The payload length is the true one.
pub fn ipv6_frame(exts: &[(u8, usize)], upper: u8, l4: &[u8]) -> Vec<u8> {
    let kinds: Vec<u8> = exts.iter().map(|(k, _)| *k).chain([upper]).collect();
    let mut payload = Vec::new();
    for (i, (_, len)) in exts.iter().enumerate() {
        let mut h = vec![0u8; *len];
        h[0] = kinds[i + 1];
        // Hdr Ext Len in 8-octet units beyond the first (the fragment header's is reserved).
        h[1] = (len / 8 - 1) as u8;
        payload.extend_from_slice(&h);
    }
    payload.extend_from_slice(l4);
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.push(kinds[0]);
    f.push(64);
    f.extend_from_slice(&"2001:2::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(
        &"2001:2::100"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    f.extend_from_slice(&payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// A 20-byte TCP SYN header (data offset 5) from port 40000 to 80; no checksum (the parser
/// does not check one).
pub fn tcp_header() -> Vec<u8> {
    vec![
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
    ]
}

/// A minimal IPv6 TCP SYN frame (to an address that is no VIP).
pub fn ipv6_tcp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(
        &[0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain([0u8; 12].iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    f.extend_from_slice(
        &[0x20, 0x01, 0x0d, 0xb8]
            .iter()
            .chain([1u8; 12].iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
    ]);
    f
}

/// Sends `frames` as they are out of `interface` (an AF_PACKET socket: no stack in between,
/// so VLAN tags stay in the frame). Call from the namespace that owns the interface.
pub fn send_raw(interface: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let sender = RawSender::open(interface)?;
    for frame in frames {
        sender.send(frame)?;
    }
    Ok(())
}

/// An AF_PACKET socket bound to one interface for sending whole frames.
pub struct RawSender {
    fd: std::os::fd::OwnedFd,
    addr: libc::sockaddr_ll,
}

impl RawSender {
    /// Call from the namespace that owns the interface.
    pub fn open(interface: &str) -> anyhow::Result<Self> {
        use std::os::fd::{FromRawFd as _, OwnedFd};
        let ifindex = xdp_lb::netlink::ifindex(interface)
            .ok_or_else(|| anyhow::anyhow!("no interface {interface}"))?;
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            anyhow::bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut addr = self.addr;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: valid buffer and address for the duration of the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            anyhow::bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A random-source SYN flood as `hping3 -S --rand-source` makes one (hping3 is not packaged
/// for this machine kind): SYNs from random addresses of `sources` and random ports.
pub struct SynFlood {
    pub src_mac: [u8; 6],
    /// The next hop's MAC (the router, or the LB).
    pub dst_mac: [u8; 6],
    /// Source addresses: a random host of this /prefix each time.
    pub sources: (Ipv4Addr, u8),
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub rate_per_s: u64,
    pub count: u64,
}

/// What a flood achieved.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    pub elapsed: std::time::Duration,
}

impl FloodReport {
    pub fn rate_per_s(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl SynFlood {
    /// Sends the flood out of `interface`, paced in 2 ms steps; call from its namespace.
    /// Bounded: `count` frames, and at most twice the planned duration plus 5 s.
    pub fn run(&self, interface: &str) -> anyhow::Result<FloodReport> {
        use std::time::{Duration, Instant};
        let sender = RawSender::open(interface)?;
        let host_bits = 32 - u32::from(self.sources.1);
        let net = u32::from(self.sources.0) & !((1u64 << host_bits) - 1) as u32;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(self.dport);
        let mut next = move || {
            // xorshift64: any spread will do, it is a flood.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let planned = Duration::from_secs_f64(self.count as f64 / self.rate_per_s as f64);
        let start = Instant::now();
        let deadline = start + planned * 2 + Duration::from_secs(5);
        let mut sent = 0u64;
        while sent < self.count && Instant::now() < deadline {
            let due =
                ((start.elapsed().as_secs_f64() * self.rate_per_s as f64) as u64).min(self.count);
            while sent < due {
                let r = next();
                let host = (r as u32) & ((1u64 << host_bits) - 1) as u32;
                let mut f = Frame::tcp(
                    Ipv4Addr::from(net | host.max(1)),
                    1024 + ((r >> 32) as u16 % 60000),
                    self.dst,
                    self.dport,
                );
                f.src_mac = self.src_mac;
                f.dst_mac = self.dst_mac;
                f.ip_id = (r >> 48) as u16;
                // A full veth backlog refuses a frame: the flood loses it, as a wire would.
                let _ = sender.send(&f.build());
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(FloodReport {
            sent,
            elapsed: start.elapsed(),
        })
    }
}
