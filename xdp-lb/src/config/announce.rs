//! `[announce]`: which VIPs this node offers to the routing engine (BIRD, FRR), validated.
//! How the offer is made is `route_announce.rs`; why a kernel table, the README's "Scale out".

use std::{path::PathBuf, time::Duration};

use toml::Spanned;

use super::{
    ConfigError, VipConfig, VrrpConfig, fields::valid_interface, file::ConfigFile, raw::RawAnnounce,
};

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

/// Default `announce.table`: below 253, so that FRR's `ip import-table` (1-252) takes it too.
pub const DEFAULT_ANNOUNCE_TABLE: u32 = 200;
/// Default `announce.grace`: long enough for a BGP withdrawal to reach the routers.
pub const DEFAULT_ANNOUNCE_GRACE: Duration = Duration::from_secs(5);
/// Default `announce.engine_socket`: Debian's BIRD 2 control socket.
pub const DEFAULT_ENGINE_SOCKET: &str = "/run/bird/bird.ctl";

/// Kernel tables an announcement must not go into: 0 (unspecified), 253 (default), 254 (main),
/// 255 (local) — routes there would change this host's own forwarding
/// (include/uapi/linux/rtnetlink.h, `enum rt_class_t`).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

pub(super) fn announce(
    file: &ConfigFile<'_>,
    raw: &Spanned<RawAnnounce>,
    agent_interface: &str,
    vips: &[VipConfig],
    vrrp: &[VrrpConfig],
) -> Result<AnnounceConfig, ConfigError> {
    let r = raw.get_ref();
    let table = match &r.table {
        None => DEFAULT_ANNOUNCE_TABLE,
        Some(t) => table(file, t)?,
    };
    let interface = match &r.interface {
        Some(i) => valid_interface(file, i, "announce.interface".into())?,
        None => agent_interface.to_owned(),
    };
    let grace = match &r.grace {
        Some(g) if *g.get_ref() > Duration::from_secs(300) => {
            return Err(file.at(
                g,
                "announce.grace",
                format!("{:?} is out of range (0s..=5m)", g.get_ref()),
            ));
        }
        Some(g) => *g.get_ref(),
        None => DEFAULT_ANNOUNCE_GRACE,
    };
    let engine_socket = match &r.engine_socket {
        Some(p) if p.get_ref().as_os_str().is_empty() => None,
        Some(p) if !p.get_ref().is_absolute() => {
            return Err(file.at(
                p,
                "announce.engine_socket",
                "must be an absolute path (\"\" turns the check off)",
            ));
        }
        Some(p) => Some(p.get_ref().clone()),
        None => Some(PathBuf::from(DEFAULT_ENGINE_SOCKET)),
    };
    let names = announced(file, raw, vips, vrrp)?;
    Ok(AnnounceConfig {
        table,
        interface,
        vips: names,
        grace,
        engine_socket,
    })
}

/// `announce.table`: a routing table id the host does not route its own traffic by.
fn table(file: &ConfigFile<'_>, t: &Spanned<i64>) -> Result<u32, ConfigError> {
    match u32::try_from(*t.get_ref()) {
        Ok(n) if RESERVED_TABLES.contains(&n) => Err(file.at(
            t,
            "announce.table",
            format!(
                "table {n} is one the kernel routes this host's own traffic by (0, 253 default, 254 main, 255 local); use a table of its own, e.g. {DEFAULT_ANNOUNCE_TABLE}"
            ),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(file.at(
            t,
            "announce.table",
            format!("{} is not a routing table id (1..=4294967295)", t.get_ref()),
        )),
    }
}

/// `announce.vips`: the VIPs named (each once), or every VIP; none of them an address that a
/// VRRP instance moves.
fn announced(
    file: &ConfigFile<'_>,
    raw: &Spanned<RawAnnounce>,
    vips: &[VipConfig],
    vrrp: &[VrrpConfig],
) -> Result<Vec<String>, ConfigError> {
    let r = raw.get_ref();
    let mut names = Vec::new();
    match &r.vips {
        None => names.extend(vips.iter().map(|v| v.name.clone())),
        Some(list) => {
            if list.get_ref().is_empty() {
                file.warn(
                    list.span(),
                    "announce.vips".into(),
                    "announce.vips is empty: this node announces no VIP and the routers send it nothing (leave the key out to announce every VIP)".into(),
                );
            }
            for (i, n) in list.get_ref().iter().enumerate() {
                let key = format!("announce.vips[{i}]");
                if !vips.iter().any(|v| &v.name == n.get_ref()) {
                    return Err(file.at(n, key, format!("no [[vip]] is named {:?}", n.get_ref())));
                }
                if names.contains(n.get_ref()) {
                    return Err(file.at(n, key, format!("{:?} is listed twice", n.get_ref())));
                }
                names.push(n.get_ref().clone());
            }
        }
    }
    // An address is either routed to every node (ECMP) or moved to one of them (VRRP): both
    // at once would have the routers send to nodes that VRRP says are not master.
    for vip in vips.iter().filter(|v| names.contains(&v.name)) {
        let moved = vrrp
            .iter()
            .find(|i| i.virtual_addresses.iter().any(|(a, _)| *a == vip.address));
        if let Some(instance) = moved {
            let at = r.vips.as_ref().map_or(raw.span(), toml::Spanned::span);
            return Err(file.error(
                Some(at),
                Some("announce.vips".into()),
                format!(
                    "VIP {:?} ({}) is announced here and is also a virtual address of VRRP instance {:?}: an address is either announced by every node (ECMP) or moved by VRRP, not both; leave it out of announce.vips or out of the [[vrrp]]",
                    vip.name, vip.address, instance.name
                ),
            ));
        }
    }
    Ok(names)
}
