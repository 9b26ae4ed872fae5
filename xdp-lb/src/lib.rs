//! xdp-lb: the agent and CLI of an XDP layer-4 load balancer.
//!
//! Where to look:
//! - `config` — the TOML file and its validation.
//! - `maglev` — how a VIP's table of backends is built (consistent hashing with weights).
//! - `state` — the desired contents of the maps, computed by pure functions.
//! - `reconcile` — the one writer of the maps.
//! - `nat` — NAT flow expiry (TCP-state timeouts, SNAT port reclaim), run by the reconciler.
//! - `dataplane` — loading, attaching and pinning the XDP program; opening pinned maps.
//! - `neighbor` — the backends' MACs and egress interfaces from the kernel.
//! - `agent` — `xdp-lb run`: ties the above together and handles signals.
//! - The XDP program itself is in the `xdp-lb-ebpf` crate: `parse.rs` (how a packet is parsed),
//!   `balance.rs` (how a backend is chosen), `forward.rs` (how it is sent on by DSR), `nat.rs`
//!   (full NAT both ways, SNAT port allocation, next hop from the kernel's FIB).

pub mod agent;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod flow_log;
pub mod health;
pub mod http;
pub mod inspect;
pub mod maglev;
pub mod nat;
pub mod neighbor;
pub mod reconcile;
pub mod state;
pub mod vrrp;
