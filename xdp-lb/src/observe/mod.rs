//! The faces: everything that shows a person or a scraper what the data plane and the agent
//! are doing. It reads the pinned maps and the agent's typed status (`crate::status`, asked
//! through the control channel); it never writes a map, and nothing below imports it.
//!
//! - `inspect` — views of the pinned maps (`xdp-lb inspect`, and the numbers of the pages);
//!   `tunnel_view` — a tunnel VIP's parameters among them.
//! - `report` — the tables of `xdp-lb inspect`; `status_report` — plain `xdp-lb status`.
//! - `http` — `agent.listen`: `metrics` (`/metrics`), `stats_page` (`/stats`, its panels in `stats_panels`), `/healthz`;
//!   `page_data` is what one request reads from the maps, `history` the last 10 minutes of it
//!   (rates and sparklines).

mod history;
pub mod http;
pub mod inspect;
mod metrics;
mod page_data;
pub mod report;
mod stats_page;
mod stats_panels;
pub mod status_report;
mod tunnel_view;
