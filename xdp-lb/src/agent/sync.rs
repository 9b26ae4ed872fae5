//! The agent's side of `[sync]`: it tells the sync task how to name its flows (the directory of
//! backend addresses, refreshed after every reconcile), and installs the peers' flows through
//! the reconciler once they are resolved to this node's own VIP and backend ids.

use std::net::{IpAddr, SocketAddr};

use xdp_lb_common::{FLOW_F_CLOSING, FLOW_F_ESTABLISHED};

use super::Agent;
use crate::{
    clock,
    config::{Forwarding, SyncConfig},
    dataplane::SyncedFlow,
    nat::ClosedFlow,
    status::SyncStatus,
    sync::{
        directory::Directory,
        stream::{Inbound, SyncHandle},
        wire::{FlowRecord, RecordKind, STATE_CLOSING, STATE_ESTABLISHED},
    },
};

/// The running sync and what its installs did.
pub(super) struct SyncRuntime {
    pub(super) sync: SyncHandle,
    pub(super) installed: u64,
    pub(super) known: u64,
    pub(super) conflicts: u64,
    /// Flows of a VIP, or to a backend, that this node's config does not have.
    pub(super) unknown: u64,
    /// The start-up snapshot: "waiting", what arrived, or that none did.
    pub(super) snapshot: String,
    /// Copies removed because the peer closed their flows.
    pub(super) removed: u64,
}

impl SyncRuntime {
    pub(super) fn new(sync: SyncHandle, cfg: &SyncConfig) -> Self {
        Self {
            sync,
            installed: 0,
            known: 0,
            conflicts: 0,
            unknown: 0,
            removed: 0,
            snapshot: if cfg.snapshot_wait.is_zero() {
                "not asked".into()
            } else {
                "waiting".into()
            },
        }
    }
}

