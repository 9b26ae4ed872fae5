//! Installing flows another LB node sent (`[sync]`), so that their packets, if they come here
//! (a VRRP failover, ECMP moving them), keep their backend and, for NAT, their translation.
//!
//! A NAT flow is written as the program's own promotion writes it (`nat.rs` in the program):
//! the reply entry in `NAT_FLOWS` (which reserves the SNAT port) and the client's direction in
//! `FLOWS`, each with the checksum deltas of its rewrite. What this node already has wins: a
//! flow it knows is left as it is, and a SNAT port it holds for another flow is never taken
//! (counted as a conflict).

use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};
use xdp_lb_common::{
    FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_NAT, FLOW_F_REPLY, FLOW_F_UDP, FlowKey, FlowKey6,
    FlowTuple, FlowValueOf, IPPROTO_UDP, csum,
};

use super::Maps;

/// A flow from a peer, resolved to this node's ids (the agent found its VIP and backend by
/// address and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedFlow {
    pub proto: u8,
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub vip_id: u32,
    pub backend_id: u32,
    pub backend: (IpAddr, u16),
    /// NAT: the source the backend sees; None: DSR.
    pub snat: Option<(IpAddr, u16)>,
    /// The NAT state bits (`FLOW_F_ESTABLISHED`, `FLOW_F_CLOSING`).
    pub state: u32,
    /// Seconds since the flow's last packet on the sender.
    pub idle_s: u32,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InstallReport {
    pub installed: u64,
    /// Already here (this node saw the flow itself, or an earlier message carried it).
    pub known: u64,
    /// NAT: this node holds the SNAT port for another flow.
    pub conflicts: u64,
    /// The families of the record's addresses disagree.
    pub malformed: u64,
}

/// `BPF_NOEXIST`: insert only if absent (the kernel checks atomically against the program's
/// own inserts).
const NOEXIST: u64 = 1;

pub(super) fn install(
    maps: &mut Maps,
    flows: &[SyncedFlow],
    now_ns: u64,
    now_s: u32,
) -> Result<InstallReport, MapError> {
    let mut report = InstallReport::default();
    for f in flows {
        let done = match (f.client.0, f.vip.0, f.backend.0) {
            (IpAddr::V4(c), IpAddr::V4(v), IpAddr::V4(b)) => {
                let snat = match f.snat {
                    Some((IpAddr::V4(a), p)) => Some((be4(a), p.to_be())),
                    Some(_) => {
                        report.malformed += 1;
                        continue;
                    }
                    None => None,
                };
                let key =
                    FlowKey::tuple(be4(c), be4(v), f.client.1.to_be(), f.vip.1.to_be(), f.proto);
                one(
                    &mut maps.flows,
                    &mut maps.nat_flows,
                    f,
                    key,
                    (be4(b), f.backend.1.to_be()),
                    snat,
                    now_ns,
                    now_s,
                )?
            }
            (IpAddr::V6(c), IpAddr::V6(v), IpAddr::V6(b)) => {
                let snat = match f.snat {
                    Some((IpAddr::V6(a), p)) => Some((a.octets(), p.to_be())),
                    Some(_) => {
                        report.malformed += 1;
                        continue;
                    }
                    None => None,
                };
                let key = FlowKey6::tuple(
                    c.octets(),
                    v.octets(),
                    f.client.1.to_be(),
                    f.vip.1.to_be(),
                    f.proto,
                );
                one(
                    &mut maps.flows6,
                    &mut maps.nat_flows6,
                    f,
                    key,
                    (b.octets(), f.backend.1.to_be()),
                    snat,
                    now_ns,
                    now_s,
                )?
            }
            _ => {
                report.malformed += 1;
                continue;
            }
        };
        match done {
            Done::Installed => report.installed += 1,
            Done::Known => report.known += 1,
            Done::Conflict => report.conflicts += 1,
        }
    }
    Ok(report)
}

