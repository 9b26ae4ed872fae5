//! The one writer of the maps: diffs a [`DesiredState`] against what the maps hold and writes
//! the difference, in an order that never shows a packet a half-applied state:
//!
//! 0. the data plane's switches (`SETTINGS`);
//! 1. allow/deny entries into `ACL` (obsolete ones out first) — before a VIP's flags say to
//!    look them up; per-source limits; then egress interfaces into `TX_PORTS`, then backends
//!    into `BACKENDS` — before any table names them;
//! 2. per VIP, the new Maglev table into the VIP's *inactive* slot, then one `VIPS` update that
//!    switches slot, size and backend count together (an RCU element swap in the kernel);
//! 3. VIPs that are gone from `VIPS`;
//! 4. backends that are gone: `BACKENDS` entry cleared (so flows still naming it are re-hashed)
//!    and their flow-table entries purged (so a reused id never inherits them);
//! 5. egress interfaces no longer used;
//! 6. flows whose source a changed list now refuses (flows of sources still admitted stay).
//!
//! The reconciler starts from the maps' actual contents (`held.rs`), so an agent that restarts
//! on pinned maps converges them to its config like any other change.
//!
//! It owns the only writable [`Maps`]: purging flows and expiring NAT flows are its methods, so
//! "one writer" holds by construction, not by convention.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aya::maps::{MapError, lpm_trie::Key};
use xdp_lb_common::{
    AclData, AclData6, AnyVipKey, BACKEND_F_FORWARD, BackendInfo, TrafficCounters, VIP_PORTS_WORDS,
    VipInfo, VipName, vip_port_bit,
};

use super::{
    Maps,
    held::Held,
    nat_expiry,
    purge::{purge_flows, purge_refused},
    reconcile_error::{ReconcileError, map_err},
};
use crate::{
    config::Cidr,
    nat::{Sweep, Timeouts},
    state::{DesiredState, DesiredVip},
};

/// A slot that was live may still be read by a packet that looked up the old `VipInfo` just
/// before the swap. XDP runs inside one RCU read-side section per NAPI poll (microseconds), so
/// waiting this long after a swap before overwriting the old slot is ample.
pub const SLOT_REUSE_GRACE: Duration = Duration::from_millis(20);

/// What one `apply` changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: Vec<String>,
    pub vips_updated: Vec<String>,
    pub vips_removed: usize,
    pub backends_written: usize,
    pub backends_removed: usize,
    pub flows_purged: usize,
    /// From the start of `apply` until the last changed table was live (before the purge).
    pub tables_live_after: Option<std::time::Duration>,
}

impl ApplyReport {
    pub fn is_empty(&self) -> bool {
        Self {
            tables_live_after: None,
            ..self.clone()
        } == Self::default()
    }
}

pub struct Reconciler {
    maps: Maps,
    held: Held,
    last_swap: BTreeMap<u32, Instant>,
}

impl Reconciler {
    /// Starts from the maps' contents (empty for fresh maps; the previous agent's state for
    /// pinned maps it left behind).
    pub fn new(maps: Maps) -> Result<Self, ReconcileError> {
        Ok(Self {
            held: Held::read(&maps)?,
            maps,
            last_swap: BTreeMap::new(),
        })
    }

    /// The maps, to read.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Backend ids the maps hold now: id → (vip_id, address).
    pub fn current_backends(&self) -> BTreeMap<u32, (u32, std::net::IpAddr)> {
        self.held
            .backends
            .iter()
            .map(|(id, b)| (*id, (b.vip_id, b.address())))
            .collect()
    }

    /// The backend entries the maps hold now.
    pub fn current_backend_infos(&self) -> Vec<BackendInfo> {
        self.held.backends.values().copied().collect()
    }

    /// The VIP ids the maps hold now.
    pub fn current_vip_ids(&self) -> BTreeMap<AnyVipKey, u32> {
        self.held
            .vips
            .iter()
            .map(|(k, (info, _))| (*k, info.vip_id))
            .collect()
    }

    /// Writes the difference between `desired` and the maps, step by step in the order the
    /// module documentation gives (each step a method below).
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, ReconcileError> {
        let started = Instant::now();
        let mut report = ApplyReport::default();
        // Backend ids whose flows go; purged after step 1 (ids reused) and in step 4.
        let mut purge = BTreeSet::new();
        self.write_settings(desired)?;
        let acl_changed = self.write_acl(desired)?; // 1.
        self.write_limits(desired)?;
        self.add_tx_ports(desired)?;
        self.write_backends(desired, &mut purge, &mut report)?;
        self.write_vips(desired, &mut purge, &mut report)?; // 2.
        if !report.vips_added.is_empty() || !report.vips_updated.is_empty() {
            report.tables_live_after = Some(started.elapsed());
        }
        self.remove_vips(desired, &mut report)?; // 3.
        self.remove_backends(desired, &mut purge, &mut report)?; // 4.
        self.remove_tx_ports(desired)?; // 5.
        self.purge_refused(desired, &acl_changed, &mut report)?; // 6.
        Ok(report)
    }

