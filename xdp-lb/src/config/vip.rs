//! `[[vip]]`: a virtual service — its address, port, protocol, forwarding mode, Maglev table,
//! source lists, per-source limit and health check — validated (its backends: `backend.rs`).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use xdp_lb_common::{
    AnyVipKey, MAGLEV_MAX_TABLE_SIZE, MAX_BACKENDS, VipKey, VipKey6, ipv4_be, port_be,
};

use super::{
    BackendConfig, CheckType, ConfigError, HealthCheckConfig,
    backend::backends,
    cidr::{Cidr, CidrError},
    fields::{family, is_prime, ranged, slowstart, unusable, valid_name},
    file::ConfigFile,
    health_check::health_check,
    raw::RawVip,
};

/// Smallest `maglev_table_size`: below this the per-backend shares are too coarse to honour weights.
pub const MIN_MAGLEV_TABLE_SIZE: u32 = 251;

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
    /// The client's packet inside an outer IP header to the backend (IPIP, IP6IP6, IPv4 in
    /// IPv6): backends anywhere in the routed network answer clients directly.
    Ipip,
    /// The client's packet inside outer IP and UDP headers (GUE variant 1) to `gue_port`: as
    /// `ipip`, and the backend's NIC spreads flows by the UDP source port.
    Gue,
}

impl Forwarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Forwarding::Dsr => "dsr",
            Forwarding::Nat => "nat",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue => "gue",
        }
    }

    /// Forwards through a tunnel (`ipip` or `gue`).
    pub fn is_tunnel(self) -> bool {
        matches!(self, Forwarding::Ipip | Forwarding::Gue)
    }

    /// Keeps the client's packet as it is, the VIP's port included (all but NAT).
    pub fn keeps_port(self) -> bool {
        self != Forwarding::Nat
    }
}

/// A tunnel VIP's settings (`forwarding = "ipip"` or `"gue"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    /// `tunnel_mtu`: the largest outer packet toward the backends (None: the interface's MTU).
    /// A client packet that would exceed it once encapsulated is answered with an ICMP
    /// "fragmentation needed" or ICMPv6 "packet too big".
    pub mtu: Option<u16>,
    /// `mss_clamp`: SYNs to the VIP offer at most the MSS that fits `tunnel_mtu`.
    pub mss_clamp: bool,
    /// GUE: the backends' UDP port (`gue_port`, default 6080); None for IPIP.
    pub gue_port: Option<u16>,
}

/// The smallest `tunnel_mtu` of an IPv4 VIP: the inner packets must be allowed 576 bytes (RFC
/// 791's minimum datagram every host accepts) plus the outer headers (IPv6's 40 and GUE's 8 at
/// most). An IPv6 VIP's inner packets need 1280 (RFC 8200 §5): 1328.
pub const MIN_TUNNEL_MTU_V4: u16 = 576 + 48;
pub const MIN_TUNNEL_MTU_V6: u16 = 1280 + 48;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    /// IPv4 or IPv6; its backends are of the same family.
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    /// `forwarding = "ipip"` or `"gue"` only.
    pub tunnel: Option<TunnelConfig>,
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
impl VipConfig {
    /// The kernel-side identity of the VIP: its key in `VIPS` or `VIPS6`.
    pub fn key(&self) -> AnyVipKey {
        match self.address {
            IpAddr::V4(a) => AnyVipKey::V4(VipKey {
                addr_be: ipv4_be(a.octets()),
                port_be: port_be(self.port),
                proto: self.protocol.number(),
                _pad: 0,
            }),
            IpAddr::V6(a) => AnyVipKey::V6(VipKey6 {
                addr: a.octets(),
                port_be: port_be(self.port),
                proto: self.protocol.number(),
                _pad: 0,
            }),
        }
    }

    /// How long `backend` takes to reach its full share after it comes up (haproxy's
    /// `slowstart`): its own setting, else the VIP's; zero: at once.
    pub fn slowstart_of(&self, backend: &BackendConfig) -> Duration {
        backend.slowstart.unwrap_or(self.slowstart)
    }
}

/// What the VIPs before this one hold, for the checks across VIPs.
#[derive(Default)]
pub(super) struct SeenVips {
    names: BTreeSet<String>,
    /// (address, port, protocol).
    endpoints: BTreeSet<(IpAddr, u16, u8)>,
    backends: usize,
}

