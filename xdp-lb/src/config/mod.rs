//! The configuration file: TOML, parsed in two steps.
//!
//! 1. `toml` + serde into the `Raw*` structs, which mirror the file and keep the position of
//!    every value that a later check may complain about (`Spanned`). Syntax errors, unknown keys
//!    and wrong types are reported here, with toml's own position.
//! 2. [`validate`] turns them into [`Config`], checking what serde cannot (primes, ranges,
//!    duplicates, limits) and naming the line and key of the first value that is wrong.
//!
//! Nothing is applied until both steps succeed, so a bad file never half-applies.

mod announce;
mod health_check;
mod place;
mod raw;
mod sync;
#[cfg(test)]
mod tests;
mod validate;
mod vrrp;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use self::{
    announce::{DEFAULT_ANNOUNCE_GRACE, DEFAULT_ANNOUNCE_TABLE, DEFAULT_ENGINE_SOCKET},
    place::is_prime,
    sync::{
        DEFAULT_SNAPSHOT_WAIT, DEFAULT_SYNC_BATCH, DEFAULT_SYNC_PORT, DEFAULT_SYNC_QUEUE,
        DEFAULT_SYNC_RATE,
    },
};
use self::{place::Place, raw::RawConfig};

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

/// `[announce]`: this node offers VIPs to a routing engine (BIRD, FRR) as `/32` routes in a
/// kernel table of their own, which the engine learns and advertises (README, "Scale out").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// The kernel routing table the VIP routes go into (never one this host routes by).
    pub table: u32,
    /// The device the routes name (`dev`): the one the VIP's traffic arrives on.
    pub interface: String,
    /// Names of the VIPs announced (every VIP unless `vips` lists some).
    pub vips: Vec<String>,
    /// On SIGTERM: how long to keep forwarding after the withdrawal, before detaching.
    pub grace: Duration,
    /// A Unix socket of the routing engine, checked for "is it running?"; None: not checked.
    pub engine_socket: Option<PathBuf>,
}

/// `[sync]`: the other LB nodes this one sends its new flows to and takes theirs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub peers: Vec<std::net::IpAddr>,
    /// UDP, the same on every node.
    pub port: u16,
    /// The shared key (root-only; read and checked when the config loads).
    pub key_file: PathBuf,
    /// The local address to send from and listen on; None: every address.
    pub source: Option<std::net::IpAddr>,
    pub batch_interval: Duration,
    /// Per peer.
    pub max_datagrams_per_second: u32,
    /// Flows waiting to be sent (beyond: dropped, counted).
    pub queue: u32,
    /// At start, how long to wait for a peer's snapshot before VRRP may take the addresses;
    /// zero: no snapshot is asked for.
    pub snapshot_wait: Duration,
}

/// `[[vrrp]]`: one VRRP instance (a virtual router), keepalived's `vrrp_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Version,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Address and prefix length; all IPv4 or all IPv6 (the instance's family).
    pub virtual_addresses: Vec<(std::net::IpAddr, u8)>,
    /// Non-empty: unicast adverts to these peers instead of multicast (the instance's family).
    pub unicast_peers: Vec<std::net::IpAddr>,
    pub checksum: ChecksumMode,
    pub garp_count: u32,
    pub garp_repeat_delay: Duration,
    pub track_dataplane: bool,
    /// 0: tracking failure means Fault; > 0: subtract this from the priority instead.
    pub track_weight: u8,
    pub notify: Option<PathBuf>,
}

impl VrrpConfig {
    /// Whether the instance runs over IPv6 (its virtual addresses are IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_addresses
            .first()
            .is_some_and(|(a, _)| a.is_ipv6())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub interface: String,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    pub flow_table_size: u32,
    /// The IPv6 flow table's size (`FLOWS6`, preallocated like `FLOWS`).
    pub flow_table_size_ipv6: u32,
    pub max_vips: u32,
    /// The agent's control socket (`xdp-lb reload`, `xdp-lb status`), root-only.
    pub control_socket: PathBuf,
    /// Where `/metrics`, `/stats` and `/healthz` are served; None: not served.
    pub listen: Option<std::net::SocketAddr>,
    /// Log new flows and drops (haproxy's connection log), at most `flow_log_rate` events per
    /// CPU per second.
    pub flow_log: bool,
    pub flow_log_rate: u32,
    /// DSR flow-table inserts per CPU per second (0: no cap).
    pub flow_insert_rate: u32,
    /// NAT: the source address of connections to backends, one per family; a family without
    /// one takes the first address of that family of `interface`, looked up at start.
    pub snat_address: SnatAddresses,
    /// NAT: the source ports of connections to backends (inclusive).
    pub snat_port_range: (u16, u16),
    /// NAT flow expiry, measured from the flow's last packet: half-open (only the SYN seen),
    /// established, and closing (FIN or RST seen).
    pub nat_syn_timeout: Duration,
    pub nat_established_timeout: Duration,
    pub nat_closing_timeout: Duration,
    /// A UDP NAT flow's: from its last datagram in either direction.
    pub nat_udp_timeout: Duration,
}

/// Default `agent.flow_table_size_ipv6`: 65536 entries in each of `FLOWS6` and NAT66's two
/// half-open LRUs, about 11 MB each of kernel memory that an IPv4-only node pays too (an LRU
/// map is allocated up front).
pub const DEFAULT_FLOW_TABLE_SIZE_IPV6: u32 = 1 << 16;