    /// Data-plane switches (`SETTINGS`), before anything that depends on them.
    fn write_settings(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        if self.held.settings != Some(desired.settings) {
            self.maps
                .settings
                .set(0, desired.settings, 0)
                .map_err(map_err("SETTINGS"))?;
            self.held.settings = Some(desired.settings);
        }
        Ok(())
    }

    /// Step 1, allow and deny lists: obsolete entries out, then new ones in. Returns the VIPs
    /// whose lists changed (their refused sources' flows are purged in step 6).
    fn write_acl(&mut self, desired: &DesiredState) -> Result<BTreeSet<u32>, ReconcileError> {
        let held = &mut self.held;
        let maps = &mut self.maps;
        let changed: BTreeSet<u32> = held
            .acl
            .iter()
            .filter(|(k, v)| desired.acl.get(k) != Some(v))
            .chain(
                desired
                    .acl
                    .iter()
                    .filter(|(k, v)| held.acl.get(k) != Some(v)),
            )
            .map(|((vip_id, _), _)| *vip_id)
            .collect();
        for key in held.acl.keys().copied().collect::<Vec<_>>() {
            if desired.acl.contains_key(&key) {
                continue;
            }
            let removed = match acl_key(&key) {
                AclKey::V4(k) => maps.acl.remove(&k).map_err(|e| ("ACL", e)),
                AclKey::V6(k) => maps.acl6.remove(&k).map_err(|e| ("ACL6", e)),
            };
            match removed {
                Ok(()) | Err((_, MapError::KeyNotFound)) => {}
                Err((name, e)) => return Err(map_err(name)(e)),
            }
            held.acl.remove(&key);
        }
        for (key, action) in &desired.acl {
            if held.acl.get(key) != Some(action) {
                match acl_key(key) {
                    AclKey::V4(k) => maps.acl.insert(&k, *action, 0).map_err(map_err("ACL"))?,
                    AclKey::V6(k) => maps.acl6.insert(&k, *action, 0).map_err(map_err("ACL6"))?,
                }
                held.acl.insert(*key, *action);
            }
        }
        Ok(changed)
    }

    /// Per-source limits, before the VIP flag that says to read them. An entry that is no
    /// longer wanted stays (its VIP's flag is off); a reused VIP id overwrites it.
    fn write_limits(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        for (&vip_id, limit) in &desired.limits {
            if self.held.limits.get(&vip_id) != Some(limit) {
                self.maps
                    .vip_limits
                    .set(vip_id, *limit, 0)
                    .map_err(map_err("VIP_LIMITS"))?;
                self.held.limits.insert(vip_id, *limit);
            }
        }
        self.held
            .limits
            .retain(|id, _| desired.limits.contains_key(id));
        Ok(())
    }

    /// Egress interfaces, before the backends that name them.
    fn add_tx_ports(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        for &ifindex in desired.tx_ports.difference(&self.held.tx_ports.clone()) {
            self.maps
                .tx_ports
                .insert(ifindex, ifindex, None, 0)
                .map_err(ReconcileError::TxPorts)?;
            self.held.tx_ports.insert(ifindex);
        }
        Ok(())
    }

    /// Backends, before any table names them. A backend id whose address or VIP changed is a
    /// removed backend plus a new one: the data plane trusts a flow entry while its backend id
    /// is live, so the old entry is cleared and its flows purged *before* the id carries the
    /// new backend. A backend that stops carrying its flows (down, disabled) has them purged
    /// in step 4, so that the clients' next packets are re-hashed to live backends at once.
    fn write_backends(
        &mut self,
        desired: &DesiredState,
        purge: &mut BTreeSet<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let maps = &mut self.maps;
        let mut replaced = BTreeSet::new();
        for (&id, backend) in &desired.backends {
            if let Some(old) = self.held.backends.get(&id)
                && (old.addr_be != backend.info.addr_be
                    || old.addr6 != backend.info.addr6
                    || old.vip_id != backend.info.vip_id)
            {
                maps.backends
                    .set(id, BackendInfo::default(), 0)
                    .map_err(map_err("BACKENDS"))?;
                self.held.backends.remove(&id);
                replaced.insert(id);
            }
        }
        if !replaced.is_empty() {
            report.flows_purged += purge_flows(maps, &replaced)?;
        }
        for (&id, backend) in &desired.backends {
            let old = self.held.backends.get(&id).copied();
            if old == Some(backend.info) {
                continue;
            }
            if old.is_none() {
                // A new backend id starts with fresh counters.
                zero_traffic(&mut maps.backend_stats, id).map_err(map_err("BACKEND_STATS"))?;
            }
            maps.backends
                .set(id, backend.info, 0)
                .map_err(map_err("BACKENDS"))?;
            self.held.backends.insert(id, backend.info);
            report.backends_written += 1;
            if old.is_some_and(|o| o.flags & BACKEND_F_FORWARD != 0)
                && backend.info.flags & BACKEND_F_FORWARD == 0
            {
                purge.insert(id);
            }
        }
        Ok(())
    }

