//! TLS for the sidecar: the group's certificate (`tls.crt`, `tls.key`, `ca.crt`, the layout
//! cert-manager writes into a Secret) read once at start, and what is made of it:
//! * the [`NodeTls`] of every Redis connection (the local Redis and, for fences and
//!   hand-overs, its peers), whose certificate must chain to `ca.crt` and name the group;
//! * the server side of the Sentinel-compatible endpoint (Sentinel's `tls-port`).
//!
//! One certificate serves the whole group: it names every pod's DNS name (usually through
//! `*.<headless service>.<namespace>.svc.<domain>`), so any pod's name checks any peer.

use super::config::Announce;
use redis_node::NodeTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// Why the TLS files cannot be used; each names the flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("--{flag}: cannot read {path}: {source}")]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the kind the flag wants.
    #[error("--{flag}: {path}: {why}")]
    Pem {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong (never the key's contents).
        why: String,
    },
    /// The certificate and key do not make a server identity (a key of another
    /// certificate, an unsupported key type).
    #[error("--tls-cert-file and --tls-key-file do not make a usable identity: {0}")]
    Identity(String),
}

/// The group's certificate as the sidecar uses it.
#[derive(Clone)]
pub struct TlsSettings {
    /// `ca.crt`: what Redis' (and the peers') certificates must chain to.
    pub ca_pem: Vec<u8>,
    /// `tls.crt`: presented to Redis as a client certificate (so `tls-auth-clients yes`
    /// works) and served by the Sentinel endpoint.
    pub cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// `--redis-tls-server-name`, when given.
    pub explicit_server_name: Option<String>,
    /// This pod's [`Self::own_server_name`], once the namespace is known (empty before).
    pub own_name: String,
    /// The Sentinel endpoint's server side.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: it holds the private key.
        f.debug_struct("TlsSettings")
            .field("explicit_server_name", &self.explicit_server_name)
            .finish_non_exhaustive()
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::Pem {
        flag,
        path: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Reads and checks the three files: each must hold what its flag says, and the
    /// certificate and key must belong together, so a wrong Secret stops the sidecar at
    /// start with the flag named instead of failing every connection later.
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        explicit_server_name: Option<String>,
    ) -> Result<Self, TlsError> {
        let ca_pem = read("tls-ca-file", ca)?;
        let cert_pem = read("tls-cert-file", cert)?;
        let key_pem = read("tls-key-file", key)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates("tls-ca-file", ca, &ca_pem)? {
            roots.add(c).map_err(|e| TlsError::Pem {
                flag: "tls-ca-file",
                path: ca.display().to_string(),
                why: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let chain = certificates("tls-cert-file", cert, &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
            flag: "tls-key-file",
            path: key.display().to_string(),
            why: "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        })?;
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Identity(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| TlsError::Identity(e.to_string()))?;
        if let Some(name) = &explicit_server_name {
            rustls::pki_types::ServerName::try_from(name.as_str()).map_err(|_| TlsError::Pem {
                flag: "redis-tls-server-name",
                path: name.clone(),
                why: "is not a DNS name or IP address".into(),
            })?;
        }
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
            explicit_server_name,
            own_name: String::new(),
            server_config: Arc::new(server_config),
        })
    }

    /// The name this pod's Redis certificate is checked against: `--redis-tls-server-name`,
    /// else the pod's DNS name `<pod>.<headless service>.<ns>.svc.<domain>` (with
    /// `--headless-service`, whatever address is announced), else the announce address'
    /// host, else the Redis address' host.
    pub fn own_server_name(
        &self,
        announce: &Announce,
        headless: Option<(&str, &str)>,
        pod: &str,
        ns: &str,
        redis_host: &str,
    ) -> String {
        if let Some(n) = &self.explicit_server_name {
            return n.clone();
        }
        if let Some((service, domain)) = headless {
            return format!("{pod}.{service}.{ns}.svc.{domain}");
        }
        match announce {
            Announce::Headless {
                service, domain, ..
            } => format!("{pod}.{service}.{ns}.svc.{domain}"),
            Announce::Fixed(a) => super::config::split_host_port(a)
                .map(|(h, _)| h)
                .unwrap_or_else(|| redis_host.to_string()),
        }
    }

    /// How to call the peers' HTTPS APIs: the same CA, the same name as Redis'.
    pub fn api_tls(&self) -> crate::api_tls::ApiTls {
        crate::api_tls::ApiTls {
            ca_pem: self.ca_pem.clone(),
            name: self.own_name.clone(),
        }
    }

    /// How to reach the Redis at `host` over TLS: a peer announced by DNS name is checked
    /// against that name; one announced by IP (which no certificate names: pod IPs change)
    /// and the local Redis (reached at the pod IP) against [`Self::own_name`], which the
    /// group's one certificate also carries.
    pub fn node_tls(&self, host: &str) -> NodeTls {
        let server_name = if host.parse::<IpAddr>().is_ok()
            || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
        {
            self.own_name.clone()
        } else {
            host.to_string()
        };
        NodeTls {
            ca_pem: self.ca_pem.clone(),
            client_identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
            server_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(explicit: Option<&str>) -> TlsSettings {
        let dir = tempfile::tempdir().unwrap();
        let ca = kubesim::tls::Ca::generate("test").unwrap();
        let (cert, key) = ca
            .issue(&["redis-0.redis-headless.ns.svc.cluster.local"])
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        TlsSettings::load(
            &dir.path().join("ca.crt"),
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
            explicit.map(str::to_string),
        )
        .unwrap()
    }

    #[test]
    fn server_names_prefer_the_flag_then_the_pod_dns_name() {
        let t = settings(None);
        let fixed = Announce::Fixed("10.0.0.5:6379".into());
        assert_eq!(
            t.own_server_name(&fixed, Some(("h", "cluster.local")), "p", "ns", "10.0.0.5"),
            "p.h.ns.svc.cluster.local"
        );
        assert_eq!(
            t.own_server_name(&fixed, None, "p", "ns", "10.0.0.5"),
            "10.0.0.5"
        );
        let mut t = settings(Some("redis.example"));
        t.own_name = "own".into();
        assert_eq!(
            t.own_server_name(&fixed, Some(("h", "d")), "p", "ns", "x"),
            "redis.example"
        );
        assert_eq!(t.node_tls("10.0.0.7").server_name, "own");
        assert_eq!(t.node_tls("[::1]").server_name, "own");
        assert_eq!(t.node_tls("b.h.ns.svc.d").server_name, "b.h.ns.svc.d");
    }

    #[test]
    fn wrong_files_name_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let ca = kubesim::tls::Ca::generate("test").unwrap();
        let (cert, key) = ca.issue(&["a"]).unwrap();
        let (_, other_key) = ca.issue(&["b"]).unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.crt"), ca.pem()).unwrap();
        std::fs::write(p("tls.crt"), &cert).unwrap();
        std::fs::write(p("tls.key"), &key).unwrap();
        std::fs::write(p("other.key"), other_key).unwrap();
        std::fs::write(p("empty"), "").unwrap();
        let load = |ca: &str, cert: &str, key: &str| {
            TlsSettings::load(&p(ca), &p(cert), &p(key), None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(load("missing", "tls.crt", "tls.key").starts_with("--tls-ca-file: cannot read"));
        assert!(load("empty", "tls.crt", "tls.key").contains("--tls-ca-file"));
        assert!(load("ca.crt", "tls.key", "tls.key").starts_with("--tls-cert-file"));
        assert!(load("ca.crt", "tls.crt", "tls.crt").starts_with("--tls-key-file"));
        let mismatched = load("ca.crt", "tls.crt", "other.key");
        assert!(
            mismatched.contains("do not make a usable identity"),
            "{mismatched}"
        );
        // The control: the right files load.
        assert_eq!(load("ca.crt", "tls.crt", "tls.key"), "");
    }
}
