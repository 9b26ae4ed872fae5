//! `agent.listen`: `/metrics` (Prometheus text format, `metrics.rs`), `/stats` (an HTML page in
//! the spirit of haproxy's, `stats_page.rs`) and `/healthz` (the node's own liveness).
//!
//! Counters come straight from the pinned maps (read-only, like `xdp-lb inspect`); health and
//! agent state come from the agent's loop through the same command channel as the control
//! socket, so the page never shows a state the agent does not have.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    inspect::{BackendView, Inspector, Stats, VipView},
    metrics, stats_page,
    status::AgentStatus,
};
use crate::control::{Command, Request};

pub(super) struct Shared {
    pin_dir: PathBuf,
    commands: mpsc::Sender<Command>,
    /// The previous /stats sample, for rates.
    pub(super) previous: Mutex<Option<(Instant, Stats)>>,
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
        previous: Mutex::new(None),
    });
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
    }))
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

/// What the maps hold now, for one page.
pub(super) struct Snapshot {
    pub(super) vips: Vec<VipView>,
    pub(super) backends: Vec<BackendView>,
    pub(super) stats: Stats,
}

fn snapshot(shared: &Shared) -> Result<Snapshot, String> {
    let inspector = Inspector::open(&shared.pin_dir).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        vips: inspector.vips(),
        backends: inspector.backends(None)?,
        stats: inspector.stats(),
    })
}

/// The answer when the pinned maps cannot be read.
fn maps_unavailable(error: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the maps: {error}\n"),
    )
        .into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await;
    match snapshot(&shared) {
        Ok(snap) => metrics::render(status.as_ref(), &snap),
        Err(e) => maps_unavailable(e),
    }
}

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Response {
    let status = agent_status(&shared).await;
    match snapshot(&shared) {
        Ok(snap) => stats_page::render(&shared, status.as_ref(), &snap),
        Err(e) => maps_unavailable(e),
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
