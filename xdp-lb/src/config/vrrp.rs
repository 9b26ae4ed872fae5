//! `[[vrrp]]` sections: keepalived's `vrrp_instance`, validated.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{
    ConfigError,
    fields::{ranged, valid_interface, valid_name},
    file::ConfigFile,
    raw::RawVrrp,
};

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

pub(super) fn vrrp_instance(
    file: &ConfigFile<'_>,
    i: usize,
    raw: &Spanned<RawVrrp>,
) -> Result<VrrpConfig, ConfigError> {
    let r = raw.get_ref();
    let k = |field: &str| format!("vrrp[{i}].{field}");
    let name = valid_name(file, &r.name, k("name"))?;
    let interface = valid_interface(file, &r.interface, k("interface"))?;
    let vrid = ranged(file, &r.vrid, &k("vrid"), 1..=255)? as u8;
    let priority = ranged(file, &r.priority, &k("priority"), 1..=255)? as u8;
    let version = version(file, r, &k)?;
    let advert_interval = advert_interval(file, r, &k, version)?;
    let preempt_delay = match &r.preempt_delay {
        Some(d) if *d.get_ref() > Duration::from_secs(3600) => {
            return Err(file.at(d, k("preempt_delay"), "must be at most 1h"));
        }
        Some(d) => *d.get_ref(),
        None => Duration::ZERO,
    };
    let virtual_addresses = virtual_addresses(file, r, &k, version)?;
    let ipv6 = virtual_addresses[0].0.is_ipv6();
    let mut unicast_peers = Vec::new();
    for p in &r.unicast_peers {
        if p.get_ref().is_ipv6() != ipv6 {
            return Err(file.at(
                p,
                k("unicast_peers"),
                format!(
                    "{} is not of the family of the virtual addresses",
                    p.get_ref()
                ),
            ));
        }
        unicast_peers.push(*p.get_ref());
    }
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
        unicast_peers,
        checksum: r.checksum.unwrap_or(ChecksumMode::Rfc9568),
        garp_count: match &r.garp_count {
            Some(v) => ranged(file, v, &k("garp_count"), 0..=100)?,
            None => 5,
        },
        garp_repeat_delay: r
            .garp_repeat_delay
            .as_ref()
            .map_or(Duration::from_secs(5), |d| *d.get_ref()),
        track_dataplane: r.track_dataplane.unwrap_or(true),
        track_weight: match &r.track_weight {
            Some(v) => ranged(file, v, &k("track_weight"), 0..=254)? as u8,
            None => 0,
        },
        notify: notify(file, r, &k)?,
    })
}

/// `version`: 3 (the default) or 2.
fn version(
    file: &ConfigFile<'_>,
    r: &RawVrrp,
    k: &impl Fn(&str) -> String,
) -> Result<Version, ConfigError> {
    match &r.version {
        None => Ok(Version::V3),
        Some(v) if *v.get_ref() == 3 => Ok(Version::V3),
        Some(v) if *v.get_ref() == 2 => Ok(Version::V2),
        Some(v) => Err(file.at(
            v,
            k("version"),
            format!("{} is not a VRRP version (3 or 2)", v.get_ref()),
        )),
    }
}

/// `advert_interval`: what the version's field can carry (default 1s).
fn advert_interval(
    file: &ConfigFile<'_>,
    r: &RawVrrp,
    k: &impl Fn(&str) -> String,
    version: Version,
) -> Result<Duration, ConfigError> {
    let Some(d) = &r.advert_interval else {
        return Ok(Duration::from_secs(1));
    };
    let v = *d.get_ref();
    let (ok, allowed) = match version {
        // 12 bits of centiseconds (RFC 5798 §5.2.7).
        Version::V3 => (
            v >= Duration::from_millis(10)
                && v <= Duration::from_millis(40_950)
                && v.as_millis() % 10 == 0,
            "10 ms steps from 10ms to 40.95s for version 3",
        ),
        // An 8-bit count of seconds (RFC 3768 §5.3.7).
        Version::V2 => (
            v >= Duration::from_secs(1) && v <= Duration::from_secs(255) && v.subsec_nanos() == 0,
            "whole seconds from 1s to 255s for version 2",
        ),
    };
    if !ok {
        return Err(file.at(
            d,
            k("advert_interval"),
            format!("{v:?} is not allowed ({allowed})"),
        ));
    }
    Ok(v)
}

/// `virtual_addresses`: at least one, all of one family per instance — an instance runs over
/// IPv4 or over IPv6 (RFC 5798 §5: a virtual router's addresses are all of the family its
/// adverts travel in) — and IPv6 only with version 3.
fn virtual_addresses(
    file: &ConfigFile<'_>,
    r: &RawVrrp,
    k: &impl Fn(&str) -> String,
    version: Version,
) -> Result<Vec<(IpAddr, u8)>, ConfigError> {
    let mut out: Vec<(IpAddr, u8)> = Vec::new();
    for a in r.virtual_addresses.get_ref() {
        let text = a.get_ref();
        let (addr, prefix) = virtual_address(text).ok_or_else(|| {
            file.at(
                a,
                k("virtual_addresses"),
                format!("{text:?} is not an IPv4 or IPv6 address with an optional /prefix"),
            )
        })?;
        if addr.is_unspecified()
            || addr.is_multicast()
            || matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
        {
            return Err(file.at(
                a,
                k("virtual_addresses"),
                format!(
                    "{text:?} cannot be a virtual address (unspecified, multicast or IPv6 link-local)"
                ),
            ));
        }
        if let Some((first, _)) = out.first()
            && first.is_ipv4() != addr.is_ipv4()
        {
            return Err(file.at(
                a,
                k("virtual_addresses"),
                format!(
                    "{text:?} is not of the family of {first}: one instance is IPv4 or IPv6; make a second [[vrrp]] for the other family"
                ),
            ));
        }
        out.push((addr, prefix));
    }
    let Some((first, _)) = out.first() else {
        return Err(file.at(
            &r.virtual_addresses,
            k("virtual_addresses"),
            "at least one address is needed",
        ));
    };
    if first.is_ipv6() && version == Version::V2 {
        return Err(file.at(
            r.version.as_ref().expect("v2 is only ever explicit"),
            k("version"),
            "VRRPv2 is IPv4 only (RFC 3768); IPv6 virtual addresses need version 3",
        ));
    }
    Ok(out)
}

/// `ADDRESS` or `ADDRESS/PREFIX` (the prefix 1 up to the family's width).
fn virtual_address(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr = addr.parse::<IpAddr>().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| (1..=max).contains(p))?,
    };
    Some((addr, prefix))
}

/// `notify`: an absolute path to a program, run without a shell.
fn notify(
    file: &ConfigFile<'_>,
    r: &RawVrrp,
    k: &impl Fn(&str) -> String,
) -> Result<Option<PathBuf>, ConfigError> {
    match &r.notify {
        Some(p) if !p.get_ref().is_absolute() => Err(file.at(
            p,
            k("notify"),
            "must be an absolute path to a program (run without a shell)",
        )),
        Some(p) => Ok(Some(p.get_ref().clone())),
        None => Ok(None),
    }
}
