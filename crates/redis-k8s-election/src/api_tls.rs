//! HTTPS to the sidecars' APIs (`--http-tls`): what the sidecars (failsafe messages,
//! switchovers the Sentinel endpoint forwards) and the operator commands use to call them, so
//! that the admin token never crosses the network in the clear.
//!
//! Peers are reached at their pod IPs (the only address the API vouches for), which no
//! certificate names, so the certificate's name is checked against a name given here (the
//! group's one certificate names every pod's DNS name) instead of the URL's host. rustls
//! offers no option for that: [`NamedVerifier`] wraps its WebPKI verifier and only swaps the
//! name it checks.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Why an HTTPS client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    /// The CA file holds no usable certificate.
    #[error("the CA file holds no usable PEM certificate: {0}")]
    Ca(String),
    /// The name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a DNS name or IP address")]
    Name(String),
    /// rustls refused the verifier.
    #[error("building the certificate verifier: {0}")]
    Verifier(String),
}

/// How to call the sidecars' APIs over HTTPS: whom to trust and the name their certificate
/// must carry.
#[derive(Clone, Debug)]
pub struct ApiTls {
    /// PEM CA certificates (`ca.crt`).
    pub ca_pem: Vec<u8>,
    /// The name each sidecar's certificate must carry, whatever address it is reached at.
    pub name: String,
}

/// `http://ADDR/PATH`, or `https://…` when `tls` is given.
pub fn url(tls: Option<&ApiTls>, addr: &str, path: &str) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{addr}{path}")
}

/// A client builder for the sidecars' APIs: HTTPS per `tls` when given, plain otherwise.
pub fn builder(tls: Option<&ApiTls>) -> Result<reqwest::ClientBuilder, ApiTlsError> {
    match tls {
        Some(t) => t.client_builder(),
        None => Ok(reqwest::Client::builder()),
    }
}

impl ApiTls {
    /// A client builder that speaks HTTPS checked against [`Self::ca_pem`] and
    /// [`Self::name`] (plain `http://` URLs still work through it).
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, ApiTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let c = c.map_err(|e| ApiTlsError::Ca(e.to_string()))?;
            roots.add(c).map_err(|e| ApiTlsError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ApiTlsError::Ca("none found".into()));
        }
        let name = ServerName::try_from(self.name.clone())
            .map_err(|_| ApiTlsError::Name(self.name.clone()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ApiTlsError::Verifier(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiTlsError::Verifier(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NamedVerifier { inner, name }))
            .with_no_client_auth();
        Ok(reqwest::Client::builder().use_preconfigured_tls(config))
    }
}

/// rustls' WebPKI verification (chain, validity, usage, signatures) with the name to check
/// fixed in advance instead of taken from the URL.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
