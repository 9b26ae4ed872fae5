//! The desired contents of the maps, computed by pure functions from [`StateInputs`]: the config,
//! the id assignment, what the kernel told us about each backend's neighbour and about our own
//! interface, and the backends' health.
//!
//! Nothing here touches the kernel; the reconciler (`dataplane/reconcile.rs`) turns a
//! [`DesiredState`] into map writes. Config reload, a neighbour change and a health transition
//! all produce a new desired state the same way, so they all share one tested path to the maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use xdp_lb_common::{
    ACL_ALLOW, ACL_DENY, AnyVipKey, BACKEND_F_FORWARD, BACKEND_F_GUE, BACKEND_F_TUNNEL,
    BackendInfo, GUE_UDP_LEN, MAX_BACKENDS, OUTER4_LEN, OUTER6_LEN, Settings, TunnelParams,
    VIP_F_ACL, VIP_F_ALLOWLIST, VIP_F_GUE, VIP_F_LIMIT, VIP_F_NAT, VIP_F_TUNNEL, VipLimit,
    hash::murmur3_32, ipv4_be, port_be,
};

use crate::{
    config::{AdminState, BackendConfig, Cidr, Config, Forwarding, VipConfig},
    maglev::{self, MaglevBackend},
    netlink::L2Next,
};

/// The seed of the VIP's flow hash: a function of the VIP alone, so every LB node with the same
/// config sends a flow to the same backend and a VRRP failover does not move flows.
pub fn hash_seed(key: &AnyVipKey) -> u32 {
    let mut bytes = [0u8; 19];
    let n = match key {
        AnyVipKey::V4(k) => {
            bytes[..4].copy_from_slice(&k.addr_be.to_ne_bytes());
            bytes[4..6].copy_from_slice(&k.port_be.to_ne_bytes());
            bytes[6] = k.proto;
            7
        }
        AnyVipKey::V6(k) => {
            bytes[..16].copy_from_slice(&k.addr);
            bytes[16..18].copy_from_slice(&k.port_be.to_ne_bytes());
            bytes[18] = k.proto;
            19
        }
    };
    murmur3_32(&bytes[..n], 0x7864_706c) // "xdpl"
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    pub name: String,
    pub vip_id: u32,
    pub table_size: u32,
    pub hash_seed: u32,
    /// Backend ids; empty when no backend is usable.
    pub table: Vec<u32>,
    /// Backends with at least one table entry.
    pub backend_count: u32,
    /// `VIP_F_*`.
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBackend {
    pub vip: AnyVipKey,
    /// `BACKEND_NAMES[id]`, for `inspect`.
    pub name: String,
    pub address: IpAddr,
    pub weight: u32,
    /// The kernel knows its MAC.
    pub resolved: bool,
    /// It passes its health check.
    pub up: bool,
    pub admin: AdminState,
    pub info: BackendInfo,
}

/// A `new_flows_per_source` limit in the program's units (see `VipLimit`): a bucket gains
/// `count` tokens per `per`, i.e. `count` nanosecond-units per nanosecond if a token costs
/// `per` in nanoseconds.
pub fn vip_limit(l: &crate::config::SourceLimit) -> VipLimit {
    let token = l.per.as_nanos() as u64;
    let capacity = l.burst as u64 * token;
    VipLimit {
        rate: l.count as u64,
        token,
        capacity,
        fill_ns: capacity / l.count as u64 + 1,
        // Both from the one prefix length: the program reads the one of its VIP's family.
        prefix_mask_be: u32::MAX
            .checked_shl(32 - (l.prefix as u32).min(32))
            .unwrap_or(0)
            .to_be(),
        prefix6_len: l.prefix as u32,
    }
}

/// An `ACL` entry: (VIP id, prefix) → `ACL_ALLOW` or `ACL_DENY`.
pub type Acl = BTreeMap<(u32, Cidr), u32>;

/// Whether a VIP with these `flags` and entries lets `src` open a flow: what the program's
/// longest-prefix lookup decides (`xdp-lb-ebpf/src/acl.rs`), for purging flows on reload.
pub fn admits(acl: &Acl, vip_id: u32, flags: u32, src: IpAddr) -> bool {
    if flags & VIP_F_ACL == 0 {
        return true;
    }
    let longest = acl
        .iter()
        .filter(|((v, c), _)| *v == vip_id && c.contains(src))
        .max_by_key(|((_, c), _)| c.len);
    match longest {
        Some((_, action)) => *action != ACL_DENY,
        None => flags & VIP_F_ALLOWLIST == 0,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub vips: BTreeMap<AnyVipKey, DesiredVip>,
    /// The VIPs' allow and deny lists.
    pub acl: Acl,
    /// Per-source new-flow limits by VIP id.
    pub limits: BTreeMap<u32, VipLimit>,
    /// Tunnel VIPs' parameters by VIP id.
    pub tunnels: BTreeMap<u32, TunnelParams>,
    pub backends: BTreeMap<u32, DesiredBackend>,
    /// Egress interfaces the program may redirect to.
    pub tx_ports: BTreeSet<u32>,
    pub settings: Settings,
}

/// Dense ids for VIPs (index of VIP_STATS and of the Maglev slots) and backends (index of
/// BACKENDS and BACKEND_STATS). An id stays with its VIP or backend for as long as it exists,
/// so counters and flow-table entries keep meaning the same thing across reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdAssignment {
    pub vips: BTreeMap<AnyVipKey, u32>,
    pub backends: BTreeMap<(AnyVipKey, IpAddr), u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("more than {0} VIPs (agent.max_vips)")]
    TooManyVips(u32),
    #[error("more than {MAX_BACKENDS} backends")]
    TooManyBackends,
}