/// `agent.snat_address`: NAT's source address for each family (None: the interface's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnatAddresses {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<std::net::Ipv6Addr>,
}

impl SnatAddresses {
    /// Whether either family has one.
    pub fn any(&self) -> bool {
        self.v4.is_some() || self.v6.is_some()
    }
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
    Udp,
}

impl Protocol {
    /// The IP protocol number (the `proto` of the maps' keys).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => xdp_lb_common::IPPROTO_TCP,
            Protocol::Udp => xdp_lb_common::IPPROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// IPv4 or IPv6; its backends are of the same family.
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub maglev_table_size: u32,
    /// `slowstart`: a backend that comes up (or is added) takes its share of new flows in
    /// steps over this time; zero: at once.
    pub slowstart: Duration,
    /// Sources that may open flows (empty: any source not denied).
    pub allow: Vec<Cidr>,
    /// Sources that may not (the longest matching prefix of both lists decides).
    pub deny: Vec<Cidr>,
    /// `new_flows_per_source`: how many new flows one source (prefix) may open.
    pub limit: Option<SourceLimit>,
    pub health_check: HealthCheckConfig,
    pub backends: Vec<BackendConfig>,
}

/// A per-source new-flow limit: `count` per `per` (a second or a minute), `burst` at once,
/// sources counted together per `/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimit {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
    /// Sources in one prefix of this length share a bucket: `limit_prefix_v4` for an IPv4 VIP,
    /// `limit_prefix_v6` for an IPv6 one.
    pub prefix: u8,
}

/// A prefix of either family: `198.51.100.0/24`, `2001:db8::/32`, or an address alone (`/32`,
/// `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Whether `a` is inside this prefix (never across families).
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(a) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(a) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/len` or an address (`/32`), without host bits (a `198.51.100.1/24` is most
    /// likely a typo for `.0/24` or `/32`).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not an IP address or prefix (e.g. \"198.51.100.0/24\", \"2001:db8::/32\")")
        })?;
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let len: u8 = match len.map(str::parse::<u8>) {
            None => max,
            Some(Ok(n)) if n <= max => n,
            _ => return Err(format!("{text:?}: the prefix length must be 0..={max}")),
        };
        let network = Cidr {
            addr: match addr {
                IpAddr::V4(a) => {
                    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                    IpAddr::V4((u32::from(a) & mask).into())
                }
                IpAddr::V6(a) => {
                    let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                    IpAddr::V6((u128::from(a) & mask).into())
                }
            },
            len,
        };
        if network.addr != addr {
            return Err(format!(
                "{text:?} has host bits set: did you mean {network} (or {addr}/{max})?"
            ));
        }
        Ok(network)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl VipConfig {
    /// How long `backend` takes to reach its full share after it comes up (haproxy's
    /// `slowstart`): its own setting, else the VIP's; zero: at once.
    pub fn slowstart_of(&self, backend: &BackendConfig) -> Duration {
        backend.slowstart.unwrap_or(self.slowstart)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// The port connections go to: the VIP's port unless a NAT VIP says otherwise.
    pub port: u16,
    pub weight: u32,
    pub state: AdminState,
    /// Overrides the VIP's `slowstart` for this backend.
    pub slowstart: Option<Duration>,
}

/// The operator's word on a backend, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Drain => "drain",
            AdminState::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
    /// HTTP over TLS (rustls): the apiserver's /readyz.
    Https,
    /// A DNS query over UDP (keepalived's DNS_CHECK): `dns_name`, `dns_type`,
    /// `dns_expect_rcode`.
    Dns,
    None,
}

impl CheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Dns => "dns",
            CheckType::None => "none",
        }
    }
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
    /// `type = "https"` only: how the TLS handshake is made and verified.
    pub tls: Option<TlsCheckConfig>,
    /// `type = "dns"` only: the query and the answer that means up.
    pub dns: Option<DnsCheckConfig>,
}

/// The query of a `dns` check: the backend is up when an answer to it with `rcode` arrives
/// within the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheckConfig {
    /// `dns_name`, without a trailing dot ("" for the root, ".").
    pub name: String,
    /// `dns_type` as its number (A = 1, AAAA = 28, ...).
    pub qtype: u16,
    /// `dns_expect_rcode` as its number (NOERROR = 0, NXDOMAIN = 3, ...).
    pub rcode: u8,
}

/// The TLS side of an `https` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCheckConfig {
    /// SNI and the name the certificate must carry; None: the backend's address (no SNI is
    /// sent for an address, and the certificate must carry it as an IP SAN).
    pub server_name: Option<String>,
    /// PEM CA bundle to verify against; None: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// false only when the file says `tls_verify = false`: any certificate is accepted.
    pub verify: bool,
    /// Client certificate and key (PEM) for backends that want one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
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
            tls: None,
            dns: None,
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

/// `[[vrrp]] version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V2,
    V3,
}

/// `[[vrrp]] checksum`: how the VRRPv3 checksum is computed over IPv4 (VRRP.md: the interop
/// trap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// RFC 9568 §5.2.8: over the VRRP message only.
    Rfc9568,
    /// With the IPv4 pseudo-header, as RFC 5798 §5.2.8 read and keepalived does by default
    /// (keepalived's `v3_checksum_as_v2` switches it to the RFC 9568 form).
    PseudoHeader,
}

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
    let place = Place::new(path, text);
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
    let mut config = validate::validate(&place, raw)?;
    config.warnings = place.warnings.take();
    config.positions = place.positions.take();
    Ok(config)
}
