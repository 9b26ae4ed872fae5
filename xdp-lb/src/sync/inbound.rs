//! The receiving side of the sync task: a peer's datagram checked (a peer's address, a good
//! MAC, not a replay) and acted on — flows to the agent, a snapshot request answered, a
//! snapshot awaited and its end reported.

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    snapshot::{self, SnapshotSend},
    stream::{Inbound, Task},
    wire::{self, FlowRecord, Message, MessageKind},
};

impl Task {
    /// One datagram from the socket.
    pub(super) async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(msg) = self.receive(datagram, from) else {
            return;
        };
        match msg.kind {
            MessageKind::Flows => self.forward(msg.records),
            MessageKind::SnapshotChunk => {
                if let Some(w) = self.wanted.as_mut() {
                    *w.flows.entry(from.ip()).or_default() += msg.records.len() as u64;
                }
                // A snapshot is worth waiting for: backpressure rather than drops.
                let n = msg.records.len() as u64;
                self.r.stats.flows_received.fetch_add(n, Ordering::Relaxed);
                let _ = self.r.installs.send(Inbound::Flows(msg.records)).await;
            }
            MessageKind::SnapshotEnd => {
                if let Some(w) = self.wanted.take() {
                    let flows = w.flows.get(&from.ip()).copied().unwrap_or(0);
                    let took = w.since.elapsed();
                    let done = Inbound::SnapshotDone {
                        from: from.ip(),
                        flows,
                        took,
                    };
                    let _ = self.r.installs.send(done).await;
                }
            }
            MessageKind::SnapshotRequest => self.send_snapshot(from),
        }
    }

    /// A datagram from a peer, authenticated and not a replay; None (counted) otherwise.
    fn receive(&mut self, datagram: &[u8], from: SocketAddr) -> Option<Message> {
        let stats = &self.r.stats;
        stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
        if !self.r.peers.iter().any(|p| p.ip() == from.ip()) {
            stats.reject("unknown_peer");
            return None;
        }
        let msg = match wire::decode(datagram, &self.r.key) {
            Ok(m) => m,
            Err(e) => {
                stats.reject(e.name());
                return None;
            }
        };
        if let Err(e) = self.replay.accept(from.ip(), msg.epoch, msg.seq) {
            stats.reject(e.name());
            return None;
        }
        Some(msg)
    }

    /// Live flows to the agent: never waited for (a full queue drops, counted).
    fn forward(&self, records: Vec<FlowRecord>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        self.r.stats.flows_received.fetch_add(n, Ordering::Relaxed);
        if self.r.installs.try_send(Inbound::Flows(records)).is_err() {
            self.r
                .stats
                .flows_received_dropped
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A peer asked for every flow: one snapshot at a time per peer, sent to its sync port.
    fn send_snapshot(&mut self, from: SocketAddr) {
        let busy = self
            .sending
            .get(&from.ip())
            .is_some_and(|t| !t.is_finished());
        if busy {
            return;
        }
        let port = self
            .r
            .peers
            .iter()
            .find(|p| p.ip() == from.ip())
            .map_or(from.port(), SocketAddr::port);
        let send = SnapshotSend {
            socket: self.r.socket.clone(),
            to: SocketAddr::new(from.ip(), port),
            sealer: self.r.sealer.clone(),
            rate: self.r.rate,
            pin_dir: self.r.pin_dir.clone(),
            directory: self.r.directory(),
            stats: self.r.stats.clone(),
        };
        self.sending
            .insert(from.ip(), tokio::spawn(snapshot::send(send)));
    }

    /// While this node waits for a snapshot: ask every second, give up after `snapshot_wait`.
    pub(super) async fn ask_for_snapshot(&mut self) {
        let Some(w) = self.wanted.as_mut() else {
            return;
        };
        if w.since.elapsed() >= self.r.snapshot_wait {
            self.wanted = None;
            let _ = self.r.installs.send(Inbound::SnapshotTimeout).await;
        } else if w
            .last_request
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            w.last_request = Some(Instant::now());
            self.send_control(MessageKind::SnapshotRequest);
        }
    }
}
