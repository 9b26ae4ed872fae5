//! `[vip.health_check]`, validated, with haproxy's defaults.

use std::{ops::Range, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, fields::ranged, file::ConfigFile, raw::RawHealthCheck};
use crate::pem::PemError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
    /// HTTP over TLS (rustls): the apiserver's /readyz.
    Https,
    /// A DNS query over UDP (keepalived's DNS_CHECK): `dns_name`, `dns_type`,
    /// `dns_expect_rcode`.
    Dns,
    None,
}

impl CheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Dns => "dns",
            CheckType::None => "none",
        }
    }
}

/// `[vip.health_check]`, with haproxy's defaults (inter 2s, rise 2, fall 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: CheckType,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// None: the VIP's port.
    pub port: Option<u16>,
    pub http_path: String,
    pub http_expect_status: u16,
    pub start_down: bool,
    /// Tunnel VIPs (`forwarding = "ipip"` or `"gue"`): the backend is up only if a TCP SYN to
    /// the VIP's address and the check's port, sent inside the VIP's encapsulation, is
    /// answered too, so a backend whose decapsulation or VIP is missing goes down with that
    /// reason. Default: on for a TCP tunnel VIP with a check; off otherwise (set by the VIP).
    pub through_tunnel: bool,
    /// `type = "https"` only: how the TLS handshake is made and verified.
    pub tls: Option<TlsCheckConfig>,
    /// `type = "dns"` only: the query and the answer that means up.
    pub dns: Option<DnsCheckConfig>,
}

/// The query of a `dns` check: the backend is up when an answer to it with `rcode` arrives
/// within the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheckConfig {
    /// `dns_name`, without a trailing dot ("" for the root, ".").
    pub name: String,
    /// `dns_type` as its number (A = 1, AAAA = 28, ...).
    pub qtype: u16,
    /// `dns_expect_rcode` as its number (NOERROR = 0, NXDOMAIN = 3, ...).
    pub rcode: u8,
}

/// The TLS side of an `https` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCheckConfig {
    /// SNI and the name the certificate must carry; None: the backend's address (no SNI is
    /// sent for an address, and the certificate must carry it as an IP SAN).
    pub server_name: Option<String>,
    /// PEM CA bundle to verify against; None: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// false only when the file says `tls_verify = false`: any certificate is accepted.
    pub verify: bool,
    /// Client certificate and key (PEM) for backends that want one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl HealthCheckConfig {
    /// A backend's state before its check's first verdict: down with `start_down` (unless
    /// nothing is checked), else up.
    pub fn starts_up(&self) -> bool {
        !self.start_down || self.kind == CheckType::None
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckType::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            port: None,
            http_path: "/".into(),
            http_expect_status: 200,
            start_down: false,
            through_tunnel: false,
            tls: None,
            dns: None,
        }
    }
}

