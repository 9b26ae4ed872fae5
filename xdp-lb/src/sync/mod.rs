//! Flow-state synchronisation between LB nodes (`[sync]`), so that a flow that arrives at
//! another node — after a VRRP failover, or when ECMP moves it — keeps its backend and, for
//! NAT, its translation.
//!
//! This module holds the parts that face the network, written to treat every byte as hostile:
//! - `wire`: the datagram format (a header, fixed-size flow records, an HMAC-SHA-256 trailer)
//!   and its decoder, which names why a datagram was refused;
//! - `replay`: the per-sender anti-replay window (RFC 4303 §3.4.3's sliding window, keyed by
//!   the sender's epoch), consulted only after the MAC has been verified;
//! - `sealer`: this node's key, node id, epoch and sequence, which every datagram it sends
//!   carries;
//! - `stream`: the task that sends this node's new flows and takes the peers', and the
//!   snapshot exchange of a node that starts; `snapshot` reads the flow tables for it;
//! - `directory`: backend ids to addresses, for the records; `stats`: the task's counters.
//!
//! The shared key is read once, with the config (`config::sync_key`); the installs go through
//! the reconciler (`dataplane/sync_install.rs`); the agent's side is `agent/sync.rs`.

pub mod directory;
mod inbound;
mod outbound;
pub mod replay;
mod sealer;
pub mod snapshot;
pub mod stats;
pub mod stream;
pub mod wire;
