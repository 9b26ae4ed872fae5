//! The configuration file: TOML, parsed in two steps.
//!
//! 1. `toml` + serde into the `Raw*` structs (`raw.rs`), which mirror the file and keep the
//!    position of every value that a later check may complain about (`Spanned`). Syntax
//!    errors, unknown keys and wrong types are reported here, with toml's own position.
//! 2. `validate.rs` turns them into [`Config`], one section at a time — `agent.rs`, `vip.rs`,
//!    `backend.rs`, `health_check.rs`, `vrrp.rs`, `sync.rs`, `announce.rs`, each holding its
//!    section's validated type and its checks — checking what serde cannot (primes, ranges,
//!    duplicates, limits) and naming the file, line and key of the first value that is wrong
//!    (`file.rs`; the checks every section shares: `fields.rs`).
//!
//! Nothing is applied until both steps succeed, so a bad file never half-applies.

mod agent;
mod announce;
mod backend;
mod cidr;
mod fields;
mod file;
mod health_check;
mod raw;
mod sync;
pub mod sync_key;
#[cfg(test)]
mod tests;
mod validate;
mod vip;
mod vrrp;

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use xdp_lb_common::AnyVipKey;

pub use self::{
    agent::{
        AgentConfig, DEFAULT_CONTROL_SOCKET, DEFAULT_FLOW_TABLE_SIZE_IPV6, DEFAULT_LISTEN,
        DEFAULT_SNAT_PORT_RANGE, FamilyAddresses, MAX_FLOW_TABLE_SIZE, MAX_MAX_VIPS, XdpMode,
    },
    announce::{
        AnnounceConfig, DEFAULT_ANNOUNCE_GRACE, DEFAULT_ANNOUNCE_TABLE, DEFAULT_ENGINE_SOCKET,
    },
    backend::{AdminState, BackendConfig, MAX_WEIGHT},
    cidr::{Cidr, CidrError},
    fields::is_prime,
    health_check::{CheckType, DnsCheckConfig, HealthCheckConfig, TlsCheckConfig},
    sync::{
        DEFAULT_SNAPSHOT_WAIT, DEFAULT_SYNC_BATCH, DEFAULT_SYNC_PORT, DEFAULT_SYNC_QUEUE,
        DEFAULT_SYNC_RATE, SyncConfig,
    },
    sync_key::SyncKey,
    vip::{
        Forwarding, MIN_MAGLEV_TABLE_SIZE, MIN_TUNNEL_MTU_V4, MIN_TUNNEL_MTU_V6, Protocol,
        SourceLimit, TunnelConfig, VipConfig,
    },
    vrrp::{ChecksumMode, Version, VrrpConfig},
};
use self::{file::ConfigFile, raw::RawConfig};

/// A backend's identity across the agent (ids, health, slow start): the VIP it serves and its
/// address.
pub type BackendKey = (AnyVipKey, IpAddr);

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent: AgentConfig,
    pub vips: Vec<VipConfig>,
    pub vrrp: Vec<VrrpConfig>,
    /// `[announce]`: None when the section is absent (no VIP is announced).
    pub announce: Option<AnnounceConfig>,
    /// `[sync]`: None when the section is absent (flows stay on the node that made them).
    pub sync: Option<SyncConfig>,
    /// What is worth saying about the file but does not stop it from loading (`check-config`
    /// prints them, `run` logs them). Same shape as an error: file, line, key, message.
    pub warnings: Vec<ConfigError>,
    /// Line and column of values that later checks may complain about, by dotted key
    /// (`vip[0].backend[1].address`).
    pub positions: BTreeMap<String, (usize, usize)>,
}

impl Config {
    /// A warning about the value at `key`, placed where the file has it.
    pub fn warning_at(&self, file: &Path, key: &str, message: String) -> ConfigError {
        let at = self.positions.get(key);
        ConfigError {
            file: file.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            key: Some(key.to_owned()),
            message,
        }
    }
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key in dotted form (`vip[1].maglev_table_size`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_owned(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read the file: {err}"),
    })?;
    parse(path, &text)
}

/// `agent.control_socket` of a file, read leniently (the rest may be invalid).
pub fn control_socket_of(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value
        .get("agent")?
        .get("control_socket")?
        .as_str()
        .map(PathBuf::from)
}

/// Parses and validates configuration text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let file = ConfigFile::new(path, text);
    let raw: RawConfig = toml::from_str(text).map_err(|err| {
        // toml's message can span several lines with its own snippet; keep the first.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        file.error(err.span(), None, message)
    })?;
    let mut config = validate::validate(&file, &raw)?;
    config.warnings = file.warnings.take();
    config.positions = file.positions.take();
    Ok(config)
}
