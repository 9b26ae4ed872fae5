//! `[agent]`: the node itself — its interface, maps, sockets, flow log, NAT source and
//! timeouts — validated.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use xdp_lb_common::{DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_VIPS};

use super::{
    ConfigError,
    fields::{family, nat_timeout, port_range, ranged, unusable, valid_interface},
    file::ConfigFile,
    raw::{OneOrMany, RawAgent},
};

/// Largest `agent.max_vips`: each VIP reserves 2 × 65537 × 4 bytes of Maglev table (512 KiB).
pub const MAX_MAX_VIPS: u32 = 512;
/// Largest `agent.flow_table_size` (about 4 GiB of kernel memory with hash overhead).
pub const MAX_FLOW_TABLE_SIZE: u32 = 1 << 26;

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
    pub listen: Option<SocketAddr>,
    /// Log new flows and drops (haproxy's connection log), at most `flow_log_rate` events per
    /// CPU per second.
    pub flow_log: bool,
    pub flow_log_rate: u32,
    /// DSR flow-table inserts per CPU per second (0: no cap).
    pub flow_insert_rate: u32,
    /// NAT: the source address of connections to backends, one per family; a family without
    /// one takes the first address of that family of `interface`, looked up at start.
    pub snat_address: FamilyAddresses,
    /// Tunnel VIPs: the outer source address of encapsulated packets, per family (None: the
    /// interface's).
    pub tunnel_source: FamilyAddresses,
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

/// An address per family (`agent.snat_address`, `agent.tunnel_source`; None: the
/// interface's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FamilyAddresses {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl FamilyAddresses {
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

pub(super) fn agent(file: &ConfigFile<'_>, raw: &RawAgent) -> Result<AgentConfig, ConfigError> {
    Ok(AgentConfig {
        interface: valid_interface(file, &raw.interface, "agent.interface".into())?,
        xdp_mode: raw.xdp_mode.unwrap_or(XdpMode::Auto),
        pin_dir: absolute(
            file,
            raw.pin_dir.as_ref(),
            "agent.pin_dir",
            "/sys/fs/bpf/xdp-lb",
        )?,
        flow_table_size: sized(
            file,
            raw.flow_table_size.as_ref(),
            "flow_table_size",
            DEFAULT_FLOW_TABLE_SIZE,
        )?,
        flow_table_size_ipv6: sized(
            file,
            raw.flow_table_size_ipv6.as_ref(),
            "flow_table_size_ipv6",
            DEFAULT_FLOW_TABLE_SIZE_IPV6,
        )?,
        max_vips: match &raw.max_vips {
            Some(v) => ranged(file, v, "agent.max_vips", 1..=MAX_MAX_VIPS)?,
            None => DEFAULT_MAX_VIPS,
        },
        control_socket: absolute(
            file,
            raw.control_socket.as_ref(),
            "agent.control_socket",
            DEFAULT_CONTROL_SOCKET,
        )?,
        listen: listen(file, raw.listen.as_ref())?,
        flow_log: raw.flow_log.unwrap_or(false),
        flow_insert_rate: match &raw.flow_insert_rate {
            Some(v) => ranged(file, v, "agent.flow_insert_rate", 0..=100_000_000)?,
            None => 0,
        },
        flow_log_rate: match &raw.flow_log_rate {
            Some(v) => ranged(file, v, "agent.flow_log_rate", 1..=1_000_000)?,
            None => 1000,
        },
        snat_address: family_addresses(file, &raw.snat_address, "agent.snat_address")?,
        tunnel_source: family_addresses(file, &raw.tunnel_source, "agent.tunnel_source")?,
        snat_port_range: match &raw.snat_port_range {
            Some(r) => port_range(file, r, "agent.snat_port_range")?,
            None => DEFAULT_SNAT_PORT_RANGE,
        },
        nat_syn_timeout: nat_timeout(file, &raw.nat_syn_timeout, "nat_syn_timeout", 10)?,
        nat_established_timeout: nat_timeout(
            file,
            &raw.nat_established_timeout,
            "nat_established_timeout",
            3600,
        )?,
        nat_closing_timeout: nat_timeout(
            file,
            &raw.nat_closing_timeout,
            "nat_closing_timeout",
            10,
        )?,
        nat_udp_timeout: nat_timeout(file, &raw.nat_udp_timeout, "nat_udp_timeout", 30)?,
    })
}

/// An absolute path (`key`), or `default`.
fn absolute(
    file: &ConfigFile<'_>,
    value: Option<&Spanned<PathBuf>>,
    key: &str,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    match value {
        Some(p) if !p.get_ref().is_absolute() => {
            let why = if key == "agent.pin_dir" {
                "must be an absolute path on a bpf filesystem"
            } else {
                "must be an absolute path"
            };
            Err(file.at(p, key, why))
        }
        Some(p) => Ok(p.get_ref().clone()),
        None => Ok(PathBuf::from(default)),
    }
}

/// A flow table's size (`agent.KEY`), or `default`.
fn sized(
    file: &ConfigFile<'_>,
    value: Option<&Spanned<i64>>,
    key: &str,
    default: u32,
) -> Result<u32, ConfigError> {
    match value {
        Some(v) => ranged(file, v, &format!("agent.{key}"), 1..=MAX_FLOW_TABLE_SIZE),
        None => Ok(default),
    }
}

/// `agent.listen`: an address:port; "" turns the pages off.
fn listen(
    file: &ConfigFile<'_>,
    value: Option<&Spanned<String>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value {
        Some(l) if l.get_ref().is_empty() => Ok(None),
        Some(l) => Ok(Some(l.get_ref().parse().map_err(|_| {
            file.at(
                l,
                "agent.listen",
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9100\"; \"\" turns it off)",
                    l.get_ref()
                ),
            )
        })?)),
        None => Ok(Some(DEFAULT_LISTEN.parse().expect("valid default"))),
    }
}

/// `agent.snat_address` or `agent.tunnel_source`: one address, or a list of at most one per
/// family.
fn family_addresses(
    file: &ConfigFile<'_>,
    raw: &Option<Spanned<OneOrMany>>,
    key: &str,
) -> Result<FamilyAddresses, ConfigError> {
    let Some(raw) = raw else {
        return Ok(FamilyAddresses::default());
    };
    let list: Vec<&String> = match raw.get_ref() {
        OneOrMany::One(a) => vec![&a],
        OneOrMany::Many(v) => v.iter().collect(),
    };
    let mut out = FamilyAddresses::default();
    for text in list {
        let a: IpAddr = text
            .parse()
            .map_err(|_| file.at(raw, key, format!("{text:?} is not an IP address")))?;
        if let Some(why) = unusable(a, true) {
            return Err(file.at(raw, key, format!("{a} cannot be a source address: {why}")));
        }
        let taken = match a {
            IpAddr::V4(v4) => out.v4.replace(v4).is_some(),
            IpAddr::V6(v6) => out.v6.replace(v6).is_some(),
        };
        if taken {
            return Err(file.at(
                raw,
                key,
                format!("two {} addresses: give at most one per family", family(a)),
            ));
        }
    }
    Ok(out)
}
