//! `agent.listen`: `/metrics` (Prometheus text format, `metrics.rs`), `/stats` (an HTML page in
//! the spirit of haproxy's, `stats_page.rs`) and `/healthz` (the node's own liveness).
//!
//! Counters come straight from the pinned maps (read-only, like `xdp-lb inspect`); health and
//! agent state come from the agent's loop through the same command channel as the control
//! socket, so the page never shows a state the agent does not have.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

use super::{history::History, inspect::InspectError, metrics, page_data::PageData, stats_page};
use crate::{
    control::{Command, Request},
    status::AgentStatus,
};

struct Shared {
    pin_dir: PathBuf,
    commands: mpsc::Sender<Command>,
    /// The last 10 minutes of traffic, for /stats' rates and sparklines.
    history: History,
}

/// Serves until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    pin_dir: PathBuf,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        pin_dir,
        commands,
        history: History::default(),
    });
    let sampler = tokio::spawn(sample(shared.clone()));
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/stats", get(stats_handler))
        .route("/healthz", get(healthz))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/stats") }),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
        sampler.abort();
    }))
}

/// Samples the maps into the history every `history::STEP`, from the start (so the first
/// rates come a second after it).
async fn sample(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(super::history::STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pin_dir = shared.pin_dir.clone();
        // The map reads are syscalls: off the async workers.
        let read = tokio::task::spawn_blocking(move || PageData::read(&pin_dir)).await;
        if let Ok(Ok(page)) = read {
            shared.history.record(&page, std::time::Instant::now());
        }
    }
}

/// The agent's status, asked through its command channel (None: it does not answer).
async fn agent_status(shared: &Shared) -> Option<AgentStatus> {
    let (reply, answer) = oneshot::channel();
    shared
        .commands
        .send(Command {
            request: Request::Status,
            reply,
        })
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()?
        .ok()?
        .status
        .map(|s| *s)
}

/// The answer when the pinned maps cannot be read.
fn maps_unavailable(error: &InspectError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the maps: {error}\n"),
    )
        .into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await;
    match PageData::read(&shared.pin_dir) {
        Ok(data) => metrics::render(status.as_ref(), &data),
        Err(e) => maps_unavailable(&e),
    }
}

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await;
    match PageData::read(&shared.pin_dir) {
        Ok(data) => stats_page::render(&shared.history, status.as_ref(), &data),
        Err(e) => maps_unavailable(&e),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match agent_status(&shared).await {
        Some(s) if s.attached.is_some() => (StatusCode::OK, "ok\n").into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the program is not attached\n",
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent does not answer\n",
        )
            .into_response(),
    }
}
