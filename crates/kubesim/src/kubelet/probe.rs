//! Readiness and liveness probes: exec, HTTP GET and TCP.

#![forbid(unsafe_code)]

use super::*;

pub(super) fn resolve_port(
    c: &Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> u16 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => *n as u16,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map_or(0, |p| p.container_port as u16),
    }
}

/// A probe's loop: results feed its counter; readiness sets the container's ready flag,
/// a failed liveness verdict asks for a restart through `liveness`.
pub(super) async fn probe_loop(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    i: usize,
    c: Container,
    p: Probe,
    plan: plan::LaunchPlan,
    liveness: Option<tokio::sync::mpsc::Sender<String>>,
) {
    let kind = if liveness.is_some() {
        "Liveness"
    } else {
        "Readiness"
    };
    tokio::time::sleep(Duration::from_secs(
        p.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let mut counter = ProbeCounter::new(
        p.success_threshold.unwrap_or(1) as u32,
        p.failure_threshold.unwrap_or(3) as u32,
    );
    loop {
        let result = tokio::time::timeout(timeout, run_probe(&shared, &rt, &c, &p, &plan))
            .await
            .unwrap_or_else(|_| Err(format!("timeout after {timeout:?}")));
        if let Err(why) = &result {
            rt.event(
                &shared,
                "Warning",
                "Unhealthy",
                &format!("{kind} probe failed: {why}"),
            );
        }
        if let Some(verdict) = counter.record(result.is_ok()) {
            match &liveness {
                None => rt.update(i, |v| v.ready = verdict),
                Some(tx) if !verdict => {
                    let _ = tx.send(result.err().unwrap_or_default()).await;
                    return;
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(period).await;
    }
}

pub(super) async fn run_probe(
    shared: &Shared,
    rt: &PodRuntime,
    c: &Container,
    p: &Probe,
    plan: &plan::LaunchPlan,
) -> Result<(), String> {
    if let Some(get) = &p.http_get {
        let port = resolve_port(c, &get.port);
        http_get(
            rt.ip,
            port,
            get.path.as_deref().unwrap_or("/"),
            Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64),
            Scheme::of(get.scheme.as_deref()),
        )
        .await
    } else if let Some(tcp) = &p.tcp_socket {
        let port = resolve_port(c, &tcp.port);
        tokio::net::TcpStream::connect((rt.ip, port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {}:{port}: {e}", rt.ip))
    } else if let Some(exec) = &p.exec {
        run_exec(
            shared,
            rt,
            exec.command.as_deref().unwrap_or_default(),
            plan,
        )
        .await
    } else {
        Err("probe has no handler kubesim supports (httpGet, tcpSocket, exec)".into())
    }
}

/// Runs a command in the container's context (hooks and exec probes); success is exit 0.
pub(super) async fn run_exec(
    shared: &Shared,
    rt: &PodRuntime,
    command: &[String],
    plan: &plan::LaunchPlan,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("empty command".into());
    };
    let log = rt.dir.join("logs").join("exec.log");
    let mut cmd = container_command(shared, rt, &plan.container, program, args, &plan.env, &log)
        .map_err(|e| e.to_string())?;
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("exec {program:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "command {command:?} exited with {}",
            exit_code(status)
        ))
    }
}

/// An `httpGet` handler's `scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    /// TLS without checking the certificate, as the kubelet's prober does (it sets
    /// `InsecureSkipVerify`: a probe asks whether the process answers, not who it is).
    Https,
}

impl Scheme {
    pub(super) fn of(scheme: Option<&str>) -> Self {
        match scheme {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => Scheme::Http,
        }
    }
}

/// Accepts any server certificate: the kubelet's probes do not verify (see [`Scheme::Https`]).
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// The prober's TLS client, built once: every HTTPS probe of every pod shares it.
fn insecure_tls() -> Result<tokio_rustls::TlsConnector, String> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// An HTTP GET as the kubelet's prober makes it: success is a status from 200 to 399. Written
/// by hand because the prober needs only the status line; a client library would add a
/// dependency for one request shape.
pub(super) async fn http_get(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    timeout: Duration,
    scheme: Scheme,
) -> Result<(), String> {
    let name = if scheme == Scheme::Https {
        "https"
    } else {
        "http"
    };
    let run = async {
        let tcp = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("Get \"{name}://{ip}:{port}{path}\": {e}"))?;
        match scheme {
            Scheme::Http => http_exchange(tcp, ip, port, path).await,
            Scheme::Https => {
                let tls = insecure_tls()?
                    .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
                    .await
                    .map_err(|e| format!("Get \"https://{ip}:{port}{path}\": {e}"))?;
                http_exchange(tls, ip, port, path).await
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "Get \"{name}://{ip}:{port}{path}\": context deadline exceeded"
            ))
        })
}

/// The request and its status line, on a connected stream.
async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    ip: Ipv4Addr,
    port: u16,
    path: &str,
) -> Result<(), String> {
    {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                format!(
                    "malformed HTTP response: {:?}",
                    line.lines().next().unwrap_or_default()
                )
            })?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn a_probe_port_is_a_number_or_a_named_container_port() {
        let c = Container {
            name: "redis".into(),
            ports: Some(vec![ContainerPort {
                name: Some("redis".into()),
                container_port: 6379,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&c, &IntOrString::Int(9121)), 9121);
        assert_eq!(resolve_port(&c, &IntOrString::String("redis".into())), 6379);
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            0,
            "an unknown name probes nothing"
        );
    }
}
