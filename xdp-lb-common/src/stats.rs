//! Counters the XDP program keeps. All are per-CPU arrays: no atomics on the packet path; the
//! agent sums over CPUs when it reads them.

/// Per VIP (`VIP_STATS[vip_id]`) and per backend (`BACKEND_STATS[backend_id]`): forwarded
/// traffic. The TX/REDIRECT verdict counts live here too rather than in `COUNTERS`, so that a
/// forwarded packet costs two counter updates instead of three (each is a map lookup on the
/// fast path); `Counter::Tx`/`Counter::Redirect` are the sums over VIPs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Of `packets`, sent back out of the ingress interface (XDP_TX).
    pub tx: u64,
    /// Of `packets`, redirected to another interface (XDP_REDIRECT).
    pub redirect: u64,
    /// VIPs: new flows refused because the source is in the deny list.
    pub denied: u64,
    /// VIPs: new flows refused because the source is not in the allow list.
    pub not_allowed: u64,
    /// VIPs: new flows refused because the source went over `new_flows_per_source`.
    pub rate_limited: u64,
}

impl TrafficCounters {
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
        self.tx += other.tx;
        self.redirect += other.redirect;
        self.denied += other.denied;
        self.not_allowed += other.not_allowed;
        self.rate_limited += other.rate_limited;
    }
}

