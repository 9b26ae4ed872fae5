//! Why a probe failed, and why a check could not start: typed, with the words an operator acts
//! on ("connect refused", "HTTP 503", "certificate expired", "handshake timeout after 1s") as
//! their `Display`, which the log and `status` show.

use thiserror::Error;

use crate::pem::PemError;

/// Why one probe failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeFailure {
    #[error("connect refused")]
    ConnectRefused,
    #[error("connect failed: {0}")]
    Connect(String),
    /// How long it waited.
    #[error("timeout after {0}")]
    Timeout(String),
    #[error("handshake timeout after {0}")]
    HandshakeTimeout(String),
    /// A failed handshake, in an operator's words (`tls::describe`).
    #[error("{0}")]
    Tls(String),
    #[error("sending the request: {0}")]
    Send(String),
    #[error("reading the response: {0}")]
    Read(String),
    #[error("no HTTP status line in the response")]
    NoStatusLine,
    #[error("HTTP {0}")]
    HttpStatus(u16),
    /// The check's own UDP socket could not be made.
    #[error("udp socket: {0}")]
    Socket(String),
    /// ICMP port unreachable, as a connected UDP socket reports it: nothing listens.
    #[error("port unreachable")]
    PortUnreachable,
    #[error("dns rcode {0}")]
    DnsRcode(String),
    #[error("no answer to the query (only stray datagrams)")]
    NoAnswer,
    /// Through the tunnel (`health_check.through_tunnel`): the mode, how long it waited.
    #[error(
        "no answer through the {0} tunnel within {1} (is xdp-lb decap, or the kernel's tunnel, running on the backend, and the VIP on its loopback?)"
    )]
    TunnelNoAnswer(&'static str, String),
    #[error(
        "connect refused through the {0} tunnel (nothing listens on the VIP's address and port on the backend)"
    )]
    TunnelRefused(&'static str),
    /// The probe could not be sent.
    #[error("{0}")]
    Tunnel(String),
}

/// Why a check cannot start: its TLS settings cannot be used (the files were readable at
/// validation; something changed since).
#[derive(Debug, Error)]
pub enum CheckSetupError {
    #[error("an https check without TLS settings")]
    NoTlsSettings,
    #[error("tls_server_name: {0}")]
    ServerName(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {reason}")]
    CaCertificate { path: String, reason: String },
    #[error("no CA certificates in the system's trust store (set tls_ca_file)")]
    NoSystemCas,
    #[error("tls_client_cert/tls_client_key: {0}")]
    ClientAuth(String),
}
