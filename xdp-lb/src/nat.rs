//! NAT flow expiry, the rules: when a NAT flow's two entries and its SNAT port are reclaimed.
//! The walk over the maps that applies them is the reconciler's (`dataplane/nat_expiry.rs`).
//!
//! The program creates NAT flows and keeps their TCP state (`FLOW_F_ESTABLISHED`,
//! `FLOW_F_CLOSING`) and last-seen second in both entries (`xdp-lb-ebpf/src/nat.rs`). The
//! reply entries live in `NAT_FLOWS`, a plain hash map that nothing evicts: a port reservation
//! must not vanish while its flow may still send. So the agent walks `NAT_FLOWS` every second
//! (and `NAT_FLOWS6` for NAT66) and, for each flow idle longer than the timeout of its state,
//! deletes the client direction (`FLOWS`, `FLOWS6`) and then the reply direction — after which the port is free again.
//!
//! Timeouts, from the flow's last packet in either direction (like conntrack's):
//! half-open (SYN seen, no answer yet) `agent.nat_syn_timeout`, established
//! `agent.nat_established_timeout`, closing (FIN or RST seen) `agent.nat_closing_timeout`;
//! a UDP flow (`FLOW_F_UDP`), whatever it has seen, `agent.nat_udp_timeout`.

use std::{collections::BTreeMap, time::Duration};

use xdp_lb_common::{
    FLOW_F_NAT, FLOW_F_UDP, FlowTuple, FlowValue, FlowValueOf, IPPROTO_TCP, IPPROTO_UDP, NatState,
};

use crate::config::AgentConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub syn: Duration,
    pub established: Duration,
    pub closing: Duration,
    pub udp: Duration,
}

impl Timeouts {
    pub fn of(agent: &AgentConfig) -> Self {
        Self {
            syn: agent.nat_syn_timeout,
            established: agent.nat_established_timeout,
            closing: agent.nat_closing_timeout,
            udp: agent.nat_udp_timeout,
        }
    }

    pub fn for_state(&self, state: NatState) -> Duration {
        match state {
            NatState::SynSent => self.syn,
            NatState::Established => self.established,
            NatState::Closing => self.closing,
            NatState::Udp => self.udp,
        }
    }
}

/// Whether a NAT flow whose two directions say `flags` and `last_seen_s` has expired at
/// `now_s`. Both are whole seconds, so the whole-second idle time can read up to one second
/// more than the true idle time; requiring one second more than the timeout makes a flow live
/// at least its timeout (and at most its timeout plus two seconds plus the sweep period).
pub fn expired(flags: u32, last_seen_s: u32, now_s: u32, timeouts: &Timeouts) -> bool {
    let idle = now_s.saturating_sub(last_seen_s) as u64;
    idle > timeouts
        .for_state(FlowValue::nat_state(flags))
        .as_secs()
        .max(1)
}

/// The key of a NAT flow's other direction. Each entry carries the rewrite of its own
/// direction (`nat_*`: the addresses and ports the packet leaves with), and the other
/// direction's packets arrive with exactly those, swapped: so the client entry gives the reply
/// key, and the reply entry gives the client key.
pub fn other_direction<K: FlowTuple>(entry: &FlowValueOf<K::Addr>) -> K {
    K::tuple(
        entry.nat_dst_addr_be,
        entry.nat_src_addr_be,
        entry.nat_dst_port_be,
        entry.nat_src_port_be,
        if entry.flags & FLOW_F_UDP != 0 {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        },
    )
}

/// Whether the client-direction entry `client` belongs to the binding of `reply_key` (a later
/// flow of the same client may have replaced it with another port or backend).
pub fn same_binding<K: FlowTuple>(client: &FlowValueOf<K::Addr>, reply_key: &K) -> bool {
    client.flags & FLOW_F_NAT != 0
        && client.nat_src_port_be == reply_key.dst_port_be()
        && client.nat_dst_addr_be == reply_key.src()
        && client.nat_dst_port_be == reply_key.src_port_be()
}

/// What one sweep saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Live NAT flows after the sweep, by state name.
    pub live: BTreeMap<&'static str, u64>,
    /// Live NAT flows, half-open ones included (each holds one SNAT port), by backend id.
    pub live_by_backend: BTreeMap<u32, u64>,
    /// Flows reclaimed by this sweep.
    pub reclaimed: u64,
    /// The established flows it reclaimed, by their client's 5-tuple: `[sync]` tells the
    /// peers, whose copies then give their SNAT ports back too.
    pub closed: Vec<ClosedFlow>,
}

/// A NAT flow that ended, as the client's packets named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedFlow {
    pub proto: u8,
    pub client: std::net::SocketAddr,
    pub vip: std::net::SocketAddr,
}

impl ClosedFlow {
    /// The flow whose client direction is `key`.
    pub fn of<K: FlowTuple>(key: &K) -> Self {
        ClosedFlow {
            proto: key.proto(),
            client: (ip_of::<K>(key.src()), u16::from_be(key.src_port_be())).into(),
            vip: (ip_of::<K>(key.dst()), u16::from_be(key.dst_port_be())).into(),
        }
    }
}

/// A map's address (network order, either family) as an `IpAddr`.
pub fn ip_of<K: FlowTuple>(a: K::Addr) -> std::net::IpAddr {
    let b = K::addr16(a);
    if K::FAMILY == 4 {
        std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
    } else {
        std::net::Ipv6Addr::from(b).into()
    }
}

#[cfg(test)]
mod tests {
    use xdp_lb_common::{FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_REPLY};

    use super::*;

    const T: Timeouts = Timeouts {
        syn: Duration::from_secs(10),
        established: Duration::from_secs(3600),
        closing: Duration::from_secs(5),
        udp: Duration::from_secs(30),
    };

    #[test]
    fn each_state_has_its_own_timeout() {
        let nat = FLOW_F_NAT | FLOW_F_REPLY;
        // Half-open: only the SYN.
        assert!(!expired(nat, 100, 110, &T));
        assert!(expired(nat, 100, 111, &T));
        // Established: long.
        let est = nat | FLOW_F_ESTABLISHED;
        assert!(!expired(est, 100, 100 + 3600, &T));
        assert!(expired(est, 100, 100 + 3601, &T));
        // Closing wins over established: short.
        let closing = est | FLOW_F_CLOSING;
        assert!(!expired(closing, 100, 105, &T));
        assert!(expired(closing, 100, 106, &T));
        // A clock that went backwards (never, but) does not expire anything.
        assert!(!expired(closing, 100, 50, &T));
    }

    #[test]
    fn other_direction_inverts_the_rewrite() {
        let reply = FlowValue {
            nat_src_addr_be: 1,
            nat_dst_addr_be: 2,
            nat_src_port_be: 3,
            nat_dst_port_be: 4,
            ..Default::default()
        };
        let k: xdp_lb_common::FlowKey = other_direction(&reply);
        assert_eq!(
            (k.src_addr, k.dst_addr, k.src_port_be, k.dst_port_be),
            (2, 1, 4, 3)
        );
    }
}