/// The `i`-th `[[vip]]`.
pub(super) fn vip(
    file: &ConfigFile<'_>,
    i: usize,
    raw: &Spanned<RawVip>,
    seen: &mut SeenVips,
) -> Result<VipConfig, ConfigError> {
    let vip_span = raw.span();
    let rv = raw.get_ref();
    let key = |field: &str| format!("vip[{i}].{field}");
    let (name, address, port, protocol) = identity(file, rv, &key, seen)?;
    let forwarding = rv
        .forwarding
        .as_ref()
        .map_or(Forwarding::Dsr, |f| *f.get_ref());
    let maglev_table_size = table_size(file, rv, &key)?;
    let tunnel = tunnel(file, rv, &key, forwarding, address)?;
    let backends = backends(file, i, rv, (&name, address, port, forwarding))?;
    if backends.is_empty() {
        file.warn(
            vip_span.clone(),
            key("backend"),
            format!(
                "VIP {name:?} has no backends: its new connections are dropped (counter drop_no_backend)"
            ),
        );
    }
    if backends.len() as u32 >= maglev_table_size {
        return Err(file.error(
            Some(vip_span),
            Some(key("backend")),
            format!(
                "{} backends need a larger maglev_table_size than {maglev_table_size}",
                backends.len()
            ),
        ));
    }
    seen.backends += backends.len();
    if seen.backends > MAX_BACKENDS as usize {
        return Err(file.error(
            Some(vip_span),
            Some(key("backend")),
            format!("more than {MAX_BACKENDS} backends in all VIPs"),
        ));
    }
    let (allow, deny) = source_lists(file, rv, &key, address)?;
    let health_check = check(file, rv, &key, protocol, forwarding)?;
    Ok(VipConfig {
        name,
        address,
        port,
        protocol,
        forwarding,
        tunnel,
        maglev_table_size,
        slowstart: rv
            .slowstart
            .as_ref()
            .map(|s| slowstart(file, s, &key("slowstart")))
            .transpose()?
            .unwrap_or_default(),
        allow,
        deny,
        limit: source_limit(file, rv, &key, address)?,
        health_check,
        backends,
    })
}

/// Name, address, port and protocol, each unique where it must be.
fn identity(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    seen: &mut SeenVips,
) -> Result<(String, IpAddr, u16, Protocol), ConfigError> {
    let name = valid_name(file, &rv.name, key("name"))?;
    if !seen.names.insert(name.clone()) {
        return Err(file.at(
            &rv.name,
            key("name"),
            format!("duplicate VIP name {name:?}"),
        ));
    }
    let address = *rv.address.get_ref();
    if let Some(why) = unusable(address, false) {
        return Err(file.at(
            &rv.address,
            key("address"),
            format!("{address} cannot be a VIP: {why}"),
        ));
    }
    let port = ranged(file, &rv.port, &key("port"), 1..=65535)? as u16;
    let protocol = rv.protocol.unwrap_or(Protocol::Tcp);
    if !seen.endpoints.insert((address, port, protocol as u8)) {
        return Err(file.at(
            &rv.port,
            key("port"),
            format!(
                "{address}:{port}/{} is already used by another VIP",
                protocol.as_str()
            ),
        ));
    }
    Ok((name, address, port, protocol))
}

/// `tunnel_mtu`, `mss_clamp` and `gue_port`: a tunnel VIP's settings, refused on other VIPs.
fn tunnel(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    forwarding: Forwarding,
    address: IpAddr,
) -> Result<Option<TunnelConfig>, ConfigError> {
    if !forwarding.is_tunnel() {
        let set = [
            ("tunnel_mtu", rv.tunnel_mtu.as_ref().map(Spanned::span)),
            ("mss_clamp", rv.mss_clamp.as_ref().map(Spanned::span)),
            ("gue_port", rv.gue_port.as_ref().map(Spanned::span)),
        ];
        if let Some((field, Some(span))) = set.into_iter().find(|(_, s)| s.is_some()) {
            return Err(file.error(
                Some(span),
                Some(key(field)),
                format!(
                    "{field} needs forwarding = \"ipip\" or \"gue\" (this VIP forwards by {})",
                    forwarding.as_str()
                ),
            ));
        }
        return Ok(None);
    }
    let min = if address.is_ipv6() {
        MIN_TUNNEL_MTU_V6
    } else {
        MIN_TUNNEL_MTU_V4
    };
    let mtu = rv
        .tunnel_mtu
        .as_ref()
        .map(|v| ranged(file, v, &key("tunnel_mtu"), u32::from(min)..=65535))
        .transpose()?
        .map(|m| m as u16);
    let gue_port = match (&rv.gue_port, forwarding) {
        (Some(v), Forwarding::Gue) => Some(ranged(file, v, &key("gue_port"), 1..=65535)? as u16),
        (None, Forwarding::Gue) => Some(xdp_lb_common::DEFAULT_GUE_PORT),
        (Some(v), _) => {
            return Err(file.at(v, key("gue_port"), "gue_port needs forwarding = \"gue\""));
        }
        (None, _) => None,
    };
    Ok(Some(TunnelConfig {
        mtu,
        mss_clamp: rv.mss_clamp.as_ref().is_some_and(|v| *v.get_ref()),
        gue_port,
    }))
}

