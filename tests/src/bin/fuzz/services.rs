//! The fuzz command's second part: the agent's listeners under abuse. A real agent (one DSR
//! VIP in a namespace bed) takes random and mutated requests on its control socket (JSON
//! lines) and its HTTP endpoints (/metrics, /stats, /healthz): every control request must get
//! a JSON answer (`ok` false with the reason for a bad one), every HTTP request an HTTP answer
//! or a clean close; a flood of 200 idle connections must not keep a status request from its
//! answer; and afterwards the agent must still be running, still answer `status` and
//! `/healthz`, with its memory and open files back within a stated bound.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use xdp_lb_tests::{
    Agent, DsrTopology,
    fuzz::{Rng, mutate},
    in_netns,
};

/// The agent's resident memory may grow by at most this much over the abuse (caches,
/// allocator slack), and its open files by at most this many (none should stay open).
const RSS_BOUND_KB: u64 = 32 * 1024;
const FD_BOUND: usize = 8;

/// The agent's HTTP listener, in its namespace.
const HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9100);

pub(crate) struct ServicesReport {
    pub(crate) control: u64,
    pub(crate) control_rejected: u64,
    pub(crate) http: u64,
    pub(crate) http_status: std::collections::BTreeMap<u16, u64>,
    pub(crate) rss_kb: (u64, u64),
    pub(crate) fds: (usize, usize),
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

const CONTROL: [&str; 8] = [
    "{\"command\":\"status\"}",
    "{\"command\":\"reload\",\"config\":null}",
    "{\"command\":\"drain\"}",
    "{\"command\":\"undrain\"}",
    "{\"command\":\"reload\",\"config\":\"/nonexistent/x.toml\"}",
    "{\"command\":\"status\",\"extra\":[1,2,3]}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{\"command\":\"reload\",\"config\":\"\\u0000\"}",
];

const HTTP: [&str; 6] = [
    "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
];

/// One control request: its answer must be one JSON line.
fn control(path: &std::path::Path, request: &[u8]) -> anyhow::Result<bool> {
    let mut s = UnixStream::connect(path).context("connect to the control socket")?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    // A request may be refused before it is all read (over 64 KiB): a broken pipe is fine.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .context("reading the answer")?;
    let v: serde_json::Value = serde_json::from_str(answer.trim())
        .with_context(|| format!("not a JSON answer: {answer:?}"))?;
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "control {:?} → {}",
            String::from_utf8_lossy(&request[..request.len().min(80)]),
            &answer[..answer.len().min(160)]
        );
    }
    v["ok"].as_bool().context("no ok in the answer")
}

/// One HTTP request, its end marked by a half-close: an HTTP answer's status, or None for a
/// clean close without one (a request cut short, or hyper taking the early EOF for a hang-up).
fn http(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Option<u16>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(8)))?;
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.take(1 << 22).read_to_end(&mut answer);
    if answer.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&answer[..answer.len().min(32)]);
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3)?.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    Ok(Some(code))
}

/// An agent with one DSR VIP in a bed of its own (HTTP on 127.0.0.1:9100 in its namespace).
fn start(topo: &DsrTopology) -> anyhow::Result<Agent> {
    let config = topo.dir.join("xdp-lb.toml");
    std::fs::write(
        &config,
        topo.agent_config(&topo.pin_dir())
            .vip(topo.vip(80).check("type", "none"))
            .to_string(),
    )?;
    Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().context("path")?],
        topo.dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(20),
    )
}

/// One mutated control request (sometimes huge, sometimes without its newline), answered.
fn abuse_control(socket: &Path, rng: &mut Rng, report: &mut ServicesReport) -> anyhow::Result<()> {
    let mut req = CONTROL[rng.below(CONTROL.len())].as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        let other = CONTROL[rng.below(CONTROL.len())].as_bytes();
        mutate(rng, &mut req, other);
    }
    if rng.chance(20) {
        req.resize(70 * 1024, b'x');
    }
    if !rng.chance(4) {
        req.push(b'\n');
    }
    // A reload names a file the fuzz made up (none exists), or none: the agent's own config.
    let ok = control(socket, &req).with_context(|| {
        format!(
            "control request {:?} ({} bytes)",
            String::from_utf8_lossy(&req[..req.len().min(200)]),
            req.len()
        )
    })?;
    report.control += 1;
    report.control_rejected += u64::from(!ok);
    Ok(())
}

