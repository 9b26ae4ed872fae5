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
                // Both families on one socket ([::] takes IPv4 as mapped addresses); IPv4
                // alone where the kernel has no IPv6.
                .and_then(|()| {
                    TcpListener::bind(("::", port))
                        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
                        .context("bind")
                })
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
    if let Some(rest) = first.strip_prefix("UPLOAD ") {
        // Reads N bytes and answers with their digest: the client's bytes arrived intact.
        let n: u64 = rest.trim().parse().unwrap_or(0);
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut digest = Digest::new();
        let mut left = n;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let got = reader.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            digest.update(&buf[..got]);
            left -= got as u64;
        }
        return writeln!(writer, "{me} {} {:016x}", n - left, digest.finish());
    }
    if let Some(rest) = first.strip_prefix("DOWNLOAD ") {
        // Sends N bytes of `pattern(seed)`; the client checks their digest.
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let seed: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        writer.set_write_timeout(Some(Duration::from_secs(10)))?;
        writeln!(writer, "{me}")?;
        let mut sent = 0u64;
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        while sent < n {
            let k = buf.len().min((n - sent) as usize);
            pattern.fill(&mut buf[..k]);
            writer.write_all(&buf[..k])?;
            sent += k as u64;
        }
        return writer.flush();
    }
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
            writer.write_all(format!("{me} {line}").as_bytes())?;
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

/// A TCP connection with `timeout` for the connect and for every read and write.
fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// FNV-1a, 64 bits: detects any corrupted, lost, duplicated or reordered byte of a transfer
/// with overwhelming probability, computed independently of the network path.
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Digest {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

/// A reproducible byte stream (xorshift64*), so both ends can produce the same bytes.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `bytes` pattern bytes from `seed` over one connection, each way checked by digest at the far
/// end. Call from the client namespace.
pub struct Transfer {
    pub bytes: u64,
    pub seed: u64,
    pub timeout: Duration,
}

impl Transfer {
    /// Sends the bytes to the `UPLOAD` mode; returns (backend, whether the service's digest of
    /// what it received equals the digest of what was sent).
    pub fn upload(&self, addr: SocketAddr) -> anyhow::Result<(String, bool)> {
        upload(addr, self.bytes, self.seed, connect(addr, self.timeout)?)
    }

    /// Receives the bytes from the `DOWNLOAD` mode; returns (backend, whether exactly the
    /// expected bytes arrived).
    pub fn download(&self, addr: SocketAddr) -> anyhow::Result<(String, bool)> {
        download(self.bytes, self.seed, connect(addr, self.timeout)?)
    }
}

fn upload(
    addr: SocketAddr,
    n: u64,
    seed: u64,
    mut stream: TcpStream,
) -> anyhow::Result<(String, bool)> {
    writeln!(stream, "UPLOAD {n}").with_context(|| format!("to {addr}"))?;
    let mut pattern = Pattern::new(seed);
    let mut digest = Digest::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < n {
        let k = buf.len().min((n - sent) as usize);
        pattern.fill(&mut buf[..k]);
        digest.update(&buf[..k]);
        stream.write_all(&buf[..k])?;
        sent += k as u64;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let backend = parts.next().context("no answer")?.to_owned();
    let got: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .context("no count")?;
    let theirs = parts.next().context("no digest")?;
    Ok((
        backend,
        got == n && theirs == format!("{:016x}", digest.finish()),
    ))
}

fn download(n: u64, seed: u64, mut stream: TcpStream) -> anyhow::Result<(String, bool)> {
    writeln!(stream, "DOWNLOAD {n} {seed}")?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let backend = line.trim().to_owned();
    let mut received = Digest::new();
    let mut count = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let got = reader.read(&mut buf)?;
        if got == 0 {
            break;
        }
        received.update(&buf[..got]);
        count += got as u64;
    }
    let mut expected = Digest::new();
    let mut pattern = Pattern::new(seed);
    let mut left = n;
    while left > 0 {
        let k = buf.len().min(left as usize);
        pattern.fill(&mut buf[..k]);
        expected.update(&buf[..k]);
        left -= k as u64;
    }
    Ok((
        backend,
        count == n && received.finish() == expected.finish(),
    ))
}

/// One HTTP/1.0 GET over a new connection; returns the body. Call from a thread in the
/// client namespace (see `in_netns`).
pub fn http_get(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = connect(addr, timeout)?;
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

/// Up to `n` GETs, each over a new connection, stopping at the first failure (so a broken data
/// plane fails a test in seconds, not `n` timeouts). Call from the client namespace.
pub fn http_get_many(addr: SocketAddr, n: usize, timeout: Duration) -> Vec<anyhow::Result<String>> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let answer = http_get(addr, timeout);
        let failed = answer.is_err();
        answers.push(answer);
        if failed {
            break;
        }
    }
    answers
}

/// What a demo's run of requests came to: answers per backend (by the name each answered
/// with), failures, and how long it took.
pub struct Tally {
    pub per_backend: std::collections::BTreeMap<String, usize>,
    pub answered: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

/// Up to `count` sequential HTTP requests to `addr` from namespace `ns`, each a new connection,
/// stopping early when `stop` is set (a demo's Ctrl-C).
pub fn request_tally(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    stop: std::sync::Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let started = std::time::Instant::now();
    let answers = crate::in_netns(ns, move || {
        let mut out = Vec::new();
        for _ in 0..count {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            out.push(http_get(addr, Duration::from_secs(3)));
        }
        out
    })?;
    let mut tally = Tally {
        per_backend: Default::default(),
        answered: 0,
        failed: 0,
        elapsed: started.elapsed(),
    };
    for a in answers {
        match a {
            Ok(name) => {
                *tally.per_backend.entry(name.trim().to_owned()).or_default() += 1;
                tally.answered += 1;
            }
            Err(_) => tally.failed += 1,
        }
    }
    Ok(tally)
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
        let stream = connect(addr, timeout)?;
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

    /// The client's port: the flow's source port, as the LB's flow table keys it.
    pub fn local_port(&self) -> u16 {
        self.writer.local_addr().map_or(0, |a| a.port())
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
    let mut stream = connect(addr, timeout)?;
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
