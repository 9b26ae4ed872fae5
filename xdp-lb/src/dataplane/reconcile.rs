//! The one writer of the maps: diffs a [`DesiredState`] against what the maps hold and writes
//! the difference, in an order that never shows a packet a half-applied state:
//!
//! 1. allow/deny entries into `ACL` (obsolete ones out first) — before a VIP's flags say to
//!    look them up; then egress interfaces into `TX_PORTS`, then backends into `BACKENDS` —
//!    before any table names them;
//! 2. per VIP, the new Maglev table into the VIP's *inactive* slot, then one `VIPS` update that
//!    switches slot, size and backend count together (an RCU element swap in the kernel);
//! 3. VIPs that are gone from `VIPS`;
//! 4. backends that are gone: `BACKENDS` entry cleared (so flows still naming it are re-hashed)
//!    and their flow-table entries purged (so a reused id never inherits them);
//! 5. egress interfaces no longer used;
//! 6. flows whose source a changed list now refuses (flows of sources still admitted stay).
//!
//! The reconciler starts from the maps' actual contents, so an agent that restarts on pinned
//! maps converges them to its config like any other change.
//!
//! It owns the only writable [`Maps`]: purging flows and expiring NAT flows are its methods, so
//! "one writer" holds by construction, not by convention.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aya::maps::{MapError, lpm_trie::Key};
use thiserror::Error;
use xdp_lb_common::{
    AclData, AclData6, AnyVipKey, BACKEND_F_FORWARD, BackendInfo, Settings, TrafficCounters,
    VIP_PORTS_WORDS, VipInfo, VipLimit, VipName, vip_port_bit,
};

use super::{
    Maps, nat_expiry,
    purge::{purge_flows, purge_refused},
};
use crate::{
    config::Cidr,
    nat::{Sweep, Timeouts},
    state::{Acl, DesiredState, DesiredVip},
};

