//! UDP peers for the tests: a datagram echo service on threads in a namespace, a windowed
//! stream client that checks every byte it gets back, and the real DNS pair (dnsmasq serving,
//! dig asking).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    NetNs,
    netns::enter_netns,
    peers::{Proc, spawn_in},
    service::{Digest, Pattern},
};

/// Echoes every datagram to its sender, on a thread in a namespace. Closes its socket when
/// dropped (then the kernel answers with ICMP port unreachable).
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(ns: &str, port: u16) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{ns}");
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = enter_netns(&path)
                .and_then(|()| UdpSocket::bind(("0.0.0.0", port)).context("bind"))
                .and_then(|s| {
                    // A short timeout so that the loop sees `stop`; a deep buffer so that a
                    // window of datagrams never overflows it.
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                    socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20)?;
                    Ok(s)
                });
            let socket = match socket {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("echo service did not start")??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`udp_stream`] saw.
#[derive(Debug)]
pub struct StreamReport {
    pub sent: u64,
    pub received: u64,
    /// Datagrams that came back with other bytes than were sent (corrupted, or another's).
    pub mismatched: u64,
    /// Bytes each way.
    pub bytes: u64,
    /// The digest of everything sent, and of everything received, in sequence order.
    pub digest_sent: u64,
    pub digest_received: u64,
    pub took: Duration,
}

/// Sends `bytes` in datagrams of `size` bytes through `to` from one socket (one flow), at most
/// `window` unanswered at a time, and checks each echoed datagram against what was sent
/// (a sequence number, then pattern bytes). A datagram not back within `timeout` ends the
/// stream: UDP loss is what this measures, so nothing is resent. Call from the client's
/// namespace.
pub fn udp_stream(
    to: SocketAddr,
    bytes: u64,
    size: usize,
    window: u64,
    timeout: Duration,
) -> anyhow::Result<StreamReport> {
    assert!(size >= 16);
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(timeout))?;
    socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20)?;
    let count = bytes.div_ceil(size as u64);
    let datagram = |seq: u64| {
        let mut d = vec![0u8; size];
        d[..8].copy_from_slice(&seq.to_be_bytes());
        Pattern::new(seq + 1).fill(&mut d[8..]);
        d
    };
    let started = Instant::now();
    let (mut sent, mut received, mut mismatched) = (0u64, 0u64, 0u64);
    let (mut digest_sent, mut digest_received) = (Digest::new(), Digest::new());
    // Echoes may come back out of order; they are digested in sequence order.
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut next_digest = 0u64;
    let mut buf = vec![0u8; size + 1];
    while received < count {
        while sent < count && sent - received < window {
            let d = datagram(sent);
            digest_sent.update(&d);
            socket.send(&d)?;
            sent += 1;
        }
        let n = socket.recv(&mut buf).with_context(|| {
            format!(
                "a datagram lost: {sent} sent, {received} back after {:?}",
                started.elapsed()
            )
        })?;
        received += 1;
        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
        if n != size || seq >= sent || buf[..n] != datagram(seq)[..] {
            mismatched += 1;
            continue;
        }
        pending.insert(seq, buf[..n].to_vec());
        while let Some(d) = pending.remove(&next_digest) {
            digest_received.update(&d);
            next_digest += 1;
        }
    }
    Ok(StreamReport {
        sent,
        received,
        mismatched,
        bytes,
        digest_sent: digest_sent.finish(),
        digest_received: digest_received.finish(),
        took: started.elapsed(),
    })
}

/// dnsmasq on `listen` addresses and `port`, answering `A whoami.test` with `answer` and
/// nothing else (no upstream, no hosts file): each backend's answer names it.
/// `--bind-interfaces` binds each address on its own socket, so an answer leaves from the
/// address its query came to (the VIP, in DSR).
pub fn dnsmasq(
    ns: &NetNs,
    dir: &Path,
    name: &str,
    listen: &[IpAddr],
    port: u16,
    answer: IpAddr,
) -> anyhow::Result<Proc> {
    let mut args: Vec<String> = [
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
        "--pid-file=",
        "--log-facility=-",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--port={port}"));
    args.push(format!("--address=/whoami.test/{answer}"));
    for a in listen {
        args.push(format!("--listen-address={a}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = spawn_in(ns, &args, &dir.join(format!("dnsmasq-{name}.log")))?;
    // Ready when it answers on its first address (bounded).
    let first = SocketAddr::new(listen[0], port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = dig(ns, first, &["+short", "+tries=1", "+time=1", "whoami.test"])?;
        if out.trim() == answer.to_string() {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            bail!("dnsmasq {name} does not answer on {first}: {out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `dig @server -p port ARGS` in `ns`; its standard output.
pub fn dig(ns: &NetNs, server: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "dig"])
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .output()
        .context("running dig (cargo xtask setup installs it)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `n` queries for `A whoami.test` from one dig process (`-f`: one lookup per line, each from
/// a fresh socket, so a fresh source port), over TCP if `tcp`. Returns one line per query:
/// the answer, or dig's complaint (";; connection timed out ...").
pub fn dig_batch(
    ns: &NetNs,
    dir: &Path,
    server: SocketAddr,
    n: usize,
    tcp: bool,
) -> anyhow::Result<Vec<String>> {
    let batch = dir.join(format!("dig-{}-{n}-{tcp}.txt", ns.name));
    let line = format!(
        "whoami.test @{} -p {} +short +tries=1 +time=2{}\n",
        server.ip(),
        server.port(),
        if tcp { " +tcp" } else { "" }
    );
    std::fs::write(&batch, line.repeat(n))?;
    // +tcp on the command line too: dig reads a batch line's options after the first lookup.
    let mut args = vec!["-f", batch.to_str().unwrap_or_default()];
    if tcp {
        args.push("+tcp");
    }
    let out = dig(ns, server, &args)?;
    Ok(out.lines().map(str::to_owned).collect())
}