impl IdAssignment {
    /// The ids as the maps hold them (a restarted agent keeps its predecessor's ids, so counters
    /// and flow-table entries keep their meaning). `backends` maps id → (vip_id, address).
    pub fn from_maps(
        vips: &BTreeMap<AnyVipKey, u32>,
        backends: &BTreeMap<u32, (u32, IpAddr)>,
    ) -> IdAssignment {
        let by_id: BTreeMap<u32, AnyVipKey> = vips.iter().map(|(k, id)| (*id, *k)).collect();
        let backends = backends
            .iter()
            .filter_map(|(id, (vip_id, addr))| by_id.get(vip_id).map(|k| ((*k, *addr), *id)))
            .collect();
        IdAssignment {
            vips: vips.clone(),
            backends,
        }
    }

    /// The ids for `config`: existing ones are kept, new ones take the lowest free id, and
    /// ids of VIPs and backends no longer configured are released.
    pub fn assign(&self, config: &Config) -> Result<IdAssignment, StateError> {
        let mut next = IdAssignment::default();
        for vip in &config.vips {
            let key = vip.key();
            if let Some(&id) = self.vips.get(&key) {
                next.vips.insert(key, id);
            }
            for b in &vip.backends {
                if let Some(&id) = self.backends.get(&(key, b.address)) {
                    next.backends.insert((key, b.address), id);
                }
            }
        }
        let max_vips = config.agent.max_vips;
        for vip in &config.vips {
            let key = vip.key();
            if !next.vips.contains_key(&key) {
                let id = lowest_free(next.vips.values(), max_vips)
                    .ok_or(StateError::TooManyVips(max_vips))?;
                next.vips.insert(key, id);
            }
            for b in &vip.backends {
                if !next.backends.contains_key(&(key, b.address)) {
                    let id = lowest_free(next.backends.values(), MAX_BACKENDS)
                        .ok_or(StateError::TooManyBackends)?;
                    next.backends.insert((key, b.address), id);
                }
            }
        }
        Ok(next)
    }
}

fn lowest_free<'a>(used: impl Iterator<Item = &'a u32>, limit: u32) -> Option<u32> {
    let used: BTreeSet<u32> = used.copied().collect();
    (0..limit).find(|id| !used.contains(id))
}

