//! From the file as written to a [`Config`]: each section validated by its own file, then the
//! checks that span sections (how many VIPs, VRRP names and VRIDs); the first value that is
//! wrong is named with its line and key.

use std::collections::BTreeSet;

use super::{
    Config, ConfigError, VrrpConfig,
    agent::agent,
    announce::announce,
    file::ConfigFile,
    raw::{RawConfig, RawVrrp},
    sync::sync,
    vip::{SeenVips, vip},
    vrrp::vrrp_instance,
};

pub(super) fn validate(file: &ConfigFile<'_>, raw: &RawConfig) -> Result<Config, ConfigError> {
    let agent = agent(file, raw.agent.get_ref())?;
    let max_vips = agent.max_vips;
    if raw.vip.len() > max_vips as usize {
        return Err(file.error(
            Some(raw.vip[max_vips as usize].span()),
            Some("vip".into()),
            format!(
                "{} VIPs configured but agent.max_vips is {max_vips}; raise agent.max_vips",
                raw.vip.len()
            ),
        ));
    }
    let mut seen = SeenVips::default();
    let vips = raw
        .vip
        .iter()
        .enumerate()
        .map(|(i, r)| vip(file, i, r, &mut seen))
        .collect::<Result<Vec<_>, _>>()?;
    let vrrp = raw
        .vrrp
        .iter()
        .enumerate()
        .map(|(i, r)| vrrp_instance(file, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    unique_vrrp(file, &raw.vrrp, &vrrp)?;
    let announce = match &raw.announce {
        Some(a) => Some(announce(file, a, &agent.interface, &vips, &vrrp)?),
        None => None,
    };
    let sync = match &raw.sync {
        Some(s) => Some(sync(file, s)?),
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

/// VRRP instances have distinct names, and distinct VRIDs on one interface.
fn unique_vrrp(
    file: &ConfigFile<'_>,
    raw: &[toml::Spanned<RawVrrp>],
    vrrp: &[VrrpConfig],
) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut vrids = BTreeSet::new();
    for (i, (r, v)) in raw.iter().zip(vrrp).enumerate() {
        if !names.insert(v.name.clone()) {
            return Err(file.at(
                &r.get_ref().name,
                format!("vrrp[{i}].name"),
                format!("duplicate VRRP instance {:?}", v.name),
            ));
        }
        if !vrids.insert((v.interface.clone(), v.vrid)) {
            return Err(file.at(
                &r.get_ref().vrid,
                format!("vrrp[{i}].vrid"),
                format!("VRID {} is already used on {}", v.vrid, v.interface),
            ));
        }
    }
    Ok(())
}
