//! TLS (`SecureMode: "tls"`, feature `tls`): a rustls `ServerConfig` (ring provider, TLS 1.2
//! and 1.3) from PEM files, parsed with rustls-pki-types. The byte-level TLS I/O is in
//! `crate::tls_io`, shared with the client. A build without the feature has no [`TlsConfig`]
//! value at all (config validation refuses `SecureMode: "tls"` there).
#![forbid(unsafe_code)]

use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "tls")]
use rustls::ServerConfig;
#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;
use crate::server::net::stream::Transport;

/// The server's TLS settings, shared by every connection.
#[cfg(feature = "tls")]
pub(crate) type TlsConfig = Arc<ServerConfig>;

/// Without the `tls` feature there is no TLS configuration: this type has no values.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum TlsConfig {}

/// Runs the TLS handshake on `stream` until `deadline`.
#[cfg(feature = "tls")]
pub(crate) fn start(
    config: &TlsConfig,
    stream: &mut Transport,
    deadline: Instant,
) -> Result<(), String> {
    stream.start_tls(config, deadline)
}

#[cfg(not(feature = "tls"))]
pub(crate) fn start(config: &TlsConfig, _: &mut Transport, _: Instant) -> Result<(), String> {
    match *config {}
}

/// Without the `tls` feature: config validation has refused `SecureMode: "tls"` already.
#[cfg(not(feature = "tls"))]
pub(crate) fn server_config(cert_path: &Path, _: &Path) -> Result<TlsConfig, Error> {
    Err(tls_error(
        cert_path,
        "this build has no TLS (the `tls` feature is off)",
    ))
}

fn tls_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Tls {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Loads the certificate chain and private key. Errors ([`Error::Tls`], exit code 4) name
/// the file and say what is wrong with it.
#[cfg(feature = "tls")]
pub(crate) fn server_config(cert_path: &Path, key_path: &Path) -> Result<TlsConfig, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls_error(cert_path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(cert_path, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        tls_error(
            key_path,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_error(
                key_path,
                format!("certificate and key do not make a usable pair: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
