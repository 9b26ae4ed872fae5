//! The sync task's counters, shared with the agent for `status` and `/metrics`.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

/// Counters, for `status` and `/metrics`.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub flows_reported: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub flows_sent: AtomicU64,
    /// Flows not sent: the queue was full, the rate limit or the socket refused.
    pub flows_dropped: AtomicU64,
    /// Reported flows whose backend the directory did not know (removed meanwhile).
    pub flows_unknown: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub flows_received: AtomicU64,
    /// Received flows not handed to the agent: its queue was full.
    pub flows_received_dropped: AtomicU64,
    /// Datagrams refused, by reason.
    pub rejected: Mutex<BTreeMap<String, u64>>,
}

impl SyncStats {
    pub(super) fn reject(&self, reason: &'static str) {
        if let Ok(mut r) = self.rejected.lock() {
            *r.entry(reason.to_owned()).or_default() += 1;
        }
    }

    pub fn view(&self) -> SyncView {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncView {
            flows_reported: get(&self.flows_reported),
            datagrams_sent: get(&self.datagrams_sent),
            flows_sent: get(&self.flows_sent),
            flows_dropped: get(&self.flows_dropped),
            flows_unknown: get(&self.flows_unknown),
            datagrams_received: get(&self.datagrams_received),
            flows_received: get(&self.flows_received),
            flows_received_dropped: get(&self.flows_received_dropped),
            rejected: self.rejected.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }
}

/// [`SyncStats`] as `status` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncView {
    pub flows_reported: u64,
    pub datagrams_sent: u64,
    pub flows_sent: u64,
    pub flows_dropped: u64,
    pub flows_unknown: u64,
    pub datagrams_received: u64,
    pub flows_received: u64,
    pub flows_received_dropped: u64,
    pub rejected: BTreeMap<String, u64>,
}
