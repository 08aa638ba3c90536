//! The client's TLS settings (feature `tls`): a rustls `ClientConfig` (ring provider) trusting
//! the system store or one CA file. Without the feature a `wss://` URL is refused when the
//! client is built ([`Error::InvalidArgument`]).
#![forbid(unsafe_code)]

#[cfg(feature = "tls")]
use std::sync::Arc;

#[cfg(feature = "tls")]
use rustls::pki_types::CertificateDer;
#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;

use super::config::TlsRoots;
use crate::error::Error;

/// The TLS settings every link of one client uses.
#[cfg(feature = "tls")]
pub(crate) type ClientTls = Arc<rustls::ClientConfig>;

/// Without the `tls` feature there are no TLS settings: this type has no values.
#[cfg(not(feature = "tls"))]
pub(crate) enum ClientTls {}

/// Without the `tls` feature: `wss://` cannot be dialled.
#[cfg(not(feature = "tls"))]
pub(crate) fn client_config(_: &TlsRoots) -> Result<ClientTls, Error> {
    Err(Error::InvalidArgument(
        "wss:// needs TLS, and this build has none (the `tls` feature is off)".into(),
    ))
}

/// Trusts `roots`. Errors ([`Error::Tls`]): an unreadable or empty CA file, an empty system
/// store.
#[cfg(feature = "tls")]
pub(crate) fn client_config(roots: &TlsRoots) -> Result<ClientTls, Error> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(Error::Tls {
                    path: "system certificate store".into(),
                    message: format!(
                        "no usable CA certificate ({} errors); install ca-certificates or set \
                         tls_roots to a CA file",
                        found.errors.len()
                    ),
                });
            }
        }
        TlsRoots::CaFile(path) => {
            let tls_error = |message: String| Error::Tls {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(format!("cannot read CA certificates: {e}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| tls_error(format!("not a PEM certificate file: {e}")))?;
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| tls_error(format!("unusable CA certificate: {e}")))?;
            }
            if store.is_empty() {
                return Err(tls_error("no CERTIFICATE block found".into()));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            path: "rustls".into(),
            message: e.to_string(),
        })?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