/// The identity hashed into a backend's Maglev permutation: its address (4 or 16 bytes). It
/// must not depend on ids or order, so that nodes and restarts agree on the table.
fn maglev_identity(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether each backend passes its health check; a backend missing here counts as its
/// check's start state.
pub type Health = BTreeMap<(AnyVipKey, IpAddr), bool>;

/// Backends in slow start: the fraction (0, 1) of their share of new flows they take now.
pub type Ramps = BTreeMap<(AnyVipKey, IpAddr), f64>;

/// Maglev weights are the configured weights times this, so that a backend in slow start can
/// take a fraction of its share (the table depends only on the weights' ratios).
const WEIGHT_SCALE: u32 = 100;

/// A backend's Maglev weight: its configured weight, scaled down while it ramps up.
fn maglev_weight(weight: u32, ramp: Option<f64>) -> u32 {
    let full = weight * WEIGHT_SCALE;
    match ramp {
        Some(f) if weight > 0 => ((full as f64 * f.clamp(0.0, 1.0)).round() as u32).max(1),
        _ => full,
    }
}

/// Everything the desired state is a function of.
#[derive(Debug, Clone, Copy)]
pub struct StateInputs<'a> {
    pub config: &'a Config,
    pub ids: &'a IdAssignment,
    /// The DSR backends' next hops, as the kernel resolved them.
    pub neighbours: &'a BTreeMap<IpAddr, L2Next>,
    pub health: &'a Health,
    /// The MAC of `agent.interface`: when known, only frames addressed to it are balanced (a
    /// switch floods frames for the VRRP master's MAC to the backup too).
    pub local_mac: Option<[u8; 6]>,
    /// The SNAT addresses in use, per family: `agent.snat_address`, or the interface's
    /// addresses the agent looked up. Ignored without NAT VIPs.
    pub snat_address: crate::config::FamilyAddresses,
    /// The tunnels' outer source addresses, per family: `agent.tunnel_source`, or the
    /// interface's addresses the agent looked up. Ignored without tunnel VIPs.
    pub tunnel_source: crate::config::FamilyAddresses,
    /// The MTU of `agent.interface`: a tunnel VIP's `tunnel_mtu` by default.
    pub interface_mtu: u16,
    /// Backends in slow start.
    pub ramps: &'a Ramps,
}

/// Computes the desired maps.
///
/// A backend carries its established flows (`BACKEND_F_FORWARD`) when its MAC is known, it is
/// healthy and not `disabled`; it receives new flows (Maglev entries) when, in addition, it is
/// `active` with a positive weight. So `drain` keeps flows and takes no new ones, and `down` or
/// `disabled` loses both (the reconciler purges its flows so they re-hash to live backends).
///
/// A NAT or tunnel backend needs no neighbour entry of its own: the program asks the kernel's
/// FIB for the next hop (and the backend may be routed, on another subnet). Its health check,
/// which connects through the same routes, says whether it is reachable.
pub fn desired_state(inputs: &StateInputs<'_>) -> DesiredState {
    let mut state = DesiredState {
        settings: settings(inputs),
        ..Default::default()
    };
    for vip in &inputs.config.vips {
        add_vip(&mut state, inputs, vip);
    }
    state
}

/// The data plane's switches: flow log, insert cap, sync events, the local MAC and, with NAT
/// VIPs, the SNAT addresses and ports.
fn settings(inputs: &StateInputs<'_>) -> Settings {
    let config = inputs.config;
    let mut settings = Settings {
        flow_inserts_per_cpu_per_sec: config.agent.flow_insert_rate,
        sync_events: config.sync.is_some() as u8,
        flow_log_per_cpu_per_sec: if config.agent.flow_log {
            config.agent.flow_log_rate
        } else {
            0
        },
        ..Default::default()
    }
    .with_local_mac(inputs.local_mac);
    if config.vips.iter().any(|v| v.forwarding == Forwarding::Nat) {
        let snat = inputs.snat_address;
        settings.snat_addr_be = snat
            .v4
            .or(config.agent.snat_address.v4)
            .map_or(0, |a| ipv4_be(a.octets()));
        settings.snat_addr6 = snat
            .v6
            .or(config.agent.snat_address.v6)
            .map_or([0; 16], |a| a.octets());
        (settings.snat_port_min, settings.snat_port_max) = config.agent.snat_port_range;
    }
    settings
}

