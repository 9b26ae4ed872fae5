//! The configuration file: TOML, parsed in two steps.
//!
//! 1. `toml` + serde into the `Raw*` structs, which mirror the file and keep the position of
//!    every value that a later check may complain about (`Spanned`). Syntax errors, unknown keys
//!    and wrong types are reported here, with toml's own position.
//! 2. [`validate`] turns them into [`Config`], checking what serde cannot (primes, ranges,
//!    duplicates, limits) and naming the line and key of the first value that is wrong.
//!
//! Nothing is applied until both steps succeed, so a bad file never half-applies.

use std::{
    collections::BTreeSet,
    fmt,
    net::Ipv4Addr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;
use xdp_lb_common::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_VIPS, MAGLEV_MAX_TABLE_SIZE, MAX_BACKENDS,
};

/// Largest `agent.max_vips`: each VIP reserves 2 × 65537 × 4 bytes of Maglev table (512 KiB).
pub const MAX_MAX_VIPS: u32 = 512;
/// Largest `agent.flow_table_size` (about 4 GiB of kernel memory with hash overhead).
pub const MAX_FLOW_TABLE_SIZE: u32 = 1 << 26;
/// Smallest `maglev_table_size`: below this the per-backend shares are too coarse to honour weights.
pub const MIN_MAGLEV_TABLE_SIZE: u32 = 251;
/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent: AgentConfig,
    pub vips: Vec<VipConfig>,
    pub vrrp: Vec<VrrpConfig>,
}

/// `[[vrrp]]`: one VRRP instance (a virtual router), keepalived's `vrrp_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: crate::vrrp::packet::Version,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Address and prefix length.
    pub virtual_addresses: Vec<(Ipv4Addr, u8)>,
    /// Non-empty: unicast adverts to these peers instead of multicast.
    pub unicast_peers: Vec<Ipv4Addr>,
    pub checksum: crate::vrrp::packet::ChecksumMode,
    pub garp_count: u32,
    pub garp_repeat_delay: Duration,
    pub track_dataplane: bool,
    /// 0: tracking failure means Fault; > 0: subtract this from the priority instead.
    pub track_weight: u8,
    pub notify: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub interface: String,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    pub flow_table_size: u32,
    pub max_vips: u32,
    /// The agent's control socket (`xdp-lb reload`, `xdp-lb status`), root-only.
    pub control_socket: PathBuf,
    /// Where `/metrics`, `/stats` and `/healthz` are served; None: not served.
    pub listen: Option<std::net::SocketAddr>,
    /// Log new flows and drops (haproxy's connection log), at most `flow_log_rate` events per
    /// CPU per second.
    pub flow_log: bool,
    pub flow_log_rate: u32,
    /// NAT: the source address of connections to backends; None: the primary IPv4 address of
    /// `interface`, looked up at start.
    pub snat_address: Option<Ipv4Addr>,
    /// NAT: the source ports of connections to backends (inclusive).
    pub snat_port_range: (u16, u16),
    /// NAT flow expiry, measured from the flow's last packet: half-open (only the SYN seen),
    /// established, and closing (FIN or RST seen).
    pub nat_syn_timeout: Duration,
    pub nat_established_timeout: Duration,
    pub nat_closing_timeout: Duration,
}

/// Default `agent.snat_port_range`.
pub const DEFAULT_SNAT_PORT_RANGE: (u16, u16) = (20000, 59999);

/// Default `agent.listen`: loopback only; anything else is the operator's explicit choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";

/// Default `agent.control_socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xdp-lb/xdp-lb.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic mode with a log line saying so.
    Auto,
    Driver,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// L2 direct server return: only MACs are rewritten.
    Dsr,
    /// Full NAT: client → VIP becomes SNAT address → backend:port, and back.
    Nat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub maglev_table_size: u32,
    pub health_check: HealthCheckConfig,
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: Ipv4Addr,
    /// The port connections go to: the VIP's port unless a NAT VIP says otherwise.
    pub port: u16,
    pub weight: u32,
    pub state: AdminState,
}

/// The operator's word on a backend, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In rotation (when healthy).
    #[default]
    Active,
    /// No new flows; established flows continue until they end.
    Drain,
    /// Out of rotation; its established flows are purged and re-hashed to other backends.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
    None,
}

/// `[vip.health_check]`, with haproxy's defaults (inter 2s, rise 2, fall 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: CheckType,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// None: the VIP's port.
    pub port: Option<u16>,
    pub http_path: String,
    pub http_expect_status: u16,
    pub start_down: bool,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckType::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            port: None,
            http_path: "/".into(),
            http_expect_status: 200,
            start_down: false,
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