fn be4(a: std::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

enum Done {
    Installed,
    Known,
    Conflict,
}

/// One flow of one family. `backend` and `snat` are (address, port) in network order.
#[allow(clippy::too_many_arguments)]
fn one<K, A>(
    flows: &mut HashMap<MapData, K, FlowValueOf<A>>,
    nat_flows: &mut HashMap<MapData, K, FlowValueOf<A>>,
    f: &SyncedFlow,
    client_key: K,
    backend: (K::Addr, u16),
    snat: Option<(K::Addr, u16)>,
    now_ns: u64,
    now_s: u32,
) -> Result<Done, MapError>
where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: Copy + PartialEq + Default,
    FlowValueOf<A>: aya::Pod + Default,
{
    let created_ns = now_ns.saturating_sub(f.idle_s as u64 * 1_000_000_000);
    let last_seen_s = now_s.saturating_sub(f.idle_s);
    if let Ok(mine) = flows.get(&client_key, 0) {
        // Known. A NAT copy that the peer says was busy more recently than this node last saw
        // it (the peer's refresh, `stream.rs`) is freshened, both entries, so that it does not
        // expire here while it lives there. (Only a copy: this node sees none of its packets.)
        // A copy whose flow started closing there is closing here too (its timeout).
        let closing = f.state & FLOW_F_CLOSING;
        let changes = mine.last_seen_s < last_seen_s || mine.flags & closing != closing;
        if snat.is_some() && mine.flags & FLOW_F_NAT != 0 && changes {
            let reply_key: K = crate::nat::other_direction(&mine);
            if let Ok(mut reply) = nat_flows.get(&reply_key, 0) {
                reply.last_seen_s = reply.last_seen_s.max(last_seen_s);
                reply.flags |= closing;
                let _ = nat_flows.insert(reply_key, reply, 0);
            }
            let fresher = FlowValueOf::<A> {
                last_seen_s: mine.last_seen_s.max(last_seen_s),
                flags: mine.flags | closing,
                ..mine
            };
            let _ = flows.insert(client_key, fresher, 0);
        }
        return Ok(Done::Known);
    }
    let Some((snat_addr, snat_port)) = snat else {
        // DSR: the flow's backend, nothing else.
        let value = FlowValueOf::<A> {
            backend_id: f.backend_id,
            vip_id: f.vip_id,
            created_ns,
            ..Default::default()
        };
        return match flows.insert(client_key, value, NOEXIST) {
            Ok(()) => Ok(Done::Installed),
            Err(e) if exists(&e) => Ok(Done::Known),
            Err(e) => Err(e),
        };
    };
    let (backend_addr, backend_port) = backend;
    let (client_addr, vip_addr) = (client_key.src(), client_key.dst());
    let (client_port, vip_port) = (client_key.src_port_be(), client_key.dst_port_be());
    // As the program's `create`: the reply leaves as VIP → client instead of backend → SNAT;
    // the client's packets the other way round, whose sum is the reply's negated.
    let reply_sum = K::addr_sum((&backend_addr, &snat_addr), (&vip_addr, &client_addr));
    let forward_sum = !csum::fold(reply_sum) as u32;
    let mut flags = FLOW_F_NAT | (f.state & (FLOW_F_ESTABLISHED | FLOW_F_CLOSING));
    if f.proto == IPPROTO_UDP {
        flags |= FLOW_F_UDP;
    }
    let reply_key = K::tuple(backend_addr, snat_addr, backend_port, snat_port, f.proto);
    let reply = FlowValueOf::<A> {
        backend_id: f.backend_id,
        vip_id: f.vip_id,
        created_ns,
        flags: flags | FLOW_F_REPLY,
        last_seen_s,
        nat_src_addr_be: vip_addr,
        nat_dst_addr_be: client_addr,
        nat_src_port_be: vip_port,
        nat_dst_port_be: client_port,
        ip_csum_delta: if K::IP_CHECKSUM {
            csum::fold(reply_sum)
        } else {
            0
        },
        l4_csum_delta: csum::with_ports(
            reply_sum,
            (backend_port, snat_port),
            (vip_port, client_port),
        ),
        ..Default::default()
    };
    let forward = FlowValueOf::<A> {
        backend_id: f.backend_id,
        vip_id: f.vip_id,
        created_ns,
        flags,
        last_seen_s,
        nat_src_addr_be: snat_addr,
        nat_dst_addr_be: backend_addr,
        nat_src_port_be: snat_port,
        nat_dst_port_be: backend_port,
        ip_csum_delta: if K::IP_CHECKSUM {
            csum::fold(forward_sum)
        } else {
            0
        },
        l4_csum_delta: csum::with_ports(
            forward_sum,
            (client_port, vip_port),
            (snat_port, backend_port),
        ),
        ..Default::default()
    };
    // The reply entry first: it is the port's reservation.
    match nat_flows.insert(reply_key, reply, NOEXIST) {
        Ok(()) => {}
        Err(e) if exists(&e) => {
            // The same flow from an earlier message, or another flow holding the port.
            let same = nat_flows.get(&reply_key, 0).is_ok_and(|r| {
                r.nat_dst_addr_be == client_addr
                    && r.nat_dst_port_be == client_port
                    && r.nat_src_port_be == vip_port
            });
            return Ok(if same { Done::Known } else { Done::Conflict });
        }
        Err(e) => return Err(e),
    }
    match flows.insert(client_key, forward, NOEXIST) {
        Ok(()) => Ok(Done::Installed),
        Err(e) => {
            // The flow arrived here meanwhile (this node's own packet): its entry wins.
            let _ = nat_flows.remove(&reply_key);
            if exists(&e) { Ok(Done::Known) } else { Err(e) }
        }
    }
}

/// Removes the copies of flows a peer closed: the client direction and, if it is this flow's,
/// the reply entry (which frees the SNAT port). A flow this node has made anew meanwhile (another
/// binding) is left alone. Returns how many were removed.
pub(super) fn remove(maps: &mut Maps, closed: &[crate::nat::ClosedFlow]) -> u64 {
    let mut removed = 0;
    for c in closed {
        let done = match (c.client.ip(), c.vip.ip()) {
            (IpAddr::V4(a), IpAddr::V4(v)) => remove_one(
                &mut maps.flows,
                &mut maps.nat_flows,
                FlowKey::tuple(
                    be4(a),
                    be4(v),
                    c.client.port().to_be(),
                    c.vip.port().to_be(),
                    c.proto,
                ),
            ),
            (IpAddr::V6(a), IpAddr::V6(v)) => remove_one(
                &mut maps.flows6,
                &mut maps.nat_flows6,
                FlowKey6::tuple(
                    a.octets(),
                    v.octets(),
                    c.client.port().to_be(),
                    c.vip.port().to_be(),
                    c.proto,
                ),
            ),
            _ => false,
        };
        removed += done as u64;
    }
    removed
}

fn remove_one<K, A>(
    flows: &mut HashMap<MapData, K, FlowValueOf<A>>,
    nat_flows: &mut HashMap<MapData, K, FlowValueOf<A>>,
    client_key: K,
) -> bool
where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: Copy + PartialEq + Default,
    FlowValueOf<A>: aya::Pod + Default,
{
    let Ok(client) = flows.get(&client_key, 0) else {
        return false;
    };
    if client.flags & FLOW_F_NAT == 0 {
        return false;
    }
    let reply_key: K = crate::nat::other_direction(&client);
    if nat_flows.get(&reply_key, 0).is_ok_and(|r| {
        r.nat_dst_addr_be == client_key.src() && r.nat_dst_port_be == client_key.src_port_be()
    }) {
        let _ = nat_flows.remove(&reply_key);
    }
    flows.remove(&client_key).is_ok()
}

fn exists(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST))
}
