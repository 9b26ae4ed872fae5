//! One VRRP instance at work: a raw IPv4 socket for protocol 112 on `interface`, the state
//! machine, the virtual addresses (rtnetlink), gratuitous ARP (AF_PACKET) and the notify hook.
//! Runs as a tokio task; the agent feeds it tracking results and reads its status.

use std::{
    collections::BTreeMap,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    announce::{notify, send_garps},
    machine::{Action, Machine, Params, State},
    packet::{Advert, IPPROTO_VRRP, RejectReason, VRRP_GROUP, VRRP_TTL, split_ipv4},
};
use crate::{
    clock::unix_now,
    config::{Version, VrrpConfig},
    netlink::{self, Netlink, NetlinkError},
};

#[derive(Debug, Error)]
pub enum VrrpError {
    #[error("VRRP instance {name}: interface {interface:?} does not exist")]
    NoInterface { name: String, interface: String },
    #[error(
        "VRRP instance {name}: interface {interface} has no IPv4 address of its own to send adverts from"
    )]
    NoAddress { name: String, interface: String },
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

enum Control {
    Track { fault: Option<String>, penalty: u8 },
    Shutdown(oneshot::Sender<()>),
}

pub struct Instance {
    pub name: String,
    pub status: Arc<Mutex<InstanceStatus>>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Instance {
    pub async fn start(cfg: VrrpConfig, nl: Netlink) -> Result<Self, VrrpError> {
        let name = cfg.name.clone();
        let ifindex = netlink::ifindex(&cfg.interface).ok_or_else(|| VrrpError::NoInterface {
            name: name.clone(),
            interface: cfg.interface.clone(),
        })?;
        let vips: Vec<Ipv4Addr> = cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
        let primary = nl
            .primary_ipv4(ifindex, &vips)
            .await
            .map_err(|source| VrrpError::Netlink {
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| VrrpError::NoAddress {
                name: name.clone(),
                interface: cfg.interface.clone(),
            })?;
        let mac = nl
            .link_mac(ifindex)
            .await
            .map_err(|source| VrrpError::Netlink {
                name: name.clone(),
                source,
            })?
            .unwrap_or([0; 6]);
        let io = |what: &'static str| {
            let name = name.clone();
            move |source| VrrpError::Io { name, what, source }
        };
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(IPPROTO_VRRP as i32)),
        )
        .map_err(io("opening a raw socket for protocol 112"))?;
        socket
            .bind_device(Some(cfg.interface.as_bytes()))
            .map_err(io("binding to the interface"))?;
        // Not bound to an address: a raw socket bound to one only receives packets addressed to
        // it, and adverts go to 224.0.0.18. IP_MULTICAST_IF (below) makes multicast adverts
        // leave from the primary address; unicast ones take the route's preferred source.
        // RFC 5798 §5.1.1.3: TTL 255, so that receivers can tell the advert was not routed.
        socket
            .set_ttl_v4(VRRP_TTL as u32)
            .map_err(io("setting the TTL"))?;
        socket
            .set_multicast_ttl_v4(VRRP_TTL as u32)
            .map_err(io("setting the multicast TTL"))?;
        socket
            .set_multicast_loop_v4(false)
            .map_err(io("disabling multicast loop"))?;
        socket
            .set_multicast_if_v4(&primary)
            .map_err(io("choosing the multicast interface"))?;
        socket
            .join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(io("joining 224.0.0.18"))?;
        socket.set_nonblocking(true).map_err(io("non-blocking"))?;
        // SAFETY: the socket owns its fd for as long as the AsyncFd owns the socket.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .map_err(io("registering with tokio"))?;

