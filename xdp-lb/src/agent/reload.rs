//! `SIGHUP` and `xdp-lb reload`: a new config applied as a diff, or rejected with nothing
//! changed — never half-applied.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use thiserror::Error;

use super::{Agent, AgentError, sources};
use crate::{
    config::{self, Config, ConfigError, FamilyAddresses},
    state::{IdAssignment, StateError},
};

/// Why a reload was refused; the running configuration is then unchanged.
#[derive(Debug, Error)]
pub(super) enum ReloadError {
    #[error("reload rejected, the running configuration is unchanged: {0}")]
    Invalid(#[from] ConfigError),
    #[error(
        "reload rejected, the running configuration is unchanged: {0} cannot change while running (restart the agent)"
    )]
    NeedsRestart(&'static str),
    #[error("reload rejected, the running configuration is unchanged: {0}")]
    IdAssignment(#[from] StateError),
    #[error("reload rejected, the running configuration is unchanged: {0}")]
    SourceAddress(#[source] AgentError),
    #[error(
        "reload rejected, the running configuration is unchanged: applying it failed ({0}); the previous configuration was restored"
    )]
    Apply(#[source] AgentError),
}

/// A new config that passed every check that needs no map write.
struct Candidate {
    config: Config,
    ids: IdAssignment,
    snat_address: FamilyAddresses,
    tunnel_source: FamilyAddresses,
    interface_mtu: u16,
}

impl Agent {
    /// Re-reads the config (from `path` if given) and applies it as a diff, or keeps
    /// everything exactly as it is and says why.
    pub(super) async fn reload(
        &mut self,
        path: Option<PathBuf>,
        cause: &str,
    ) -> Result<String, ReloadError> {
        let path = path.unwrap_or_else(|| self.config_path.clone());
        tracing::info!(config = %path.display(), cause, "reloading the config");
        let result = match self.candidate(&path).await {
            Ok(candidate) => self.switch_to(candidate, path).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(message) => tracing::info!("{message}"),
            Err(e) => tracing::error!("{e}"),
        }
        result
    }

    /// The file at `path`, validated, with the ids and SNAT addresses it would get.
    async fn candidate(&self, path: &std::path::Path) -> Result<Candidate, ReloadError> {
        let config = config::load(path)?;
        for warning in &config.warnings {
            tracing::warn!("configuration: {warning}");
        }
        if let Some(key) = needs_restart(&self.config, &config) {
            return Err(ReloadError::NeedsRestart(key));
        }
        let ids = self.ids.assign(&config)?;
        let snat_address = sources::source_addresses(&self.netlink, &config, sources::Role::Snat)
            .await
            .map_err(ReloadError::SourceAddress)?;
        let tunnel_source =
            sources::source_addresses(&self.netlink, &config, sources::Role::Tunnel)
                .await
                .map_err(ReloadError::SourceAddress)?;
        Ok(Candidate {
            interface_mtu: sources::interface_mtu(&self.netlink, &config).await,
            config,
            ids,
            snat_address,
            tunnel_source,
        })
    }

    /// Makes `new` the running config and applies it; on failure restores the old one.
    async fn switch_to(&mut self, new: Candidate, path: PathBuf) -> Result<String, ReloadError> {
        if (new.snat_address.any() && !self.snat_address.any())
            || (new.tunnel_source.any() && !self.tunnel_source.any())
        {
            sources::check_sysctls(&new.config);
        }
        let old_snat = std::mem::replace(&mut self.snat_address, new.snat_address);
        let old_tunnel = std::mem::replace(&mut self.tunnel_source, new.tunnel_source);
        let old_mtu = std::mem::replace(&mut self.interface_mtu, new.interface_mtu);
        let old_config = std::mem::replace(&mut self.config, new.config);
        let old_ids = std::mem::replace(&mut self.ids, new.ids);
        let old_health = self.health.clone();
        // New backends start in their check's start state; removed ones stop being checked.
        self.follow_health_config();
        self.slow_start.reloaded(&old_config, &self.config);
        // Resolve new backends' MACs first (bounded, as at start), so that they take new
        // connections as soon as the reload is acknowledged.
        if let Err(err) = self.resolve_neighbours(Duration::from_millis(50)).await {
            tracing::warn!(error = %err, "neighbour lookup during reload failed; will retry");
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
                Ok(format!(
                    "reloaded {}: {} VIP(s) added, {} updated, {} removed; {} backend(s) written, {} removed",
                    self.config_path.display(),
                    report.vips_added.len(),
                    report.vips_updated.len(),
                    report.vips_removed,
                    report.backends_written,
                    report.backends_removed
                ))
            }
            Err(err) => {
                self.config = old_config;
                self.ids = old_ids;
                self.snat_address = old_snat;
                self.tunnel_source = old_tunnel;
                self.interface_mtu = old_mtu;
                self.health = old_health;
                self.follow_checks();
                self.reconcile_logged("reload rollback");
                Err(ReloadError::Apply(err))
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
