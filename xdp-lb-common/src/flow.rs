//! Flows: the flow tables' keys — a 5-tuple as the packet carries it, one layout generic over
//! the family's address ([`FlowKeyOf`]) — and values — a flow's backend and, for NAT, its
//! direction's rewrite ([`FlowValueOf`]) — and how a NAT flow's two entries are made, once
//! for both sides: the program makes them when a flow starts (`nat.rs`), the agent when it
//! installs a peer's flow (`dataplane/sync_install.rs`).

use crate::{IPPROTO_UDP, csum};

/// An address as the packet carries it (network order): `u32` for IPv4, `[u8; 16]` for IPv6.
/// What the flow and NAT code need to know of a family, so that it is written once for both;
/// each family keeps its own maps (IPv4 keys stay 16 bytes).
pub trait Address: Copy + PartialEq + Default {
    /// Whether this family has an IP header checksum (IPv4) to update by the folded
    /// [`Address::addr_sum`].
    const IP_CHECKSUM: bool;
    /// 4 or 6 (`SyncEvent::family`).
    const FAMILY: u8;
    /// The unfolded checksum sum of rewriting the addresses (src, dst) from `old` to `new`
    /// (`csum::addr_sum`, `csum::addr_sum6`): folded, the IPv4 header checksum's delta; with
    /// the ports (`csum::with_ports`), the TCP or UDP checksum's (the pseudo-header covers the
    /// addresses).
    fn addr_sum(old: (&Self, &Self), new: (&Self, &Self)) -> u32;
    /// The address in 16 bytes, as `SyncEvent` carries it (IPv4: the first four).
    fn addr16(self) -> [u8; 16];
    /// The flow key of a 5-tuple, written as 32-bit words: field by field, the padding's zero
    /// bytes compile for BPF to a call of the object's byte-loop `memset`, on every packet's
    /// parse (found by profiling, issue 18); as words they are part of one store.
    fn flow_key(
        src: Self,
        dst: Self,
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> FlowKeyOf<Self>;
}

/// The key of `FLOWS` (IPv4, 16 bytes: [`FlowKey`]) and `FLOWS6` (IPv6, 40 bytes:
/// [`FlowKey6`]), and of the NAT tables: a 5-tuple as found in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// An IPv4 flow key.
pub type FlowKey = FlowKeyOf<u32>;
/// An IPv6 flow key (see `VipKey6` for why IPv6 has maps of its own).
pub type FlowKey6 = FlowKeyOf<[u8; 16]>;

impl<A: Address> FlowKeyOf<A> {
    /// The key of a 5-tuple (see [`Address::flow_key`]).
    #[inline(always)]
    pub fn new(src: A, dst: A, src_port_be: u16, dst_port_be: u16, proto: u8) -> Self {
        A::flow_key(src, dst, src_port_be, dst_port_be, proto)
    }
}

impl Address for u32 {
    const IP_CHECKSUM: bool = true;
    const FAMILY: u8 = 4;

    #[inline(always)]
    fn addr_sum(old: (&u32, &u32), new: (&u32, &u32)) -> u32 {
        csum::addr_sum((*old.0, *old.1), (*new.0, *new.1))
    }