/// A slot that was live may still be read by a packet that looked up the old `VipInfo` just
/// before the swap. XDP runs inside one RCU read-side section per NAPI poll (microseconds), so
/// waiting this long after a swap before overwriting the old slot is ample.
pub const SLOT_REUSE_GRACE: Duration = Duration::from_millis(20);

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("writing {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("writing TX_PORTS: {0}")]
    TxPorts(#[source] aya::maps::xdp::XdpMapError),
    #[error("VIP {name}: id {vip_id} has no Maglev slot (the maps were created for fewer VIPs)")]
    NoSlot { name: String, vip_id: u32 },
}

pub(super) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> ReconcileError {
    move |source| ReconcileError::Map { map, source }
}

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

/// What the maps hold, as far as the reconciler is concerned.
#[derive(Debug, Default)]
struct Current {
    vips: BTreeMap<AnyVipKey, (VipInfo, Vec<u32>)>,
    backends: BTreeMap<u32, BackendInfo>,
    tx_ports: BTreeSet<u32>,
    /// VIP_NAMES by vip id.
    names: BTreeMap<u32, String>,
    settings: Option<Settings>,
    /// ACL by (VIP id, prefix).
    acl: Acl,
    /// VIP_LIMITS by VIP id (only the VIPs with a limit).
    limits: BTreeMap<u32, VipLimit>,
    /// VIP_PORTS, every word.
    vip_ports: Vec<u64>,
}

pub struct Reconciler {
    maps: Maps,
    current: Current,
    last_swap: BTreeMap<u32, Instant>,
}

impl Reconciler {
    /// Reads the maps' current contents (empty for fresh maps; the previous agent's state for
    /// pinned maps it left behind).
    pub fn new(maps: Maps) -> Result<Self, ReconcileError> {
        let mut current = Current::default();
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
        Ok(Self {
            maps,
            current,
            last_swap: BTreeMap::new(),
        })
    }

    /// The maps, to read.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Backend ids the maps hold now: id → (vip_id, address).
    pub fn current_backends(&self) -> BTreeMap<u32, (u32, std::net::IpAddr)> {
        self.current
            .backends
            .iter()
            .map(|(id, b)| (*id, (b.vip_id, b.address())))
            .collect()
    }

    /// The backend entries the maps hold now.
    pub fn current_backend_infos(&self) -> Vec<BackendInfo> {
        self.current.backends.values().copied().collect()
    }

    /// The VIP ids the maps hold now.
    pub fn current_vip_ids(&self) -> BTreeMap<AnyVipKey, u32> {
        self.current
            .vips
            .iter()
            .map(|(k, (info, _))| (*k, info.vip_id))
            .collect()
    }

    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, ReconcileError> {
        let started = Instant::now();
        let maps = &mut self.maps;
        let mut report = ApplyReport::default();

        // 0. Data-plane switches.
        if self.current.settings != Some(desired.settings) {
            maps.settings
                .set(0, desired.settings, 0)
                .map_err(map_err("SETTINGS"))?;
            self.current.settings = Some(desired.settings);
        }

        // 1. Allow and deny lists: obsolete entries out, then new ones in. A VIP whose lists
        // changed has its refused sources' flows purged below (step 6).
        let acl_changed: BTreeSet<u32> = self
            .current
            .acl
            .iter()
            .filter(|(k, v)| desired.acl.get(k) != Some(v))
            .chain(
                desired
                    .acl
                    .iter()
                    .filter(|(k, v)| self.current.acl.get(k) != Some(v)),
            )
            .map(|((vip_id, _), _)| *vip_id)
            .collect();
        for key in self.current.acl.keys().copied().collect::<Vec<_>>() {
            if !desired.acl.contains_key(&key) {
                let removed = match acl_key(&key) {
                    AclKey::V4(k) => maps.acl.remove(&k).map_err(|e| ("ACL", e)),
                    AclKey::V6(k) => maps.acl6.remove(&k).map_err(|e| ("ACL6", e)),
                };
                match removed {
                    Ok(()) | Err((_, MapError::KeyNotFound)) => {}
                    Err((name, e)) => return Err(map_err(name)(e)),
                }
                self.current.acl.remove(&key);
            }
        }
        for (key, action) in &desired.acl {
            if self.current.acl.get(key) != Some(action) {
                match acl_key(key) {
                    AclKey::V4(k) => maps.acl.insert(&k, *action, 0).map_err(map_err("ACL"))?,
                    AclKey::V6(k) => maps.acl6.insert(&k, *action, 0).map_err(map_err("ACL6"))?,
                }
                self.current.acl.insert(*key, *action);
            }
        }

        // Per-source limits, before the VIP flag that says to read them. An entry that is no
        // longer wanted stays (its VIP's flag is off); a reused VIP id overwrites it.
        for (&vip_id, limit) in &desired.limits {
            if self.current.limits.get(&vip_id) != Some(limit) {
                maps.vip_limits
                    .set(vip_id, *limit, 0)
                    .map_err(map_err("VIP_LIMITS"))?;
                self.current.limits.insert(vip_id, *limit);
            }
        }
        self.current
            .limits
            .retain(|id, _| desired.limits.contains_key(id));

        // Egress interfaces, then backends.
        for &ifindex in desired.tx_ports.difference(&self.current.tx_ports.clone()) {
            maps.tx_ports
                .insert(ifindex, ifindex, None, 0)
                .map_err(ReconcileError::TxPorts)?;
            self.current.tx_ports.insert(ifindex);
        }
        // A backend id whose address or VIP changed is a removed backend plus a new one. The
        // data plane trusts a flow entry while its backend id is live, so the old entry is
        // cleared and its flows purged *before* the id carries the new backend.
        let mut purge: BTreeSet<u32> = BTreeSet::new();
        for (&id, backend) in &desired.backends {
            if let Some(old) = self.current.backends.get(&id)
                && (old.addr_be != backend.info.addr_be
                    || old.addr6 != backend.info.addr6
                    || old.vip_id != backend.info.vip_id)
            {
                maps.backends
                    .set(id, BackendInfo::default(), 0)
                    .map_err(map_err("BACKENDS"))?;
                self.current.backends.remove(&id);
                purge.insert(id);
            }
        }
        if !purge.is_empty() {
            report.flows_purged += purge_flows(maps, &purge)?;
            purge.clear();
        }
        for (&id, backend) in &desired.backends {
            let old = self.current.backends.get(&id).copied();
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
            self.current.backends.insert(id, backend.info);
            report.backends_written += 1;
            // Down or disabled: its flows are purged (step 4) so that the clients' next packets
            // are re-hashed to live backends at once, not only when they next arrive.
            if old.is_some_and(|o| o.flags & BACKEND_F_FORWARD != 0)
                && backend.info.flags & BACKEND_F_FORWARD == 0
            {
                purge.insert(id);
            }
        }

        // 2. Names (read only by inspect), tables and VIPs; the ports of new VIPs first, so
        // that no packet to one is passed for want of its port's bit.
        let before_and_after = self.current.vips.keys().chain(desired.vips.keys());
        write_vip_ports(maps, &mut self.current.vip_ports, before_and_after)?;
        for vip in desired.vips.values() {
            if self.current.names.get(&vip.vip_id) != Some(&vip.name) {
                maps.vip_names
                    .set(vip.vip_id, VipName::new(&vip.name), 0)
                    .map_err(map_err("VIP_NAMES"))?;
                self.current.names.insert(vip.vip_id, vip.name.clone());
            }
        }
        for (key, vip) in &desired.vips {
            let current = self.current.vips.get(key);
            let changed = match current {
                None => true,
                Some((info, table)) => {
                    info.vip_id != vip.vip_id
                        || info.table_size != vip.table_size
                        || info.hash_seed != vip.hash_seed
                        || info.backend_count != vip.backend_count
                        || info.flags != vip.flags
                        || (vip.backend_count > 0 && *table != vip.table)
                }
            };
            if !changed {
                continue;
            }
            if let Some((info, _)) = current
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
            if current.is_none() {
                zero_traffic(&mut maps.vip_stats, vip.vip_id).map_err(map_err("VIP_STATS"))?;
            }
            let info = Self::swap_in(&self.last_swap, maps, vip, current.map(|(info, _)| info))?;
            match key {
                AnyVipKey::V4(k) => maps.vips.insert(k, info, 0).map_err(map_err("VIPS"))?,
                AnyVipKey::V6(k) => maps.vips6.insert(k, info, 0).map_err(map_err("VIPS6"))?,
            }
            self.last_swap.insert(vip.vip_id, Instant::now());
            if current.is_some() {
                report.vips_updated.push(vip.name.clone());
            } else {
                report.vips_added.push(vip.name.clone());
            }
            self.current.vips.insert(*key, (info, vip.table.clone()));
        }

        if !report.vips_added.is_empty() || !report.vips_updated.is_empty() {
            report.tables_live_after = Some(started.elapsed());
        }

        // 3. VIPs that are gone.
        let gone: Vec<AnyVipKey> = self
            .current
            .vips
            .keys()
            .filter(|k| !desired.vips.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let (removed, map) = match &key {
                AnyVipKey::V4(k) => (maps.vips.remove(k), "VIPS"),
                AnyVipKey::V6(k) => (maps.vips6.remove(k), "VIPS6"),
            };
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map)(e)),
            }
            self.current.vips.remove(&key);
            report.vips_removed += 1;
        }

        // The ports of the VIPs that are gone, now that no VIP needs them.
        write_vip_ports(maps, &mut self.current.vip_ports, self.current.vips.keys())?;

        // 4. Backends that are gone.
        let removed: Vec<u32> = self
            .current
            .backends
            .keys()
            .filter(|id| !desired.backends.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            maps.backends
                .set(id, BackendInfo::default(), 0)
                .map_err(map_err("BACKENDS"))?;
            self.current.backends.remove(&id);
            purge.insert(id);
            report.backends_removed += 1;
        }
        if !purge.is_empty() {
            report.flows_purged += purge_flows(maps, &purge)?;
        }

        // 6. (after 5) Flows of sources the changed lists now refuse.
        let refusing: BTreeMap<u32, u32> = desired
            .vips
            .values()
            .filter(|v| acl_changed.contains(&v.vip_id))
            .map(|v| (v.vip_id, v.flags))
            .collect();

        // 5. Egress interfaces no longer used.
        for ifindex in self.current.tx_ports.clone().difference(&desired.tx_ports) {
            match maps.tx_ports.remove(*ifindex) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("TX_PORTS")(e)),
            }
            self.current.tx_ports.remove(ifindex);
        }
        if !refusing.is_empty() {
            report.flows_purged += purge_refused(maps, &desired.acl, &refusing)?;
        }
        Ok(report)
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
