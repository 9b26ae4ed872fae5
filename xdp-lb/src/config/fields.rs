//! The field checks every section shares (ranges, port ranges, timeouts, names, interface
//! names, primes), each error placed at its value.

use std::{net::IpAddr, time::Duration};

use toml::Spanned;

use super::{ConfigError, file::ConfigFile};

/// A number within `range`, or an error naming the key and the range.
pub(super) fn ranged(
    file: &ConfigFile<'_>,
    value: &Spanned<i64>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(file.at(
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
pub(super) fn port_range(
    file: &ConfigFile<'_>,
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
        _ => Err(file.at(
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
pub(super) fn nat_timeout(
    file: &ConfigFile<'_>,
    value: &Option<Spanned<Duration>>,
    field: &str,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d)
            if *d.get_ref() < Duration::from_secs(1)
                || *d.get_ref() > Duration::from_secs(30 * 86_400) =>
        {
            Err(file.at(
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
pub(super) fn valid_name(
    file: &ConfigFile<'_>,
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
        return Err(file.at(
            name,
            key,
            format!("{n:?} is not a valid name (1 to 64 of A-Z a-z 0-9 - _ .)"),
        ));
    }
    Ok(n.clone())
}

/// An interface name as the kernel accepts it: IFNAMSIZ is 16 including the NUL
/// (include/uapi/linux/if.h).
pub(super) fn valid_interface(
    file: &ConfigFile<'_>,
    name: &Spanned<String>,
    key: String,
) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
        return Err(file.at(
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

/// Why `a` cannot be a VIP (or, `backend`, a backend's) address, if it cannot.
pub(super) fn unusable(a: IpAddr, backend: bool) -> Option<&'static str> {
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

pub(super) fn family(a: IpAddr) -> &'static str {
    if a.is_ipv6() { "IPv6" } else { "IPv4" }
}

/// `slowstart`: 0s (off) up to an hour.
pub(super) fn slowstart(
    file: &ConfigFile<'_>,
    value: &Spanned<Duration>,
    key: &str,
) -> Result<Duration, ConfigError> {
    let d = *value.get_ref();
    if d > Duration::from_secs(3600) {
        return Err(file.at(value, key, format!("{d:?} is out of range (0s..=1h)")));
    }
    Ok(d)
}