/// One VIP: its backends' entries, its Maglev table over those that take new flows, its entry,
/// limit and lists.
fn add_vip(state: &mut DesiredState, inputs: &StateInputs<'_>, vip: &VipConfig) {
    let key = vip.key();
    let vip_id = inputs.ids.vips[&key];
    let mut maglev_backends = Vec::with_capacity(vip.backends.len());
    let identities: Vec<Vec<u8>> = vip
        .backends
        .iter()
        .map(|b| maglev_identity(b.address))
        .collect();
    for (b, identity) in vip.backends.iter().zip(&identities) {
        let id = inputs.ids.backends[&(key, b.address)];
        let (desired, new_flows) = backend(inputs, vip, vip_id, b);
        if let Some(ifindex) = desired.tx_port() {
            state.tx_ports.insert(ifindex);
        }
        state.backends.insert(id, desired);
        let ramp = inputs.ramps.get(&(key, b.address)).copied();
        let weight = if new_flows {
            maglev_weight(b.weight, ramp)
        } else {
            0
        };
        maglev_backends.push((MaglevBackend { identity, weight }, id));
    }
    let (table, backend_count) = maglev_table(maglev_backends, vip.maglev_table_size);
    state.vips.insert(
        key,
        DesiredVip {
            name: vip.name.clone(),
            vip_id,
            table_size: vip.maglev_table_size,
            hash_seed: hash_seed(&key),
            table,
            backend_count,
            flags: vip_flags(vip),
        },
    );
    if let Some(l) = vip.limit {
        state.limits.insert(vip_id, vip_limit(&l));
    }
    if let Some(t) = &vip.tunnel {
        state
            .tunnels
            .insert(vip_id, tunnel_params(inputs, vip.address.is_ipv6(), t));
    }
    for c in &vip.allow {
        state.acl.insert((vip_id, *c), ACL_ALLOW);
    }
    for c in &vip.deny {
        state.acl.insert((vip_id, *c), ACL_DENY);
    }
}

/// The default `tunnel_mtu` when the interface's MTU is not known.
const DEFAULT_MTU: u16 = 1500;

/// A tunnel VIP's parameters: its outer sources, GUE port, the largest inner packet that fits
/// `tunnel_mtu` for each outer family, and the MSS a SYN may offer (the inner IP and TCP
/// headers off that: 40 bytes for an IPv4 VIP, 60 for IPv6).
pub fn tunnel_params(
    inputs: &StateInputs<'_>,
    vip6: bool,
    t: &crate::config::TunnelConfig,
) -> TunnelParams {
    let configured = inputs.config.agent.tunnel_source;
    let src = inputs.tunnel_source;
    let mtu = t.mtu.unwrap_or(if inputs.interface_mtu == 0 {
        DEFAULT_MTU
    } else {
        inputs.interface_mtu
    });
    let udp = if t.gue_port.is_some() { GUE_UDP_LEN } else { 0 };
    let max_inner4 = mtu.saturating_sub(OUTER4_LEN + udp);
    let max_inner6 = mtu.saturating_sub(OUTER6_LEN + udp);
    let headers = if vip6 { 60 } else { 40 };
    let mss = |max: u16| {
        if t.mss_clamp {
            max.saturating_sub(headers)
        } else {
            0
        }
    };
    TunnelParams {
        src4_be: src.v4.or(configured.v4).map_or(0, |a| ipv4_be(a.octets())),
        src6: src.v6.or(configured.v6).map_or([0; 16], |a| a.octets()),
        gue_port_be: t.gue_port.map_or(0, port_be),
        max_inner4,
        max_inner6,
        mss4: mss(max_inner4),
        mss6: mss(max_inner6),
        _pad: 0,
    }
}

/// A backend's entry, and whether it takes new flows.
fn backend(
    inputs: &StateInputs<'_>,
    vip: &VipConfig,
    vip_id: u32,
    b: &BackendConfig,
) -> (DesiredBackend, bool) {
    // NAT and tunnel backends are routed: the program asks the FIB for their next hop.
    let routed = vip.forwarding != Forwarding::Dsr;
    let key = vip.key();
    let next = inputs.neighbours.get(&b.address);
    let up = inputs
        .health
        .get(&(key, b.address))
        .copied()
        .unwrap_or(vip.health_check.starts_up());
    let forward = (routed || next.is_some()) && up && b.state != AdminState::Disabled;
    let new_flows = forward && b.state == AdminState::Active;
    let mut info = BackendInfo {
        vip_id,
        weight: b.weight,
        port_be: port_be(b.port),
        ..Default::default()
    };
    match b.address {
        IpAddr::V4(a) => info.addr_be = ipv4_be(a.octets()),
        IpAddr::V6(a) => info.addr6 = a.octets(),
    }
    if let Some(n) = next.filter(|_| !routed) {
        info.ifindex = n.ifindex;
        info.mac = n.mac;
        info.src_mac = n.src_mac;
    }
    if forward {
        info.flags |= BACKEND_F_FORWARD;
    }
    if vip.forwarding.is_tunnel() {
        info.flags |= BACKEND_F_TUNNEL;
    }
    if vip.forwarding == Forwarding::Gue {
        info.flags |= BACKEND_F_GUE;
    }
    let desired = DesiredBackend {
        vip: key,
        name: b.name.clone(),
        address: b.address,
        weight: b.weight,
        resolved: routed || next.is_some(),
        up,
        admin: b.state,
        info,
    };
    (desired, new_flows)
}