/// One mutated HTTP request in the agent's namespace, answered or cleanly closed.
fn abuse_http(lb: &str, rng: &mut Rng, report: &mut ServicesReport) -> anyhow::Result<()> {
    let mut req = HTTP[rng.below(HTTP.len())].as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        let other = HTTP[rng.below(HTTP.len())].as_bytes();
        mutate(rng, &mut req, other);
    }
    let shown = String::from_utf8_lossy(&req[..req.len().min(200)]).into_owned();
    let answer = in_netns(lb, move || http(HTTP_ADDR, &req))?
        .with_context(|| format!("HTTP request {shown:?}"))?;
    report.http += 1;
    *report.http_status.entry(answer.unwrap_or(0)).or_default() += 1;
    Ok(())
}

/// After the abuse: a status beside 200 idle connections, the agent running, status and
/// /healthz answering, memory and files within their bounds.
fn check_after(
    agent: &mut Agent,
    socket: &Path,
    lb: &str,
    report: &mut ServicesReport,
) -> anyhow::Result<()> {
    let pid = agent.pid().context("the agent's pid")?;
    // Each idle connection holds one of the agent's 256 slots until its 5-s read limit.
    let idle: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(socket).ok())
        .collect();
    let status = format!("{}\n", CONTROL[0]);
    let ok = control(socket, status.as_bytes()).context("status behind 200 idle connections")?;
    ensure!(ok, "status behind 200 idle connections was refused");
    drop(idle);
    let exited = agent
        .child
        .as_mut()
        .map(std::process::Child::try_wait)
        .transpose()?
        .flatten();
    ensure!(
        exited.is_none(),
        "the agent exited ({exited:?}); its log: {}",
        agent.log.display()
    );
    ensure!(
        control(socket, status.as_bytes())?,
        "status no longer answers"
    );
    // As a monitor asks (no half-close: hyper may take a client's early EOF for a hang-up).
    let (code, _) = in_netns(lb, move || {
        xdp_lb_tests::service::http_fetch(HTTP_ADDR, "/healthz", Duration::from_secs(5))
    })??;
    ensure!(code == 200, "/healthz answers {code}");
    // The idle connections' ends reach the agent within a moment: wait (bounded) for its files.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds(pid) > report.fds.0 + FD_BOUND && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    report.rss_kb.1 = rss_kb(pid);
    report.fds.1 = fds(pid);
    ensure!(
        report.rss_kb.1 <= report.rss_kb.0 + RSS_BOUND_KB,
        "the agent's memory grew from {} to {} KiB",
        report.rss_kb.0,
        report.rss_kb.1
    );
    ensure!(
        report.fds.1 <= report.fds.0 + FD_BOUND,
        "the agent's open files grew from {} to {}",
        report.fds.0,
        report.fds.1
    );
    Ok(())
}

pub(crate) fn run(seed: u64, duration: Duration) -> anyhow::Result<ServicesReport> {
    let topo = DsrTopology::new(1)?;
    let mut agent = start(&topo)?;
    let pid = agent.pid().context("the agent's pid")?;
    let socket = topo.control_socket();
    // Warm up (first pages, allocator), then the baseline.
    let lb = topo.lb.name.clone();
    in_netns(&lb, move || -> anyhow::Result<()> {
        for r in HTTP {
            http(HTTP_ADDR, r.as_bytes())?;
        }
        Ok(())
    })??;
    let mut report = ServicesReport {
        control: 0,
        control_rejected: 0,
        http: 0,
        http_status: Default::default(),
        rss_kb: (rss_kb(pid), 0),
        fds: (fds(pid), 0),
    };
    let mut rng = Rng::new(seed ^ 0x5e41_7ce5);
    let start = Instant::now();
    while start.elapsed() < duration {
        abuse_control(&socket, &mut rng, &mut report)?;
        abuse_http(&lb, &mut rng, &mut report)?;
    }
    check_after(&mut agent, &socket, &lb, &mut report)?;
    let _ = agent.stop();
    Ok(report)
}