    /// Step 2: names (read only by inspect), tables and VIPs; the ports of new VIPs first, so
    /// that no packet to one is passed for want of its port's bit.
    fn write_vips(
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
    fn remove_vips(
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

    /// Step 4: backends that are gone (entry cleared, so flows still naming it are re-hashed),
    /// then the flows of every backend in `purge` (so a reused id never inherits them).
    fn remove_backends(
        &mut self,
        desired: &DesiredState,
        purge: &mut BTreeSet<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let removed: Vec<u32> = self
            .held
            .backends
            .keys()
            .filter(|id| !desired.backends.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            self.maps
                .backends
                .set(id, BackendInfo::default(), 0)
                .map_err(map_err("BACKENDS"))?;
            self.held.backends.remove(&id);
            purge.insert(id);
            report.backends_removed += 1;
        }
        if !purge.is_empty() {
            report.flows_purged += purge_flows(&mut self.maps, purge)?;
        }
        Ok(())
    }

    /// Step 5: egress interfaces no longer used.
    fn remove_tx_ports(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        for ifindex in self.held.tx_ports.clone().difference(&desired.tx_ports) {
            match self.maps.tx_ports.remove(*ifindex) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("TX_PORTS")(e)),
            }
            self.held.tx_ports.remove(ifindex);
        }
        Ok(())
    }

    /// Step 6: the flows of sources that the changed lists of `acl_changed` now refuse (flows
    /// of sources still admitted stay).
    fn purge_refused(
        &mut self,
        desired: &DesiredState,
        acl_changed: &BTreeSet<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let refusing: BTreeMap<u32, u32> = desired
            .vips
            .values()
            .filter(|v| acl_changed.contains(&v.vip_id))
            .map(|v| (v.vip_id, v.flags))
            .collect();
        if !refusing.is_empty() {
            report.flows_purged += purge_refused(&mut self.maps, &desired.acl, &refusing)?;
        }
        Ok(())
    }

    /// Reclaims the NAT flows that have expired at `now_s` (the data plane's coarse clock,
    /// `clock::coarse_now_s`): the only writes to the flow tables besides the program's own and
    /// the purges above.
    pub fn expire_nat_flows(
        &mut self,
        timeouts: &Timeouts,
        now_s: u32,
    ) -> Result<Sweep, ReconcileError> {
        nat_expiry::sweep(&mut self.maps, timeouts, now_s).map_err(map_err("NAT_FLOWS"))
    }

    /// Installs flows another LB node sent (`[sync]`; see `sync_install.rs`): writes to the
    /// flow tables, like the purges and the expiry above.
    pub fn install_synced(
        &mut self,
        flows: &[super::sync_install::SyncedFlow],
        now_ns: u64,
        now_s: u32,
    ) -> Result<super::sync_install::InstallReport, ReconcileError> {
        super::sync_install::install(&mut self.maps, flows, now_ns, now_s).map_err(map_err("FLOWS"))
    }

    /// Removes the copies of flows a peer closed (`[sync]`); how many were here.
    pub fn remove_synced(&mut self, closed: &[crate::nat::ClosedFlow]) -> u64 {
        super::sync_install::remove(&mut self.maps, closed)
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

/// An entry's key in `ACL` (IPv4) or `ACL6` (IPv6).
enum AclKey {
    V4(Key<AclData>),
    V6(Key<AclData6>),
}

/// The key of an entry: the whole VIP id, then the prefix.
fn acl_key(&(vip_id, cidr): &(u32, Cidr)) -> AclKey {
    let len = 32 + cidr.len as u32;
    match cidr.addr {
        std::net::IpAddr::V4(a) => AclKey::V4(Key::new(
            len,
            AclData {
                vip_id,
                addr_be: u32::from_ne_bytes(a.octets()),
            },
        )),
        std::net::IpAddr::V6(a) => AclKey::V6(Key::new(
            len,
            AclData6 {
                vip_id,
                addr: a.octets(),
            },
        )),
    }
}

/// Resets one element of a per-CPU counter array (all CPUs) for a newly assigned id.
fn zero_traffic(
    map: &mut aya::maps::PerCpuArray<aya::maps::MapData, TrafficCounters>,
    index: u32,
) -> Result<(), MapError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "nr_cpus",
            io_error: e,
        })
    })?;
    let values = aya::maps::PerCpuValues::try_from(vec![TrafficCounters::default(); cpus])
        .map_err(|e| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "PerCpuValues",
                io_error: e,
            })
        })?;
    map.set(index, values, 0)
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