        let machine = Machine::new(Params {
            version: cfg.version,
            priority: cfg.priority,
            advert_interval: cfg.advert_interval,
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay,
            primary,
        });
        let status = Arc::new(Mutex::new(InstanceStatus {
            name: name.clone(),
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            state: State::Initialize,
            priority: machine.priority(),
            configured_priority: cfg.priority,
            master_adver_interval_ms: cfg.advert_interval.as_millis() as u64,
            transitions: 0,
            last_transition_unix: unix_now(),
            last_cause: "not started".into(),
            adverts_sent: 0,
            adverts_received: 0,
            rejected: RejectReason::ALL.iter().map(|r| (*r, 0)).collect(),
        }));
        let (control, control_rx) = mpsc::channel(8);
        let worker = Worker {
            cfg,
            ifindex,
            primary,
            mac,
            vips,
            nl,
            socket,
            machine,
            status: status.clone(),
        };
        tracing::info!(
            instance = %name,
            interface = %worker.cfg.interface,
            vrid = worker.cfg.vrid,
            priority = worker.cfg.priority,
            version = ?worker.cfg.version,
            checksum = ?worker.cfg.checksum,
            primary = %primary,
            mode = if worker.cfg.unicast_peers.is_empty() { "multicast" } else { "unicast" },
            "VRRP instance starting"
        );
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

    /// Sends priority 0 if master, releases the addresses, stops (bounded wait).
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.task.abort();
    }
}

struct Worker {
    cfg: VrrpConfig,
    ifindex: u32,
    primary: Ipv4Addr,
    mac: [u8; 6],
    vips: Vec<Ipv4Addr>,
    nl: Netlink,
    socket: AsyncFd<Socket>,
    machine: Machine,
    status: Arc<Mutex<InstanceStatus>>,
}

