//! `[[vip.backend]]`: a server behind a VIP — its address, port, weight, the operator's state
//! and slow start — validated against its VIP.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, Forwarding,
    fields::{family, ranged, slowstart, unusable, valid_name},
    file::ConfigFile,
    raw::{RawBackend, RawVip},
};

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// What logs, `status`, `inspect`, /stats and /metrics call it: `name`, or its address.
    /// Unique within its VIP.
    pub name: String,
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

/// What a backend is checked against: its VIP's name, address and port, and how the VIP
/// forwards (all but NAT keep the port; a tunnel may carry an IPv4 VIP to an IPv6 backend).
pub(super) type OfVip<'a> = (&'a str, IpAddr, u16, Forwarding);

/// The backends of the `i`-th VIP, `rv`.
pub(super) fn backends(
    file: &ConfigFile<'_>,
    i: usize,
    rv: &RawVip,
    vip: OfVip<'_>,
) -> Result<Vec<BackendConfig>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    rv.backend
        .iter()
        .enumerate()
        .map(|(j, raw)| {
            let key = |field: &str| format!("vip[{i}].backend[{j}].{field}");
            let b = backend(file, raw.get_ref(), &key, vip, &mut seen)?;
            if !names.insert(b.name.clone()) {
                return Err(name_clash(file, raw.get_ref(), &key, &b.name, vip.0));
            }
            Ok(b)
        })
        .collect()
}

/// Two backends of one VIP answer to `name` (one's `name`, the other's address, or both names).
fn name_clash(
    file: &ConfigFile<'_>,
    rb: &RawBackend,
    key: &impl Fn(&str) -> String,
    name: &str,
    vip: &str,
) -> ConfigError {
    let message = format!(
        "two backends of VIP {vip:?} are called {name:?}: a backend's name (default: its address) is unique within its VIP"
    );
    match &rb.name {
        Some(n) => file.at(n, key("name"), message),
        None => file.at(&rb.address, key("address"), message),
    }
}

fn backend(
    file: &ConfigFile<'_>,
    rb: &RawBackend,
    key: &impl Fn(&str) -> String,
    (name, address, port, forwarding): OfVip<'_>,
    seen: &mut BTreeSet<IpAddr>,
) -> Result<BackendConfig, ConfigError> {
    let baddr = *rb.address.get_ref();
    file.remember(key("address"), &rb.address);
    if let Some(why) = unusable(baddr, true) {
        return Err(file.at(
            &rb.address,
            key("address"),
            format!("{baddr} cannot be a backend: {why}"),
        ));
    }
    // IPv4 in IPv6 is a tunnel's only translation between families (as Katran's): the
    // backend's stack sees the client's IPv4 packet.
    let four_in_six = forwarding.is_tunnel() && address.is_ipv4() && baddr.is_ipv6();
    if baddr.is_ipv6() != address.is_ipv6() && !four_in_six {
        return Err(file.at(
            &rb.address,
            key("address"),
            format!(
                "VIP {name:?} is {} ({address}) and its backends must be too: a VIP does not translate between families",
                family(address)
            ),
        ));
    }
    if !seen.insert(baddr) {
        return Err(file.at(
            &rb.address,
            key("address"),
            format!("duplicate backend {baddr} in VIP {name:?}"),
        ));
    }
    let weight = match &rb.weight {
        Some(w) => ranged(file, w, &key("weight"), 0..=MAX_WEIGHT)?,
        None => 1,
    };
    let bport = match &rb.port {
        Some(p) => {
            let bport = ranged(file, p, &key("port"), 1..=65535)? as u16;
            if forwarding.keeps_port() && bport != port {
                return Err(file.at(
                    p,
                    key("port"),
                    format!(
                        "{} forwards to the VIP's port {port}; a backend on another port needs forwarding = \"nat\"",
                        forwarding.as_str()
                    ),
                ));
            }
            bport
        }
        None => port,
    };
    let bname = match &rb.name {
        Some(n) => valid_name(file, n, key("name"))?,
        None => baddr.to_string(),
    };
    Ok(BackendConfig {
        name: bname,
        address: baddr,
        port: bport,
        weight,
        state: rb.state.unwrap_or_default(),
        slowstart: rb
            .slowstart
            .as_ref()
            .map(|s| slowstart(file, s, &key("slowstart")))
            .transpose()?,
    })
}
