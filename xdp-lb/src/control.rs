//! The agent's control socket: a Unix stream socket (mode 0600, so root only) carrying one
//! JSON request line and one JSON response line per connection. `xdp-lb reload` and
//! `xdp-lb status` are its clients.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::status::AgentStatus;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    /// Re-read the config (from `config` if given, which then becomes the agent's config file).
    Reload {
        config: Option<PathBuf>,
    },
    Status,
    /// Withdraw every announcement, keep forwarding (`[announce]`).
    Drain,
    /// End a drain.
    Undrain,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// What happened, for a person.
    pub message: String,
    /// `status` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<AgentStatus>>,
}

/// A request on its way to the agent's main loop, with the way back.
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("another xdp-lb agent is running: its control socket {0} answers")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no agent answers on {path} ({source}); is `xdp-lb run` running, with this agent.control_socket?"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent's answer on {0} was not understood")]
    BadAnswer(PathBuf),
    #[error("the agent did not answer on {0} within {1:?}")]
    Timeout(PathBuf, Duration),
}

/// Binds the socket, refusing to take it from a live agent, and serves it until dropped.
pub async fn serve(
    path: &Path,
    commands: mpsc::Sender<Command>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if UnixStream::connect(path).await.is_ok() {
        return Err(ControlError::InUse(path.to_owned()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    // At most this many connections at once, each bounded in size (64 KiB) and time (5 s): a
    // flood beyond it waits in the kernel's backlog instead of growing the agent (the socket
    // is root's only, mode 0600: a flood is self-inflicted, and must not take the agent down).
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let commands = commands.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, commands).await {
                    tracing::debug!(error = %e, "control connection failed");
                }
                drop(permit);
            });
        }
    }))
}

/// A request line's limit: far above any real request, far below what could hurt.
const MAX_REQUEST: u64 = 64 * 1024;

/// Control connections served at once.
const MAX_CONNECTIONS: usize = 256;

async fn handle(stream: UnixStream, commands: mpsc::Sender<Command>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    // One request line, bounded in size and time.
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line))
        .await
        .map_err(io::Error::other)??;
    let too_long = line.len() as u64 >= MAX_REQUEST && !line.ends_with(b"\n");
    let response = match serde_json::from_slice::<Request>(&line) {
        _ if too_long => Response {
            ok: false,
            message: format!("bad request: longer than {MAX_REQUEST} bytes"),
            status: None,
        },
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command { request, reply }).await.is_err() {
                Response {
                    ok: false,
                    message: "the agent is stopping".into(),
                    status: None,
                }
            } else {
                answer.await.unwrap_or(Response {
                    ok: false,
                    message: "the agent is stopping".into(),
                    status: None,
                })
            }
        }
        Err(e) => Response {
            ok: false,
            message: format!("bad request: {e}"),
            status: None,
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await?;
    // What the client sent beyond the request is read and dropped (bounded): closing with
    // it unread would reset the connection, and the client would lose the answer.
    let mut rest = reader.into_inner().take(1 << 20);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
    Ok(())
}

/// Sends one request and waits (bounded) for the answer.
pub async fn request(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let exchange = async {
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ControlError::NotRunning {
                    path: path.to_owned(),
                    source,
                })?;
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|source| ControlError::Io {
                path: path.to_owned(),
                source,
            })?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .map_err(|source| ControlError::Io {
                path: path.to_owned(),
                source,
            })?;
        serde_json::from_str(&answer).map_err(|_| ControlError::BadAnswer(path.to_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout(path.to_owned(), timeout))?
}

use tokio::io::AsyncReadExt as _;