impl Worker {
    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let actions = self.machine.start(Instant::now());
        self.perform(actions).await;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                ready = self.socket.readable() => {
                    let Ok(mut guard) = ready else { return };
                    let mut packets = Vec::new();
                    // Drain the socket (bounded), then handle what arrived.
                    while packets.len() < 64 {
                        match guard.get_inner().recv_from(&mut buf) {
                            Ok((n, _)) => {
                                // SAFETY: recv_from initialised the first n bytes.
                                packets.push(buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect::<Vec<u8>>());
                            }
                            Err(e) => {
                                if e.kind() != std::io::ErrorKind::WouldBlock {
                                    tracing::warn!(instance = %self.cfg.name, error = %e, "VRRP receive failed");
                                }
                                guard.clear_ready();
                                break;
                            }
                        }
                    }
                    drop(guard);
                    let mut actions = Vec::new();
                    for packet in packets {
                        actions.extend(self.receive(&packet));
                    }
                    self.perform(actions).await;
                }
                _ = sleep_until(deadline) => {
                    let actions = self.machine.on_timer(Instant::now());
                    self.perform(actions).await;
                }
                command = control.recv() => match command {
                    Some(Control::Track { fault, penalty }) => {
                        let now = Instant::now();
                        let mut actions = self.machine.set_penalty(penalty);
                        actions.extend(self.machine.set_fault(now, fault));
                        self.perform(actions).await;
                    }
                    Some(Control::Shutdown(done)) => {
                        let actions = self.machine.shutdown();
                        self.perform(actions).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        let actions = self.machine.shutdown();
                        self.perform(actions).await;
                        return;
                    }
                },
            }
        }
    }

    fn reject(&self, reason: RejectReason) {
        if let Ok(mut s) = self.status.lock() {
            *s.rejected.entry(reason).or_default() += 1;
        }
    }

    /// RFC 5798 §7.1 receive checks, then the state machine.
    fn receive(&mut self, packet: &[u8]) -> Vec<Action> {
        let Some((src, dst, ttl, msg)) = split_ipv4(packet) else {
            self.reject(RejectReason::Short);
            return Vec::new();
        };
        if src == self.primary || self.vips.contains(&src) {
            self.reject(RejectReason::Own);
            return Vec::new();
        }
        if ttl != VRRP_TTL {
            self.reject(RejectReason::Ttl);
            return Vec::new();
        }
        let advert = match Advert::decode(
            msg,
            self.cfg.version,
            self.cfg.vrid,
            self.cfg.checksum,
            src,
            dst,
        ) {
            Ok(a) => a,
            Err(reason) => {
                self.reject(reason);
                return Vec::new();
            }
        };
        if self.cfg.version == Version::V2
            && advert.interval_cs as u128 * 10 != self.cfg.advert_interval.as_millis()
        {
            self.reject(RejectReason::Interval);
            return Vec::new();
        }
        if let Ok(mut s) = self.status.lock() {
            s.adverts_received += 1;
        }
        self.machine.on_advert(Instant::now(), src, &advert)
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::TakeAddresses => {
                    self.take_addresses().await;
                    self.gratuitous_arp();
                    self.schedule_garp_repeat();
                }
                Action::ReleaseAddresses => self.release_addresses().await,
                Action::Transition { from, to, cause } => self.transition(from, to, cause),
            }
        }
        if let Ok(mut s) = self.status.lock() {
            s.priority = self.machine.priority();
            s.master_adver_interval_ms = self.machine.master_adver_interval().as_millis() as u64;
        }
    }

    fn send_advert(&self, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: (self.cfg.advert_interval.as_millis() / 10) as u16,
            addresses: self.vips.clone(),
        };
        let targets: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![VRRP_GROUP]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in targets {
            let msg = advert.encode(self.cfg.checksum, self.primary, dst);
            match self
                .socket
                .get_ref()
                .send_to(&msg, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            {
                Ok(_) => {
                    if let Ok(mut s) = self.status.lock() {
                        s.adverts_sent += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %self.cfg.name, %dst, error = %e, "sending a VRRP advert failed")
                }
            }
        }
    }

    async fn take_addresses(&self) {
        for (addr, prefix) in &self.cfg.virtual_addresses {
            if let Err(e) = self.nl.add_address(self.ifindex, *addr, *prefix).await {
                tracing::error!(instance = %self.cfg.name, address = %addr, error = %e, "adding the virtual address failed");
            }
        }
    }

    async fn release_addresses(&self) {
        for (addr, _) in &self.cfg.virtual_addresses {
            if let Err(e) = self.nl.remove_address(self.ifindex, *addr).await {
                tracing::warn!(instance = %self.cfg.name, address = %addr, error = %e, "removing the virtual address failed");
            }
        }
    }

    /// `garp_count` gratuitous ARP requests per address (RFC 5798 §6.4.1: "for each IPv4
    /// address associated with the virtual router, broadcast a gratuitous ARP request").
    fn gratuitous_arp(&self) {
        send_garps(
            &self.cfg.name,
            self.ifindex,
            self.mac,
            &self.vips,
            self.cfg.garp_count,
        );
    }

    /// keepalived repeats its GARPs after `garp_master_delay` (5 s): switches that missed the
    /// first burst learn the new port then. Only if still master.
    fn schedule_garp_repeat(&self) {
        if self.cfg.garp_count == 0 || self.cfg.garp_repeat_delay.is_zero() {
            return;
        }
        let (name, ifindex, mac, vips, count, delay) = (
            self.cfg.name.clone(),
            self.ifindex,
            self.mac,
            self.vips.clone(),
            self.cfg.garp_count,
            self.cfg.garp_repeat_delay,
        );
        let status = self.status.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if status
                .lock()
                .map(|s| s.state == State::Master)
                .unwrap_or(false)
            {
                send_garps(&name, ifindex, mac, &vips, count);
            }
        });
    }

    fn transition(&self, from: State, to: State, cause: String) {
        if to == State::Master || from == State::Master || to == State::Fault {
            tracing::warn!(instance = %self.cfg.name, vrid = self.cfg.vrid, from = from.name(), to = to.name(), %cause, "VRRP transition");
        } else {
            tracing::info!(instance = %self.cfg.name, vrid = self.cfg.vrid, from = from.name(), to = to.name(), %cause, "VRRP transition");
        }
        if let Ok(mut s) = self.status.lock() {
            s.state = to;
            s.transitions += 1;
            s.last_transition_unix = unix_now();
            s.last_cause = cause;
        }
        if let Some(program) = &self.cfg.notify {
            notify(program.clone(), to, self.cfg.vrid, self.cfg.name.clone());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
