//! The reconciler's VIP steps (step 2 and 3 of `reconcile.rs`): names, Maglev tables written
//! into the inactive slot and switched in with one `VIPS` update, VIPs removed, and the
//! `VIP_PORTS` bitmap kept to exactly the ports of the VIPs the maps hold.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aya::maps::MapError;
use xdp_lb_common::{AnyVipKey, VIP_PORTS_WORDS, VipInfo, VipName, vip_port_bit};

use super::{
    Maps,
    reconcile::{ApplyReport, Reconciler, zero_traffic},
    reconcile_error::{ReconcileError, map_err},
};
use crate::state::{DesiredState, DesiredVip};

/// A slot that was live may still be read by a packet that looked up the old `VipInfo` just
/// before the swap. XDP runs inside one RCU read-side section per NAPI poll (microseconds), so
/// waiting this long after a swap before overwriting the old slot is ample.
pub const SLOT_REUSE_GRACE: Duration = Duration::from_millis(20);

impl Reconciler {
    /// Step 2: names (read only by inspect), tables and VIPs; the ports of new VIPs first, so
    /// that no packet to one is passed for want of its port's bit.
    pub(super) fn write_vips(
        &mut self,
        desired: &DesiredState,
        purge: &mut BTreeSet<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let before_and_after = self.held.vips.keys().chain(desired.vips.keys());
        write_vip_ports(&mut self.maps, &mut self.held.vip_ports, before_and_after)?;
        for vip in desired.vips.values() {
            if self.held.names.get(&vip.vip_id) != Some(&vip.name) {
                self.maps
                    .vip_names
                    .set(vip.vip_id, VipName::new(&vip.name), 0)
                    .map_err(map_err("VIP_NAMES"))?;
                self.held.names.insert(vip.vip_id, vip.name.clone());
            }
        }
        for (key, vip) in &desired.vips {
            let held = self.held.vips.get(key);
            if held.is_some_and(|(info, table)| !vip_changed(info, table, vip)) {
                continue;
            }
            if let Some((info, _)) = held
                && info.flags != vip.flags
            {
                // DSR ↔ NAT: the VIP's flows were set up for the other mode; drop them (step 4).
                purge.extend(
                    desired
                        .backends
                        .iter()
                        .filter(|(_, b)| b.info.vip_id == vip.vip_id)
                        .map(|(id, _)| *id),
                );
            }
            let maps = &mut self.maps;
            if held.is_none() {
                zero_traffic(&mut maps.vip_stats, vip.vip_id).map_err(map_err("VIP_STATS"))?;
            }
            let info = swap_in(&self.last_swap, maps, vip, held.map(|(info, _)| info))?;
            match key {
                AnyVipKey::V4(k) => maps.vips.insert(k, info, 0).map_err(map_err("VIPS"))?,
                AnyVipKey::V6(k) => maps.vips6.insert(k, info, 0).map_err(map_err("VIPS6"))?,
            }
            self.last_swap.insert(vip.vip_id, Instant::now());
            if held.is_some() {
                report.vips_updated.push(vip.name.clone());
            } else {
                report.vips_added.push(vip.name.clone());
            }
            self.held.vips.insert(*key, (info, vip.table.clone()));
        }
        Ok(())
    }

    /// Step 3: VIPs that are gone, then the ports no VIP needs any more.
    pub(super) fn remove_vips(
        &mut self,
        desired: &DesiredState,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let gone: Vec<AnyVipKey> = self
            .held
            .vips
            .keys()
            .filter(|k| !desired.vips.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let (removed, map) = match &key {
                AnyVipKey::V4(k) => (self.maps.vips.remove(k), "VIPS"),
                AnyVipKey::V6(k) => (self.maps.vips6.remove(k), "VIPS6"),
            };
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map)(e)),
            }
            self.held.vips.remove(&key);
            report.vips_removed += 1;
        }
        write_vip_ports(
            &mut self.maps,
            &mut self.held.vip_ports,
            self.held.vips.keys(),
        )
    }
}

/// Writes `vip`'s table into its inactive slot and returns the `VipInfo` that makes it live.
fn swap_in(
    last_swap: &BTreeMap<u32, Instant>,
    maps: &mut Maps,
    vip: &DesiredVip,
    current: Option<&VipInfo>,
) -> Result<VipInfo, ReconcileError> {
    let base = vip.vip_id * 2;
    if base + 1 >= maps.maglev.slots() {
        return Err(ReconcileError::NoSlot {
            name: vip.name.clone(),
            vip_id: vip.vip_id,
        });
    }
    let slot = match current {
        Some(info) if info.maglev_slot == base => base + 1,
        _ => base,
    };
    if !vip.table.is_empty() {
        if let Some(at) = last_swap.get(&vip.vip_id) {
            let since = at.elapsed();
            if since < SLOT_REUSE_GRACE {
                std::thread::sleep(SLOT_REUSE_GRACE - since);
            }
        }
        maps.maglev.write_slot(slot, &vip.table);
    }
    Ok(VipInfo {
        vip_id: vip.vip_id,
        maglev_slot: slot,
        table_size: vip.table_size,
        hash_seed: vip.hash_seed,
        backend_count: vip.backend_count,
        flags: vip.flags,
    })
}

/// Whether `vip` differs from what the maps hold for it (its entry and live table).
fn vip_changed(info: &VipInfo, table: &[u32], vip: &DesiredVip) -> bool {
    info.vip_id != vip.vip_id
        || info.table_size != vip.table_size
        || info.hash_seed != vip.hash_seed
        || info.backend_count != vip.backend_count
        || info.flags != vip.flags
        || (vip.backend_count > 0 && table != vip.table)
}

/// Sets `VIP_PORTS` to the ports of `vips`, writing only the words that change.
fn write_vip_ports<'a>(
    maps: &mut Maps,
    current: &mut [u64],
    vips: impl Iterator<Item = &'a AnyVipKey>,
) -> Result<(), ReconcileError> {
    let mut words = vec![0u64; VIP_PORTS_WORDS as usize];
    for key in vips {
        let (word, bit) = vip_port_bit(key.proto(), key.port_be());
        words[word as usize] |= bit;
    }
    for (i, (new, old)) in words.iter().zip(current).enumerate() {
        if new != old {
            maps.vip_ports
                .set(i as u32, *new, 0)
                .map_err(map_err("VIP_PORTS"))?;
            *old = *new;
        }
    }
    Ok(())
}
