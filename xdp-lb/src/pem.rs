//! PEM files: the certificates and keys of `https` health checks, read and checked once by
//! config validation (so `check-config` names a bad file with its key and line) and again when
//! a check starts.

use std::path::{Path, PathBuf};

use rustls::pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject as _},
};
use thiserror::Error;

/// Why a PEM file cannot be used; the message names the file.
#[derive(Debug, Error)]
pub enum PemError {
    #[error("cannot read {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("{0} holds no PEM item of that kind")]
    NoItem(PathBuf),
    #[error("{0} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate(PathBuf),
    #[error("{0} is not valid PEM: {1}")]
    Invalid(PathBuf, String),
}

fn describe(path: &Path, e: pem::Error) -> PemError {
    match e {
        pem::Error::Io(io) => PemError::Unreadable(path.to_owned(), io),
        pem::Error::NoItemsFound => PemError::NoItem(path.to_owned()),
        other => PemError::Invalid(path.to_owned(), format!("{other:?}")),
    }
}

/// Every certificate in a PEM file (a CA bundle or a certificate chain); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| describe(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(path, e))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| describe(path, e))
}
