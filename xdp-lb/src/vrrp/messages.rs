//! What the agent and an instance's task exchange: control messages in (tracking, holds, the
//! stop), the instance's status out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{machine::State, packet::RejectReason};
use crate::{clock::unix_now, config::VrrpConfig};

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

/// The agent's word to an instance's task.
pub(super) enum Control {
    Track {
        fault: Option<String>,
        penalty: u8,
    },
    /// Hold taking the addresses (a reason) or allow it (None): see `Machine::set_hold`.
    Hold(Option<String>),
    Shutdown(oneshot::Sender<()>),
}

impl InstanceStatus {
    /// Before the first transition.
    pub(super) fn new(cfg: &VrrpConfig, priority: u8) -> Self {
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
