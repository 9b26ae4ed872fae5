//! From the agent's inputs to the maps: a new desired state applied by the reconciler (logged
//! when it changes something, and when a VIP loses or regains its last usable backend), and NAT
//! expiry, the reconciler's other write.

use std::{collections::BTreeSet, time::Instant};

use xdp_lb_common::AnyVipKey;

use super::{Agent, AgentError};
use crate::{
    clock,
    dataplane::ApplyReport,
    nat::Timeouts,
    state::{self, Health},
};

impl Agent {
    /// Reclaims expired NAT flows (every tick while a NAT VIP is configured).
    pub(super) fn expire_nat(&mut self) {
        if !self.snat_address.any() {
            return;
        }
        let timeouts = Timeouts::of(&self.config.agent);
        match self
            .reconciler
            .expire_nat_flows(&timeouts, clock::coarse_now_s())
        {
            Ok(sweep) => {
                if sweep.reclaimed > 0 {
                    tracing::debug!(reclaimed = sweep.reclaimed, live = ?sweep.live, "NAT flows expired");
                }
                self.nat.reclaimed_total += sweep.reclaimed;
                self.send_closed(&sweep.closed);
                self.nat.last = sweep;
            }
            Err(err) => tracing::warn!(error = %err, "NAT expiry failed; will retry"),
        }
    }

    pub(super) fn reconcile(&mut self, cause: &str) -> Result<ApplyReport, AgentError> {
        // The agent's own table, written only by health events and config changes.
        let health: Health = self.health.iter().map(|(k, v)| (*k, v.up)).collect();
        let ramps = self.slow_start.fractions(Instant::now());
        let desired = state::desired_state(&state::StateInputs {
            config: &self.config,
            ids: &self.ids,
            neighbours: &self.neighbours.resolved,
            health: &health,
            local_mac: self.local_mac,
            snat_address: self.snat_address,
            tunnel_source: self.tunnel_source,
            interface_mtu: self.interface_mtu,
            ramps: &ramps,
        });
        let started = Instant::now();
        let report = self.reconciler.apply(&desired)?;
        if !report.is_empty() {
            tracing::info!(
                cause,
                added = ?report.vips_added,
                updated = ?report.vips_updated,
                vips_removed = report.vips_removed,
                backends_written = report.backends_written,
                backends_removed = report.backends_removed,
                flows_purged = report.flows_purged,
                took_us = started.elapsed().as_micros() as u64,
                "maps updated"
            );
        }
        let empty: BTreeSet<AnyVipKey> = desired
            .vips
            .iter()
            .filter(|(_, v)| v.backend_count == 0)
            .map(|(k, _)| *k)
            .collect();
        for (key, vip) in &desired.vips {
            match (
                empty.contains(key),
                self.vips_without_backends.contains(key),
            ) {
                (true, false) => tracing::warn!(
                    vip = %vip.name,
                    cause,
                    "VIP has no usable backend: its new connections are dropped (counter drop_no_backend)"
                ),
                (false, true) => {
                    tracing::info!(vip = %vip.name, cause, "VIP has usable backends again");
                }
                _ => {}
            }
        }
        self.vips_without_backends = empty;
        self.update_sync_directory();
        self.update_flow_names();
        Ok(report)
    }

    pub(super) fn reconcile_logged(&mut self, cause: &str) {
        if let Err(err) = self.reconcile(cause) {
            tracing::error!(cause, error = %err, "applying a change to the maps failed; will retry on the next change");
        }
    }
}
