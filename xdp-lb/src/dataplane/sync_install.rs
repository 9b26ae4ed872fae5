//! Installing flows another LB node sent (`[sync]`), so that their packets, if they come here
//! (a VRRP failover, ECMP moving them), keep their backend and, for NAT, their translation.
//!
//! A NAT flow is written as the program's own promotion writes it (`nat.rs` in the program),
//! by the same constructors (`xdp_lb_common::FlowValueOf::nat_reply`, `nat_forward`): the
//! reply entry in `NAT_FLOWS` (which reserves the SNAT port) and the client's direction in
//! `FLOWS`, each with the checksum deltas of its rewrite. What this node already has wins: a
//! flow it knows is left as it is, and a SNAT port it holds for another flow is never taken
//! (counted as a conflict).

use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};
use xdp_lb_common::{
    Address, FLOW_F_CLOSING, FLOW_F_ESTABLISHED, FLOW_F_NAT, FlowKey, FlowKey6, FlowTuple,
    FlowValueOf, NatStamp, nat_forward_sum, nat_proto_flags,
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
        let outcome = match (f.client.0, f.vip.0, f.backend.0, f.snat.map(|s| s.0)) {
            (
                c @ IpAddr::V4(_),
                v @ IpAddr::V4(_),
                b @ IpAddr::V4(_),
                None | Some(IpAddr::V4(_)),
            ) => {
                let snat = f.snat.map(|(a, p)| (be4(a), p.to_be()));
                let key =
                    FlowKey::tuple(be4(c), be4(v), f.client.1.to_be(), f.vip.1.to_be(), f.proto);
                let backend = (be4(b), f.backend.1.to_be());
                let tables = (&mut maps.flows, &mut maps.nat_flows);
                install_flow(tables, f, key, backend, snat, (now_ns, now_s))?
            }
            (IpAddr::V6(c), IpAddr::V6(v), IpAddr::V6(b), None | Some(IpAddr::V6(_))) => {
                let snat = f.snat.map(|(a, p)| (be16(a), p.to_be()));
                let key = FlowKey6::tuple(
                    c.octets(),
                    v.octets(),
                    f.client.1.to_be(),
                    f.vip.1.to_be(),
                    f.proto,
                );
                let backend = (b.octets(), f.backend.1.to_be());
                let tables = (&mut maps.flows6, &mut maps.nat_flows6);
                install_flow(tables, f, key, backend, snat, (now_ns, now_s))?
            }
            _ => Outcome::Malformed,
        };
        match outcome {
            Outcome::Installed => report.installed += 1,
            Outcome::Known => report.known += 1,
            Outcome::Conflict => report.conflicts += 1,
            Outcome::Malformed => report.malformed += 1,
        }
    }
    Ok(report)
}

/// An IPv4 address as the packet carries it.
fn be4(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(_) => 0,
    }
}

fn be16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => [0; 16],
    }
}

/// What became of one flow.
enum Outcome {
    Installed,
    Known,
    Conflict,
    /// The families of the record's addresses disagree.
    Malformed,
}

/// One family's client-direction and NAT reply tables.
type Tables<'a, K, A> = (
    &'a mut HashMap<MapData, K, FlowValueOf<A>>,
    &'a mut HashMap<MapData, K, FlowValueOf<A>>,
);

/// One flow of one family: freshened if known, else installed. `backend` and `snat` are
/// (address, port) in network order; `now` the monotonic ns and coarse seconds.
fn install_flow<K, A>(
    (flows, nat_flows): Tables<'_, K, A>,
    f: &SyncedFlow,
    client_key: K,
    backend: (A, u16),
    snat: Option<(A, u16)>,
    (now_ns, now_s): (u64, u32),
) -> Result<Outcome, MapError>
where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: Address,
    FlowValueOf<A>: aya::Pod,
{
    let stamp = NatStamp {
        backend_id: f.backend_id,
        vip_id: f.vip_id,
        created_ns: now_ns.saturating_sub(f.idle_s as u64 * 1_000_000_000),
        last_seen_s: now_s.saturating_sub(f.idle_s),
    };
    if let Ok(mine) = flows.get(&client_key, 0) {
        if snat.is_some() && mine.flags & FLOW_F_NAT != 0 {
            freshen((flows, nat_flows), f, client_key, mine, stamp.last_seen_s);
        }
        return Ok(Outcome::Known);
    }
    let Some(snat) = snat else {
        // DSR: the flow's backend, nothing else.
        let value = FlowValueOf::<A>::dsr(f.backend_id, f.vip_id, stamp.created_ns);
        return match flows.insert(client_key, value, NOEXIST) {
            Ok(()) => Ok(Outcome::Installed),
            Err(e) if exists(&e) => Ok(Outcome::Known),
            Err(e) => Err(e),
        };
    };
    install_nat((flows, nat_flows), f, client_key, backend, snat, stamp)
}