pub(super) fn health_check(
    file: &ConfigFile<'_>,
    h: &RawHealthCheck,
    span: Range<usize>,
    key: &str,
) -> Result<HealthCheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let d = HealthCheckConfig::default();
    let (interval, timeout) = timing(file, h, &k, d.interval)?;
    let rise = match &h.rise {
        Some(v) => ranged(file, v, &k("rise"), 1..=100)?,
        None => d.rise,
    };
    let fall = match &h.fall {
        Some(v) => ranged(file, v, &k("fall"), 1..=100)?,
        None => d.fall,
    };
    let port = match &h.port {
        Some(v) => Some(ranged(file, v, &k("port"), 1..=65535)? as u16),
        None => None,
    };
    let http_path = match &h.http_path {
        Some(p)
            if !p.get_ref().starts_with('/')
                || p.get_ref()
                    .contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            return Err(file.at(
                p,
                k("http_path"),
                format!(
                    "{:?} must start with '/' and contain no spaces",
                    p.get_ref()
                ),
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => d.http_path,
    };
    let http_expect_status = match &h.http_expect_status {
        Some(v) => ranged(file, v, &k("http_expect_status"), 100..=599)? as u16,
        None => d.http_expect_status,
    };
    let kind = h.kind.unwrap_or(CheckType::Tcp);
    warn_unused_http_keys(file, h, kind, &k);
    let tls = match kind {
        CheckType::Https => Some(tls(file, h, span.clone(), &k)?),
        _ => {
            refuse_first(
                file,
                &k,
                tls_keys(h),
                "a TLS setting needs type = \"https\"",
            )?;
            None
        }
    };
    let dns = match kind {
        CheckType::Dns => Some(dns(file, h, span, &k)?),
        _ => {
            refuse_first(file, &k, dns_keys(h), "a DNS setting needs type = \"dns\"")?;
            None
        }
    };
    Ok(HealthCheckConfig {
        kind,
        interval,
        timeout,
        rise,
        fall,
        port,
        http_path,
        http_expect_status,
        start_down: h.start_down.unwrap_or(false),
        // The VIP decides (`vip::check`): it knows its forwarding.
        through_tunnel: false,
        tls,
        dns,
    })
}

/// `http_path` and `http_expect_status` on a check that sends no request: accepted (a file may
/// keep them while switching types), but said, since an imported or edited file whose check is
/// not what it looks like is a production surprise.
fn warn_unused_http_keys(
    file: &ConfigFile<'_>,
    h: &RawHealthCheck,
    kind: CheckType,
    k: &impl Fn(&str) -> String,
) {
    if matches!(kind, CheckType::Http | CheckType::Https) {
        return;
    }
    for (field, span) in [
        ("http_path", h.http_path.as_ref().map(Spanned::span)),
        (
            "http_expect_status",
            h.http_expect_status.as_ref().map(Spanned::span),
        ),
    ] {
        if let Some(span) = span {
            file.warn(
                span,
                k(field),
                format!(
                    "{field} has no effect on a type = \"{}\" check (only http and https send a request)",
                    kind.as_str()
                ),
            );
        }
    }
}

/// `interval` (10ms..=1h) and `timeout` (haproxy: the interval by default; never longer).
fn timing(
    file: &ConfigFile<'_>,
    h: &RawHealthCheck,
    k: &impl Fn(&str) -> String,
    default_interval: Duration,
) -> Result<(Duration, Duration), ConfigError> {
    let duration = |v: &Option<Spanned<Duration>>, field: &str, default: Duration| match v {
        Some(s)
            if *s.get_ref() < Duration::from_millis(10)
                || *s.get_ref() > Duration::from_secs(3600) =>
        {
            Err(file.at(
                s,
                k(field),
                format!("{:?} is out of range (10ms..=1h)", s.get_ref()),
            ))
        }
        Some(s) => Ok(*s.get_ref()),
        None => Ok(default),
    };
    let interval = duration(&h.interval, "interval", default_interval)?;
    let timeout = duration(&h.timeout, "timeout", interval)?;
    if let Some(t) = &h.timeout
        && timeout > interval
    {
        return Err(file.at(
            t,
            k("timeout"),
            format!("{timeout:?} is longer than the interval {interval:?}"),
        ));
    }
    Ok((interval, timeout))
}

/// The first of `present` (key, where it is), refused with `why`.
fn refuse_first(
    file: &ConfigFile<'_>,
    k: &impl Fn(&str) -> String,
    present: Vec<(&'static str, Range<usize>)>,
    why: &str,
) -> Result<(), ConfigError> {
    match present.into_iter().next() {
        Some((field, at)) => Err(file.error(Some(at), Some(k(field)), why.into())),
        None => Ok(()),
    }
}

/// The DNS keys a check has, where they are.
fn dns_keys(h: &RawHealthCheck) -> Vec<(&'static str, Range<usize>)> {
    [
        h.dns_name.as_ref().map(|v| ("dns_name", v.span())),
        h.dns_type.as_ref().map(|v| ("dns_type", v.span())),
        h.dns_expect_rcode
            .as_ref()
            .map(|v| ("dns_expect_rcode", v.span())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Query types by name (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 6895); others as `TYPE<n>`
/// (RFC 3597 §5).
const DNS_TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("ANY", 255),
];

/// Response codes by name (RFC 1035 §4.1.1, RFC 6895 §2.3).
const DNS_RCODES: &[(&str, u8)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
];

/// The query of a `dns` check, checked as a resolver would build it.
fn dns(
    file: &ConfigFile<'_>,
    h: &RawHealthCheck,
    check_span: Range<usize>,
    k: &impl Fn(&str) -> String,
) -> Result<DnsCheckConfig, ConfigError> {
    let Some(name) = &h.dns_name else {
        return Err(file.error(
            Some(check_span),
            Some(k("dns_name")),
            "a dns check needs dns_name (the name to query, e.g. \"example.org\")".into(),
        ));
    };
    // "." is the root (keepalived's default query: SOA of the root zone).
    let name_str = name.get_ref().trim_end_matches('.');
    if let Err(why) = check_dns_name(name_str).or_else(|e| {
        if name.get_ref() == "." {
            Ok(())
        } else {
            Err(e)
        }
    }) {
        return Err(file.at(name, k("dns_name"), format!("{:?}: {why}", name.get_ref())));
    }
    let qtype = match &h.dns_type {
        None => 1,
        Some(t) => {
            let upper = t.get_ref().to_ascii_uppercase();
            let number = upper.strip_prefix("TYPE").and_then(|n| n.parse().ok());
            named(DNS_TYPES, &upper).or(number).ok_or_else(|| {
                file.at(
                    t,
                    k("dns_type"),
                    format!(
                        "{:?} is not a query type: one of {} or TYPE<number>",
                        t.get_ref(),
                        names(DNS_TYPES)
                    ),
                )
            })?
        }
    };
    let rcode = match &h.dns_expect_rcode {
        None => 0,
        Some(r) => named(DNS_RCODES, &r.get_ref().to_ascii_uppercase()).ok_or_else(|| {
            file.at(
                r,
                k("dns_expect_rcode"),
                format!(
                    "{:?} is not a response code: one of {}",
                    r.get_ref(),
                    names(DNS_RCODES)
                ),
            )
        })?,
    };
    Ok(DnsCheckConfig {
        name: name_str.to_owned(),
        qtype,
        rcode,
    })
}

/// RFC 1035 §2.3.4: labels of 1..=63 octets, 253 characters in all; letters, digits, '-' and
/// '_' (service labels, RFC 8552).
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label (between dots) has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a label has letters, digits, '-' and '_' only");
        }
    }
    Ok(())
}

/// The `tls_*` keys present, with their positions.
fn tls_keys(h: &RawHealthCheck) -> Vec<(&'static str, Range<usize>)> {
    let at = |v: Option<Range<usize>>, field| v.map(|span| (field, span));
    [
        at(
            h.tls_server_name.as_ref().map(Spanned::span),
            "tls_server_name",
        ),
        at(h.tls_ca_file.as_ref().map(Spanned::span), "tls_ca_file"),
        at(h.tls_verify.as_ref().map(Spanned::span), "tls_verify"),
        at(
            h.tls_client_cert.as_ref().map(Spanned::span),
            "tls_client_cert",
        ),
        at(
            h.tls_client_key.as_ref().map(Spanned::span),
            "tls_client_key",
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The TLS side of an `https` check. The PEM files are read now, so that a missing or
/// malformed one is named with its key and line before anything runs.
fn tls(
    file: &ConfigFile<'_>,
    h: &RawHealthCheck,
    check_span: Range<usize>,
    k: &impl Fn(&str) -> String,
) -> Result<TlsCheckConfig, ConfigError> {
    let server_name = match &h.tls_server_name {
        Some(n) => {
            if rustls::pki_types::ServerName::try_from(n.get_ref().as_str()).is_err() {
                return Err(file.at(
                    n,
                    k("tls_server_name"),
                    format!("{:?} is not a DNS name or an address", n.get_ref()),
                ));
            }
            Some(n.get_ref().clone())
        }
        None => None,
    };
    let pem_file = |v: &Option<Spanned<PathBuf>>,
                    field: &str,
                    read: fn(&std::path::Path) -> Result<(), PemError>|
     -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) => {
                read(p.get_ref()).map_err(|e| file.at(p, k(field), e.to_string()))?;
                Ok(Some(p.get_ref().clone()))
            }
            None => Ok(None),
        }
    };
    let ca_file = pem_file(&h.tls_ca_file, "tls_ca_file", |p| {
        crate::pem::certificates(p).map(drop)
    })?;
    let client_cert = pem_file(&h.tls_client_cert, "tls_client_cert", |p| {
        crate::pem::certificates(p).map(drop)
    })?;
    let client_key = pem_file(&h.tls_client_key, "tls_client_key", |p| {
        crate::pem::private_key(p).map(drop)
    })?;
    match (&h.tls_client_cert, &h.tls_client_key) {
        (Some(c), None) => {
            return Err(file.at(c, k("tls_client_cert"), "needs tls_client_key too"));
        }
        (None, Some(key)) => {
            return Err(file.at(key, k("tls_client_key"), "needs tls_client_cert too"));
        }
        _ => {}
    }
    let verify = h.tls_verify.as_ref().is_none_or(|v| *v.get_ref());
    match (&h.tls_verify, &h.tls_ca_file) {
        (Some(v), Some(_)) if !*v.get_ref() => {
            return Err(file.at(
                v,
                k("tls_verify"),
                "tls_verify = false accepts any certificate, so tls_ca_file would be ignored: keep one of them",
            ));
        }
        (None, None) => file.warn(
            check_span,
            k("type"),
            "an https check without tls_ca_file verifies against the system's CAs, which an \
             apiserver's certificate (signed by the cluster CA) fails: set tls_ca_file (e.g. \
             /etc/kubernetes/pki/ca.crt), or tls_verify = false to skip verification"
                .into(),
        ),
        _ => {}
    }
    Ok(TlsCheckConfig {
        server_name,
        ca_file,
        verify,
        client_cert,
        client_key,
    })
}

/// The value of `name` in a table of names.
fn named<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A table's names, for an error message.
fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}
