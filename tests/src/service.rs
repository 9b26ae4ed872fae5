//! A tiny TCP/HTTP service that answers every request with its own name, and a client for it.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;

use crate::netns::enter_netns;

/// A service running on a thread inside a namespace. Stops when dropped.
pub struct TcpService {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    pub name: String,
}

impl TcpService {
    /// Listens on 0.0.0.0:`port` in `ns`; each connection gets
    /// `HTTP/1.0 200 OK` with body `NAME\n` once the request head has arrived.
    pub fn start(ns: &str, port: u16, name: &str) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{ns}");
        let body = format!("{name}\n");
        let (stop2, served2) = (stop.clone(), served.clone());
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
                        if answer(stream, &body).is_ok() {
                            served2.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
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
            thread: Some(thread),
            name: name.into(),
        })
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the end of the request head (bounded by size and the read timeout).
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
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