/// Indexes of `COUNTERS`: one per verdict and per reason a packet was passed or dropped.
/// The documented policy: a frame we cannot prove is for a VIP goes to the kernel untouched
/// (`Pass*`); a frame that is malformed at a layer we must parse is dropped (`Drop*`), which is
/// what the kernel's own checks would do with it a few microseconds later.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Forwarded back out of the ingress interface (XDP_TX). Kept in `VIP_STATS.tx` (this
    /// slot of `COUNTERS` stays 0; readers sum the VIPs, see `TrafficCounters`).
    Tx = 0,
    /// Forwarded through another interface (XDP_REDIRECT). Kept in `VIP_STATS.redirect`.
    Redirect,
    /// Neither IPv4 nor IPv6 (ARP, LLDP, two VLAN tags, ...): passed to the kernel.
    PassNotIp,
    /// IPv4 or IPv6 but neither TCP nor UDP (nor ICMP about a VIP flow): passed. (The name
    /// predates UDP; kept, as metrics and dashboards use it.)
    PassNotTcp,
    /// TCP or UDP but not to a configured VIP address/port/protocol: passed.
    PassNotVip,
    /// An IPv4 fragment, or an IPv6 packet with a fragment header: it may carry no TCP
    /// header, so it cannot be balanced consistently; passed to the kernel, which reassembles
    /// or drops it.
    PassFragment,
    /// Shorter than an Ethernet header (or its VLAN tag): dropped.
    DropTruncatedEth,
    /// Shorter than the IPv4 header, or than the IPv4 total length claims: dropped.
    DropTruncatedIp,
    /// IHL < 5 or total length < IHL: dropped.
    DropBadIpHeader,
    /// Shorter than the TCP header, TCP data offset < 5, or a data offset that claims more
    /// header than the IP payload holds: dropped.
    DropBadTcpHeader,
    /// A VIP with no usable backend (all down, none configured, MAC unresolved): dropped.
    DropNoBackend,
    /// A flow or Maglev entry names a backend id the agent has not filled in: dropped.
    DropBadBackend,
    /// The redirect to the egress interface failed (interface missing from the devmap).
    DropRedirectFailed,
    /// New flows (flow-table misses that chose a backend).
    NewFlow,
    /// Flow-table hits whose backend was no longer allowed to carry flows; re-hashed.
    FlowRehashed,
    /// A frame addressed to another host's MAC (flooded by a switch): passed to the kernel,
    /// which drops it as not ours.
    PassNotLocalMac,
    /// A packet to a NAT VIP that is not a SYN and has no NAT flow (the flow expired, its
    /// backend went down, or another LB node created it before a failover): passed to the
    /// kernel, which answers with a RST so the client reconnects at once.
    PassNatNoFlow,
    /// NAT: the next hop's MAC is unknown. The rewritten packet goes to the kernel, which
    /// resolves the neighbour and forwards it (needs `forwarding` and `accept_local`, see the
    /// README); the flow's next packets take the fast path.
    PassNatNoNeighbour,
    /// NAT: the rewritten packet exceeds the egress MTU; the kernel sends the ICMP error.
    PassNatMtu,
    /// NAT: no SNAT port free for this backend after `NAT_PORT_PROBES` tries: dropped.
    DropNatPortsExhausted,
    /// NAT: `NAT_FLOWS` is full (`agent.flow_table_size` bindings): dropped.
    DropNatTableFull,
    /// NAT: a client packet that would promote a half-open flow while another CPU is promoting
    /// it (the client's ACK and its first data racing): dropped; the client sends it again.
    DropNatDuplicateReply,
    /// NAT: the kernel has no route to the backend or client (unreachable, blackhole,
    /// prohibit): dropped.
    DropNatNoRoute,
    /// NAT: IPv4 forwarding is off on the ingress interface (`net.ipv4.conf.IF.forwarding`):
    /// dropped. The agent warns about it at start.
    DropNatForwardingDisabled,
    /// The program could not read its `SETTINGS` (never expected: a one-entry array): dropped.
    DropNoSettings,
    /// A new flow from a source in the VIP's deny list: dropped before any state is made.
    DropDenied,
    /// A new flow from a source the VIP's allow list does not name: dropped likewise.
    DropNotAllowed,
    /// A new flow from a source over the VIP's `new_flows_per_source`: dropped likewise.
    DropRateLimited,
    /// A new DSR flow forwarded by its Maglev choice without a flow-table entry: this CPU made
    /// `agent.flow_insert_rate` inserts this second already (a flood does not cost an insert
    /// per packet). Its next packets take the same Maglev choice while the table is unchanged.
    FlowNotRecorded,
    /// An ICMP "fragmentation needed" about a DSR VIP's packet, forwarded to the backend that
    /// owns the flow (its flow entry, else its Maglev choice), so path-MTU discovery works
    /// through the balancer. Its verdict (TX or redirect) is not in the VIP's traffic.
    IcmpTooBigToBackend,
    /// ICMP that is not a "fragmentation needed" about a DSR VIP's TCP packet (echo, other
    /// errors, a NAT VIP's, cut short): passed to the kernel, as before the balancer.
    PassIcmp,
    /// An ICMP "fragmentation needed" about a NAT flow's packet, translated for the other side
    /// (about the LB's reply to the client: for the backend; about the LB's packet to the
    /// backend: for the client) and passed to the kernel, which forwards it there.
    IcmpTooBigTranslated,
    /// IPv6 with more extension headers before TCP than the program walks
    /// (`IPV6_MAX_EXT_HEADERS`): passed to the kernel, whose own parser has no such bound.
    PassIpv6ExtLimit,
    /// Shorter than the UDP header, or a UDP length that is not the IP payload's length:
    /// dropped.
    DropBadUdpHeader,
    /// IPv6 UDP with a checksum of 0: not allowed for ordinary UDP (RFC 8200 §8.1), so never
    /// balanced; passed to the kernel, which drops it unless a tunnel socket accepts zero
    /// checksums (RFC 6935: VXLAN, GENEVE) — XDP does not know which sockets do.
    PassUdp6ZeroChecksum,
    /// A new flow the sync could not report: its ring (`SYNC_EVENTS`) was full, the agent
    /// behind. Forwarding is not affected; the peers do not learn of this flow.
    SyncEventLost,
    /// Tunnel: a packet too big for the VIP's `tunnel_mtu` once encapsulated, answered with an
    /// ICMP "fragmentation needed" (IPv4, DF set) or ICMPv6 Packet Too Big to its sender,
    /// with the MTU it can use (its verdict: TX or redirect back to the client).
    TunnelIcmpTooBig,
    /// Tunnel: a packet too big, whose ICMP answer this CPU's budget did not allow this second
    /// (100 a second per CPU, as the kernel's own ICMP rate limit): dropped.
    DropTunnelIcmpRateLimited,
    /// Tunnel: an IPv4 packet too big without DF: XDP cannot fragment it; dropped.
    DropTunnelTooBig,
    /// Tunnel (`mss_clamp`): a SYN whose MSS option was lowered to what fits the tunnel.
    TunnelMssClamped,
    /// Tunnel: the kernel's FIB has no route to the backend: dropped.
    DropTunnelNoRoute,
    /// Tunnel: IPv4 or IPv6 forwarding is off on the interface the program is attached to
    /// (the FIB refuses to route for it): dropped. The agent warns at start.
    DropTunnelForwardingDisabled,
    /// Tunnel: the outer next hop's MAC is unknown: the encapsulated packet goes to the
    /// kernel, which resolves the neighbour and forwards it (as NAT's, it needs `forwarding`
    /// and `accept_local`); the flow's next packets take the fast path.
    PassTunnelNoNeighbour,
    /// Tunnel: no outer source address of the backend's family (the agent sets one for every
    /// family a tunnel VIP's backends use: never expected): dropped.
    DropTunnelNoSource,
    /// A tunnel health probe's answer (a backend's SYN-ACK from a VIP to a probe port),
    /// recorded in `TUNNEL_PROBES` and dropped.
    TunnelProbeReply,
}

