//! One VRRP instance at work: a raw socket for protocol 112 on `interface` (IPv4, or IPv6 for
//! an instance of IPv6 addresses), the state machine, the virtual addresses (rtnetlink),
//! gratuitous ARP or unsolicited neighbour advertisements (AF_PACKET) and the notify hook.
//! Runs as a tokio task; the agent feeds it tracking results and reads its status.

use std::{
    collections::BTreeMap,
    mem::MaybeUninit,
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd as _,
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
    packet::{Advert, IPPROTO_VRRP, RejectReason, VRRP_GROUP, VRRP_GROUP_V6, VRRP_TTL, split_ipv4},
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

enum Control {
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
        let vips: Vec<IpAddr> = cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
        let ipv6 = cfg.is_ipv6();
        let netlink_err = |source| VrrpError::Netlink {
            name: name.clone(),
            source,
        };
        // The advert source and tie-breaker: the interface's primary IPv4 address, or its IPv6
        // link-local address (RFC 5798 §5.1.1.1, §5.1.2.1).
        let primary: Option<IpAddr> = if ipv6 {
            nl.link_local_ipv6(ifindex)
                .await
                .map_err(netlink_err)?
                .map(IpAddr::V6)
        } else {
            let v4: Vec<_> = vips
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            nl.primary_ipv4(ifindex, &v4)
                .await
                .map_err(netlink_err)?
                .map(IpAddr::V4)
        };
        let primary = primary.ok_or_else(|| VrrpError::NoAddress {
            name: name.clone(),
            interface: cfg.interface.clone(),
            family: if ipv6 { "IPv6 link-local" } else { "IPv4" },
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
        let (socket, sender) = match primary {
            IpAddr::V4(primary) => (
                open_v4(&cfg, ifindex, primary).map_err(|(w, e)| io(w)(e))?,
                None,
            ),
            IpAddr::V6(link_local) => {
                let (rx, tx) = open_v6(&cfg, ifindex, link_local).map_err(|(w, e)| io(w)(e))?;
                (rx, Some(tx))
            }
        };
        socket.set_nonblocking(true).map_err(io("non-blocking"))?;
        // SAFETY: the socket owns its fd for as long as the AsyncFd owns the socket.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .map_err(io("registering with tokio"))?;

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
            sender,
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

struct Worker {
    cfg: VrrpConfig,
    ifindex: u32,
    primary: IpAddr,
    mac: [u8; 6],
    vips: Vec<IpAddr>,
    nl: Netlink,
    /// Receives adverts (IPv4: sends them too).
    socket: AsyncFd<Socket>,
    /// IPv6: sends adverts, bound to the link-local address so that every advert, unicast
    /// ones included, leaves from it (RFC 5798 §5.1.2.1).
    sender: Option<Socket>,
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
                        let received = match self.primary {
                            IpAddr::V4(_) => guard.get_inner().recv_from(&mut buf).map(|(n, _)| {
                                // SAFETY: recv_from initialised the first n bytes.
                                let bytes: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
                                split_ipv4(&bytes).map(|(src, dst, ttl, msg)| Received {
                                    src: IpAddr::V4(src),
                                    dst: IpAddr::V4(dst),
                                    ttl,
                                    msg: msg.to_vec(),
                                })
                            }),
                            IpAddr::V6(_) => recv_v6(guard.get_inner()),
                        };
                        match received {
                            Ok(packet) => packets.push(packet),
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
                        actions.extend(self.receive(packet));
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
                    Some(Control::Hold(hold)) => {
                        match (&hold, self.machine.held()) {
                            (None, Some(was)) => tracing::info!(instance = %self.cfg.name, was = %was, "VRRP: hold lifted; the addresses may be taken"),
                            (Some(reason), None) => tracing::info!(instance = %self.cfg.name, reason = %reason, "VRRP: holding the addresses"),
                            _ => {}
                        }
                        let actions = self.machine.set_hold(Instant::now(), hold);
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

    /// RFC 5798 §7.1 receive checks, then the state machine. `None`: an IPv4 packet too
    /// short for its header, or an IPv6 one without the ancillary data we asked for.
    fn receive(&mut self, packet: Option<Received>) -> Vec<Action> {
        let Some(Received { src, dst, ttl, msg }) = packet else {
            self.reject(RejectReason::Short);
            return Vec::new();
        };
        if src == self.primary || self.vips.contains(&src) {
            self.reject(RejectReason::Own);
            return Vec::new();
        }
        // TTL (IPv4) or hop limit (IPv6) 255: the advert was not routed (RFC 5798 §7.1).
        if ttl != VRRP_TTL {
            self.reject(RejectReason::Ttl);
            return Vec::new();
        }
        let msg = &msg[..];
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
        let targets: Vec<IpAddr> = match (self.cfg.unicast_peers.is_empty(), self.primary) {
            (false, _) => self.cfg.unicast_peers.clone(),
            (true, IpAddr::V4(_)) => vec![IpAddr::V4(VRRP_GROUP)],
            (true, IpAddr::V6(_)) => vec![IpAddr::V6(VRRP_GROUP_V6)],
        };
        let socket = self.sender.as_ref().unwrap_or(self.socket.get_ref());
        for dst in targets {
            let msg = advert.encode(self.cfg.checksum, self.primary, dst);
            let to = match dst {
                IpAddr::V4(d) => SockAddr::from(SocketAddrV4::new(d, 0)),
                // Link-local and multicast destinations need the interface as scope.
                IpAddr::V6(d) => SockAddr::from(SocketAddrV6::new(d, 0, 0, self.ifindex)),
            };
            match socket.send_to(&msg, &to) {
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
    /// address associated with the virtual router, broadcast a gratuitous ARP request"), or for
    /// IPv6 as many unsolicited neighbour advertisements ("for each IPv6 address ... send an
    /// unsolicited ND Neighbor Advertisement with the Router Flag (R) bit set ... and Override
    /// flag (O) set" — R only when the instance is a router's; ours is not, so O alone).
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

/// A received advert: where from, where to, its TTL or hop limit, and the VRRP message.
struct Received {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    msg: Vec<u8>,
}

/// The IPv4 socket: raw protocol 112 (the kernel hands us the IP header), joined to
/// 224.0.0.18, sending with TTL 255 from the primary address.
fn open_v4(
    cfg: &VrrpConfig,
    ifindex: u32,
    primary: std::net::Ipv4Addr,
) -> Result<Socket, (&'static str, std::io::Error)> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(IPPROTO_VRRP as i32)),
    )
    .map_err(|e| ("opening a raw socket for protocol 112", e))?;
    socket
        .bind_device(Some(cfg.interface.as_bytes()))
        .map_err(|e| ("binding to the interface", e))?;
    // Not bound to an address: a raw socket bound to one only receives packets addressed to
    // it, and adverts go to 224.0.0.18. IP_MULTICAST_IF (below) makes multicast adverts
    // leave from the primary address; unicast ones take the route's preferred source.
    // RFC 5798 §5.1.1.3: TTL 255, so that receivers can tell the advert was not routed.
    socket
        .set_ttl_v4(VRRP_TTL as u32)
        .map_err(|e| ("setting the TTL", e))?;
    socket
        .set_multicast_ttl_v4(VRRP_TTL as u32)
        .map_err(|e| ("setting the multicast TTL", e))?;
    socket
        .set_multicast_loop_v4(false)
        .map_err(|e| ("disabling multicast loop", e))?;
    socket
        .set_multicast_if_v4(&primary)
        .map_err(|e| ("choosing the multicast interface", e))?;
    socket
        .join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
        .map_err(|e| ("joining 224.0.0.18", e))?;
    Ok(socket)
}

/// The IPv6 sockets: one receiving (joined to ff02::12, asking for each packet's destination
/// and hop limit: an IPv6 raw socket gets no header), one sending, bound to the link-local
/// address, hop limit 255 (RFC 5798 §5.1.2.3).
fn open_v6(
    cfg: &VrrpConfig,
    ifindex: u32,
    link_local: Ipv6Addr,
) -> Result<(Socket, Socket), (&'static str, std::io::Error)> {
    let open = || {
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(IPPROTO_VRRP as i32)),
        )
        .map_err(|e| ("opening a raw IPv6 socket for protocol 112", e))?;
        s.bind_device(Some(cfg.interface.as_bytes()))
            .map_err(|e| ("binding to the interface", e))?;
        Ok::<_, (&'static str, std::io::Error)>(s)
    };
    let rx = open()?;
    rx.join_multicast_v6(&VRRP_GROUP_V6, ifindex)
        .map_err(|e| ("joining ff02::12", e))?;
    for option in [libc::IPV6_RECVPKTINFO, libc::IPV6_RECVHOPLIMIT] {
        set_ipv6_option(&rx, option, 1).map_err(|e| ("asking for destination and hop limit", e))?;
    }
    let tx = open()?;
    tx.set_multicast_hops_v6(VRRP_TTL as u32)
        .map_err(|e| ("setting the multicast hop limit", e))?;
    tx.set_unicast_hops_v6(VRRP_TTL as u32)
        .map_err(|e| ("setting the hop limit", e))?;
    tx.set_multicast_loop_v6(false)
        .map_err(|e| ("disabling multicast loop", e))?;
    tx.set_multicast_if_v6(ifindex)
        .map_err(|e| ("choosing the multicast interface", e))?;
    tx.bind(&SockAddr::from(SocketAddr::V6(SocketAddrV6::new(
        link_local, 0, 0, ifindex,
    ))))
    .map_err(|e| ("binding to the link-local address", e))?;
    Ok((rx, tx))
}

fn set_ipv6_option(socket: &Socket, option: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt with a valid fd and an int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            option,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One IPv6 advert with its source (the sender's address), destination (IPV6_PKTINFO) and hop
/// limit (IPV6_HOPLIMIT). `Ok(None)` when the ancillary data is missing.
fn recv_v6(socket: &Socket) -> std::io::Result<Option<Received>> {
    let mut data = [0u8; 2048];
    // Room for both control messages (in6_pktinfo and an int), aligned.
    let mut control = [0u64; 16];
    // SAFETY: zeroed sockaddr_in6 and msghdr are valid; the pointers set below outlive the
    // call.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: recvmsg on a valid fd with the buffers above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (mut dst, mut hops) = (None, None);
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    hops = Some(std::ptr::read_unaligned(data.cast::<i32>()));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
    Ok(match (dst, hops) {
        (Some(dst), Some(hops)) => Some(Received {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            ttl: u8::try_from(hops).unwrap_or(0),
            msg: data[..n as usize].to_vec(),
        }),
        _ => None,
    })
}