    #[inline(always)]
    fn addr16(self) -> [u8; 16] {
        let b = self.to_ne_bytes();
        [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[inline(always)]
    fn flow_key(src: u32, dst: u32, src_port_be: u16, dst_port_be: u16, proto: u8) -> FlowKey {
        #[cfg(target_endian = "little")]
        {
            let words: [u32; 4] = [
                src,
                dst,
                src_port_be as u32 | (dst_port_be as u32) << 16,
                proto as u32,
            ];
            // SAFETY: FlowKey is repr(C), 16 bytes of plain integers at these offsets (checked
            // by the layout test in lib.rs); on a little-endian machine the ports and the
            // protocol are the words' low bytes, the padding their zero high bytes.
            unsafe { core::mem::transmute::<[u32; 4], FlowKey>(words) }
        }
        #[cfg(target_endian = "big")]
        FlowKey {
            src_addr: src,
            dst_addr: dst,
            src_port_be,
            dst_port_be,
            proto,
            _pad: [0; 3],
        }
    }
}

impl Address for [u8; 16] {
    const IP_CHECKSUM: bool = false;
    const FAMILY: u8 = 6;

    #[inline(always)]
    fn addr_sum(old: (&[u8; 16], &[u8; 16]), new: (&[u8; 16], &[u8; 16])) -> u32 {
        csum::addr_sum6(old, new)
    }

    #[inline(always)]
    fn addr16(self) -> [u8; 16] {
        self
    }

    #[inline(always)]
    fn flow_key(
        src_addr: [u8; 16],
        dst_addr: [u8; 16],
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> FlowKey6 {
        #[cfg(target_endian = "little")]
        {
            #[repr(C)]
            struct Words {
                src_addr: [u8; 16],
                dst_addr: [u8; 16],
                ports: u32,
                proto: u32,
            }
            let words = Words {
                src_addr,
                dst_addr,
                ports: src_port_be as u32 | (dst_port_be as u32) << 16,
                proto: proto as u32,
            };
            // SAFETY: both are repr(C), 40 bytes of plain integers at the same offsets (the
            // layout test in lib.rs); little-endian puts the ports and the protocol in the
            // words' low bytes and the padding in their zero high bytes.
            unsafe { core::mem::transmute::<Words, FlowKey6>(words) }
        }
        #[cfg(target_endian = "big")]
        FlowKey6 {
            src_addr,
            dst_addr,
            src_port_be,
            dst_port_be,
            proto,
            _pad: [0; 3],
        }
    }
}

/// An IPv6 address as four 32-bit words in memory order (what `flow_hash6` mixes and
/// `bpf_fib_lookup` takes).
#[inline(always)]
pub const fn ipv6_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// A flow key of either family, as the NAT code sees it: two addresses, two ports. Lets the
/// NAT flow logic (the program's `nat.rs`, the agent's expiry and installs) be written once
/// for IPv4 and IPv6: [`FlowKeyOf`] is the one implementation, for any [`Address`].
pub trait FlowTuple: Copy {
    /// An address in network order: `u32` or `[u8; 16]`.
    type Addr: Address;
    /// `Address::IP_CHECKSUM` of `Addr`.
    const IP_CHECKSUM: bool;
    /// `Address::FAMILY` of `Addr`.
    const FAMILY: u8;
    fn tuple(
        src: Self::Addr,
        dst: Self::Addr,
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> Self;
    /// `IPPROTO_TCP` or `IPPROTO_UDP`: both directions of a flow carry the same.
    fn proto(&self) -> u8;
    fn src(&self) -> Self::Addr;
    fn dst(&self) -> Self::Addr;
    fn src_port_be(&self) -> u16;
    fn dst_port_be(&self) -> u16;
    fn set_dst_port_be(&mut self, port_be: u16);
    /// [`Address::addr_sum`].
    #[inline(always)]
    fn addr_sum(old: (&Self::Addr, &Self::Addr), new: (&Self::Addr, &Self::Addr)) -> u32 {
        <Self::Addr as Address>::addr_sum(old, new)
    }
    /// [`Address::addr16`].
    #[inline(always)]
    fn addr16(a: Self::Addr) -> [u8; 16] {
        Address::addr16(a)
    }
}

impl<A: Address> FlowTuple for FlowKeyOf<A> {
    type Addr = A;
    const IP_CHECKSUM: bool = A::IP_CHECKSUM;
    const FAMILY: u8 = A::FAMILY;

    #[inline(always)]
    fn tuple(src: A, dst: A, src_port_be: u16, dst_port_be: u16, proto: u8) -> Self {
        A::flow_key(src, dst, src_port_be, dst_port_be, proto)
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn src(&self) -> A {
        self.src_addr
    }
    #[inline(always)]
    fn dst(&self) -> A {
        self.dst_addr
    }
    #[inline(always)]
    fn src_port_be(&self) -> u16 {
        self.src_port_be
    }
    #[inline(always)]
    fn dst_port_be(&self) -> u16 {
        self.dst_port_be
    }
    #[inline(always)]
    fn set_dst_port_be(&mut self, port_be: u16) {
        self.dst_port_be = port_be;
    }
}

/// The value of `FLOWS` (keyed by the client's 5-tuple) and of `NAT_FLOWS` (keyed by the
/// backend's reply 5-tuple: backend → SNAT address and port); with IPv6 addresses, of `FLOWS6`
/// and `NAT_FLOWS6` ([`FlowValue6`]).
///
/// A DSR flow only names its backend. A NAT flow (`FLOW_F_NAT`) also carries the rewrite of
/// its direction: the packet's new source and destination, and the checksum deltas of that
/// rewrite, computed once when the flow is created (see [`csum`]).
///
/// Generic over the address (`u32` for IPv4, `[u8; 16]` for IPv6, both in network order) so
/// the NAT code is written once for both families; the IPv4 layout is the one it always had.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValueOf<A> {
    pub backend_id: u32,
    pub vip_id: u32,
    /// `bpf_ktime_get_ns()` when the flow was created (CLOCK_MONOTONIC).
    pub created_ns: u64,
    /// `FLOW_F_*`.
    pub flags: u32,
    /// NAT: CLOCK_MONOTONIC_COARSE seconds of the last packet in this direction, refreshed at
    /// most once a second (a write per packet would bounce the cache line between CPUs).
    pub last_seen_s: u32,
    pub nat_src_addr_be: A,
    pub nat_dst_addr_be: A,
    pub nat_src_port_be: u16,
    pub nat_dst_port_be: u16,
    /// [`csum::nat_deltas`] of this direction's rewrite (IPv6 has no header checksum: 0).
    pub ip_csum_delta: u16,
    pub l4_csum_delta: u16,
    /// NAT: this direction's next hop as `bpf_fib_lookup` last gave it (0: not looked up yet).
    /// The program asks the FIB again when `last_seen_s` moves on, so a flow follows a route
    /// or neighbour change within a second while its other packets skip the lookup.
    pub nh_ifindex: u32,
    pub nh_dmac: [u8; 6],
    pub nh_smac: [u8; 6],
}

/// An IPv4 flow entry (56 bytes).
pub type FlowValue = FlowValueOf<u32>;
/// An IPv6 flow entry (80 bytes): the NAT66 rewrite needs the 128-bit addresses.
pub type FlowValue6 = FlowValueOf<[u8; 16]>;

/// A NAT flow: rewrite addresses and ports (else DSR: MACs only).
pub const FLOW_F_NAT: u32 = 1 << 0;
/// The entry of the reply direction (in `NAT_FLOWS`).
pub const FLOW_F_REPLY: u32 = 1 << 1;
/// The backend has answered: the connection is past its SYN.
pub const FLOW_F_ESTABLISHED: u32 = 1 << 2;
/// A FIN or RST was seen: the connection is closing and expires after the short timeout.
pub const FLOW_F_CLOSING: u32 = 1 << 3;
/// A UDP NAT flow: no TCP state; it expires after `agent.nat_udp_timeout` of silence in both
/// directions, whatever else its flags say.
pub const FLOW_F_UDP: u32 = 1 << 4;

/// How many SNAT ports the program tries for a new NAT flow before it gives up and counts
/// `drop_nat_ports_exhausted`. Each try is an atomic insert-if-absent of the reply entry, so
/// two CPUs can never take the same (SNAT address, port, backend) tuple.
pub const NAT_PORT_PROBES: u32 = 16;

impl<A> FlowValueOf<A> {
    /// Which timeout applies to this NAT flow, given both directions' flags.
    pub const fn nat_state(flags: u32) -> NatState {
        if flags & FLOW_F_UDP != 0 {
            NatState::Udp
        } else if flags & FLOW_F_CLOSING != 0 {
            NatState::Closing
        } else if flags & FLOW_F_ESTABLISHED != 0 {
            NatState::Established
        } else {
            NatState::SynSent
        }
    }
}

/// The TCP states NAT expiry distinguishes (each has its own `agent.nat_*_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatState {
    /// Only the client's SYN seen (half-open).
    SynSent,
    Established,
    /// FIN or RST seen in either direction.
    Closing,
    /// A UDP flow (no states: one timeout).
    Udp,
}

impl NatState {
    pub const fn name(self) -> &'static str {
        match self {
            NatState::SynSent => "syn_sent",
            NatState::Established => "established",
            NatState::Closing => "closing",
            NatState::Udp => "udp",
        }
    }
}

/// What both entries of a NAT flow share: whose flow it is, and its clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatStamp {
    pub backend_id: u32,
    pub vip_id: u32,
    /// CLOCK_MONOTONIC ns when the flow was created.
    pub created_ns: u64,
    /// CLOCK_MONOTONIC_COARSE seconds of its last packet.
    pub last_seen_s: u32,
}

impl<A: Address> FlowValueOf<A> {
    /// A DSR flow's entry: its backend, nothing else.
    #[inline(always)]
    pub fn dsr(backend_id: u32, vip_id: u32, created_ns: u64) -> Self {
        FlowValueOf {
            backend_id,
            vip_id,
            created_ns,
            ..Default::default()
        }
    }

