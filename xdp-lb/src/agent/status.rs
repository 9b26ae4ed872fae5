//! The agent's answer to `status`: its config, the data plane's attachment, every backend's
//! health and neighbour, NAT and VRRP, as one typed [`AgentStatus`].

use super::Agent;
use crate::{
    clock::unix_secs,
    netlink::fmt_mac,
    observe::status::{AgentStatus, BackendStatus, HealthState, NatStatus, VipStatus},
    state::vip_key,
};

impl Agent {
    pub(super) fn status(&self) -> AgentStatus {
        let table = self
            .checker
            .table
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        let vips = self
            .config
            .vips
            .iter()
            .map(|vip| {
                let key = vip_key(vip);
                let backends = vip
                    .backends
                    .iter()
                    .map(|b| {
                        let check = table.get(&(key, b.address)).cloned();
                        BackendStatus {
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
                                .map(|l| l.describe()),
                            slow_start_pct: self.slow_start.percent(key, b.address),
                        }
                    })
                    .collect();
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
                    backends,
                }
            })
            .collect();
        let (lo, hi) = self.config.agent.snat_port_range;
        AgentStatus {
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
            vips,
            nat: self.snat_address.any().then(|| NatStatus {
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
            }),
            vrrp: self
                .vrrp
                .iter()
                .filter_map(|i| i.status.lock().ok().map(|s| s.clone()))
                .collect(),
            announce: self.announcer.as_ref().map(|a| a.status()),
            sync: self.sync_status(),
        }
    }
}
