//! A tiny TCP/HTTP service that answers with its own name, and clients for it.
//!
//! - `GET /healthz` answers with the status set by [`TcpService::set_health_status`] (200 at
//!   first), for HTTP health checks.
//! - Any other `GET` answers `200` with body `NAME\n`.
//! - A connection that starts with the line `ECHO` is long-lived: each further line is
//!   answered with `NAME LINE` (see [`EchoClient`]).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::netns::enter_netns;

/// A service running on threads inside a namespace. Stops listening when dropped (like a
/// killed process: new connections are refused).
pub struct TcpService {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    health: Arc<AtomicU16>,
    thread: Option<JoinHandle<()>>,
    pub name: String,
}

impl TcpService {
    pub fn start(ns: &str, port: u16, name: &str) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{ns}");
        let me = name.to_owned();
        let (stop2, served2, health2) = (stop.clone(), served.clone(), health.clone());
        let thread = std::thread::spawn(move || {
            let listener = enter_netns(&path)
                .and_then(|()| TcpListener::bind(("0.0.0.0", port)).context("bind"))
                .and_then(|l| l.set_nonblocking(true).map(|()| l).context("nonblocking"));
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (me, served, health, stop) =
                            (me.clone(), served2.clone(), health2.clone(), stop2.clone());
                        // Sockets keep the namespace they were made in; the thread needs none.
                        std::thread::spawn(move || {
                            let _ = answer(stream, &me, &health, &stop, &served);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("service did not start")??;
        Ok(Self {
            stop,
            served,
            health,
            thread: Some(thread),
            name: name.into(),
        })
    }

    /// HTTP requests answered, not counting health checks (`/healthz`, or a bare connect).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The status `GET /healthz` answers with.
    pub fn set_health_status(&self, status: u16) {
        self.health.store(status, Ordering::Relaxed);
    }
}

fn answer(
    stream: TcpStream,
    me: &str,
    health: &AtomicU16,
    stop: &AtomicBool,
    served: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    if first.trim_end() == "ECHO" {
        // Long-lived: bounded by the peer closing, 30 s of silence, or the service stopping.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        writer.write_all(format!("{me} READY\n").as_bytes())?;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            writer.write_all(format!("{me} {}", line).as_bytes())?;
        }
    }
    // HTTP: read the rest of the head (bounded by size and the read timeout).
    let mut head = first.clone();
    while !head.ends_with("\r\n\r\n") && head.len() < 16 * 1024 {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            break;
        }
        head.push_str(&l);
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/healthz" {
        let s = health.load(Ordering::Relaxed);
        (s, format!("{me} health {s}\n"))
    } else {
        if first.starts_with("GET ") {
            // Counted before answering, so a client that has its answer sees the count.
            served.fetch_add(1, Ordering::Relaxed);
        }
        (200, format!("{me}\n"))
    };
    write!(
        writer,
        "HTTP/1.0 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    writer.flush()
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.0 GET over a new connection; returns the body. Call from a thread in the
/// client namespace (see `in_netns`).
pub fn http_get(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("read from {addr}"))?;
    let body = response.split("\r\n\r\n").nth(1).context("no HTTP body")?;
    if !response.starts_with("HTTP/1.0 200") {
        anyhow::bail!("unexpected response: {response:?}");
    }
    Ok(body.trim().to_owned())
}

/// A long-lived connection to the echo mode. Create it on a thread in the client namespace.
pub struct EchoClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The backend that answered.
    pub backend: String,
    seq: u64,
}

impl EchoClient {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut writer = stream.try_clone()?;
        writer.write_all(b"ECHO\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let backend = line
            .strip_suffix(" READY\n")
            .context("no READY line")?
            .to_owned();
        Ok(Self {
            reader,
            writer,
            backend,
            seq: 0,
        })
    }

    /// One round trip; checks the answer came from the same backend with the same payload.
    pub fn round_trip(&mut self) -> anyhow::Result<()> {
        self.seq += 1;
        let msg = format!("ping {}\n", self.seq);
        self.writer.write_all(msg.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let expected = format!("{} {msg}", self.backend);
        if line != expected {
            bail!("echo answered {line:?}, expected {expected:?}");
        }
        Ok(())
    }
}

/// `GET path` over HTTP/1.0; returns (status, body). Call from a thread in the right namespace.
pub fn http_fetch(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
