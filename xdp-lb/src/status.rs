//! The agent's status, typed: what the control socket answers to `status`, what `xdp-lb
//! status` prints, and what `/metrics` and `/stats` show of health, NAT and VRRP. One struct
//! crosses every boundary (serde both ways), so a field is read by name, not by string key.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{AdminState, CheckType, Forwarding},
    route_announce::AnnounceStatus,
    vrrp::instance::InstanceStatus,
};

/// The layout of the status JSON (its `version`): raised when a field changes its meaning or
/// goes away. New fields may appear within a version; a reader ignores what it does not know.
/// README "Status JSON" documents every path.
pub const STATUS_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// [`STATUS_VERSION`] of the agent that answered.
    #[serde(default)]
    pub version: u32,
    /// The config file in use.
    pub config: PathBuf,
    /// When it was loaded (seconds since the Unix epoch).
    pub loaded_unix: u64,
    pub uptime_seconds: u64,
    pub interface: String,
    /// How the program is attached ("driver", "generic", "adopted"); None: not attached.
    pub attached: Option<String>,
    pub pin_dir: PathBuf,
    pub health_transitions: u64,
    pub vips: Vec<VipStatus>,
    /// None without NAT VIPs.
    pub nat: Option<NatStatus>,
    /// The tunnels' outer source addresses (`agent.tunnel_source`, or the interface's); None
    /// without tunnel VIPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_source: Option<TunnelSourceStatus>,
    pub vrrp: Vec<InstanceStatus>,
    /// `[announce]`: the routing table, drain and the routing engine; None without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<AnnounceStatus>,
    /// `[sync]`: what was sent, received, refused and installed; None without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// `[sync]` in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub peers: Vec<IpAddr>,
    pub port: u16,
    /// The task's counters: flows reported, sent, dropped; datagrams received and refused by
    /// reason.
    pub stream: crate::sync::stats::SyncView,
    /// Peers' flows installed here; already known; refused because this node holds their
    /// SNAT port for another flow; of a VIP or backend this node does not have, or NAT flows
    /// through an SNAT address that is not this node's.
    pub installed: u64,
    pub known: u64,
    pub conflicts: u64,
    pub unknown: u64,
    /// The start-up snapshot: "waiting", "N flows from PEER", "none within sync.snapshot_wait",
    /// or "not asked" (snapshot_wait = 0s).
    pub snapshot: String,
    /// Copies removed because their flow ended on the peer.
    pub removed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub forwarding: Forwarding,
    pub health_check: CheckType,
    /// At least one backend takes new flows.
    pub usable_backends: bool,
    /// The source lists (CIDRs) in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// `new_flows_per_source`, as configured ("100/s, burst 200, per /32").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_flows_per_source: Option<String>,
    /// Under `[announce]`: "announced" or "withdrawn: REASON"; None: not announced by config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    /// New flows refused by the protections since the program was loaded.
    #[serde(default)]
    pub refused: Refused,
    pub backends: Vec<BackendStatus>,
}

/// A VIP's new flows refused, by protection (the program's VIP counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The source is in `deny`.
    pub denied: u64,
    /// The source is not in `allow`.
    pub not_allowed: u64,
    /// The source went over `new_flows_per_source`.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `name` in the config, or the address.
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// The operator's word: active, drain or disabled.
    pub state: AdminState,
    pub health: HealthState,
    /// The check's verdict, its history and its last probe (None: the agent has no record).
    #[serde(flatten)]
    pub check: Option<CheckStatus>,
    /// The next hop's MAC (DSR backends whose neighbour is resolved).
    pub mac: Option<String>,
    /// What the kernel said about the backend's neighbour, for a person.
    pub neighbour: Option<String>,
    /// In slow start: the percent of its share of new flows it takes now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_pct: Option<u32>,
    /// NAT VIPs: the SNAT ports its flows hold (live NAT flows, half-open ones included, at the
    /// last expiry sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_ports: Option<u64>,
}

/// What `status` shows of one backend's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub up: bool,
    /// The last probe's result ("ok", "connect refused", "HTTP 503", "timeout after 1s").
    pub last_check: String,
    /// When the last probe finished (seconds since the Unix epoch; 0: none yet).
    pub last_check_unix: u64,
    pub transitions: u64,
    /// Unix seconds of the last transition (or of the check's start).
    pub since_unix: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Up,
    Down,
    /// No check result yet.
    Unknown,
}

impl HealthState {
    pub fn of(check: Option<&CheckStatus>) -> Self {
        match check {
            Some(h) if h.up => HealthState::Up,
            Some(_) => HealthState::Down,
            None => HealthState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSourceStatus {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStatus {
    /// The SNAT address of each family that has NAT VIPs.
    pub snat_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub snat_address_ipv6: Option<std::net::Ipv6Addr>,
    /// "LOW-HIGH".
    pub snat_port_range: String,
    /// Live NAT flows by TCP state at the last expiry sweep.
    pub flows: BTreeMap<String, u64>,
    pub reclaimed_total: u64,
}

impl AgentStatus {
    /// The status of `backend` of the VIP named `vip`.
    pub fn backend(&self, vip: &str, backend: IpAddr) -> Option<&BackendStatus> {
        self.vips
            .iter()
            .find(|v| v.name == vip)?
            .backends
            .iter()
            .find(|b| b.address == backend)
    }
}
