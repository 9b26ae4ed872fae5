//! `SIGHUP` and `xdp-lb reload`: a new config applied as a diff, or rejected with nothing
//! changed — never half-applied.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use super::{Agent, INITIAL_RESOLVE_WAIT, nat_setup};
use crate::config::{self, Config};

impl Agent {
    /// Re-reads the config (from `path` if given) and applies it as a diff, or keeps
    /// everything exactly as it is and says why.
    pub(super) async fn reload(
        &mut self,
        path: Option<PathBuf>,
        cause: &str,
    ) -> Result<String, String> {
        let path = path.unwrap_or_else(|| self.config_path.clone());
        tracing::info!(config = %path.display(), cause, "reloading the config");
        let reject = |why: String| {
            tracing::error!("reload rejected, the running configuration is unchanged: {why}");
            Err(format!(
                "reload rejected, the running configuration is unchanged: {why}"
            ))
        };
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(err) => return reject(err.to_string()),
        };
        for warning in &new.warnings {
            tracing::warn!("configuration: {warning}");
        }
        if let Some(key) = needs_restart(&self.config, &new) {
            return reject(format!(
                "{key} cannot change while running (restart the agent)"
            ));
        }
        let ids = match self.ids.assign(&new) {
            Ok(ids) => ids,
            Err(err) => return reject(err.to_string()),
        };
        let snat_address = match nat_setup::snat_address(&self.netlink, &new).await {
            Ok(a) => a,
            Err(err) => return reject(err.to_string()),
        };
        if snat_address.any() && !self.snat_address.any() {
            nat_setup::check_sysctls(&new);
        }
        let old_snat = std::mem::replace(&mut self.snat_address, snat_address);
        let old_config = std::mem::replace(&mut self.config, new);
        let old_ids = std::mem::replace(&mut self.ids, ids);
        // New backends start in their check's start state; removed ones stop being checked.
        self.checker.sync(&self.config);
        self.slow_start.reloaded(&old_config, &self.config);
        // Resolve new backends' MACs first (bounded, as at start), so that they take new
        // connections as soon as the reload is acknowledged.
        let deadline = Instant::now() + INITIAL_RESOLVE_WAIT;
        loop {
            if let Err(err) = self.neighbours.refresh(&self.netlink, &self.config).await {
                tracing::warn!(error = %err, "neighbour lookup during reload failed; will retry");
                break;
            }
            if self.neighbours.all_resolved(&self.config) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.reconcile("reload") {
            Ok(report) => {
                self.config_path = path;
                self.loaded_at = SystemTime::now();
                if let (Some(announcer), Some(cfg)) =
                    (self.announcer.as_mut(), self.config.announce.clone())
                {
                    announcer.set_config(cfg);
                }
                let message = format!(
                    "reloaded {}: {} VIP(s) added, {} updated, {} removed; {} backend(s) written, {} removed",
                    self.config_path.display(),
                    report.vips_added.len(),
                    report.vips_updated.len(),
                    report.vips_removed,
                    report.backends_written,
                    report.backends_removed
                );
                tracing::info!("{message}");
                Ok(message)
            }
            Err(err) => {
                self.config = old_config;
                self.ids = old_ids;
                self.snat_address = old_snat;
                self.checker.sync(&self.config);
                self.reconcile_logged("reload rollback");
                reject(format!(
                    "applying it failed ({err}); the previous configuration was restored"
                ))
            }
        }
    }
}

/// The first setting that is fixed while the agent runs and differs in `new`.
fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let (a, b) = (&old.agent, &new.agent);
    let table = |c: &Config| c.announce.as_ref().map(|a| a.table);
    let fixed: [(bool, &'static str); 12] = [
        (old.vrrp != new.vrrp, "[[vrrp]] sections"),
        (old.sync != new.sync, "the [sync] section"),
        (
            old.announce.is_some() != new.announce.is_some(),
            "the [announce] section (adding or removing it)",
        ),
        (table(old) != table(new), "announce.table"),
        (a.interface != b.interface, "agent.interface"),
        (a.xdp_mode != b.xdp_mode, "agent.xdp_mode"),
        (a.pin_dir != b.pin_dir, "agent.pin_dir"),
        (
            a.flow_table_size != b.flow_table_size,
            "agent.flow_table_size",
        ),
        (
            a.flow_table_size_ipv6 != b.flow_table_size_ipv6,
            "agent.flow_table_size_ipv6",
        ),
        (a.max_vips != b.max_vips, "agent.max_vips"),
        (a.control_socket != b.control_socket, "agent.control_socket"),
        (a.listen != b.listen, "agent.listen"),
    ];
    fixed
        .into_iter()
        .find_map(|(changed, key)| changed.then_some(key))
}
