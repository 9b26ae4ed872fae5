//! This node's side of the datagram's authenticity: its key, its node id, its epoch and the
//! one sequence of the epoch, shared by the stream and the snapshot senders so that the
//! peers' replay windows see one sequence.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::wire::{self, FlowRecord, Key, Message, MessageKind};

/// Makes this node's datagrams: its key, node id, epoch and the one sequence of the epoch
/// (shared with the snapshot senders).
#[derive(Clone)]
pub(super) struct Sealer {
    key: Arc<Key>,
    node: u32,
    epoch: u64,
    seq: Arc<AtomicU64>,
}

impl Sealer {
    /// A new epoch (now, in ns since the Unix epoch: a restart raises it) with its node id.
    pub(super) fn new(key: Arc<Key>) -> Self {
        let epoch = crate::clock::unix_now_ns();
        Self {
            key,
            node: (epoch as u32) ^ std::process::id(),
            epoch,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The next datagram: `records` (at most `wire::MAX_RECORDS`) as `kind`, authenticated.
    pub(super) fn seal(&self, kind: MessageKind, records: Vec<FlowRecord>) -> Vec<u8> {
        wire::encode(
            &Message {
                kind,
                node: self.node,
                epoch: self.epoch,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                records,
            },
            &self.key,
        )
    }
}
