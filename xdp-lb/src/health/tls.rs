//! The TLS side of `https` checks (rustls): the client configuration a check is made with, and
//! a handshake's failure put in words an operator acts on ("certificate expired", "unknown CA",
//! "name mismatch").

use std::sync::Arc;

use rustls::{
    CertificateError, ClientConfig, RootCertStore,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use super::failure::CheckSetupError;
use crate::{config::TlsCheckConfig, pem};

/// The client configuration of one check: its trust store (the CA file, or the system's), or
/// no verification at all when the config says `tls_verify = false`; its client certificate.
pub(super) fn client_config(tls: &TlsCheckConfig) -> Result<ClientConfig, CheckSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckSetupError::Tls(e.to_string()))?;
    let builder = if tls.verify {
        builder.with_root_certificates(trust_store(tls)?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)
            .map_err(|e| CheckSetupError::ClientAuth(e.to_string())),
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn trust_store(tls: &TlsCheckConfig) -> Result<RootCertStore, CheckSetupError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in pem::certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| CheckSetupError::CaCertificate {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(CheckSetupError::NoSystemCas);
            }
        }
    }
    Ok(roots)
}

/// A failed handshake, in an operator's words.
pub(super) fn describe(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("TLS handshake failed: {e}");
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".into()
            }
            CertificateError::UnknownIssuer => "unknown CA".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "name mismatch".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the backend refused the handshake: {alert:?}")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// `tls_verify = false`: any certificate is accepted (the handshake's signatures are still
/// checked, so the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