/// `maglev_table_size`: a prime in range (default the largest).
fn table_size(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
) -> Result<u32, ConfigError> {
    let Some(v) = &rv.maglev_table_size else {
        return Ok(MAGLEV_MAX_TABLE_SIZE);
    };
    let size = ranged(
        file,
        v,
        &key("maglev_table_size"),
        MIN_MAGLEV_TABLE_SIZE..=MAGLEV_MAX_TABLE_SIZE,
    )?;
    if !is_prime(size) {
        return Err(file.at(
            v,
            key("maglev_table_size"),
            format!("{size} is not a prime (Maglev needs a prime table size; e.g. 65537, 16381, 4093, 1021)"),
        ));
    }
    Ok(size)
}

/// `allow` and `deny`, with no prefix in both.
fn source_lists(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    address: IpAddr,
) -> Result<(Vec<Cidr>, Vec<Cidr>), ConfigError> {
    let allow = cidrs(file, &rv.allow, &key("allow"), address)?;
    let deny = cidrs(file, &rv.deny, &key("deny"), address)?;
    if let Some((j, c)) = deny.iter().enumerate().find(|(_, c)| allow.contains(c)) {
        return Err(file.at(
            &rv.deny[j],
            key(&format!("deny[{j}]")),
            format!("{c} is in both lists: keep it in one"),
        ));
    }
    Ok((allow, deny))
}

/// `[vip.health_check]`. A UDP service answers no TCP connect on its port unless it also
/// serves TCP there: its check must say what it probes.
fn check(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    protocol: Protocol,
    forwarding: Forwarding,
) -> Result<HealthCheckConfig, ConfigError> {
    let mut health_check = match &rv.health_check {
        Some(h) => health_check(file, h.get_ref(), h.span(), &key("health_check"))?,
        None => HealthCheckConfig::default(),
    };
    if protocol == Protocol::Udp
        && matches!(
            health_check.kind,
            CheckType::Tcp | CheckType::Http | CheckType::Https
        )
        && health_check.port.is_none()
    {
        let why = format!(
            "a UDP VIP's backends are checked by type = \"dns\", or by a {} check on a TCP \
             port you name with health_check.port, or not at all (type = \"none\")",
            health_check.kind.as_str()
        );
        return Err(match &rv.health_check {
            Some(h) => file.error(Some(h.span()), Some(key("health_check.port")), why),
            None => file.at(&rv.address, key("health_check"), why),
        });
    }
    health_check.through_tunnel =
        through_tunnel(file, rv, key, protocol, forwarding, &health_check)?;
    Ok(health_check)
}

/// `health_check.through_tunnel`: on by default for a TCP tunnel VIP with a check (the probe
/// is a TCP SYN to the VIP's port); a UDP tunnel VIP takes it only with a TCP `port` to probe.
fn through_tunnel(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    protocol: Protocol,
    forwarding: Forwarding,
    check: &HealthCheckConfig,
) -> Result<bool, ConfigError> {
    let set = rv
        .health_check
        .as_ref()
        .and_then(|h| h.get_ref().through_tunnel.as_ref());
    let Some(set) = set else {
        return Ok(forwarding.is_tunnel()
            && protocol == Protocol::Tcp
            && check.kind != CheckType::None);
    };
    if !*set.get_ref() {
        return Ok(false);
    }
    let k = key("health_check.through_tunnel");
    if !forwarding.is_tunnel() {
        return Err(file.at(
            set,
            k,
            format!(
                "needs forwarding = \"ipip\" or \"gue\" (this VIP forwards by {})",
                forwarding.as_str()
            ),
        ));
    }
    if check.kind == CheckType::None {
        return Err(file.at(
            set,
            k,
            "type = \"none\" checks nothing, through a tunnel or not",
        ));
    }
    if protocol == Protocol::Udp && check.port.is_none() {
        return Err(file.at(
            set,
            k,
            "the tunnel probe is a TCP SYN: a UDP VIP needs health_check.port, a TCP port the backend serves on the VIP's address",
        ));
    }
    Ok(true)
}