// ---- the file as written --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: Spanned<RawAgent>,
    #[serde(default)]
    vip: Vec<Spanned<RawVip>>,
    #[serde(default)]
    vrrp: Vec<Spanned<RawVrrp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVrrp {
    name: Spanned<String>,
    interface: Spanned<String>,
    vrid: Spanned<i64>,
    priority: Spanned<i64>,
    #[serde(default)]
    version: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    advert_interval: Option<Spanned<Duration>>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default, with = "spanned_duration")]
    preempt_delay: Option<Spanned<Duration>>,
    virtual_addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    unicast_peers: Vec<Spanned<Ipv4Addr>>,
    #[serde(default)]
    checksum: Option<crate::vrrp::packet::ChecksumMode>,
    #[serde(default)]
    garp_count: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    garp_repeat_delay: Option<Spanned<Duration>>,
    #[serde(default)]
    track_dataplane: Option<bool>,
    #[serde(default)]
    track_weight: Option<Spanned<i64>>,
    #[serde(default)]
    notify: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    interface: Spanned<String>,
    #[serde(default)]
    xdp_mode: Option<XdpMode>,
    #[serde(default)]
    pin_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    flow_table_size: Option<Spanned<i64>>,
    #[serde(default)]
    max_vips: Option<Spanned<i64>>,
    #[serde(default)]
    control_socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    flow_log: Option<bool>,
    #[serde(default)]
    flow_log_rate: Option<Spanned<i64>>,
    #[serde(default)]
    snat_address: Option<Spanned<Ipv4Addr>>,
    #[serde(default)]
    snat_port_range: Option<Spanned<String>>,
    #[serde(default, with = "spanned_duration")]
    nat_syn_timeout: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    nat_established_timeout: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    nat_closing_timeout: Option<Spanned<Duration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    name: Spanned<String>,
    address: Spanned<Ipv4Addr>,
    port: Spanned<i64>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    forwarding: Option<Spanned<Forwarding>>,
    #[serde(default)]
    maglev_table_size: Option<Spanned<i64>>,
    #[serde(default)]
    health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<Ipv4Addr>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    weight: Option<Spanned<i64>>,
    #[serde(default)]
    state: Option<AdminState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(default, rename = "type")]
    kind: Option<CheckType>,
    #[serde(default, with = "spanned_duration")]
    interval: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    timeout: Option<Spanned<Duration>>,
    #[serde(default)]
    rise: Option<Spanned<i64>>,
    #[serde(default)]
    fall: Option<Spanned<i64>>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    http_path: Option<Spanned<String>>,
    #[serde(default)]
    http_expect_status: Option<Spanned<i64>>,
    #[serde(default)]
    start_down: Option<bool>,
}

/// Durations as humantime strings ("2s", "150ms"), keeping their position for errors.
mod spanned_duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, de::Error as _};
    use toml::Spanned;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Spanned<Duration>>, D::Error> {
        let s: Spanned<String> = Spanned::deserialize(d)?;
        let parsed = humantime::parse_duration(s.get_ref()).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {:?}: {e} (use e.g. \"2s\" or \"150ms\")",
                s.get_ref()
            ))
        })?;
        Ok(Some(Spanned::new(s.span(), parsed)))
    }
}

// ---- entry points ---------------------------------------------------------------------------

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
    let place = Place { file: path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|err| {
        // toml's message can span several lines with its own snippet; keep the first.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        place.error(err.span(), None, message)
    })?;
    validate(&place, raw)
}

struct Place<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Place<'_> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(self.text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    fn at<T>(
        &self,
        value: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(Some(value.span()), Some(key.into()), message.into())
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// A number within `range`, or an error naming the key and the range.
fn ranged(
    place: &Place<'_>,
    value: &Spanned<i64>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(place.at(
            value,
            key,
            format!(
                "{v} is out of range (allowed: {}..={})",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// "LOW-HIGH" (inclusive), e.g. "20000-59999".
fn port_range(
    place: &Place<'_>,
    value: &Spanned<String>,
    key: &str,
) -> Result<(u16, u16), ConfigError> {
    let parsed = value.get_ref().split_once('-').and_then(|(lo, hi)| {
        Some((
            lo.trim().parse::<u16>().ok()?,
            hi.trim().parse::<u16>().ok()?,
        ))
    });
    match parsed {
        Some((lo, hi)) if lo >= 1 && lo <= hi => Ok((lo, hi)),
        _ => Err(place.at(
            value,
            key,
            format!(
                "{:?} is not a port range LOW-HIGH with 1 <= LOW <= HIGH <= 65535 (e.g. \"20000-59999\")",
                value.get_ref()
            ),
        )),
    }
}

/// A NAT timeout: 1s to 30 days.
fn nat_timeout(
    place: &Place<'_>,
    value: &Option<Spanned<Duration>>,
    field: &str,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d)
            if *d.get_ref() < Duration::from_secs(1)
                || *d.get_ref() > Duration::from_secs(30 * 86_400) =>
        {
            Err(place.at(
                d,
                format!("agent.{field}"),
                format!("{:?} is out of range (1s..=30d)", d.get_ref()),
            ))
        }
        Some(d) => Ok(*d.get_ref()),
        None => Ok(Duration::from_secs(default_secs)),
    }
}

/// A VIP or VRRP instance name: 1 to 64 of A-Z a-z 0-9 - _ . (it appears in logs and labels).
fn valid_name(
    place: &Place<'_>,
    name: &Spanned<String>,
    key: String,
) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(place.at(
            name,
            key,
            format!("{n:?} is not a valid name (1 to 64 of A-Z a-z 0-9 - _ .)"),
        ));
    }
    Ok(n.clone())
}

