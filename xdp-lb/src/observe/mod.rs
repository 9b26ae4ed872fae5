//! Looking inside: everything that reports what the data plane and the agent are doing, and
//! never writes a map.
//!
//! - `inspect` — views of the pinned maps (`xdp-lb inspect`, and the numbers of the pages).
//! - `status` — the agent's typed status (control socket, `xdp-lb status`, the pages).
//! - `report` — the CLI's tables.
//! - `http` — `agent.listen`: `metrics` (`/metrics`), `stats_page` (`/stats`), `/healthz`.
//! - `flow_log` — the program's flow log and debug messages, as log lines.

pub mod flow_log;
pub mod http;
pub mod inspect;
mod metrics;
pub mod report;
mod stats_page;
pub mod status;
