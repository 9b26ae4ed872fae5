//! A health transition reaching the agent: the one route from a check to the maps. The event
//! updates the agent's [`HealthTable`](crate::health::HealthTable), a new desired state is
//! applied, then the transition is logged.

use super::Agent;
use crate::{clock::unix_now, health::HealthEvent};

impl Agent {
    /// Starts, stops and restarts the checks for the config, and brings the health table in
    /// step with it (new backends in their check's start state).
    pub(super) fn follow_health_config(&mut self) {
        self.health.follow(&self.config, unix_now());
        self.follow_checks();
    }

    /// Starts, stops and restarts the checks for the config (the checks through tunnels with
    /// the backends' ids and this node's tunnel sources).
    pub(super) fn follow_checks(&mut self) {
        let inputs = crate::health::TunnelInputs {
            backend_ids: &self.ids.backends,
            source: self.tunnel_source,
            pin_dir: &self.config.agent.pin_dir,
        };
        self.checker
            .follow_config(&self.config, &self.health, &inputs);
    }

    pub(super) fn on_health(&mut self, event: &HealthEvent) {
        let backend = event.key.1;
        if !self.checker.is_current(event) {
            // Sent by a check that a reload replaced: the new check started from the state
            // the table held, and counts on its own.
            tracing::debug!(vip = %event.vip_name, %backend, up = event.up, "stale health event ignored");
            return;
        }
        if !self.health.apply(event) {
            return;
        }
        self.health_transitions += 1;
        if event.up {
            self.slow_start.came_up(&self.config, event.key.0, backend);
        }
        let cause = format!("health: {backend} {}", if event.up { "up" } else { "down" });
        // The maps first, then the line: when "backend DOWN" is in the log the backend takes
        // no new connections any more (a reader acting on the line, a test among them, would
        // otherwise race the table swap).
        self.reconcile_logged(&cause);
        let vip = &event.vip_name;
        if event.up {
            tracing::info!(vip = %vip, backend = %backend, reason = %event.reason, "backend UP");
        } else {
            tracing::warn!(vip = %vip, backend = %backend, reason = %event.reason, "backend DOWN");
        }
    }
}
