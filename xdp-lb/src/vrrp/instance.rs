//! One VRRP instance as the agent holds it: started on `interface` (its advert source found,
//! its sockets opened: `socket.rs`), run as a tokio task (`worker.rs`), fed tracking results
//! and holds, read for its status, shut down.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    machine::{Machine, Params, State},
    packet::RejectReason,
    socket,
    worker::Worker,
};
use crate::{
    clock::unix_now,
    config::VrrpConfig,
    netlink::{self, Netlink, NetlinkError},
};

#[derive(Debug, Error)]
pub enum VrrpError {
    #[error("VRRP instance {name}: interface {interface:?} does not exist")]
    NoInterface { name: String, interface: String },
    #[error(
        "VRRP instance {name}: interface {interface} has no {family} address of its own to send adverts from"
    )]
    NoAddress {
        name: String,
        interface: String,
        family: &'static str,
    },
    #[error("VRRP instance {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("VRRP instance {name}: netlink: {source}")]
    Netlink {
        name: String,
        #[source]
        source: NetlinkError,
    },
}

/// What `status`, `/metrics` and `/stats` show of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub state: State,
    pub priority: u8,
    pub configured_priority: u8,
    pub master_adver_interval_ms: u64,
    pub transitions: u64,
    pub last_transition_unix: u64,
    pub last_cause: String,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Received packets not accepted, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
}

pub(super) enum Control {
    Track {
        fault: Option<String>,
        penalty: u8,
    },
    /// Hold taking the addresses (a reason) or allow it (None): see `Machine::set_hold`.
    Hold(Option<String>),
    Shutdown(oneshot::Sender<()>),
}

pub struct Instance {
    pub name: String,
    pub status: Arc<Mutex<InstanceStatus>>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Instance {
    /// Starts the instance; `hold`: it may not take the addresses until `hold(None)` (a node
    /// waiting for the flow sync's snapshot).
    pub async fn start(
        cfg: VrrpConfig,
        nl: Netlink,
        hold: Option<String>,
    ) -> Result<Self, VrrpError> {
        let name = cfg.name.clone();
        let ifindex = netlink::ifindex(&cfg.interface).ok_or_else(|| VrrpError::NoInterface {
            name: name.clone(),
            interface: cfg.interface.clone(),
        })?;
        let netlink_err = |source| VrrpError::Netlink {
            name: name.clone(),
            source,
        };
        let primary = primary_address(&cfg, &nl, ifindex)
            .await
            .map_err(netlink_err)?
            .ok_or_else(|| VrrpError::NoAddress {
                name: name.clone(),
                interface: cfg.interface.clone(),
                family: if cfg.is_ipv6() {
                    "IPv6 link-local"
                } else {
                    "IPv4"
                },
            })?;
        let mac = nl
            .link_mac(ifindex)
            .await
            .map_err(netlink_err)?
            .unwrap_or([0; 6]);
        let (socket, sender) =
            socket::open(&cfg, ifindex, primary).map_err(|(what, source)| VrrpError::Io {
                name: name.clone(),
                what,
                source,
            })?;
        let mut machine = Machine::new(Params {
            version: cfg.version,
            priority: cfg.priority,
            advert_interval: cfg.advert_interval,
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay,
            primary,
        });
        if let Some(reason) = &hold {
            tracing::info!(instance = %name, reason = %reason, "VRRP: not taking the addresses until the hold is lifted");
        }
        machine.set_hold(Instant::now(), hold);
        let status = Arc::new(Mutex::new(InstanceStatus::new(&cfg, machine.priority())));
        tracing::info!(
            instance = %name,
            interface = %cfg.interface,
            vrid = cfg.vrid,
            priority = cfg.priority,
            version = ?cfg.version,
            checksum = ?cfg.checksum,
            primary = %primary,
            mode = if cfg.unicast_peers.is_empty() { "multicast" } else { "unicast" },
            "VRRP instance starting"
        );
        let (control, control_rx) = mpsc::channel(8);
        let worker = Worker {
            vips: cfg.virtual_addresses.iter().map(|(a, _)| *a).collect(),
            cfg,
            ifindex,
            primary,
            mac,
            nl,
            socket,
            sender,
            machine,
            status: status.clone(),
        };
        let task = tokio::spawn(worker.run(control_rx));
        Ok(Self {
            name,
            status,
            control,
            task,
        })
    }

    /// Tracking result: `fault` puts the instance in Fault; `penalty` lowers its priority.
    pub async fn track(&self, fault: Option<String>, penalty: u8) {
        let _ = self.control.send(Control::Track { fault, penalty }).await;
    }

    /// Lifts (None) or sets the hold on taking the addresses.
    pub async fn hold(&self, hold: Option<String>) {
        let _ = self.control.send(Control::Hold(hold)).await;
    }

    /// Sends priority 0 if master, releases the addresses, stops (bounded wait).
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.task.abort();
    }
}

impl InstanceStatus {
    /// Before the first transition.
    fn new(cfg: &VrrpConfig, priority: u8) -> Self {
        InstanceStatus {
            name: cfg.name.clone(),
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            state: State::Initialize,
            priority,
            configured_priority: cfg.priority,
            master_adver_interval_ms: cfg.advert_interval.as_millis() as u64,
            transitions: 0,
            last_transition_unix: unix_now(),
            last_cause: "not started".into(),
            adverts_sent: 0,
            adverts_received: 0,
            rejected: RejectReason::ALL.iter().map(|r| (*r, 0)).collect(),
        }
    }
}

/// The advert source and tie-breaker: the interface's primary IPv4 address (one that is not a
/// virtual address), or its IPv6 link-local address (RFC 5798 §5.1.1.1, §5.1.2.1).
async fn primary_address(
    cfg: &VrrpConfig,
    nl: &Netlink,
    ifindex: u32,
) -> Result<Option<IpAddr>, NetlinkError> {
    if cfg.is_ipv6() {
        return Ok(nl.link_local_ipv6(ifindex).await?.map(IpAddr::V6));
    }
    let v4: Vec<_> = cfg
        .virtual_addresses
        .iter()
        .filter_map(|(a, _)| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    Ok(nl.primary_ipv4(ifindex, &v4).await?.map(IpAddr::V4))
}
