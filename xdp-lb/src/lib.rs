//! xdp-lb: the agent and CLI of an XDP layer-4 load balancer.
//!
//! Where to look (the data flows top to bottom):
//! - `config/` — the TOML file: `raw` (as written), `validate` (+ `vrrp`, `health_check`), errors
//!   with file, line and key.
//! - `state` — the desired contents of the maps, a pure function of its `Inputs`.
//! - `maglev` — how a VIP's table of backends is built (consistent hashing with weights).
//! - `dataplane/` — the loaded program and its maps: `Reconciler`, the one writer
//!   (`reconcile`, `nat_expiry`), typed handles anyone may read (`maps`), pins and layout.
//! - `agent/` — `xdp-lb run`: start, the event loop, reload, status, stop (`guard`).
//! - `health/` — health checks (tcp, http, https over rustls; `pem` reads their files); `nat` —
//!   NAT expiry rules; `vrrp/` — how the VIP fails over; `route_announce` — how a VIP is
//!   announced to the routers for several active nodes behind ECMP (`[announce]`).
//! - `netlink` — every link, address, route and neighbour question to the kernel;
//!   `ethtool` — the one offload the data plane must have off.
//! - `observe/` — `inspect`, typed `status`, `/metrics`, `/stats`, the flow log, CLI tables.
//! - `import/` — `xdp-lb import`: haproxy.cfg and keepalived.conf to xdp-lb.toml, with a report.
//! - `control` — the control socket (`xdp-lb reload`, `xdp-lb status`); `clock` — time.
//! - The XDP program itself is in the `xdp-lb-ebpf` crate: `parse.rs` (how a packet is parsed),
//!   `balance.rs` (how a backend is chosen), `forward.rs` (how it is sent on by DSR), `nat.rs`
//!   (full NAT both ways, SNAT port allocation, next hop from the kernel's FIB).

pub mod agent;
pub mod clock;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod ethtool;
pub mod health;
pub mod import;
pub mod maglev;
pub mod nat;
pub mod netlink;
pub mod observe;
pub mod pem;
pub mod route_announce;
pub mod state;
pub mod status;
pub mod sync;
pub mod vrrp;
