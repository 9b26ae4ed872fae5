//! One VRRP instance as the agent holds it: started on `interface` (its advert source found,
//! its sockets opened: `socket.rs`), run as a tokio task (`worker.rs`), fed tracking results
//! and holds, read for its status, shut down.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

pub use super::messages::InstanceStatus;
use super::{
    machine::{Machine, Params},
    messages::Control,
    socket,
    worker::Worker,
};
use crate::{
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
        log_start(&cfg, primary);
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

fn log_start(cfg: &VrrpConfig, primary: IpAddr) {
    tracing::info!(
        instance = %cfg.name,
        interface = %cfg.interface,
        vrid = cfg.vrid,
        priority = cfg.priority,
        version = ?cfg.version,
        checksum = ?cfg.checksum,
        primary = %primary,
        mode = if cfg.unicast_peers.is_empty() { "multicast" } else { "unicast" },
        "VRRP instance starting"
    );
}