impl Counter {
    pub const COUNT: u32 = Counter::TunnelProbeReply as u32 + 1;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Tx,
        Counter::Redirect,
        Counter::PassNotIp,
        Counter::PassNotTcp,
        Counter::PassNotVip,
        Counter::PassFragment,
        Counter::DropTruncatedEth,
        Counter::DropTruncatedIp,
        Counter::DropBadIpHeader,
        Counter::DropBadTcpHeader,
        Counter::DropNoBackend,
        Counter::DropBadBackend,
        Counter::DropRedirectFailed,
        Counter::NewFlow,
        Counter::FlowRehashed,
        Counter::PassNotLocalMac,
        Counter::PassNatNoFlow,
        Counter::PassNatNoNeighbour,
        Counter::PassNatMtu,
        Counter::DropNatPortsExhausted,
        Counter::DropNatTableFull,
        Counter::DropNatDuplicateReply,
        Counter::DropNatNoRoute,
        Counter::DropNatForwardingDisabled,
        Counter::DropNoSettings,
        Counter::DropDenied,
        Counter::DropNotAllowed,
        Counter::DropRateLimited,
        Counter::FlowNotRecorded,
        Counter::IcmpTooBigToBackend,
        Counter::PassIcmp,
        Counter::IcmpTooBigTranslated,
        Counter::PassIpv6ExtLimit,
        Counter::DropBadUdpHeader,
        Counter::PassUdp6ZeroChecksum,
        Counter::SyncEventLost,
        Counter::TunnelIcmpTooBig,
        Counter::DropTunnelIcmpRateLimited,
        Counter::DropTunnelTooBig,
        Counter::TunnelMssClamped,
        Counter::DropTunnelNoRoute,
        Counter::DropTunnelForwardingDisabled,
        Counter::PassTunnelNoNeighbour,
        Counter::DropTunnelNoSource,
        Counter::TunnelProbeReply,
    ];

    /// The counter of index `i`, if there is one.
    #[inline(always)]
    pub const fn from_index(i: u32) -> Option<Counter> {
        if i < Self::COUNT {
            // SAFETY: `repr(u32)` with the discriminants 0..COUNT, in order (the test
            // `all_lists_every_counter_in_index_order` checks them).
            Some(unsafe { core::mem::transmute::<u32, Counter>(i) })
        } else {
            None
        }
    }

    /// Whether this counter is a frame's verdict: every frame the program sees is counted by
    /// exactly one of these (`tx`, `redirect`, the `drop_*` and `pass_*` reasons, and the ICMP
    /// and probe paths that are verdicts of their own). The others (`new_flow`,
    /// `flow_rehashed`, `flow_not_recorded`, `tunnel_mss_clamped`, `sync_event_lost`) count
    /// events beside a verdict. `cargo xtask fuzz` holds the program to it.
    pub fn is_verdict(self) -> bool {
        let n = self.name();
        n == "tx"
            || n == "redirect"
            || n.starts_with("drop_")
            || n.starts_with("pass_")
            || matches!(
                self,
                Counter::IcmpTooBigToBackend
                    | Counter::IcmpTooBigTranslated
                    | Counter::TunnelIcmpTooBig
                    | Counter::TunnelProbeReply
            )
    }

    /// Whether the frame goes to the kernel (XDP_PASS) rather than being dropped.
    pub const fn passes(self) -> bool {
        matches!(
            self,
            Counter::PassNotIp
                | Counter::PassNotTcp
                | Counter::PassNotVip
                | Counter::PassUdp6ZeroChecksum
                | Counter::PassFragment
                | Counter::PassNotLocalMac
                | Counter::PassNatNoFlow
                | Counter::PassNatNoNeighbour
                | Counter::PassNatMtu
                | Counter::PassIcmp
                | Counter::PassIpv6ExtLimit
                | Counter::PassTunnelNoNeighbour
        )
    }

    /// Stable snake_case name, used in logs, `inspect stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Tx => "tx",
            Counter::Redirect => "redirect",
            Counter::PassNotIp => "pass_not_ip",
            Counter::PassNotTcp => "pass_not_tcp",
            Counter::PassNotVip => "pass_not_vip",
            Counter::PassFragment => "pass_fragment",
            Counter::DropTruncatedEth => "drop_truncated_eth",
            Counter::DropTruncatedIp => "drop_truncated_ip",
            Counter::DropBadIpHeader => "drop_bad_ip_header",
            Counter::DropBadTcpHeader => "drop_bad_tcp_header",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropBadBackend => "drop_bad_backend",
            Counter::DropRedirectFailed => "drop_redirect_failed",
            Counter::NewFlow => "new_flow",
            Counter::FlowRehashed => "flow_rehashed",
            Counter::PassNotLocalMac => "pass_not_local_mac",
            Counter::PassNatNoFlow => "pass_nat_no_flow",
            Counter::PassNatNoNeighbour => "pass_nat_no_neighbour",
            Counter::PassNatMtu => "pass_nat_mtu",
            Counter::DropNatPortsExhausted => "drop_nat_ports_exhausted",
            Counter::DropNatTableFull => "drop_nat_table_full",
            Counter::DropNatDuplicateReply => "drop_nat_duplicate_reply",
            Counter::DropNatNoRoute => "drop_nat_no_route",
            Counter::DropNatForwardingDisabled => "drop_nat_forwarding_disabled",
            Counter::DropNoSettings => "drop_no_settings",
            Counter::DropDenied => "drop_denied",
            Counter::DropNotAllowed => "drop_not_allowed",
            Counter::DropRateLimited => "drop_rate_limited",
            Counter::FlowNotRecorded => "flow_not_recorded",
            Counter::IcmpTooBigToBackend => "icmp_too_big_to_backend",
            Counter::PassIcmp => "pass_icmp",
            Counter::IcmpTooBigTranslated => "icmp_too_big_translated",
            Counter::PassIpv6ExtLimit => "pass_ipv6_ext_limit",
            Counter::DropBadUdpHeader => "drop_bad_udp_header",
            Counter::PassUdp6ZeroChecksum => "pass_udp6_zero_checksum",
            Counter::SyncEventLost => "sync_event_lost",
            Counter::TunnelIcmpTooBig => "tunnel_icmp_too_big",
            Counter::DropTunnelIcmpRateLimited => "drop_tunnel_icmp_rate_limited",
            Counter::DropTunnelTooBig => "drop_tunnel_too_big",
            Counter::TunnelMssClamped => "tunnel_mss_clamped",
            Counter::DropTunnelNoRoute => "drop_tunnel_no_route",
            Counter::DropTunnelForwardingDisabled => "drop_tunnel_forwarding_disabled",
            Counter::PassTunnelNoNeighbour => "pass_tunnel_no_neighbour",
            Counter::DropTunnelNoSource => "drop_tunnel_no_source",
            Counter::TunnelProbeReply => "tunnel_probe_reply",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.name());
            assert_eq!(Counter::from_index(i as u32), Some(*c));
        }
    }
}
