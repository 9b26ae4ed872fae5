//! From the file as written to a [`Config`]: what serde cannot check (ranges, primes,
//! duplicates, limits), naming the line and key of the first value that is wrong.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use xdp_lb_common::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_VIPS, MAGLEV_MAX_TABLE_SIZE, MAX_BACKENDS,
};

use super::{
    AgentConfig, BackendConfig, CheckType, Cidr, Config, ConfigError, DEFAULT_CONTROL_SOCKET,
    DEFAULT_LISTEN, DEFAULT_SNAT_PORT_RANGE, Forwarding, HealthCheckConfig, MAX_FLOW_TABLE_SIZE,
    MAX_MAX_VIPS, MAX_WEIGHT, MIN_MAGLEV_TABLE_SIZE, Protocol, SnatAddresses, SourceLimit,
    VipConfig, XdpMode,
    announce::announce,
    health_check::health_check,
    place::{Place, is_prime, nat_timeout, port_range, ranged, valid_interface, valid_name},
    raw::RawConfig,
    vrrp::vrrp_instance,
};

pub(super) fn validate(place: &Place<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
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
    let flow_table_size_ipv6 = match &raw_agent.flow_table_size_ipv6 {
        Some(v) => ranged(
            place,
            v,
            "agent.flow_table_size_ipv6",
            1..=MAX_FLOW_TABLE_SIZE,
        )?,
        None => super::DEFAULT_FLOW_TABLE_SIZE_IPV6,
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
        flow_table_size_ipv6,
        max_vips,
        control_socket,
        listen,
        flow_log: raw_agent.flow_log.unwrap_or(false),
        flow_insert_rate: match &raw_agent.flow_insert_rate {
            Some(v) => ranged(place, v, "agent.flow_insert_rate", 0..=100_000_000)?,
            None => 0,
        },
        flow_log_rate: match &raw_agent.flow_log_rate {
            Some(v) => ranged(place, v, "agent.flow_log_rate", 1..=1_000_000)?,
            None => 1000,
        },
        snat_address: snat_addresses(place, &raw_agent.snat_address)?,
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
        nat_udp_timeout: nat_timeout(place, &raw_agent.nat_udp_timeout, "nat_udp_timeout", 30)?,
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
        if let Some(why) = unusable(address, false) {
            return Err(place.at(
                &rv.address,
                key("address"),
                format!("{address} cannot be a VIP: {why}"),
            ));
        }
        let port = ranged(place, &rv.port, &key("port"), 1..=65535)? as u16;
        let protocol = rv.protocol.unwrap_or(Protocol::Tcp);
        if !endpoints.insert((address, port, protocol as u8)) {
            return Err(place.at(
                &rv.port,
                key("port"),
                format!(
                    "{address}:{port}/{} is already used by another VIP",
                    protocol.as_str()
                ),
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
            place.remember(bkey("address"), &rb.address);
            if let Some(why) = unusable(baddr, true) {
                return Err(place.at(
                    &rb.address,
                    bkey("address"),
                    format!("{baddr} cannot be a backend: {why}"),
                ));
            }
            if baddr.is_ipv6() != address.is_ipv6() {
                return Err(place.at(
                    &rb.address,
                    bkey("address"),
                    format!(
                        "VIP {name:?} is {} ({address}) and its backends must be too: a VIP does not translate between families",
                        family(address)
                    ),
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
                slowstart: rb
                    .slowstart
                    .as_ref()
                    .map(|s| slowstart(place, s, &bkey("slowstart")))
                    .transpose()?,
            });
        }
        if backends.is_empty() {
            place.warn(
                vip_span.clone(),
                key("backend"),
                format!(
                    "VIP {name:?} has no backends: its new connections are dropped (counter drop_no_backend)"
                ),
            );
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
        let allow = cidrs(place, &rv.allow, &key("allow"), address)?;
        let deny = cidrs(place, &rv.deny, &key("deny"), address)?;
        if let Some((j, c)) = deny.iter().enumerate().find(|(_, c)| allow.contains(c)) {
            return Err(place.at(
                &rv.deny[j],
                key(&format!("deny[{j}]")),
                format!("{c} is in both lists: keep it in one"),
            ));
        }
        let health_check = match &rv.health_check {
            Some(h) => health_check(place, h.get_ref(), h.span(), &key("health_check"))?,
            None => HealthCheckConfig::default(),
        };
        // A UDP service answers no TCP connect on its port unless it also serves TCP there:
        // its check must say what it probes.
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
                Some(h) => place.error(Some(h.span()), Some(key("health_check.port")), why),
                None => place.at(&rv.address, key("health_check"), why),
            });
        }
        vips.push(VipConfig {
            name,
            address,
            port,
            protocol,
            forwarding,
            maglev_table_size,
            slowstart: rv
                .slowstart
                .as_ref()
                .map(|s| slowstart(place, s, &key("slowstart")))
                .transpose()?
                .unwrap_or_default(),
            allow,
            deny,
            limit: source_limit(place, rv, &key, address)?,
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
    let announce = match &raw.announce {
        Some(a) => Some(announce(place, a, &agent.interface, &vips, &vrrp)?),
        None => None,
    };
    let sync = match &raw.sync {
        Some(s) => Some(super::sync::sync(place, s)?),
        None => None,
    };
    Ok(Config {
        agent,
        vips,
        vrrp,
        announce,
        sync,
        warnings: Vec::new(),
        positions: Default::default(),
    })
}

/// `slowstart`: 0s (off) up to an hour.
fn slowstart(
    place: &Place<'_>,
    value: &toml::Spanned<std::time::Duration>,
    key: &str,
) -> Result<std::time::Duration, ConfigError> {
    let d = *value.get_ref();
    if d > std::time::Duration::from_secs(3600) {
        return Err(place.at(value, key, format!("{d:?} is out of range (0s..=1h)")));
    }
    Ok(d)
}

/// A source list of CIDRs (see `Cidr`'s `FromStr`), without repeats, of the family of the
/// VIP's `address` (a source of the other family never reaches that VIP).
fn cidrs(
    place: &Place<'_>,
    values: &[toml::Spanned<String>],
    key: &str,
    address: IpAddr,
) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let cidr: Cidr = v
            .get_ref()
            .parse()
            .map_err(|e: String| place.at(v, &k, e))?;
        if out.contains(&cidr) {
            return Err(place.at(v, &k, format!("{cidr} is listed twice")));
        }
        if cidr.addr.is_ipv6() != address.is_ipv6() {
            return Err(place.at(
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
    place: &Place<'_>,
    rv: &super::raw::RawVip,
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
        return Err(place.at(
            v,
            key(wrong.0),
            format!("the VIP {address} takes {right} instead"),
        ));
    }
    let Some(rate) = &rv.new_flows_per_source else {
        for (field, present) in [
            (
                "new_flows_burst",
                rv.new_flows_burst.as_ref().map(|v| v.span()),
            ),
            (
                "limit_prefix_v4",
                rv.limit_prefix_v4.as_ref().map(|v| v.span()),
            ),
            (
                "limit_prefix_v6",
                rv.limit_prefix_v6.as_ref().map(|v| v.span()),
            ),
        ] {
            if let Some(span) = present {
                return Err(place.error(
                    Some(span),
                    Some(key(field)),
                    "needs new_flows_per_source".into(),
                ));
            }
        }
        return Ok(None);
    };
    let text = rate.get_ref().trim();
    let bad = |why: &str| {
        place.at(
            rate,
            key("new_flows_per_source"),
            format!("{text:?}: {why} (e.g. \"100/s\" or \"600/m\")"),
        )
    };
    let (count, unit) = text
        .split_once('/')
        .ok_or_else(|| bad("a rate needs a unit"))?;
    let per = match unit.trim() {
        "s" => std::time::Duration::from_secs(1),
        "m" => std::time::Duration::from_secs(60),
        _ => return Err(bad("the unit is s or m")),
    };
    let count: u32 = match count.trim().parse() {
        Ok(n) if (1..=10_000_000).contains(&n) => n,
        _ => return Err(bad("the count must be 1..=10000000")),
    };
    let burst = match &rv.new_flows_burst {
        Some(b) => ranged(place, b, &key("new_flows_burst"), 1..=10_000_000)?,
        None => count,
    };
    let prefix = match (address.is_ipv6(), &rv.limit_prefix_v4, &rv.limit_prefix_v6) {
        (false, Some(p), _) => ranged(place, p, &key("limit_prefix_v4"), 0..=32)? as u8,
        (false, None, _) => 32,
        (true, _, Some(p)) => ranged(place, p, &key("limit_prefix_v6"), 0..=128)? as u8,
        (true, _, None) => 64,
    };
    Ok(Some(SourceLimit {
        count,
        per,
        burst,
        prefix,
    }))
}

/// `agent.snat_address`: one address, or a list of at most one per family.
fn snat_addresses(
    place: &Place<'_>,
    raw: &Option<toml::Spanned<super::raw::OneOrMany>>,
) -> Result<SnatAddresses, ConfigError> {
    const KEY: &str = "agent.snat_address";
    let Some(raw) = raw else {
        return Ok(SnatAddresses::default());
    };
    let list: Vec<&String> = match raw.get_ref() {
        super::raw::OneOrMany::One(a) => vec![&a],
        super::raw::OneOrMany::Many(v) => v.iter().collect(),
    };
    let mut out = SnatAddresses::default();
    for text in list {
        let a: IpAddr = text
            .parse()
            .map_err(|_| place.at(raw, KEY, format!("{text:?} is not an IP address")))?;
        if let Some(why) = unusable(a, true) {
            return Err(place.at(raw, KEY, format!("{a} cannot be a source address: {why}")));
        }
        let taken = match a {
            IpAddr::V4(v4) => out.v4.replace(v4).is_some(),
            IpAddr::V6(v6) => out.v6.replace(v6).is_some(),
        };
        if taken {
            return Err(place.at(
                raw,
                KEY,
                format!("two {} addresses: give at most one per family", family(a)),
            ));
        }
    }
    Ok(out)
}

/// Why `a` cannot be a VIP (or, `backend`, a backend's) address, if it cannot.
fn unusable(a: IpAddr, backend: bool) -> Option<&'static str> {
    match a {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            Some("not a unicast address")
        }
        IpAddr::V4(v4) if backend && v4.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Some("not a unicast address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        // fe80::/10: meaningful only with an interface (a scope), which packets do not carry.
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped address: write the IPv4 address")
        }
        _ => None,
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv6() { "IPv6" } else { "IPv4" }
}
