//! A snapshot for a peer: every flow this node holds, read from the pinned flow tables (the
//! reconciler stays their one writer; this only reads, like `xdp-lb inspect`).
//!
//! Each client-direction entry of `FLOWS` and `FLOWS6` is one flow: a DSR entry names its
//! backend by id (turned into an address by the directory), a NAT entry carries its own
//! rewrite (backend and SNAT source). Half-open NAT flows are not sent: a failover resets them
//! anyway (the client's SYN is retried).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData};
use xdp_lb_common::{
    FLOW_F_CLOSING, FLOW_F_NAT, FLOW_F_REPLY, FlowKey, FlowKey6, FlowValue, FlowValue6, map_names,
};

use super::{
    stream::Directory,
    wire::{FlowRecord, RecordKind, STATE_CLOSING, STATE_ESTABLISHED},
};

/// Every flow of both families, as records.
pub fn walk(pin_dir: &Path, dir: &Directory) -> Result<Vec<FlowRecord>, String> {
    let now_s = crate::clock::coarse_now_s();
    let open =
        |name: &str| MapData::from_pin(pin_dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let mut out = Vec::new();
    let flows: HashMap<MapData, FlowKey, FlowValue> = Map::LruHashMap(open(map_names::FLOWS)?)
        .try_into()
        .map_err(|e| format!("FLOWS: {e}"))?;
    for (k, v) in flows.iter().filter_map(Result::ok) {
        let ip = |a: u32| IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()));
        let flow = Entry {
            proto: k.proto,
            client: SocketAddr::new(ip(k.src_addr_be), u16::from_be(k.src_port_be)),
            vip: SocketAddr::new(ip(k.dst_addr_be), u16::from_be(k.dst_port_be)),
            nat: (
                SocketAddr::new(ip(v.nat_dst_addr_be), u16::from_be(v.nat_dst_port_be)),
                SocketAddr::new(ip(v.nat_src_addr_be), u16::from_be(v.nat_src_port_be)),
            ),
            backend_id: v.backend_id,
            flags: v.flags,
            last_seen_s: v.last_seen_s,
        };
        out.extend(flow.record(dir, now_s));
    }
    let flows6: HashMap<MapData, FlowKey6, FlowValue6> = Map::LruHashMap(open(map_names::FLOWS6)?)
        .try_into()
        .map_err(|e| format!("FLOWS6: {e}"))?;
    for (k, v) in flows6.iter().filter_map(Result::ok) {
        let ip = |a: [u8; 16]| IpAddr::V6(Ipv6Addr::from(a));
        let flow = Entry {
            proto: k.proto,
            client: SocketAddr::new(ip(k.src_addr), u16::from_be(k.src_port_be)),
            vip: SocketAddr::new(ip(k.dst_addr), u16::from_be(k.dst_port_be)),
            nat: (
                SocketAddr::new(ip(v.nat_dst_addr_be), u16::from_be(v.nat_dst_port_be)),
                SocketAddr::new(ip(v.nat_src_addr_be), u16::from_be(v.nat_src_port_be)),
            ),
            backend_id: v.backend_id,
            flags: v.flags,
            last_seen_s: v.last_seen_s,
        };
        out.extend(flow.record(dir, now_s));
    }
    Ok(out)
}

/// One client-direction entry, of either family.
struct Entry {
    proto: u8,
    client: SocketAddr,
    vip: SocketAddr,
    /// NAT: (backend, SNAT source) from the entry's rewrite.
    nat: (SocketAddr, SocketAddr),
    backend_id: u32,
    flags: u32,
    last_seen_s: u32,
}

impl Entry {
    fn record(&self, dir: &Directory, now_s: u32) -> Option<FlowRecord> {
        if self.flags & FLOW_F_REPLY != 0 {
            return None;
        }
        if self.flags & FLOW_F_NAT != 0 {
            // A NAT flow's client direction is in FLOWS only once established (half-open
            // flows live in NAT_EMBRYONIC_CLIENT); its ESTABLISHED bit is on the reply side.
            let mut state = STATE_ESTABLISHED;
            if self.flags & FLOW_F_CLOSING != 0 {
                state |= STATE_CLOSING;
            }
            return Some(FlowRecord {
                kind: RecordKind::Nat,
                proto: self.proto,
                state,
                client: self.client,
                vip: self.vip,
                backend: self.nat.0,
                snat: Some(self.nat.1),
                idle_s: now_s.saturating_sub(self.last_seen_s),
            });
        }
        let (addr, port) = *dir.backends.get(&self.backend_id)?;
        Some(FlowRecord {
            kind: RecordKind::Dsr,
            proto: self.proto,
            state: 0,
            client: self.client,
            vip: self.vip,
            backend: SocketAddr::new(addr, port),
            snat: None,
            idle_s: 0,
        })
    }
}