/// The Maglev table of backend ids, and how many backends it holds. Maglev breaks ties
/// between backends by their turn order: they are ordered by identity, so that nodes whose
/// files list the same backends in another order build the same table (active-active nodes
/// behind ECMP must choose alike).
fn maglev_table(mut backends: Vec<(MaglevBackend<'_>, u32)>, size: u32) -> (Vec<u32>, u32) {
    backends.sort_by_key(|(b, _)| b.identity);
    let inputs: Vec<MaglevBackend<'_>> = backends.iter().map(|(b, _)| *b).collect();
    match maglev::build(&inputs, size) {
        Some(t) => {
            let count = inputs.iter().filter(|i| i.weight > 0).count() as u32;
            (
                t.into_iter().map(|i| backends[i as usize].1).collect(),
                count,
            )
        }
        None => (Vec::new(), 0),
    }
}

/// `VIP_F_*` of a VIP.
fn vip_flags(vip: &VipConfig) -> u32 {
    let mut flags = 0;
    match vip.forwarding {
        Forwarding::Nat => flags |= VIP_F_NAT,
        Forwarding::Ipip => flags |= VIP_F_TUNNEL,
        Forwarding::Gue => flags |= VIP_F_TUNNEL | VIP_F_GUE,
        Forwarding::Dsr => {}
    }
    if !vip.allow.is_empty() || !vip.deny.is_empty() {
        flags |= VIP_F_ACL;
    }
    if !vip.allow.is_empty() {
        flags |= VIP_F_ALLOWLIST;
    }
    if vip.limit.is_some() {
        flags |= VIP_F_LIMIT;
    }
    flags
}

impl DesiredBackend {
    /// The egress interface a DSR backend's frames are redirected to (0: none, NAT).
    fn tx_port(&self) -> Option<u32> {
        (self.info.ifindex != 0).then_some(self.info.ifindex)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path};

    use super::*;
    use crate::config;

    fn cfg(text: &str) -> Config {
        config::parse(Path::new("t.toml"), text).unwrap()
    }

    /// The desired state without the interface's own facts (MAC, SNAT address).
    pub(super) fn desired(
        config: &Config,
        ids: &IdAssignment,
        neighbours: &BTreeMap<IpAddr, L2Next>,
        health: &Health,
    ) -> DesiredState {
        desired_state(&StateInputs {
            config,
            ids,
            neighbours,
            health,
            local_mac: None,
            snat_address: Default::default(),
            tunnel_source: Default::default(),
            interface_mtu: 1500,
            ramps: &Ramps::new(),
        })
    }

    #[test]
    fn the_interface_mac_and_snat_address_are_inputs() {
        let c = cfg(&TWO.replace("port = 80", "port = 80\nforwarding = \"nat\""));
        let ids = IdAssignment::default().assign(&c).unwrap();
        let mac = [2, 0, 0, 0, 0, 9];
        let snat: Ipv4Addr = "198.18.0.2".parse().unwrap();
        let s = desired_state(&StateInputs {
            config: &c,
            ids: &ids,
            neighbours: &BTreeMap::new(),
            health: &Health::new(),
            local_mac: Some(mac),
            snat_address: crate::config::FamilyAddresses {
                v4: Some(snat),
                v6: None,
            },
            tunnel_source: Default::default(),
            interface_mtu: 1500,
            ramps: &Ramps::new(),
        });
        assert_eq!((s.settings.check_local_mac, s.settings.local_mac), (1, mac));
        assert_eq!(s.settings.snat_addr_be, ipv4_be(snat.octets()));
        assert_eq!(
            (s.settings.snat_port_min, s.settings.snat_port_max),
            c.agent.snat_port_range
        );
        // Without NAT VIPs the SNAT address is not the data plane's business.
        let dsr = cfg(TWO);
        let ids = IdAssignment::default().assign(&dsr).unwrap();
        let s = desired_state(&StateInputs {
            config: &dsr,
            ids: &ids,
            neighbours: &BTreeMap::new(),
            health: &Health::new(),
            local_mac: None,
            snat_address: crate::config::FamilyAddresses {
                v4: Some(snat),
                v6: None,
            },
            tunnel_source: Default::default(),
            interface_mtu: 1500,
            ramps: &Ramps::new(),
        });
        assert_eq!(
            (s.settings.snat_addr_be, s.settings.check_local_mac),
            (0, 0)
        );
    }

    const TWO: &str = r#"
[agent]
interface = "eth0"
[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
maglev_table_size = 251
[[vip.backend]]
address = "198.18.0.11"
[[vip.backend]]
address = "198.18.0.12"
weight = 3
"#;

    fn next(last: u8) -> L2Next {
        L2Next {
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, last],
            src_mac: [2, 0, 0, 0, 0, 1],
        }
    }

    #[test]
    fn unresolved_backends_get_no_entries_but_exist() {
        let c = cfg(TWO);
        let ids = IdAssignment::default().assign(&c).unwrap();
        let only_12: BTreeMap<_, _> = [("198.18.0.12".parse().unwrap(), next(12))].into();
        let s = desired(&c, &ids, &only_12, &Health::new());
        let vip = s.vips.values().next().unwrap();
        assert_eq!(vip.backend_count, 1);
        let id12 = ids.backends[&(c.vips[0].key(), "198.18.0.12".parse().unwrap())];
        assert!(vip.table.iter().all(|&b| b == id12));
        assert_eq!(s.backends.len(), 2);
        assert_eq!(
            s.backends
                .values()
                .filter(|b| b.info.flags & BACKEND_F_FORWARD != 0)
                .count(),
            1
        );

        let none = desired(&c, &ids, &BTreeMap::new(), &Health::new());
        assert_eq!(none.vips.values().next().unwrap().backend_count, 0);
        assert!(none.vips.values().next().unwrap().table.is_empty());
    }

    #[test]
    fn drain_disabled_and_down_decide_flows_and_new_flows() {
        let text = TWO.replace("weight = 3", "weight = 3\nstate = \"drain\"");
        let c = cfg(&text);
        let ids = IdAssignment::default().assign(&c).unwrap();
        let key = c.vips[0].key();
        let (a11, a12): (IpAddr, IpAddr) = (
            "198.18.0.11".parse().unwrap(),
            "198.18.0.12".parse().unwrap(),
        );
        let both: BTreeMap<_, _> = [(a11, next(11)), (a12, next(12))].into();
        let forward = |s: &DesiredState, a: IpAddr| {
            s.backends[&ids.backends[&(key, a)]].info.flags & BACKEND_F_FORWARD != 0
        };

        // .12 drains: keeps its flows, gets no new ones.
        let s = desired(&c, &ids, &both, &Health::new());
        let vip = s.vips.values().next().unwrap();
        assert!(forward(&s, a12) && forward(&s, a11));
        assert_eq!(vip.backend_count, 1);
        assert!(vip.table.iter().all(|&b| b == ids.backends[&(key, a11)]));

        // .11 goes down: loses its flows and its entries; nothing is left for new flows.
        let down: Health = [((key, a11), false)].into();
        let s = desired(&c, &ids, &both, &down);
        assert!(!forward(&s, a11) && forward(&s, a12));
        assert_eq!(s.vips.values().next().unwrap().backend_count, 0);

        // Disabled: neither.
        let c = cfg(&TWO.replace("weight = 3", "weight = 3\nstate = \"disabled\""));
        let s = desired(&c, &ids, &both, &Health::new());
        assert!(!forward(&s, a12));
        assert_eq!(s.vips.values().next().unwrap().backend_count, 1);
    }

    #[test]
    fn start_down_backends_wait_for_their_first_checks() {
        let c = cfg(&TWO.replace(
            "maglev_table_size = 251",
            "maglev_table_size = 251\n[vip.health_check]\nstart_down = true",
        ));
        let ids = IdAssignment::default().assign(&c).unwrap();
        let both: BTreeMap<_, _> = [
            ("198.18.0.11".parse().unwrap(), next(11)),
            ("198.18.0.12".parse().unwrap(), next(12)),
        ]
        .into();
        assert_eq!(
            desired(&c, &ids, &both, &Health::new())
                .vips
                .values()
                .next()
                .unwrap()
                .backend_count,
            0
        );
    }

    #[test]
    fn a_ramping_backend_takes_a_fraction_of_its_share() {
        let c = cfg(&TWO.replace("weight = 3", "weight = 1"));
        let ids = IdAssignment::default().assign(&c).unwrap();
        let key = c.vips[0].key();
        let a12: IpAddr = "198.18.0.12".parse().unwrap();
        let both: BTreeMap<_, _> =
            [("198.18.0.11".parse().unwrap(), next(11)), (a12, next(12))].into();
        let share = |f: Option<f64>| {
            let ramps: Ramps = f.map(|f| ((key, a12), f)).into_iter().collect();
            let s = desired_state(&StateInputs {
                config: &c,
                ids: &ids,
                neighbours: &both,
                health: &Health::new(),
                local_mac: None,
                snat_address: Default::default(),
                tunnel_source: Default::default(),
                interface_mtu: 1500,
                ramps: &ramps,
            });
            let table = &s.vips[&key].table;
            let id = ids.backends[&(key, a12)];
            table.iter().filter(|b| **b == id).count() as f64 / table.len() as f64
        };
        let (quarter, half, full) = (share(Some(0.25)), share(Some(0.5)), share(None));
        // Weights 0.25:1 → 20%, 0.5:1 → 33%, 1:1 → 50% (the table is 251 entries).
        assert!((quarter - 0.2).abs() < 0.03, "{quarter}");
        assert!((half - 1.0 / 3.0).abs() < 0.03, "{half}");
        assert!((full - 0.5).abs() < 0.03, "{full}");
        // A finished ramp is the same table as none: scaled weights keep their ratios.
        assert_eq!(share(Some(1.0)), full);
    }

    #[test]
    fn the_longest_prefix_of_the_lists_decides() {
        let text = TWO.replace(
            "maglev_table_size = 251",
            "maglev_table_size = 251\nallow = [\"198.18.0.0/16\", \"198.18.5.7\"]\ndeny = [\"198.18.5.0/24\"]",
        );
        let c = cfg(&text);
        let ids = IdAssignment::default().assign(&c).unwrap();
        let s = desired(&c, &ids, &BTreeMap::new(), &Health::new());
        let vip = s.vips.values().next().unwrap();
        assert_eq!(
            vip.flags & (VIP_F_ACL | VIP_F_ALLOWLIST),
            VIP_F_ACL | VIP_F_ALLOWLIST
        );
        assert_eq!(s.acl.len(), 3);
        let admits = |a: &str| admits(&s.acl, vip.vip_id, vip.flags, a.parse().unwrap());
        assert!(admits("198.18.1.1"), "in the allowed /16");
        assert!(!admits("198.18.5.8"), "the denied /24 is longer");
        assert!(admits("198.18.5.7"), "the allowed /32 is longer still");
        assert!(
            !admits("198.19.0.1"),
            "an allow list refuses what it does not name"
        );
        // Deny only: everything else is admitted; no lists: no lookup at all.
        let c = cfg(&TWO.replace(
            "maglev_table_size = 251",
            "maglev_table_size = 251\ndeny = [\"198.18.5.0/24\"]",
        ));
        let s = desired(&c, &ids, &BTreeMap::new(), &Health::new());
        let vip = s.vips.values().next().unwrap();
        assert_eq!(vip.flags & (VIP_F_ACL | VIP_F_ALLOWLIST), VIP_F_ACL);
        assert!(admits_in(&s, "198.19.0.1") && !admits_in(&s, "198.18.5.1"));
        let s = desired(&cfg(TWO), &ids, &BTreeMap::new(), &Health::new());
        assert_eq!(s.vips.values().next().unwrap().flags & VIP_F_ACL, 0);
    }

    fn admits_in(s: &DesiredState, a: &str) -> bool {
        let vip = s.vips.values().next().unwrap();
        admits(&s.acl, vip.vip_id, vip.flags, a.parse().unwrap())
    }

    #[test]
    fn ids_are_stable_and_released() {
        let c = cfg(TWO);
        let ids = IdAssignment::default().assign(&c).unwrap();
        assert_eq!(ids.assign(&c).unwrap(), ids);
        // Remove the first backend: the second keeps its id; a new one takes the freed id.
        let c2 = cfg(&TWO.replace("198.18.0.11", "198.18.0.13"));
        let ids2 = ids.assign(&c2).unwrap();
        let key = c.vips[0].key();
        assert_eq!(
            ids2.backends[&(key, "198.18.0.12".parse().unwrap())],
            ids.backends[&(key, "198.18.0.12".parse().unwrap())]
        );
        assert_eq!(
            ids2.backends[&(key, "198.18.0.13".parse().unwrap())],
            ids.backends[&(key, "198.18.0.11".parse().unwrap())]
        );
        assert_eq!(ids2.backends.len(), 2);
    }

    /// Active-active nodes (README, "Scale out") must pick the same backend for a flow: the
    /// table, read as backend addresses, cannot depend on the file's order or the ids a node's
    /// history gave its backends.
    #[test]
    fn nodes_with_the_same_backends_build_the_same_table() {
        let three = |order: [u8; 3]| {
            let mut t = String::from(
                "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\nmaglev_table_size = 251\n",
            );
            for o in order {
                t.push_str(&format!(
                    "[[vip.backend]]\naddress = \"198.18.0.{o}\"\nweight = {}\n",
                    o - 10
                ));
            }
            cfg(&t)
        };
        let by_address = |c: &Config, ids: &IdAssignment| {
            let n: BTreeMap<IpAddr, L2Next> = c.vips[0]
                .backends
                .iter()
                .map(|b| {
                    (
                        b.address,
                        L2Next {
                            ifindex: 1,
                            mac: [0; 6],
                            src_mac: [0; 6],
                        },
                    )
                })
                .collect();
            let s = desired(c, ids, &n, &Health::new());
            let vip = s.vips.values().next().unwrap().clone();
            let table: Vec<IpAddr> = vip.table.iter().map(|id| s.backends[id].address).collect();
            (vip.hash_seed, table)
        };
        let a = three([11, 12, 13]);
        let b = three([13, 11, 12]);
        let ids_a = IdAssignment::default().assign(&a).unwrap();
        // Node b's ids come from another history: one backend it saw first, then the rest.
        let ids_b = IdAssignment::default()
            .assign(&three([12, 13, 11]))
            .unwrap()
            .assign(&b)
            .unwrap();
        assert_ne!(
            ids_a.backends.values().collect::<Vec<_>>(),
            ids_b.backends.values().collect::<Vec<_>>(),
            "the test needs different ids"
        );
        assert_eq!(by_address(&a, &ids_a), by_address(&b, &ids_b));
    }

    #[test]
    fn seed_is_a_function_of_the_vip_only() {
        let c = cfg(TWO);
        let k = c.vips[0].key();
        let AnyVipKey::V4(k4) = k else {
            panic!("an IPv4 VIP")
        };
        assert_eq!(hash_seed(&k), hash_seed(&k));
        assert_ne!(
            hash_seed(&k),
            hash_seed(&AnyVipKey::V4(xdp_lb_common::VipKey {
                port_be: port_be(81),
                ..k4
            }))
        );
        // The IPv4 seed is what it was before IPv6 keys existed (tables do not move on upgrade).
        let mut old = [0u8; 7];
        old[..4].copy_from_slice(&k4.addr_be.to_ne_bytes());
        old[4..6].copy_from_slice(&k4.port_be.to_ne_bytes());
        old[6] = k4.proto;
        assert_eq!(hash_seed(&k), murmur3_32(&old, 0x7864_706c));
        // An IPv6 VIP's seed covers its whole address.
        let v6 = cfg(&TWO
            .replace("198.18.0.100", "2001:2::100")
            .replace("198.18.0.1", "2001:2::1"));
        let v6b = cfg(&TWO
            .replace("198.18.0.100", "2001:2:1::100")
            .replace("198.18.0.1", "2001:2::1"));
        assert!(matches!(v6.vips[0].key(), AnyVipKey::V6(_)));
        assert_ne!(hash_seed(&v6.vips[0].key()), hash_seed(&v6b.vips[0].key()));
    }
}

#[cfg(test)]
mod spread_tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    #[test]
    fn sequential_client_ports_spread_evenly() {
        let text = "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\n[[vip.backend]]\naddress = \"198.18.0.13\"\n";
        let c = config::parse(Path::new("t"), text).unwrap();
        let ids = IdAssignment::default().assign(&c).unwrap();
        let n: BTreeMap<IpAddr, L2Next> = c.vips[0]
            .backends
            .iter()
            .map(|b| {
                (
                    b.address,
                    L2Next {
                        ifindex: 1,
                        mac: [0; 6],
                        src_mac: [0; 6],
                    },
                )
            })
            .collect();
        let s = super::tests::desired(&c, &ids, &n, &Health::new());
        let vip = s.vips.values().next().unwrap();
        let mut counts = [0usize; 3];
        for port in (40000u16..40600).step_by(2) {
            let h = xdp_lb_common::flow_hash(
                ipv4_be([198, 18, 0, 1]),
                ipv4_be([198, 18, 0, 100]),
                port_be(port),
                port_be(80),
                6,
                vip.hash_seed,
            );
            counts[vip.table[(h % vip.table_size) as usize] as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
    }
}
