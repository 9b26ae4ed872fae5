//! The agent's answer to `status`: its config, the data plane's attachment, every backend's
//! health and neighbour, NAT, VRRP, announcements and sync, as one typed [`AgentStatus`].

use std::collections::BTreeMap;

use super::Agent;
use crate::{
    clock::unix_secs,
    config::{BackendConfig, BackendKey, VipConfig},
    health::LastProbe,
    netlink::fmt_mac,
    status::{AgentStatus, BackendStatus, CheckStatus, HealthState, NatStatus, Refused, VipStatus},
};

impl Agent {
    pub(super) fn status(&self) -> AgentStatus {
        let probes = self
            .checker
            .probes()
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        AgentStatus {
            version: crate::status::STATUS_VERSION,
            config: self.config_path.clone(),
            loaded_unix: unix_secs(self.loaded_at),
            uptime_seconds: self.started_at.elapsed().as_secs(),
            interface: self.config.agent.interface.clone(),
            attached: self
                .guard
                .dataplane()
                .attached()
                .map(|(_, m)| m.as_str().to_owned()),
            pin_dir: self.config.agent.pin_dir.clone(),
            health_transitions: self.health_transitions,
            vips: self
                .config
                .vips
                .iter()
                .map(|vip| self.vip_status(vip, &probes))
                .collect(),
            nat: self.nat_status(),
            tunnel_source: self
                .tunnel_source
                .any()
                .then_some(crate::status::TunnelSourceStatus {
                    ipv4: self.tunnel_source.v4,
                    ipv6: self.tunnel_source.v6,
                }),
            vrrp: self
                .vrrp
                .iter()
                .filter_map(|i| i.status.lock().ok().map(|s| s.clone()))
                .collect(),
            announce: self
                .announcer
                .as_ref()
                .map(super::super::route_announce::Announcer::status),
            sync: self.sync_status(),
        }
    }

    fn vip_status(&self, vip: &VipConfig, probes: &BTreeMap<BackendKey, LastProbe>) -> VipStatus {
        let key = vip.key();
        VipStatus {
            name: vip.name.clone(),
            address: vip.address,
            port: vip.port,
            forwarding: vip.forwarding,
            health_check: vip.health_check.kind,
            usable_backends: !self.vips_without_backends.contains(&key),
            allow: vip.allow.iter().map(ToString::to_string).collect(),
            deny: vip.deny.iter().map(ToString::to_string).collect(),
            new_flows_per_source: vip.limit.map(|l| {
                let unit = if l.per.as_secs() == 60 { "m" } else { "s" };
                format!("{}/{unit}, burst {}, per /{}", l.count, l.burst, l.prefix)
            }),
            announce: self.announcer.as_ref().and_then(|a| a.verdict(&vip.name)),
            refused: self.ids.vips.get(&key).map_or_else(Default::default, |id| {
                let t = self.reconciler.maps().vip_traffic(*id);
                Refused {
                    denied: t.denied,
                    not_allowed: t.not_allowed,
                    rate_limited: t.rate_limited,
                }
            }),
            backends: vip
                .backends
                .iter()
                .map(|b| {
                    let mut s =
                        self.backend_status((key, b.address), b, probes.get(&(key, b.address)));
                    if vip.forwarding == crate::config::Forwarding::Nat {
                        s.nat_ports = Some(
                            self.ids
                                .backends
                                .get(&(key, b.address))
                                .and_then(|id| self.nat.last.live_by_backend.get(id))
                                .copied()
                                .unwrap_or(0),
                        );
                    }
                    s
                })
                .collect(),
        }
    }

    fn backend_status(
        &self,
        key: BackendKey,
        b: &BackendConfig,
        probe: Option<&LastProbe>,
    ) -> BackendStatus {
        // The verdict is the agent's (the one the maps follow); the last probe, the check's.
        let check = self.health.get(&key).map(|v| CheckStatus {
            up: v.up,
            last_check: probe.map_or_else(|| "not checked yet".into(), |p| p.result.clone()),
            last_check_unix: probe.map_or(0, |p| p.at_unix),
            transitions: v.transitions,
            since_unix: v.since_unix,
        });
        BackendStatus {
            name: b.name.clone(),
            address: b.address,
            port: b.port,
            weight: b.weight,
            state: b.state,
            health: HealthState::of(check.as_ref()),
            check,
            mac: self
                .neighbours
                .resolved
                .get(&b.address)
                .map(|n| fmt_mac(&n.mac)),
            neighbour: self
                .neighbours
                .lookups
                .get(&b.address)
                .map(crate::netlink::Lookup::describe),
            slow_start_pct: self.slow_start.percent(key.0, b.address),
            nat_ports: None,
        }
    }

    fn nat_status(&self) -> Option<NatStatus> {
        let (lo, hi) = self.config.agent.snat_port_range;
        self.snat_address.any().then(|| NatStatus {
            snat_address: self.snat_address.v4,
            snat_address_ipv6: self.snat_address.v6,
            snat_port_range: format!("{lo}-{hi}"),
            flows: self
                .nat
                .last
                .live
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            reclaimed_total: self.nat.reclaimed_total,
        })
    }
}