/// A known NAT copy that the peer says was busy more recently than this node last saw it (the
/// peer's refresh, `stream.rs`) is freshened, both entries, so that it does not expire here
/// while it lives there. (Only a copy: this node sees none of its packets.) A copy whose flow
/// started closing there is closing here too (its timeout).
fn freshen<K, A>(
    (flows, nat_flows): Tables<'_, K, A>,
    f: &SyncedFlow,
    client_key: K,
    mine: FlowValueOf<A>,
    last_seen_s: u32,
) where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: Address,
    FlowValueOf<A>: aya::Pod,
{
    let closing = f.state & FLOW_F_CLOSING;
    if mine.last_seen_s >= last_seen_s && mine.flags & closing == closing {
        return;
    }
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

/// A NAT flow written as the program's own promotion writes it, with the same constructors:
/// the reply entry first (it is the SNAT port's reservation), then the client's direction.
fn install_nat<K, A>(
    (flows, nat_flows): Tables<'_, K, A>,
    f: &SyncedFlow,
    client_key: K,
    (backend_addr, backend_port): (A, u16),
    (snat_addr, snat_port): (A, u16),
    stamp: NatStamp,
) -> Result<Outcome, MapError>
where
    K: FlowTuple<Addr = A> + aya::Pod,
    A: Address,
    FlowValueOf<A>: aya::Pod,
{
    let (client_addr, vip_addr) = (client_key.src(), client_key.dst());
    let (client_port, vip_port) = (client_key.src_port_be(), client_key.dst_port_be());
    // As the program's `create`: the reply leaves as VIP → client instead of backend → SNAT.
    let reply_sum = A::addr_sum((&backend_addr, &snat_addr), (&vip_addr, &client_addr));
    let forward_sum = nat_forward_sum(reply_sum);
    let flags = nat_proto_flags(f.proto) | (f.state & (FLOW_F_ESTABLISHED | FLOW_F_CLOSING));
    let reply_key = K::tuple(backend_addr, snat_addr, backend_port, snat_port, f.proto);
    let mut reply = FlowValueOf::nat_reply(
        stamp,
        flags,
        (vip_addr, vip_port),
        (client_addr, client_port),
        reply_sum,
    );
    reply.set_reply_ports(
        reply_sum,
        (backend_port, snat_port),
        (vip_port, client_port),
    );
    let mut forward = FlowValueOf::nat_forward(
        stamp,
        flags,
        snat_addr,
        (backend_addr, backend_port),
        forward_sum,
    );
    forward.set_forward_ports(
        forward_sum,
        (client_port, vip_port),
        (snat_port, backend_port),
    );
    match nat_flows.insert(reply_key, reply, NOEXIST) {
        Ok(()) => {}
        Err(e) if exists(&e) => {
            // The same flow from an earlier message, or another flow holding the port.
            let same = nat_flows.get(&reply_key, 0).is_ok_and(|r| {
                r.nat_dst_addr_be == client_addr
                    && r.nat_dst_port_be == client_port
                    && r.nat_src_port_be == vip_port
            });
            return Ok(if same {
                Outcome::Known
            } else {
                Outcome::Conflict
            });
        }
        Err(e) => return Err(e),
    }
    match flows.insert(client_key, forward, NOEXIST) {
        Ok(()) => Ok(Outcome::Installed),
        Err(e) => {
            // The flow arrived here meanwhile (this node's own packet): its entry wins.
            let _ = nat_flows.remove(&reply_key);
            if exists(&e) {
                Ok(Outcome::Known)
            } else {
                Err(e)
            }
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
            (a @ IpAddr::V4(_), v @ IpAddr::V4(_)) => remove_one(
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
    A: Address,
    FlowValueOf<A>: aya::Pod,
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