    /// The reply direction of a NAT flow (keyed backend:port → SNAT address:port, in
    /// `NAT_FLOWS` or half-open in `NAT_EMBRYONIC`): its packets leave as VIP:port →
    /// client:port. `reply_sum` is the addresses' part of that rewrite
    /// ([`Address::addr_sum`] of backend → SNAT becoming VIP → client); `flags` adds to
    /// `FLOW_F_NAT | FLOW_F_REPLY` (state bits, `FLOW_F_UDP`). The L4 checksum delta also
    /// covers the SNAT port, which the program chooses by trying: [`Self::set_reply_ports`].
    #[inline(always)]
    pub fn nat_reply(
        stamp: NatStamp,
        flags: u32,
        vip: (A, u16),
        client: (A, u16),
        reply_sum: u32,
    ) -> Self {
        Self::nat_rewrite(stamp, flags | FLOW_F_REPLY, vip, client, reply_sum)
    }

    /// The client direction of a NAT flow (keyed by the client's 5-tuple, in `FLOWS` or
    /// half-open in `NAT_EMBRYONIC_CLIENT`): its packets leave as SNAT address:port →
    /// backend:port. `forward_sum` is [`nat_forward_sum`] of the reply's sum; the SNAT port
    /// comes with [`Self::set_forward_ports`].
    #[inline(always)]
    pub fn nat_forward(
        stamp: NatStamp,
        flags: u32,
        snat: A,
        backend: (A, u16),
        forward_sum: u32,
    ) -> Self {
        Self::nat_rewrite(stamp, flags, (snat, 0), backend, forward_sum)
    }

