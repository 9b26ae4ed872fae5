//! The agent's loop: one task, one writer of the maps. Signals, control requests, health
//! transitions, a peer's flows and the one-second tick arrive here in turn; then the stop.

use std::time::Instant;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};
use xdp_lb_common::Counter;

use super::{Agent, AgentError, NEIGHBOUR_REFRESH};
use crate::{control::Command, health::HealthEvent, sync::stream::Inbound};

/// Everything the loop waits on.
pub(super) struct Inbox {
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
    commands: mpsc::Receiver<Command>,
    health: mpsc::Receiver<HealthEvent>,
    sync: mpsc::Receiver<Inbound>,
}

impl Inbox {
    pub(super) fn new(
        commands: mpsc::Receiver<Command>,
        health: mpsc::Receiver<HealthEvent>,
        sync: mpsc::Receiver<Inbound>,
    ) -> Result<Self, AgentError> {
        let install = |kind| signal(kind).map_err(AgentError::Signal);
        Ok(Self {
            sigterm: install(SignalKind::terminate())?,
            sigint: install(SignalKind::interrupt())?,
            sighup: install(SignalKind::hangup())?,
            commands,
            health,
            sync,
        })
    }
}

impl Agent {
    /// Serves events until SIGTERM or SIGINT; returns which.
    pub(super) async fn serve(&mut self, mut inbox: Inbox) -> &'static str {
        let mut tick = tokio::time::interval(NEIGHBOUR_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inbox.sigterm.recv() => return "SIGTERM",
                _ = inbox.sigint.recv() => return "SIGINT",
                _ = inbox.sighup.recv() => {
                    let _ = self.reload(None, "SIGHUP").await;
                }
                Some(command) = inbox.commands.recv() => {
                    let response = self.handle(command.request).await;
                    let _ = command.reply.send(response);
                    // A reload or a drain changes what is announced: say so to the routers now.
                    self.track().await;
                }
                Some(inbound) = inbox.sync.recv() => self.on_sync(inbound).await,
                Some(event) = inbox.health.recv() => {
                    self.on_health(&event);
                    self.track().await;
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    /// Once a second: NAT expiry, a slow-start step, the neighbours, tracking.
    async fn on_tick(&mut self) {
        self.expire_nat();
        if self.slow_start.active() {
            // One step: finished ramps are at their full share in this table.
            self.reconcile_logged("slow start");
            self.slow_start.finish(Instant::now());
        }
        match self.neighbours.refresh(&self.netlink, &self.config).await {
            Ok(true) => self.reconcile_logged("neighbour change"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "neighbour refresh failed; will retry"),
        }
        self.track().await;
    }

    /// The routers first: announcements are withdrawn and the program keeps forwarding for
    /// `announce.grace`, so flows in flight move to the other nodes before this one stops
    /// (with `keep`, the next agent adopts the routes instead). Then VRRP (a master sends
    /// priority 0 so its peer takes over after Skew_Time only), then the data plane: detached
    /// and unpinned, or with `keep` left for the next agent.
    pub(super) async fn stop(mut self, signal: &str, keep: bool) -> Result<(), AgentError> {
        if let Some(mut announcer) = self.announcer.take() {
            let grace = self.config.announce.as_ref().map(|a| a.grace);
            if !keep && announcer.withdraw_all(signal).await {
                let grace = grace.unwrap_or_default();
                tracing::info!(
                    ?grace,
                    "announce: withdrawn; forwarding for announce.grace before detaching"
                );
                tokio::time::sleep(grace).await;
            }
        }
        for instance in std::mem::take(&mut self.vrrp) {
            instance.shutdown().await;
        }
        self.log_counters();
        if keep {
            tracing::info!(
                signal,
                pin_dir = %self.config.agent.pin_dir.display(),
                "stopping with --keep-dataplane: the program stays attached and the maps pinned; the next `xdp-lb run` adopts them"
            );
        } else {
            tracing::info!(
                signal,
                "stopping: detaching the program and removing the pins"
            );
        }
        self.guard.finish(keep).map_err(AgentError::Cleanup)?;
        tracing::info!("stopped");
        Ok(())
    }

    fn log_counters(&self) {
        let maps = self.reconciler.maps();
        let parts: Vec<String> = Counter::ALL
            .iter()
            .filter_map(|c| match maps.counter(*c) {
                Ok(total) if total > 0 => Some(format!("{}={total}", c.name())),
                _ => None,
            })
            .collect();
        tracing::info!(counters = %parts.join(" "), "final counters");
    }
}
