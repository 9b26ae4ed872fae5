//! The one writer of the maps: diffs a [`DesiredState`] against what the maps hold and writes
//! the difference, in an order that never shows a packet a half-applied state:
//!
//! 0. the data plane's switches (`SETTINGS`);
//! 1. allow/deny entries into `ACL` (obsolete ones out first) — before a VIP's flags say to
//!    look them up; per-source limits and tunnel parameters (`VIP_TUNNELS`) — before a
//!    backend's flags say to read them; then egress interfaces into `TX_PORTS`, then backends
//!    into `BACKENDS` — before any table names them;
//! 2. per VIP, the new Maglev table into the VIP's *inactive* slot, then one `VIPS` update that
//!    switches slot, size and backend count together (an RCU element swap in the kernel);
//! 3. VIPs that are gone from `VIPS`;
//! 4. backends that are gone: `BACKENDS` entry cleared (so flows still naming it are re-hashed)
//!    and their flow-table entries purged (so a reused id never inherits them);
//! 5. egress interfaces no longer used;
//! 6. flows whose source a changed list now refuses (flows of sources still admitted stay).
//!
//! Steps 1 and 6 are in `reconcile_acl.rs`, 2 and 3 in `reconcile_vips.rs`. The reconciler
//! starts from the maps' actual contents (`held.rs`), so an agent that restarts on pinned maps
//! converges them to its config like any other change.
//!
//! It owns the only writable [`Maps`]: purging flows and expiring NAT flows are its methods, so
//! "one writer" holds by construction, not by convention.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use aya::maps::MapError;
use xdp_lb_common::{AnyVipKey, BACKEND_F_FORWARD, BackendInfo, TrafficCounters, VipName};

use super::{
    Maps,
    held::Held,
    nat_expiry,
    purge::purge_flows,
    reconcile_error::{ReconcileError, map_err},
};
use crate::{
    nat::{Sweep, Timeouts},
    state::DesiredState,
};

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
    pub(super) maps: Maps,
    pub(super) held: Held,
    pub(super) last_swap: BTreeMap<u32, Instant>,
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
        self.write_tunnels(desired)?;
        self.add_tx_ports(desired)?;
        self.write_backends(desired, &mut purge, &mut report)?;
        self.write_vips(desired, &mut purge, &mut report)?; // 2.
        if !report.vips_added.is_empty() || !report.vips_updated.is_empty() {
            report.tables_live_after = Some(started.elapsed());
        }
        self.remove_vips(desired, &mut report)?; // 3.
        self.remove_backends(desired, &mut purge, &mut report)?; // 4.
        self.remove_tx_ports(desired)?; // 5.
        self.purge_refused_sources(desired, &acl_changed, &mut report)?; // 6.
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

    /// Tunnel VIPs' parameters, before the backend flags that say to read them. An entry no
    /// longer wanted stays (no backend reads it); a reused VIP id overwrites it.
    fn write_tunnels(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        for (&vip_id, params) in &desired.tunnels {
            if self.held.tunnels.get(&vip_id) != Some(params) {
                self.maps
                    .vip_tunnels
                    .set(vip_id, *params, 0)
                    .map_err(map_err("VIP_TUNNELS"))?;
                self.held.tunnels.insert(vip_id, *params);
            }
        }
        self.held
            .tunnels
            .retain(|id, _| desired.tunnels.contains_key(id));
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
            if self.held.backend_names.get(&id) != Some(&backend.name) {
                maps.backend_names
                    .set(id, VipName::new(&backend.name), 0)
                    .map_err(map_err("BACKEND_NAMES"))?;
                self.held.backend_names.insert(id, backend.name.clone());
            }
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

/// Resets one element of a per-CPU counter array (all CPUs) for a newly assigned id.
pub(super) fn zero_traffic(
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
