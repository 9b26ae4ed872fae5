//! The agent's view of its backends' next hops: which DSR backends the kernel has resolved
//! (their MAC and egress interface, an input of the desired state), and what it last said
//! about each backend, so that a change is logged once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use xdp_lb_common::{BACKEND_F_FORWARD, BackendInfo};

use crate::{
    config::{Config, Forwarding},
    netlink::{L2Next, Lookup, Netlink, NetlinkError},
};

#[derive(Debug, Default)]
pub(super) struct Neighbours {
    /// DSR backends' next hops, as the desired state takes them.
    pub(super) resolved: BTreeMap<IpAddr, L2Next>,
    /// The last lookup per backend address, to log changes once (and for `status`).
    pub(super) lookups: BTreeMap<IpAddr, Lookup>,
}

impl Neighbours {
    /// Starts from the next hops the maps already hold (a restarted agent's predecessor's):
    /// an adopted backend keeps forwarding with the MAC it had until a fresh lookup says
    /// otherwise, so a restart does not re-hash established flows.
    pub(super) fn adopted(backends: &[BackendInfo]) -> Self {
        let resolved = backends
            .iter()
            .filter(|info| info.flags & BACKEND_F_FORWARD != 0)
            .map(|info| {
                (
                    info.address(),
                    L2Next {
                        ifindex: info.ifindex,
                        mac: info.mac,
                        src_mac: info.src_mac,
                    },
                )
            })
            .collect();
        Self {
            resolved,
            lookups: BTreeMap::new(),
        }
    }

    /// Whether every DSR backend of `config` has a known MAC.
    pub(super) fn all_resolved(&self, config: &Config) -> bool {
        let routed_only = routed_only_backends(config);
        backend_addresses(config)
            .iter()
            .all(|a| routed_only.contains(a) || self.resolved.contains_key(a))
    }

    /// Looks up every backend of `config`; returns whether the usable set changed.
    pub(super) async fn refresh(
        &mut self,
        netlink: &Netlink,
        config: &Config,
    ) -> Result<bool, NetlinkError> {
        let mut resolved = BTreeMap::new();
        let configured = backend_addresses(config);
        let routed_only = routed_only_backends(config);
        for addr in configured.iter().copied() {
            let lookup = netlink.lookup(addr).await?;
            if let Lookup::NotOnLink { via } = lookup
                && routed_only.contains(&addr)
            {
                // A routed NAT backend: keep its gateway's MAC warm, so the program's FIB
                // lookups find the neighbour resolved (the lookup requests it if not).
                let _ = netlink.lookup(via).await?;
            }
            if self.lookups.get(&addr) != Some(&lookup) {
                log_change(addr, &lookup, routed_only.contains(&addr));
                self.lookups.insert(addr, lookup);
            }
            match lookup {
                Lookup::Resolved(next) => {
                    resolved.insert(addr, next);
                }
                // The kernel is (re)probing a MAC we know: keep forwarding to it meanwhile.
                Lookup::Pending { state, .. } if state != "failed" => {
                    if let Some(prev) = self.resolved.get(&addr) {
                        resolved.insert(addr, *prev);
                    }
                }
                _ => {}
            }
        }
        self.lookups.retain(|a, _| configured.contains(a));
        let changed = resolved != self.resolved;
        self.resolved = resolved;
        Ok(changed)
    }
}

fn log_change(addr: IpAddr, lookup: &Lookup, nat_only: bool) {
    match lookup {
        Lookup::Resolved(_) => {
            tracing::info!(backend = %addr, "backend reachable: {}", lookup.describe());
        }
        Lookup::NotOnLink { .. } | Lookup::Pending { .. } if nat_only => {
            tracing::info!(backend = %addr, "NAT backend: {}", lookup.describe());
        }
        Lookup::NotOnLink { .. } => tracing::warn!(
            backend = %addr,
            "backend not usable: {}; DSR needs the backend on a directly connected subnet (or forwarding = \"nat\", \"ipip\" or \"gue\")",
            lookup.describe()
        ),
        _ => tracing::warn!(backend = %addr, "backend not usable: {}", lookup.describe()),
    }
}

fn backend_addresses(config: &Config) -> BTreeSet<IpAddr> {
    config
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.address))
        .collect()
}

/// Backends of NAT and tunnel VIPs only: the program asks the FIB for their next hop (NAT per
/// flow, a tunnel per backend and second), so they need no neighbour entry of their own.
fn routed_only_backends(config: &Config) -> BTreeSet<IpAddr> {
    let of = |routed: bool| -> BTreeSet<IpAddr> {
        config
            .vips
            .iter()
            .filter(|v| (v.forwarding != Forwarding::Dsr) == routed)
            .flat_map(|v| v.backends.iter().map(|b| b.address))
            .collect()
    };
    of(true).difference(&of(false)).copied().collect()
}
