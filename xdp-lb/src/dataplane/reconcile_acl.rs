//! The reconciler's allow/deny-list steps (step 1 and 6 of `reconcile.rs`): the `ACL` and
//! `ACL6` entries in step with the desired lists, then the flows of the sources a changed list
//! now refuses purged.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{MapError, lpm_trie::Key};
use xdp_lb_common::{AclData, AclData6};

use super::{
    purge::purge_refused,
    reconcile::{ApplyReport, Reconciler},
    reconcile_error::{ReconcileError, map_err},
};
use crate::{config::Cidr, state::DesiredState};

impl Reconciler {
    /// Step 1, allow and deny lists: obsolete entries out, then new ones in. Returns the VIPs
    /// whose lists changed (their refused sources' flows are purged in step 6).
    pub(super) fn write_acl(
        &mut self,
        desired: &DesiredState,
    ) -> Result<BTreeSet<u32>, ReconcileError> {
        let held = &mut self.held;
        let maps = &mut self.maps;
        let changed: BTreeSet<u32> = held
            .acl
            .iter()
            .filter(|(k, v)| desired.acl.get(k) != Some(v))
            .chain(
                desired
                    .acl
                    .iter()
                    .filter(|(k, v)| held.acl.get(k) != Some(v)),
            )
            .map(|((vip_id, _), _)| *vip_id)
            .collect();
        for key in held.acl.keys().copied().collect::<Vec<_>>() {
            if desired.acl.contains_key(&key) {
                continue;
            }
            let removed = match acl_key(&key) {
                AclKey::V4(k) => maps.acl.remove(&k).map_err(|e| ("ACL", e)),
                AclKey::V6(k) => maps.acl6.remove(&k).map_err(|e| ("ACL6", e)),
            };
            match removed {
                Ok(()) | Err((_, MapError::KeyNotFound)) => {}
                Err((name, e)) => return Err(map_err(name)(e)),
            }
            held.acl.remove(&key);
        }
        for (key, action) in &desired.acl {
            if held.acl.get(key) != Some(action) {
                match acl_key(key) {
                    AclKey::V4(k) => maps.acl.insert(&k, *action, 0).map_err(map_err("ACL"))?,
                    AclKey::V6(k) => maps.acl6.insert(&k, *action, 0).map_err(map_err("ACL6"))?,
                }
                held.acl.insert(*key, *action);
            }
        }
        Ok(changed)
    }

    /// Step 6: the flows of sources that the changed lists of `acl_changed` now refuse (flows
    /// of sources still admitted stay).
    pub(super) fn purge_refused_sources(
        &mut self,
        desired: &DesiredState,
        acl_changed: &BTreeSet<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let refusing: BTreeMap<u32, u32> = desired
            .vips
            .values()
            .filter(|v| acl_changed.contains(&v.vip_id))
            .map(|v| (v.vip_id, v.flags))
            .collect();
        if !refusing.is_empty() {
            report.flows_purged += purge_refused(&mut self.maps, &desired.acl, &refusing)?;
        }
        Ok(())
    }
}

/// An entry's key in `ACL` (IPv4) or `ACL6` (IPv6).
enum AclKey {
    V4(Key<AclData>),
    V6(Key<AclData6>),
}

/// The key of an entry: the whole VIP id, then the prefix.
fn acl_key(&(vip_id, cidr): &(u32, Cidr)) -> AclKey {
    let len = 32 + cidr.len as u32;
    match cidr.addr {
        std::net::IpAddr::V4(a) => AclKey::V4(Key::new(
            len,
            AclData {
                vip_id,
                addr_be: u32::from_ne_bytes(a.octets()),
            },
        )),
        std::net::IpAddr::V6(a) => AclKey::V6(Key::new(
            len,
            AclData6 {
                vip_id,
                addr: a.octets(),
            },
        )),
    }
}
