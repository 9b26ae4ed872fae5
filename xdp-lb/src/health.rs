//! Health checks: one tokio task per (VIP, backend), haproxy's semantics.
//!
//! A backend is up or down. Every `interval` the task probes it (`tcp`: connect; `http`: GET
//! `http_path` and compare the status; `none`: no probe, always up). `fall` consecutive
//! failures take an up backend down; `rise` consecutive successes bring a down one up. Each
//! transition is sent to the agent as a [`HealthEvent`] with the reason; the agent turns it
//! into a new desired state for the one reconciler. The last result of every probe is kept in
//! [`HealthTable`] for `xdp-lb status`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};
use xdp_lb_common::VipKey;

use crate::{
    clock::unix_now,
    config::{CheckType, Config, HealthCheckConfig},
    state::vip_key,
};

/// A backend's identity for health: the VIP it serves and its address.
pub type BackendKey = (VipKey, Ipv4Addr);

#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub key: BackendKey,
    pub vip_name: String,
    pub up: bool,
    pub reason: String,
}

/// What `status` shows for one backend's check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendHealth {
    pub up: bool,
    /// The last probe's result ("ok", "connect refused", "HTTP 503", "timeout after 1s").
    pub last_check: String,
    /// When the last probe finished (seconds since the Unix epoch).
    pub last_check_unix: u64,
    pub transitions: u64,
    /// Unix seconds of the last transition (or of the check's start).
    pub since_unix: u64,
}

/// Shared between the checker tasks (writers) and the agent (reader).
pub type HealthTable = Arc<Mutex<BTreeMap<BackendKey, BackendHealth>>>;

struct Task {
    check: HealthCheckConfig,
    port: u16,
    handle: JoinHandle<()>,
}

/// The set of running checks, kept in step with the config by [`Checker::sync`].
pub struct Checker {
    tasks: BTreeMap<BackendKey, Task>,
    events: mpsc::Sender<HealthEvent>,
    pub table: HealthTable,
}

impl Checker {
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            tasks: BTreeMap::new(),
            events,
            table: Arc::default(),
        }
    }

    /// Starts checks for new backends, stops those of removed ones, and restarts those whose
    /// check changed (keeping their current up/down state, so a reload does not flap them).
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: BTreeMap<BackendKey, (String, HealthCheckConfig, u16)> = BTreeMap::new();
        for vip in &config.vips {
            let key = vip_key(vip);
            for b in &vip.backends {
                // The backend's own port (a NAT backend may listen elsewhere than the VIP).
                let port = vip.health_check.port.unwrap_or(b.port);
                wanted.insert(
                    (key, b.address),
                    (vip.name.clone(), vip.health_check.clone(), port),
                );
            }
        }
        let gone: Vec<BackendKey> = self
            .tasks
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(task) = self.tasks.remove(&key) {
                task.handle.abort();
            }
            if let Ok(mut t) = self.table.lock() {
                t.remove(&key);
            }
        }
        for (key, (vip_name, check, port)) in wanted {
            if let Some(task) = self.tasks.get(&key) {
                if task.check == check && task.port == port {
                    continue;
                }
                task.handle.abort();
            }
            let now = unix_now();
            let up = {
                let mut table = self.table.lock().expect("health table poisoned");
                let entry = table.entry(key).or_insert_with(|| BackendHealth {
                    up: !check.start_down || check.kind == CheckType::None,
                    last_check: "not checked yet".into(),
                    last_check_unix: 0,
                    transitions: 0,
                    since_unix: now,
                });
                if check.kind == CheckType::None && !entry.up {
                    entry.up = true;
                    entry.last_check = "no check configured".into();
                }
                entry.up
            };
            let handle = tokio::spawn(check_loop(
                key,
                vip_name,
                check.clone(),
                port,
                up,
                self.events.clone(),
                self.table.clone(),
            ));
            self.tasks.insert(
                key,
                Task {
                    check,
                    port,
                    handle,
                },
            );
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

async fn check_loop(
    key: BackendKey,
    vip_name: String,
    check: HealthCheckConfig,
    port: u16,
    mut up: bool,
    events: mpsc::Sender<HealthEvent>,
    table: HealthTable,
) {
    if check.kind == CheckType::None {
        return;
    }
    let addr = SocketAddr::from((key.1, port));
    let mut streak = 0u32;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = probe(addr, &check).await;
        let now = unix_now();
        let ok = result.is_ok();
        let shown = match &result {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason.clone(),
        };
        // Count consecutive results that disagree with the current state.
        if ok != up {
            streak += 1;
        } else {
            streak = 0;
        }
        let threshold = if up { check.fall } else { check.rise };
        let transition = streak >= threshold;
        if transition {
            up = !up;
            streak = 0;
        }
        if let Ok(mut t) = table.lock()
            && let Some(h) = t.get_mut(&key)
        {
            h.last_check = shown.clone();
            h.last_check_unix = now;
            if transition {
                h.up = up;
                h.transitions += 1;
                h.since_unix = now;
            }
        }
        if transition {
            let reason = if up {
                format!("{} consecutive successful checks", check.rise)
            } else {
                format!("{} consecutive failed checks, last: {shown}", check.fall)
            };
            if events
                .send(HealthEvent {
                    key,
                    vip_name: vip_name.clone(),
                    up,
                    reason,
                })
                .await
                .is_err()
            {
                return; // the agent is stopping
            }
        }
    }
}

/// One probe. `Err` carries the reason, phrased for the log.
pub async fn probe(addr: SocketAddr, check: &HealthCheckConfig) -> Result<(), String> {
    let started = Instant::now();
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect refused".to_owned(),
            _ => format!("connect failed: {e}"),
        })?;
        if check.kind != CheckType::Http {
            return Ok(());
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xdp-lb-health-check\r\nConnection: close\r\n\r\n",
            check.http_path,
            addr.ip()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        // The status line is all we need; read until it is complete (bounded).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the response: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no HTTP status line in the response".to_owned())?;
        if status == check.http_expect_status {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timeout after {}",
            humantime::format_duration(round_ms(started.elapsed()))
        )),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckType) -> HealthCheckConfig {
        HealthCheckConfig {
            kind,
            timeout: Duration::from_millis(300),
            http_path: "/healthz".into(),
            ..Default::default()
        }
    }

    async fn http_server(status: u16) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_probe_reports_refused_and_ok() {
        let addr = http_server(200).await;
        assert_eq!(probe(addr, &check(CheckType::Tcp)).await, Ok(()));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(
            probe(closed, &check(CheckType::Tcp)).await,
            Err("connect refused".into())
        );
    }

    #[tokio::test]
    async fn http_probe_compares_the_status() {
        assert_eq!(
            probe(http_server(200).await, &check(CheckType::Http)).await,
            Ok(())
        );
        assert_eq!(
            probe(http_server(503).await, &check(CheckType::Http)).await,
            Err("HTTP 503".into())
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the kernel does) but never answers the HTTP request.
        let r = probe(addr, &check(CheckType::Http)).await;
        assert!(
            r.as_ref().is_err_and(|e| e.starts_with("timeout after 3")),
            "{r:?}"
        );
        drop(listener);
    }
}
