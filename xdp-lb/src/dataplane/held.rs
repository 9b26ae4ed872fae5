//! What the maps hold, as far as the reconciler is concerned: read once when it starts (the
//! previous agent's state on adopted pins) and kept in step with every write it makes, so each
//! `apply` writes only the difference.

use std::collections::{BTreeMap, BTreeSet};

use xdp_lb_common::{
    AnyVipKey, BackendInfo, Settings, TunnelParams, VIP_PORTS_WORDS, VipInfo, VipLimit,
};

use super::{
    Maps,
    reconcile_error::{ReconcileError, map_err},
};
use crate::{config::Cidr, state::Acl};

/// What the maps hold, as far as the reconciler is concerned.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) vips: BTreeMap<AnyVipKey, (VipInfo, Vec<u32>)>,
    pub(super) backends: BTreeMap<u32, BackendInfo>,
    pub(super) tx_ports: BTreeSet<u32>,
    /// VIP_NAMES by vip id.
    pub(super) names: BTreeMap<u32, String>,
    /// BACKEND_NAMES by backend id.
    pub(super) backend_names: BTreeMap<u32, String>,
    pub(super) settings: Option<Settings>,
    /// ACL by (VIP id, prefix).
    pub(super) acl: Acl,
    /// VIP_LIMITS by VIP id (only the VIPs with a limit).
    pub(super) limits: BTreeMap<u32, VipLimit>,
    /// VIP_TUNNELS by VIP id (only the tunnel VIPs).
    pub(super) tunnels: BTreeMap<u32, TunnelParams>,
    /// VIP_PORTS, every word.
    pub(super) vip_ports: Vec<u64>,
}

impl Held {
    /// Reads what `maps` hold.
    pub(super) fn read(maps: &Maps) -> Result<Self, ReconcileError> {
        let mut current = Held::default();
        let v4 = maps.vips.iter().map(|e| {
            e.map(|(k, v)| (AnyVipKey::V4(k), v))
                .map_err(map_err("VIPS"))
        });
        let v6 = maps.vips6.iter().map(|e| {
            e.map(|(k, v)| (AnyVipKey::V6(k), v))
                .map_err(map_err("VIPS6"))
        });
        for entry in v4.chain(v6).collect::<Vec<_>>() {
            let (key, info) = entry?;
            let table = if info.table_size > 0 && info.maglev_slot < maps.maglev.slots() {
                maps.maglev.read_slot(info.maglev_slot, info.table_size)
            } else {
                Vec::new()
            };
            current.vips.insert(key, (info, table));
        }
        for (id, entry) in maps.backends.iter().enumerate() {
            let info = entry.map_err(map_err("BACKENDS"))?;
            if info != BackendInfo::default() {
                current.backends.insert(id as u32, info);
            }
        }
        for (info, _) in current.vips.values() {
            if let Ok(name) = maps.vip_names.get(&info.vip_id, 0) {
                current.names.insert(info.vip_id, name.as_str().to_owned());
            }
        }
        for id in current.backends.keys() {
            if let Ok(name) = maps.backend_names.get(id, 0) {
                current.backend_names.insert(*id, name.as_str().to_owned());
            }
        }
        current.settings = maps.settings.get(&0, 0).ok();
        current.vip_ports = (0..VIP_PORTS_WORDS)
            .map(|i| maps.vip_ports.get(&i, 0).map_err(map_err("VIP_PORTS")))
            .collect::<Result<_, _>>()?;
        for (vip_id, len, addr, action) in maps.acl_entries() {
            current.acl.insert((vip_id, Cidr { addr, len }), action);
        }
        for key in maps.tx_ports.keys() {
            current.tx_ports.insert(key.map_err(map_err("TX_PORTS"))?);
        }
        Ok(current)
    }
}