/// A source list of CIDRs (see `Cidr`'s `FromStr`), without repeats, of the family of the
/// VIP's `address` (a source of the other family never reaches that VIP).
fn cidrs(
    file: &ConfigFile<'_>,
    values: &[Spanned<String>],
    key: &str,
    address: IpAddr,
) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let cidr: Cidr = v
            .get_ref()
            .parse()
            .map_err(|e: CidrError| file.at(v, &k, e.to_string()))?;
        if out.contains(&cidr) {
            return Err(file.at(v, &k, format!("{cidr} is listed twice")));
        }
        if cidr.addr.is_ipv6() != address.is_ipv6() {
            return Err(file.at(
                v,
                &k,
                format!(
                    "{cidr} is an {} prefix and the VIP {address} is {}: a list names sources of the VIP's family",
                    family(cidr.addr),
                    family(address)
                ),
            ));
        }
        out.push(cidr);
    }
    Ok(out)
}

/// `new_flows_per_source = "N/s"` (or `"N/m"`), with `new_flows_burst` (default N, at least 1)
/// and `limit_prefix_v4` (IPv4 VIPs, default 32) or `limit_prefix_v6` (IPv6 VIPs, default 64:
/// one IPv6 host usually holds a whole /64).
fn source_limit(
    file: &ConfigFile<'_>,
    rv: &RawVip,
    key: &impl Fn(&str) -> String,
    address: IpAddr,
) -> Result<Option<SourceLimit>, ConfigError> {
    // The other family's prefix key means nothing on this VIP.
    let (wrong, right) = if address.is_ipv6() {
        (("limit_prefix_v4", &rv.limit_prefix_v4), "limit_prefix_v6")
    } else {
        (("limit_prefix_v6", &rv.limit_prefix_v6), "limit_prefix_v4")
    };
    if let Some(v) = wrong.1 {
        return Err(file.at(
            v,
            key(wrong.0),
            format!("the VIP {address} takes {right} instead"),
        ));
    }
    let Some(rate) = &rv.new_flows_per_source else {
        for (field, present) in [
            (
                "new_flows_burst",
                rv.new_flows_burst.as_ref().map(toml::Spanned::span),
            ),
            (
                "limit_prefix_v4",
                rv.limit_prefix_v4.as_ref().map(toml::Spanned::span),
            ),
            (
                "limit_prefix_v6",
                rv.limit_prefix_v6.as_ref().map(toml::Spanned::span),
            ),
        ] {
            if let Some(span) = present {
                return Err(file.error(
                    Some(span),
                    Some(key(field)),
                    "needs new_flows_per_source".into(),
                ));
            }
        }
        return Ok(None);
    };
    let (count, per) = parse_rate(file, rate, &key("new_flows_per_source"))?;
    let burst = match &rv.new_flows_burst {
        Some(b) => ranged(file, b, &key("new_flows_burst"), 1..=10_000_000)?,
        None => count,
    };
    let prefix = match (address.is_ipv6(), &rv.limit_prefix_v4, &rv.limit_prefix_v6) {
        (false, Some(p), _) => ranged(file, p, &key("limit_prefix_v4"), 0..=32)? as u8,
        (false, None, _) => 32,
        (true, _, Some(p)) => ranged(file, p, &key("limit_prefix_v6"), 0..=128)? as u8,
        (true, _, None) => 64,
    };
    Ok(Some(SourceLimit {
        count,
        per,
        burst,
        prefix,
    }))
}

/// `N/s` or `N/m`: how many new flows per second or minute.
fn parse_rate(
    file: &ConfigFile<'_>,
    rate: &Spanned<String>,
    key: &str,
) -> Result<(u32, Duration), ConfigError> {
    let text = rate.get_ref().trim();
    let bad = |why: &str| {
        file.at(
            rate,
            key,
            format!("{text:?}: {why} (e.g. \"100/s\" or \"600/m\")"),
        )
    };
    let (count, unit) = text
        .split_once('/')
        .ok_or_else(|| bad("a rate needs a unit"))?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(bad("the unit is s or m")),
    };
    let count: u32 = match count.trim().parse() {
        Ok(n) if (1..=10_000_000).contains(&n) => n,
        _ => return Err(bad("the count must be 1..=10000000")),
    };
    Ok((count, per))
}