/// An interface name as the kernel accepts it: IFNAMSIZ is 16 including the NUL
/// (include/uapi/linux/if.h).
fn valid_interface(
    place: &Place<'_>,
    name: &Spanned<String>,
    key: String,
) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
        return Err(place.at(
            name,
            key,
            format!("{n:?} is not a valid interface name (1 to 15 characters, no '/' or spaces)"),
        ));
    }
    Ok(n.clone())
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n as u64 {
        if (n as u64).is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn validate(place: &Place<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let agent_span = raw.agent.span();
    let raw_agent = raw.agent.into_inner();

    let interface = valid_interface(place, &raw_agent.interface, "agent.interface".into())?;
    let pin_dir = match &raw_agent.pin_dir {
        Some(p) if !p.get_ref().is_absolute() => {
            return Err(place.at(
                p,
                "agent.pin_dir",
                "must be an absolute path on a bpf filesystem",
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => PathBuf::from("/sys/fs/bpf/xdp-lb"),
    };
    let flow_table_size = match &raw_agent.flow_table_size {
        Some(v) => ranged(place, v, "agent.flow_table_size", 1..=MAX_FLOW_TABLE_SIZE)?,
        None => DEFAULT_FLOW_TABLE_SIZE,
    };
    let max_vips = match &raw_agent.max_vips {
        Some(v) => ranged(place, v, "agent.max_vips", 1..=MAX_MAX_VIPS)?,
        None => DEFAULT_MAX_VIPS,
    };
    let control_socket = match &raw_agent.control_socket {
        Some(p) if !p.get_ref().is_absolute() => {
            return Err(place.at(p, "agent.control_socket", "must be an absolute path"));
        }
        Some(p) => p.get_ref().clone(),
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    let listen = match &raw_agent.listen {
        Some(l) if l.get_ref().is_empty() => None,
        Some(l) => Some(l.get_ref().parse().map_err(|_| {
            place.at(
                l,
                "agent.listen",
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9100\"; \"\" turns it off)",
                    l.get_ref()
                ),
            )
        })?),
        None => Some(DEFAULT_LISTEN.parse().expect("valid default")),
    };
    let agent = AgentConfig {
        interface,
        xdp_mode: raw_agent.xdp_mode.unwrap_or(XdpMode::Auto),
        pin_dir,
        flow_table_size,
        max_vips,
        control_socket,
        listen,
        flow_log: raw_agent.flow_log.unwrap_or(false),
        flow_log_rate: match &raw_agent.flow_log_rate {
            Some(v) => ranged(place, v, "agent.flow_log_rate", 1..=1_000_000)?,
            None => 1000,
        },
        snat_address: match &raw_agent.snat_address {
            Some(a)
                if a.get_ref().is_unspecified()
                    || a.get_ref().is_multicast()
                    || a.get_ref().is_broadcast()
                    || a.get_ref().is_loopback() =>
            {
                return Err(place.at(
                    a,
                    "agent.snat_address",
                    format!("{} cannot be a source address", a.get_ref()),
                ));
            }
            Some(a) => Some(*a.get_ref()),
            None => None,
        },
        snat_port_range: match &raw_agent.snat_port_range {
            Some(r) => port_range(place, r, "agent.snat_port_range")?,
            None => DEFAULT_SNAT_PORT_RANGE,
        },
        nat_syn_timeout: nat_timeout(place, &raw_agent.nat_syn_timeout, "nat_syn_timeout", 10)?,
        nat_established_timeout: nat_timeout(
            place,
            &raw_agent.nat_established_timeout,
            "nat_established_timeout",
            3600,
        )?,
        nat_closing_timeout: nat_timeout(
            place,
            &raw_agent.nat_closing_timeout,
            "nat_closing_timeout",
            10,
        )?,
    };

    if raw.vip.len() > max_vips as usize {
        return Err(place.error(
            Some(raw.vip[max_vips as usize].span()),
            Some("vip".into()),
            format!(
                "{} VIPs configured but agent.max_vips is {max_vips}; raise agent.max_vips",
                raw.vip.len()
            ),
        ));
    }
    if raw.vip.is_empty() {
        tracing::debug!("no [[vip]] configured: {agent_span:?}");
    }

    let mut names = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    let mut total_backends = 0usize;
    let mut vips = Vec::with_capacity(raw.vip.len());
    for (i, raw_vip) in raw.vip.iter().enumerate() {
        let vip_span = raw_vip.span();
        let rv = raw_vip.get_ref();
        let key = |field: &str| format!("vip[{i}].{field}");

        let name = valid_name(place, &rv.name, key("name"))?;
        if !names.insert(name.clone()) {
            return Err(place.at(
                &rv.name,
                key("name"),
                format!("duplicate VIP name {name:?}"),
            ));
        }
        let address = *rv.address.get_ref();
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(place.at(
                &rv.address,
                key("address"),
                format!("{address} cannot be a VIP"),
            ));
        }
        let port = ranged(place, &rv.port, &key("port"), 1..=65535)? as u16;
        let protocol = rv.protocol.unwrap_or(Protocol::Tcp);
        if !endpoints.insert((address, port, protocol as u8)) {
            return Err(place.at(
                &rv.port,
                key("port"),
                format!("{address}:{port}/tcp is already used by another VIP"),
            ));
        }
        let forwarding = rv
            .forwarding
            .as_ref()
            .map_or(Forwarding::Dsr, |f| *f.get_ref());
        let maglev_table_size = match &rv.maglev_table_size {
            Some(v) => {
                let size = ranged(
                    place,
                    v,
                    &key("maglev_table_size"),
                    MIN_MAGLEV_TABLE_SIZE..=MAGLEV_MAX_TABLE_SIZE,
                )?;
                if !is_prime(size) {
                    return Err(place.at(
                        v,
                        key("maglev_table_size"),
                        format!("{size} is not a prime (Maglev needs a prime table size; e.g. 65537, 16381, 4093, 1021)"),
                    ));
                }
                size
            }
            None => MAGLEV_MAX_TABLE_SIZE,
        };

        let mut backends = Vec::with_capacity(rv.backend.len());
        let mut seen = BTreeSet::new();
        for (j, raw_backend) in rv.backend.iter().enumerate() {
            let rb = raw_backend.get_ref();
            let bkey = |field: &str| format!("vip[{i}].backend[{j}].{field}");
            let baddr = *rb.address.get_ref();
            if baddr.is_unspecified()
                || baddr.is_multicast()
                || baddr.is_broadcast()
                || baddr.is_loopback()
            {
                return Err(place.at(
                    &rb.address,
                    bkey("address"),
                    format!("{baddr} cannot be a backend"),
                ));
            }
            if !seen.insert(baddr) {
                return Err(place.at(
                    &rb.address,
                    bkey("address"),
                    format!("duplicate backend {baddr} in VIP {name:?}"),
                ));
            }
            let weight = match &rb.weight {
                Some(w) => ranged(place, w, &bkey("weight"), 0..=MAX_WEIGHT)?,
                None => 1,
            };
            let bport = match &rb.port {
                Some(p) => {
                    let bport = ranged(place, p, &bkey("port"), 1..=65535)? as u16;
                    if forwarding == Forwarding::Dsr && bport != port {
                        return Err(place.at(
                            p,
                            bkey("port"),
                            format!(
                                "DSR forwards to the VIP's port {port}; a backend on another port needs forwarding = \"nat\""
                            ),
                        ));
                    }
                    bport
                }
                None => port,
            };
            backends.push(BackendConfig {
                address: baddr,
                port: bport,
                weight,
                state: rb.state.unwrap_or_default(),
            });
        }
        if backends.len() as u32 >= maglev_table_size {
            return Err(place.error(
                Some(vip_span),
                Some(key("backend")),
                format!(
                    "{} backends need a larger maglev_table_size than {maglev_table_size}",
                    backends.len()
                ),
            ));
        }
        total_backends += backends.len();
        if total_backends > MAX_BACKENDS as usize {
            return Err(place.error(
                Some(vip_span),
                Some(key("backend")),
                format!("more than {MAX_BACKENDS} backends in all VIPs"),
            ));
        }
        let health_check = match &rv.health_check {
            Some(h) => health_check(place, h.get_ref(), &key("health_check"))?,
            None => HealthCheckConfig::default(),
        };
        vips.push(VipConfig {
            name,
            address,
            port,
            protocol,
            forwarding,
            maglev_table_size,
            health_check,
            backends,
        });
    }
    let vrrp = raw
        .vrrp
        .iter()
        .enumerate()
        .map(|(i, r)| vrrp_instance(place, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen_names = BTreeSet::new();
    let mut seen_vrids = BTreeSet::new();
    for (i, (r, v)) in raw.vrrp.iter().zip(&vrrp).enumerate() {
        if !seen_names.insert(v.name.clone()) {
            return Err(place.at(
                &r.get_ref().name,
                format!("vrrp[{i}].name"),
                format!("duplicate VRRP instance {:?}", v.name),
            ));
        }
        if !seen_vrids.insert((v.interface.clone(), v.vrid)) {
            return Err(place.at(
                &r.get_ref().vrid,
                format!("vrrp[{i}].vrid"),
                format!("VRID {} is already used on {}", v.vrid, v.interface),
            ));
        }
    }
    Ok(Config { agent, vips, vrrp })
}

fn vrrp_instance(
    place: &Place<'_>,
    i: usize,
    raw: &Spanned<RawVrrp>,
) -> Result<VrrpConfig, ConfigError> {
    use crate::vrrp::packet::{ChecksumMode, Version};
    let r = raw.get_ref();
    let k = |field: &str| format!("vrrp[{i}].{field}");
    let name = valid_name(place, &r.name, k("name"))?;
    let interface = valid_interface(place, &r.interface, k("interface"))?;
    let vrid = ranged(place, &r.vrid, &k("vrid"), 1..=255)? as u8;
    let priority = ranged(place, &r.priority, &k("priority"), 1..=255)? as u8;
    let version = match &r.version {
        None => Version::V3,
        Some(v) if *v.get_ref() == 3 => Version::V3,
        Some(v) if *v.get_ref() == 2 => Version::V2,
        Some(v) => {
            return Err(place.at(
                v,
                k("version"),
                format!("{} is not a VRRP version (3 or 2)", v.get_ref()),
            ));
        }
    };
    let advert_interval = match &r.advert_interval {
        None => Duration::from_secs(1),
        Some(d) => {
            let v = *d.get_ref();
            let ok = match version {
                // 12 bits of centiseconds (RFC 5798 §5.2.7).
                Version::V3 => {
                    v >= Duration::from_millis(10)
                        && v <= Duration::from_millis(40_950)
                        && v.as_millis() % 10 == 0
                }
                // An 8-bit count of seconds (RFC 3768 §5.3.7).
                Version::V2 => {
                    v >= Duration::from_secs(1)
                        && v <= Duration::from_secs(255)
                        && v.subsec_nanos() == 0
                }
            };
            if !ok {
                let allowed = match version {
                    Version::V3 => "10 ms steps from 10ms to 40.95s for version 3",
                    Version::V2 => "whole seconds from 1s to 255s for version 2",
                };
                return Err(place.at(
                    d,
                    k("advert_interval"),
                    format!("{v:?} is not allowed ({allowed})"),
                ));
            }
            v
        }
    };
    let preempt_delay = match &r.preempt_delay {
        Some(d) if *d.get_ref() > Duration::from_secs(3600) => {
            return Err(place.at(d, k("preempt_delay"), "must be at most 1h"));
        }
        Some(d) => *d.get_ref(),
        None => Duration::ZERO,
    };
    let mut virtual_addresses = Vec::new();
    for a in r.virtual_addresses.get_ref() {
        let text = a.get_ref();
        let (addr, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let parsed = addr
            .parse::<Ipv4Addr>()
            .ok()
            .zip(prefix.parse::<u8>().ok().filter(|p| (1..=32).contains(p)));
        match parsed {
            Some((addr, prefix)) if !addr.is_unspecified() && !addr.is_multicast() => {
                virtual_addresses.push((addr, prefix))
            }
            _ => {
                return Err(place.at(
                    a,
                    k("virtual_addresses"),
                    format!("{text:?} is not an IPv4 address with an optional /prefix"),
                ));
            }
        }
    }
    if virtual_addresses.is_empty() {
        return Err(place.at(
            &r.virtual_addresses,
            k("virtual_addresses"),
            "at least one address is needed",
        ));
    }
    let garp_count = match &r.garp_count {
        Some(v) => ranged(place, v, &k("garp_count"), 0..=100)?,
        None => 5,
    };
    let garp_repeat_delay = match &r.garp_repeat_delay {
        Some(d) => *d.get_ref(),
        None => Duration::from_secs(5),
    };
    let track_weight = match &r.track_weight {
        Some(v) => ranged(place, v, &k("track_weight"), 0..=254)? as u8,
        None => 0,
    };
    let notify = match &r.notify {
        Some(p) if !p.get_ref().is_absolute() => {
            return Err(place.at(
                p,
                k("notify"),
                "must be an absolute path to a program (run without a shell)",
            ));
        }
        Some(p) => Some(p.get_ref().clone()),
        None => None,
    };
    Ok(VrrpConfig {
        name,
        interface,
        vrid,
        priority,
        version,
        advert_interval,
        preempt: r.preempt.unwrap_or(true),
        preempt_delay,
        virtual_addresses,
        unicast_peers: r.unicast_peers.iter().map(|p| *p.get_ref()).collect(),
        checksum: r.checksum.unwrap_or(ChecksumMode::Rfc9568),
        garp_count,
        garp_repeat_delay,
        track_dataplane: r.track_dataplane.unwrap_or(true),
        track_weight,
        notify,
    })
}

fn health_check(
    place: &Place<'_>,
    h: &RawHealthCheck,
    key: &str,
) -> Result<HealthCheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let d = HealthCheckConfig::default();
    let duration = |v: &Option<Spanned<Duration>>,
                    field: &str,
                    default: Duration|
     -> Result<Duration, ConfigError> {
        match v {
            Some(s)
                if *s.get_ref() < Duration::from_millis(10)
                    || *s.get_ref() > Duration::from_secs(3600) =>
            {
                Err(place.at(
                    s,
                    k(field),
                    format!("{:?} is out of range (10ms..=1h)", s.get_ref()),
                ))
            }
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        }
    };
    let interval = duration(&h.interval, "interval", d.interval)?;
    // haproxy: the check timeout defaults to the interval.
    let timeout = duration(&h.timeout, "timeout", interval)?;
    if let Some(t) = &h.timeout
        && timeout > interval
    {
        return Err(place.at(
            t,
            k("timeout"),
            format!("{timeout:?} is longer than the interval {interval:?}"),
        ));
    }
    let rise = match &h.rise {
        Some(v) => ranged(place, v, &k("rise"), 1..=100)?,
        None => d.rise,
    };
    let fall = match &h.fall {
        Some(v) => ranged(place, v, &k("fall"), 1..=100)?,
        None => d.fall,
    };
    let port = match &h.port {
        Some(v) => Some(ranged(place, v, &k("port"), 1..=65535)? as u16),
        None => None,
    };
    let http_path = match &h.http_path {
        Some(p)
            if !p.get_ref().starts_with('/')
                || p.get_ref()
                    .contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            return Err(place.at(
                p,
                k("http_path"),
                format!(
                    "{:?} must start with '/' and contain no spaces",
                    p.get_ref()
                ),
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => d.http_path,
    };
    let http_expect_status = match &h.http_expect_status {
        Some(v) => ranged(place, v, &k("http_expect_status"), 100..=599)? as u16,
        None => d.http_expect_status,
    };
    Ok(HealthCheckConfig {
        kind: h.kind.unwrap_or(CheckType::Tcp),
        interval,
        timeout,
        rise,
        fall,
        port,
        http_path,
        http_expect_status,
        start_down: h.start_down.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
interface = "eth0"
xdp_mode = "auto"
pin_dir = "/sys/fs/bpf/xdp-lb"
flow_table_size = 1048576

[[vip]]
name = "apiserver"
address = "198.18.0.100"
port = 6443
protocol = "tcp"
forwarding = "dsr"
maglev_table_size = 65537

[[vip.backend]]
address = "198.18.0.11"
weight = 1

[[vip.backend]]
address = "198.18.0.12"
weight = 2
"#;

    #[test]
    fn nat_vip_with_backend_ports_and_snat_settings() {
        let text = GOOD
            .replace("forwarding = \"dsr\"", "forwarding = \"nat\"")
            .replace("weight = 2", "weight = 2\nport = 8443")
            .replace(
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_address = \"198.18.0.2\"\nsnat_port_range = \"30000-30999\"\nnat_established_timeout = \"2h\"",
            );
        let c = parse_str(&text).unwrap();
        assert_eq!(c.vips[0].forwarding, Forwarding::Nat);
        assert_eq!(
            c.vips[0].backends[0].port, 6443,
            "defaults to the VIP's port"
        );
        assert_eq!(c.vips[0].backends[1].port, 8443);
        assert_eq!(c.agent.snat_address, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(c.agent.snat_port_range, (30000, 30999));
        assert_eq!(c.agent.nat_established_timeout, Duration::from_secs(7200));
        assert_eq!(c.agent.nat_syn_timeout, Duration::from_secs(10));
        assert_eq!(c.agent.nat_closing_timeout, Duration::from_secs(10));
        let dsr = parse_str(GOOD).unwrap();
        assert_eq!(dsr.agent.snat_address, None);
        assert_eq!(dsr.agent.snat_port_range, DEFAULT_SNAT_PORT_RANGE);
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    /// Replaces the first occurrence of `from` in the good file and returns the error.
    fn broken(from: &str, to: &str) -> ConfigError {
        assert!(GOOD.contains(from), "{from}");
        parse_str(&GOOD.replacen(from, to, 1)).expect_err("should be rejected")
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.agent.interface, "eth0");
        assert_eq!(c.agent.xdp_mode, XdpMode::Auto);
        assert_eq!(c.agent.flow_table_size, 1_048_576);
        assert_eq!(c.vips.len(), 1);
        let v = &c.vips[0];
        assert_eq!(
            (v.name.as_str(), v.port, v.maglev_table_size),
            ("apiserver", 6443, 65537)
        );
        assert_eq!(
            v.backends[1],
            BackendConfig {
                address: "198.18.0.12".parse().unwrap(),
                port: 6443,
                weight: 2,
                state: AdminState::Active,
            }
        );
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let c = parse_str(
            "[agent]\ninterface = \"eth1\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 80\n",
        )
        .unwrap();
        assert_eq!(c.agent.pin_dir, PathBuf::from("/sys/fs/bpf/xdp-lb"));
        assert_eq!(c.agent.max_vips, DEFAULT_MAX_VIPS);
        assert_eq!(c.vips[0].maglev_table_size, MAGLEV_MAX_TABLE_SIZE);
        assert_eq!(c.vips[0].forwarding, Forwarding::Dsr);
        assert!(c.vips[0].backends.is_empty());
    }

    #[test]
    fn each_mistake_has_its_own_error_with_a_line() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            // (replace, with, line, key, message fragment)
            (
                "maglev_table_size = 65537",
                "maglev_table_size = 65536",
                14,
                "vip[0].maglev_table_size",
                "not a prime",
            ),
            (
                "maglev_table_size = 65537",
                "maglev_table_size = 131071",
                14,
                "vip[0].maglev_table_size",
                "out of range",
            ),
            (
                "port = 6443",
                "port = 70000",
                11,
                "vip[0].port",
                "out of range",
            ),
            (
                "weight = 2",
                "weight = -1",
                22,
                "vip[0].backend[1].weight",
                "out of range",
            ),
            (
                "address = \"198.18.0.12\"",
                "address = \"198.18.0.11\"",
                21,
                "vip[0].backend[1].address",
                "duplicate backend",
            ),
            (
                "interface = \"eth0\"",
                "interface = \"a-very-long-interface-name\"",
                3,
                "agent.interface",
                "not a valid interface",
            ),
            (
                "pin_dir = \"/sys/fs/bpf/xdp-lb\"",
                "pin_dir = \"relative\"",
                5,
                "agent.pin_dir",
                "absolute",
            ),
            (
                "name = \"apiserver\"",
                "name = \"api server\"",
                9,
                "vip[0].name",
                "not a valid name",
            ),
            (
                "weight = 1",
                "weight = 1\nport = 8443",
                19,
                "vip[0].backend[0].port",
                "needs forwarding = \"nat\"",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_port_range = \"40000-30000\"",
                7,
                "agent.snat_port_range",
                "not a port range",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nnat_closing_timeout = \"100ms\"",
                7,
                "agent.nat_closing_timeout",
                "out of range",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_address = \"127.0.0.1\"",
                7,
                "agent.snat_address",
                "cannot be a source address",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 0",
                6,
                "agent.flow_table_size",
                "out of range",
            ),
        ];
        for (from, to, line, key, fragment) in cases {
            let err = broken(from, to);
            assert_eq!(err.line, Some(*line), "{err}");
            assert_eq!(err.key.as_deref(), Some(*key), "{err}");
            assert!(err.message.contains(fragment), "{err}");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        }
    }

    #[test]
    fn serde_level_mistakes_name_the_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "xdp_mode = \"auto\"",
                "xdp_mode = \"turbo\"",
                4,
                "unknown variant `turbo`",
            ),
            ("weight = 1", "wieght = 1", 18, "unknown field `wieght`"),
            (
                "address = \"198.18.0.100\"",
                "address = \"198.18.0.300\"",
                10,
                "invalid IPv4 address",
            ),
            ("port = 6443", "port = \"https\"", 11, "invalid type"),
            (
                "protocol = \"tcp\"",
                "protocol = \"sctp\"",
                12,
                "unknown variant `sctp`",
            ),
            ("[agent]", "[agnet]", 2, "unknown field `agnet`"),
            ("port = 6443", "port = = 6443", 11, ""),
        ];
        for (from, to, line, fragment) in cases {
            let err = broken(from, to);
            assert_eq!(err.line, Some(*line), "{err}");
            assert!(err.message.contains(fragment), "{err}");
        }
    }

    #[test]
    fn duplicate_vip_endpoint_and_name_are_rejected() {
        let twice =
            format!("{GOOD}\n[[vip]]\nname = \"other\"\naddress = \"198.18.0.100\"\nport = 6443\n");
        let err = parse_str(&twice).unwrap_err();
        assert!(err.message.contains("already used"), "{err}");
        let same_name = format!(
            "{GOOD}\n[[vip]]\nname = \"apiserver\"\naddress = \"198.18.0.101\"\nport = 6443\n"
        );
        let err = parse_str(&same_name).unwrap_err();
        assert!(err.message.contains("duplicate VIP name"), "{err}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let err =
            parse_str("[[vip]]\nname = \"a\"\naddress = \"198.18.0.1\"\nport = 1\n").unwrap_err();
        assert!(err.message.contains("missing field `agent`"), "{err}");
        let err = parse_str("[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\nport = 1\n")
            .unwrap_err();
        assert!(err.message.contains("missing field `address`"), "{err}");
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn too_many_vips_for_max_vips() {
        let text = "[agent]\ninterface = \"eth0\"\nmax_vips = 1\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.1\"\nport = 1\n[[vip]]\nname = \"b\"\naddress = \"198.18.0.2\"\nport = 1\n";
        let err = parse_str(text).unwrap_err();
        assert!(err.message.contains("max_vips"), "{err}");
        assert_eq!(err.line, Some(8), "{err}");
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535));
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    const BASE: &str = "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 6443\n";

    fn with_check(check: &str) -> Result<Config, ConfigError> {
        parse(
            Path::new("h.toml"),
            &format!(
                "{BASE}[vip.health_check]\n{check}\n[[vip.backend]]\naddress = \"198.18.0.11\"\nstate = \"drain\"\n"
            ),
        )
    }

    #[test]
    fn the_issue_example_parses_and_defaults_follow_haproxy() {
        let c = with_check("type = \"http\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 2\nfall = 3\nport = 8080\nhttp_path = \"/healthz\"\nhttp_expect_status = 200\nstart_down = false").unwrap();
        let h = &c.vips[0].health_check;
        assert_eq!(
            (h.kind, h.interval, h.timeout, h.rise, h.fall, h.port),
            (
                CheckType::Http,
                Duration::from_secs(2),
                Duration::from_secs(1),
                2,
                3,
                Some(8080)
            )
        );
        assert_eq!(h.http_path, "/healthz");
        assert_eq!(c.vips[0].backends[0].state, AdminState::Drain);
        let d = with_check("interval = \"500ms\"").unwrap();
        let h = &d.vips[0].health_check;
        assert_eq!(
            (h.kind, h.interval, h.timeout, h.rise, h.fall),
            (
                CheckType::Tcp,
                Duration::from_millis(500),
                Duration::from_millis(500),
                2,
                3
            )
        );
    }

    #[test]
    fn health_check_mistakes_name_line_and_key() {
        let cases = [
            ("interval = \"2 parsecs\"", 8, "invalid duration"),
            ("type = \"icmp\"", 8, "unknown variant `icmp`"),
            ("rise = 0", 8, "vip[0].health_check.rise"),
            (
                "interval = \"1s\"\ntimeout = \"2s\"",
                9,
                "longer than the interval",
            ),
            ("http_path = \"healthz\"", 8, "must start with '/'"),
            ("http_expect_status = 700", 8, "out of range"),
            ("interval = \"1ms\"", 8, "out of range"),
        ];
        for (text, line, fragment) in cases {
            let err = with_check(text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text}: {err}");
            assert!(err.to_string().contains(fragment), "{text}: {err}");
        }
        let err = parse(
            Path::new("h.toml"),
            &format!("{BASE}[[vip.backend]]\naddress = \"198.18.0.11\"\nstate = \"sleeping\"\n"),
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown variant `sleeping`") && err.line == Some(9),
            "{err}"
        );
    }
}

#[cfg(test)]
mod vrrp_tests {
    use super::*;
    use crate::vrrp::packet::{ChecksumMode, Version};

    const ISSUE_EXAMPLE: &str = r#"
[agent]
interface = "eth0"

[[vrrp]]
name = "vi-apiserver"
interface = "eth0"
vrid = 51
priority = 150                    # 1..255
version = 3                       # 3 | 2
advert_interval = "1s"
preempt = true
preempt_delay = "0s"
virtual_addresses = ["198.18.0.100/24"]
unicast_peers = []
checksum = "rfc9568"
garp_count = 5
garp_repeat_delay = "5s"
track_dataplane = true
track_weight = 0
notify = "/etc/xdp-lb/notify"
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = parse(Path::new("v.toml"), ISSUE_EXAMPLE).unwrap();
        let v = &c.vrrp[0];
        assert_eq!(
            (v.name.as_str(), v.vrid, v.priority, v.version),
            ("vi-apiserver", 51, 150, Version::V3)
        );
        assert_eq!(
            v.virtual_addresses,
            vec![("198.18.0.100".parse().unwrap(), 24)]
        );
        assert_eq!(
            (v.checksum, v.garp_count, v.track_dataplane),
            (ChecksumMode::Rfc9568, 5, true)
        );
        assert_eq!(v.notify.as_deref(), Some(Path::new("/etc/xdp-lb/notify")));
    }

    #[test]
    fn vrrp_mistakes_name_line_and_key() {
        let cases = [
            ("vrid = 51", "vrid = 0", "vrrp[0].vrid", "out of range"),
            (
                "version = 3 ",
                "version = 4 ",
                "vrrp[0].version",
                "not a VRRP version",
            ),
            (
                "advert_interval = \"1s\"",
                "advert_interval = \"15ms\"",
                "vrrp[0].advert_interval",
                "10 ms steps",
            ),
            ("version = 3 ", "version = 2 ", "", ""),
            (
                "checksum = \"rfc9568\"",
                "checksum = \"crc32\"",
                "",
                "unknown variant `crc32`",
            ),
            (
                "virtual_addresses = [\"198.18.0.100/24\"]",
                "virtual_addresses = [\"198.18.0.100/33\"]",
                "vrrp[0].virtual_addresses",
                "not an IPv4 address",
            ),
            (
                "virtual_addresses = [\"198.18.0.100/24\"]",
                "virtual_addresses = []",
                "vrrp[0].virtual_addresses",
                "at least one",
            ),
            (
                "notify = \"/etc/xdp-lb/notify\"",
                "notify = \"notify.sh\"",
                "vrrp[0].notify",
                "absolute",
            ),
        ];
        for (from, to, key, fragment) in cases {
            let text = ISSUE_EXAMPLE.replacen(from, to, 1);
            match parse(Path::new("v.toml"), &text) {
                Ok(c) => {
                    assert!(key.is_empty(), "{to} should fail");
                    assert_eq!(c.vrrp[0].version, Version::V2);
                }
                Err(e) => {
                    assert!(e.line.is_some(), "{e}");
                    assert!(
                        e.to_string().contains(key) && e.to_string().contains(fragment),
                        "{to}: {e}"
                    );
                }
            }
        }
        // v2 intervals are whole seconds.
        let v2 = ISSUE_EXAMPLE
            .replacen("version = 3 ", "version = 2 ", 1)
            .replacen("\"1s\"", "\"1500ms\"", 1);
        let e = parse(Path::new("v.toml"), &v2).unwrap_err();
        assert!(e.to_string().contains("whole seconds"), "{e}");
    }
}
