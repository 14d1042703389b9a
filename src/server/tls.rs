//! HTTPS: a rustls server configuration from PEM files (ring provider), and the handshake of one
//! connection, bounded in time (each runs in its connection's own task, see [`super::front`]).

use super::{ServerError, TlsFiles};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS acceptor for the certificate chain and key in `files`.
///
/// # Errors
/// [`ServerError::Tls`] naming the file that cannot be read or used.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ServerError::Tls {
            what: format!("cannot read the certificate {}", files.cert.display()),
            source: Box::new(e),
        })?;
    if certs.is_empty() {
        return Err(ServerError::Invalid(format!(
            "no certificate in {}",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| ServerError::Tls {
        what: format!("cannot read the private key {}", files.key.display()),
        source: Box::new(e),
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls {
            what: "the certificate and key do not fit".into(),
            source: Box::new(e),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs the TLS handshake of `tcp` within `timeout`; `None` (logged at debug) when it fails
/// or takes longer, so one slow client holds only its own connection.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