impl Agent {
    /// What the sync task reports: a peer's flows, or the end of the start-up snapshot wait.
    pub(super) async fn on_sync(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Flows(records) => self.install_synced(&records),
            Inbound::SnapshotDone { from, flows, took } => {
                let took_ms = took.as_millis() as u64;
                tracing::info!(peer = %from, flows, took_ms, "sync: snapshot complete; VRRP may take the addresses");
                self.lift_vrrp_hold(format!("{flows} flows from {from} in {took_ms} ms"))
                    .await;
            }
            Inbound::SnapshotTimeout => {
                tracing::warn!(
                    "sync: no peer completed a snapshot within sync.snapshot_wait; going ahead without it (VRRP may take the addresses)"
                );
                self.lift_vrrp_hold("none within sync.snapshot_wait".into())
                    .await;
            }
        }
    }

    /// The snapshot wait is over: VRRP may take the addresses, and `[announce]` announce.
    async fn lift_vrrp_hold(&mut self, snapshot: String) {
        if let Some(rt) = self.sync.as_mut() {
            rt.snapshot = snapshot;
        }
        for instance in &self.vrrp {
            instance.hold(None).await;
        }
        self.track().await;
    }

    /// The sender's directory: backend ids → addresses, and the SNAT addresses.
    pub(super) fn update_sync_directory(&self) {
        let Some(rt) = &self.sync else { return };
        let mut dir = Directory {
            snat_v4: self.snat_address.v4,
            snat_v6: self.snat_address.v6,
            ..Default::default()
        };
        for vip in &self.config.vips {
            let key = vip.key();
            for b in &vip.backends {
                if let Some(id) = self.ids.backends.get(&(key, b.address)) {
                    dir.backends.insert(*id, (b.address, b.port));
                }
            }
        }
        if let Ok(mut d) = rt.sync.directory.write() {
            *d = dir;
        }
    }

    /// The NAT flows this node's expiry reclaimed: the peers drop their copies (and free the
    /// SNAT ports) rather than keep them until their own timeouts.
    pub(super) fn send_closed(&self, closed: &[ClosedFlow]) {
        let Some(rt) = &self.sync else { return };
        if closed.is_empty() {
            return;
        }
        let records = closed
            .iter()
            .map(|c| FlowRecord {
                kind: RecordKind::Closed,
                proto: c.proto,
                state: 0,
                client: c.client,
                vip: c.vip,
                backend: SocketAddr::new(
                    match c.vip.ip() {
                        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    },
                    0,
                ),
                snat: None,
                idle_s: 0,
            })
            .collect();
        // Never wait: a full queue loses the closes, and the copies expire by their timeouts.
        let _ = rt.sync.closed.try_send(records);
    }

    /// A peer's flows: each resolved by its VIP (address, port, protocol) and its backend's
    /// address and port in this node's config, then installed; closed ones removed.
    pub(super) fn install_synced(&mut self, records: &[FlowRecord]) {
        if self.sync.is_none() {
            return;
        }
        let mut flows = Vec::with_capacity(records.len());
        let mut closed = Vec::new();
        let mut unknown = 0;
        for r in records {
            if r.kind == RecordKind::Closed {
                closed.push(ClosedFlow {
                    proto: r.proto,
                    client: r.client,
                    vip: r.vip,
                });
                continue;
            }
            match self.resolve(r) {
                Some(flow) => flows.push(flow),
                None => unknown += 1,
            }
        }
        let removed = if closed.is_empty() {
            0
        } else {
            self.reconciler.remove_synced(&closed)
        };
        let installed = if flows.is_empty() {
            Ok(Default::default())
        } else {
            self.reconciler
                .install_synced(&flows, clock::monotonic_ns(), clock::coarse_now_s())
        };
        let Some(rt) = self.sync.as_mut() else { return };
        rt.unknown += unknown;
        rt.removed += removed;
        match installed {
            Ok(report) => {
                rt.installed += report.installed;
                rt.known += report.known;
                rt.conflicts += report.conflicts;
                rt.unknown += report.malformed;
            }
            Err(err) => tracing::warn!(error = %err, "installing a peer's flows failed"),
        }
    }

    /// A peer's flow in this node's terms: its VIP and backend ids; None when this node has
    /// no such VIP or backend, or the flow leaves from an SNAT address that is not this
    /// node's.
    fn resolve(&self, r: &FlowRecord) -> Option<SyncedFlow> {
        let vip = self.config.vips.iter().find(|v| {
            v.address == r.vip.ip()
                && v.port == r.vip.port()
                && v.protocol.number() == r.proto
                && (v.forwarding == Forwarding::Nat) == (r.kind == RecordKind::Nat)
        })?;
        let key = vip.key();
        let vip_id = *self.ids.vips.get(&key)?;
        let backend = vip
            .backends
            .iter()
            .find(|b| b.address == r.backend.ip() && b.port == r.backend.port())?;
        let backend_id = *self.ids.backends.get(&(key, backend.address))?;
        // A NAT flow is only worth a copy here if its packets would leave from an address
        // this node holds too (the VRRP address both nodes share): a peer with an SNAT
        // address of its own (behind ECMP) makes flows this node could never carry, and a
        // copy would only take their ports.
        if let Some(snat) = r.snat {
            let ours = match snat.ip() {
                IpAddr::V4(a) => self.snat_address.v4 == Some(a),
                IpAddr::V6(a) => self.snat_address.v6 == Some(a),
            };
            if !ours {
                return None;
            }
        }
        let mut state = 0;
        if r.state & STATE_ESTABLISHED != 0 {
            state |= FLOW_F_ESTABLISHED;
        }
        if r.state & STATE_CLOSING != 0 {
            state |= FLOW_F_CLOSING;
        }
        let pair = |s: SocketAddr| -> (IpAddr, u16) { (s.ip(), s.port()) };
        Some(SyncedFlow {
            proto: r.proto,
            client: pair(r.client),
            vip: pair(r.vip),
            vip_id,
            backend_id,
            backend: pair(r.backend),
            snat: r.snat.map(pair),
            state,
            idle_s: r.idle_s,
        })
    }

    pub(super) fn sync_status(&self) -> Option<SyncStatus> {
        let rt = self.sync.as_ref()?;
        let cfg = self.config.sync.as_ref()?;
        Some(SyncStatus {
            peers: cfg.peers.clone(),
            port: cfg.port,
            stream: rt.sync.stats.view(),
            installed: rt.installed,
            known: rt.known,
            conflicts: rt.conflicts,
            unknown: rt.unknown,
            snapshot: rt.snapshot.clone(),
            removed: rt.removed,
        })
    }
}