    /// A NAT entry whose packets leave from `src` to `dst` (addresses and ports in network
    /// order), its IP checksum delta that of `sum`.
    #[inline(always)]
    fn nat_rewrite(
        stamp: NatStamp,
        flags: u32,
        (src, src_port_be): (A, u16),
        (dst, dst_port_be): (A, u16),
        sum: u32,
    ) -> Self {
        FlowValueOf {
            backend_id: stamp.backend_id,
            vip_id: stamp.vip_id,
            created_ns: stamp.created_ns,
            flags: flags | FLOW_F_NAT,
            last_seen_s: stamp.last_seen_s,
            nat_src_addr_be: src,
            nat_dst_addr_be: dst,
            nat_src_port_be: src_port_be,
            nat_dst_port_be: dst_port_be,
            ip_csum_delta: if A::IP_CHECKSUM { csum::fold(sum) } else { 0 },
            l4_csum_delta: 0,
            nh_ifindex: 0,
            nh_dmac: [0; 6],
            nh_smac: [0; 6],
        }
    }

    /// The reply entry's L4 checksum delta for an SNAT port: its packets arrive from
    /// backend_port to snat_port and leave from vip_port to client_port.
    #[inline(always)]
    pub fn set_reply_ports(
        &mut self,
        reply_sum: u32,
        (backend_port_be, snat_port_be): (u16, u16),
        (vip_port_be, client_port_be): (u16, u16),
    ) {
        self.l4_csum_delta = csum::with_ports(
            reply_sum,
            (backend_port_be, snat_port_be),
            (vip_port_be, client_port_be),
        );
    }

    /// The client entry's SNAT port and its L4 checksum delta: its packets arrive from
    /// client_port to vip_port and leave from snat_port to backend_port.
    #[inline(always)]
    pub fn set_forward_ports(
        &mut self,
        forward_sum: u32,
        (client_port_be, vip_port_be): (u16, u16),
        (snat_port_be, backend_port_be): (u16, u16),
    ) {
        self.nat_src_port_be = snat_port_be;
        self.l4_csum_delta = csum::with_ports(
            forward_sum,
            (client_port_be, vip_port_be),
            (snat_port_be, backend_port_be),
        );
    }
}

/// The client direction's address sum, from the reply's: the client's packets swap the same
/// four addresses back, so the sum is the reply's negation (one's complement).
#[inline(always)]
pub fn nat_forward_sum(reply_sum: u32) -> u32 {
    !csum::fold(reply_sum) as u32
}

/// The flags of a NAT flow of protocol `proto`: a UDP flow has no TCP state to follow; both
/// entries say so, for their timeout.
#[inline(always)]
pub fn nat_proto_flags(proto: u8) -> u32 {
    if proto == IPPROTO_UDP { FLOW_F_UDP } else { 0 }
}
