//! One VRRP instance's task: adverts in, through the RFC 5798 §7.1 receive checks, to the
//! state machine (`machine.rs`); its actions out — adverts sent, virtual addresses taken or
//! released, gratuitous ARP / unsolicited NA (`garp.rs`), the notify hook (`notify.rs`), the
//! instance's status kept.

use std::{
    net::{IpAddr, SocketAddrV4, SocketAddrV6},
    ops::ControlFlow,
    sync::{Arc, Mutex},
    time::Instant,
};

use socket2::{SockAddr, Socket};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{
    garp::send_garps,
    machine::{Action, Machine, State},
    messages::{Control, InstanceStatus},
    notify::notify,
    packet::{Advert, RejectReason, VRRP_GROUP, VRRP_GROUP_V6, VRRP_TTL},
    socket::{self, Received},
};
use crate::{
    clock::unix_now,
    config::{Version, VrrpConfig},
    netlink::Netlink,
};

pub(super) struct Worker {
    pub(super) cfg: VrrpConfig,
    pub(super) ifindex: u32,
    pub(super) primary: IpAddr,
    pub(super) mac: [u8; 6],
    pub(super) vips: Vec<IpAddr>,
    pub(super) nl: Netlink,
    /// Receives adverts (IPv4: sends them too).
    pub(super) socket: AsyncFd<Socket>,
    /// IPv6: sends adverts, bound to the link-local address so that every advert, unicast
    /// ones included, leaves from it (RFC 5798 §5.1.2.1).
    pub(super) sender: Option<Socket>,
    pub(super) machine: Machine,
    pub(super) status: Arc<Mutex<InstanceStatus>>,
}

impl Worker {
    pub(super) async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let actions = self.machine.start(Instant::now());
        self.perform(actions).await;
        loop {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                ready = self.socket.readable() => {
                    let Ok(mut guard) = ready else { return };
                    let packets = self.drain(&mut guard);
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
                command = control.recv() => {
                    if self.on_control(command).await.is_break() {
                        return;
                    }
                }
            }
        }
    }

    /// What the socket holds now (at most 64 adverts; the next wake-up takes the rest).
    fn drain(
        &self,
        guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, socket2::Socket>,
    ) -> Vec<Option<Received>> {
        let mut packets = Vec::new();
        while packets.len() < 64 {
            match socket::recv(guard.get_inner(), self.primary) {
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
        packets
    }

    /// The agent's word: tracking, a hold, or the stop (`Break`: the worker ends).
    async fn on_control(&mut self, command: Option<Control>) -> ControlFlow<()> {
        match command {
            Some(Control::Track { fault, penalty }) => {
                let now = Instant::now();
                let mut actions = self.machine.set_penalty(penalty);
                actions.extend(self.machine.set_fault(now, fault));
                self.perform(actions).await;
            }
            Some(Control::Hold(hold)) => {
                match (&hold, self.machine.held()) {
                    (None, Some(was)) => {
                        tracing::info!(instance = %self.cfg.name, was = %was, "VRRP: hold lifted; the addresses may be taken");
                    }
                    (Some(reason), None) => {
                        tracing::info!(instance = %self.cfg.name, reason = %reason, "VRRP: holding the addresses");
                    }
                    _ => {}
                }
                let actions = self.machine.set_hold(Instant::now(), hold);
                self.perform(actions).await;
            }
            Some(Control::Shutdown(done)) => {
                let actions = self.machine.shutdown();
                self.perform(actions).await;
                let _ = done.send(());
                return ControlFlow::Break(());
            }
            None => {
                let actions = self.machine.shutdown();
                self.perform(actions).await;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
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
                    tracing::warn!(instance = %self.cfg.name, %dst, error = %e, "sending a VRRP advert failed");
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
