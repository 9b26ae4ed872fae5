//! One probe of one backend: `tcp` (connect), `http` (GET `http_path`, compare the status),
//! `https` (the same over TLS) and `dns` (a query over UDP, `dns.rs`). `Err` says why, as a
//! [`ProbeFailure`] whose words the log and `status` show.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::{
    failure::{CheckSetupError, ProbeFailure},
    tls,
};
use crate::config::{CheckType, HealthCheckConfig};

/// A check's probe, built once when the check starts (the TLS configuration is the costly
/// part: certificates parsed, trust store loaded).
pub struct Prober {
    check: HealthCheckConfig,
    tls: Option<(TlsConnector, Option<rustls::pki_types::ServerName<'static>>)>,
}

/// How far a probe got, so that a timeout says where it stalled.
#[derive(Clone, Copy)]
enum Stage {
    Connect,
    Handshake,
    Response,
}

impl Prober {
    pub fn new(check: &HealthCheckConfig) -> Result<Self, CheckSetupError> {
        let tls = match (&check.kind, &check.tls) {
            (CheckType::Https, Some(t)) => {
                let name = t
                    .server_name
                    .as_deref()
                    .map(|n| rustls::pki_types::ServerName::try_from(n.to_owned()))
                    .transpose()
                    .map_err(|e| CheckSetupError::ServerName(e.to_string()))?;
                Some((TlsConnector::from(Arc::new(tls::client_config(t)?)), name))
            }
            (CheckType::Https, None) => return Err(CheckSetupError::NoTlsSettings),
            _ => None,
        };
        Ok(Self {
            check: check.clone(),
            tls,
        })
    }

    pub async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeFailure> {
        let started = Instant::now();
        let mut stage = Stage::Connect;
        let result = tokio::time::timeout(self.check.timeout, self.attempt(addr, &mut stage)).await;
        match result {
            Ok(result) => result,
            Err(_) => {
                let took = humantime::format_duration(std::time::Duration::from_millis(
                    started.elapsed().as_millis() as u64,
                ));
                Err(match stage {
                    Stage::Handshake => ProbeFailure::HandshakeTimeout(took.to_string()),
                    Stage::Connect | Stage::Response => ProbeFailure::Timeout(took.to_string()),
                })
            }
        }
    }

    async fn attempt(&self, addr: SocketAddr, stage: &mut Stage) -> Result<(), ProbeFailure> {
        if let (CheckType::Dns, Some(dns)) = (&self.check.kind, &self.check.dns) {
            *stage = Stage::Response;
            return super::dns::probe(dns, addr).await;
        }
        let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ProbeFailure::ConnectRefused,
            _ => ProbeFailure::Connect(e.to_string()),
        })?;
        match (&self.check.kind, &self.tls) {
            (CheckType::Http, _) => {
                *stage = Stage::Response;
                http_status(stream, &self.check, &host_header(addr.ip())).await
            }
            (CheckType::Https, Some((connector, name))) => {
                *stage = Stage::Handshake;
                let name = name
                    .clone()
                    .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
                let host = match &name {
                    rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
                    _ => host_header(addr.ip()),
                };
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| ProbeFailure::Tls(tls::describe(&e)))?;
                *stage = Stage::Response;
                http_status(stream, &self.check, &host).await
            }
            _ => Ok(()),
        }
    }
}

/// The `Host` header of an address: an IPv6 literal in brackets (RFC 9110 §7.2, RFC 3986
/// §3.2.2), or nginx and haproxy answer 400.
fn host_header(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Sends the GET and compares the status line with `http_expect_status`.
async fn http_status(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    check: &HealthCheckConfig,
    host: &str,
) -> Result<(), ProbeFailure> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xdp-lb-health-check\r\nConnection: close\r\n\r\n",
        check.http_path,
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ProbeFailure::Send(e.to_string()))?;
    // The status line is all we need; read until it is complete (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| ProbeFailure::Read(e.to_string()))?;
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
        .ok_or(ProbeFailure::NoStatusLine)?;
    if status == check.http_expect_status {
        Ok(())
    } else {
        Err(ProbeFailure::HttpStatus(status))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn probe(addr: SocketAddr, check: &HealthCheckConfig) -> Result<(), ProbeFailure> {
        Prober::new(check).unwrap().probe(addr).await
    }

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
            Err(ProbeFailure::ConnectRefused)
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
            Err(ProbeFailure::HttpStatus(503))
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the kernel does) but never answers the HTTP request.
        let r = probe(addr, &check(CheckType::Http)).await;
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().starts_with("timeout after 3")),
            "{r:?}"
        );
        drop(listener);
    }
}
