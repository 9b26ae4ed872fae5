//! The reconciler's flow purges: the flows of backends that are gone (so a reused id never
//! inherits them) and the flows whose source a changed allow/deny list now refuses. Called
//! only from `reconcile.rs`, the maps' one writer.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::MapError;
use xdp_lb_common::FlowKey;

use super::{
    Maps,
    reconcile_error::{ReconcileError, map_err},
};
use crate::state::{Acl, admits};

/// Removes the client-direction flows of `vips` (id → flags) whose source their lists now
/// refuse: their next packet is refused like a new flow's. (A NAT flow's reply entry then
/// expires with its state's timeout.) Returns how many.
pub(super) fn purge_refused(
    maps: &mut Maps,
    acl: &Acl,
    vips: &BTreeMap<u32, u32>,
) -> Result<usize, ReconcileError> {
    let refused = |vip_id: u32, src: std::net::IpAddr| {
        vips.get(&vip_id)
            .is_some_and(|flags| !admits(acl, vip_id, *flags, src))
    };
    let doomed: Vec<FlowKey> = maps
        .flows()
        .filter(|(k, v)| {
            refused(
                v.vip_id,
                std::net::Ipv4Addr::from(k.src_addr.to_ne_bytes()).into(),
            )
        })
        .map(|(k, _)| k)
        .collect();
    let doomed6: Vec<xdp_lb_common::FlowKey6> = maps
        .flows6()
        .filter(|(k, v)| refused(v.vip_id, std::net::Ipv6Addr::from(k.src_addr).into()))
        .map(|(k, _)| k)
        .collect();
    let mut purged = 0;
    for key in doomed {
        match maps.flows.remove(&key) {
            Ok(()) => purged += 1,
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("FLOWS")(e)),
        }
    }
    for key in doomed6 {
        match maps.flows6.remove(&key) {
            Ok(()) => purged += 1,
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("FLOWS6")(e)),
        }
    }
    Ok(purged)
}

/// Removes every flow-table entry (`FLOWS`, and `NAT_FLOWS` and the half-open `NAT_EMBRYONIC*`
/// for NAT replies and their port reservations; the same for IPv6) that names one of
/// `backend_ids`. Returns how
/// many flows (client directions).
pub(super) fn purge_flows(
    maps: &mut Maps,
    backend_ids: &BTreeSet<u32>,
) -> Result<usize, ReconcileError> {
    let purged = purge_map(&mut maps.flows, "FLOWS", backend_ids)?
        + purge_map(&mut maps.flows6, "FLOWS6", backend_ids)?;
    purge_map(&mut maps.nat_flows, "NAT_FLOWS", backend_ids)?;
    purge_map(&mut maps.nat_embryonic, "NAT_EMBRYONIC", backend_ids)?;
    purge_map(
        &mut maps.nat_embryonic_client,
        "NAT_EMBRYONIC_CLIENT",
        backend_ids,
    )?;
    purge_map(&mut maps.nat_flows6, "NAT_FLOWS6", backend_ids)?;
    purge_map(&mut maps.nat_embryonic6, "NAT_EMBRYONIC6", backend_ids)?;
    purge_map(
        &mut maps.nat_embryonic_client6,
        "NAT_EMBRYONIC_CLIENT6",
        backend_ids,
    )?;
    Ok(purged)
}

fn purge_map<K: aya::Pod, A>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, xdp_lb_common::FlowValueOf<A>>,
    name: &'static str,
    backend_ids: &BTreeSet<u32>,
) -> Result<usize, ReconcileError>
where
    xdp_lb_common::FlowValueOf<A>: aya::Pod,
{
    let mut doomed: Vec<K> = Vec::new();
    for entry in map.iter() {
        match entry {
            Ok((key, value)) if backend_ids.contains(&value.backend_id) => doomed.push(key),
            Ok(_) => {}
            // An entry evicted or expired while we iterate: skip it.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    let mut purged = 0;
    for key in doomed {
        match map.remove(&key) {
            Ok(()) => purged += 1,
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(purged)
}
