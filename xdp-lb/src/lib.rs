//! xdp-lb: the agent and CLI of an XDP layer-4 load balancer.
//!
//! Where to look; the rooms are listed from the top down, and each imports only rooms below
//! it (the README's "Architecture" draws the arrows):
//! - `observe/` — the faces: `inspect` (views of the pinned maps), `/metrics`, `/stats`,
//!   `/healthz` (`http`), the CLI's tables (`report`). They read; nothing below imports them.
//! - `capture/` — `xdp-lb capture`: a debugging session that writes the program's capture
//!   filter (`CAPTURE_CONFIG`, the one map outside the reconciler) and drains its ring into a
//!   pcapng file.
//! - `agent/` — `xdp-lb run`: start, the event loop, reload, status, stop (`guard`); the one
//!   task that owns the reconciler.
//! - `control` — the control socket (`xdp-lb reload`, `status`, `drain`); `status` — the
//!   agent's typed status, which the control socket, the CLI and the pages share.
//! - `dataplane/` — the loaded program and its maps: `Reconciler`, the one writer
//!   (`reconcile`, `nat_expiry`, `sync_install`), typed handles anyone may read (`maps`), pins;
//!   `decap` — `xdp-lb decap`, the backends' decapsulation program for tunnel VIPs.
//! - `sync/` — flows exchanged with the other LB nodes (`[sync]`); `route_announce` — the VIP
//!   routes offered to the routing engine for active-active nodes behind ECMP (`[announce]`).
//! - `health/` — health checks (tcp, http, https over rustls, dns), rise/fall, the agent's
//!   health table; `vrrp/` — how the VIP fails over (the RFC 5798 machine, packets, GARP).
//! - `state` — the desired contents of the maps, a pure function of its `StateInputs`;
//!   `maglev` — how a VIP's table of backends is built; `nat` — NAT expiry rules.
//! - `config/` — the TOML file: `raw` (as written), one file per section with its validated
//!   type and checks, errors with file, line and key; `import/` — haproxy.cfg and
//!   keepalived.conf to xdp-lb.toml, with a report.
//! - `netlink/` — every link, address, route and neighbour question to the kernel;
//!   `ethtool` — the one offload the data plane must have off; `pem`, `clock`.
//! - The XDP program itself is in the `xdp-lb-ebpf` crate: `parse/` (how a packet is parsed),
//!   `balance.rs` (how a backend is chosen), `forward.rs` (how it is sent on by DSR), `tunnel/`
//!   (how it is encapsulated for a backend in another subnet), `decap/` (how a backend takes
//!   the outer headers off), `nat.rs`
//!   (full NAT both ways, SNAT port allocation), `nat_rewrite.rs` (the rewrite and the next
//!   hop from the kernel's FIB), `ipv6/` (the IPv6 path); the types both sides share are in
//!   `xdp-lb-common`.

pub mod agent;
pub mod capture;
pub mod clock;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod decap;
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
