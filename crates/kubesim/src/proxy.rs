//! The service proxy: one loopback TCP listener per Service port, forwarding each new
//! connection to a ready endpoint of the Service, as kube-proxy does (reference section 10,
//! "What a local service proxy reads"). The endpoint is chosen when a connection arrives, from
//! the Service's EndpointSlices at that moment; connections already open are left alone when
//! the endpoints change. With no ready endpoint the connection is refused (closed at once),
//! as kube-proxy's REJECT rule answers.

use crate::store::Store;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A Service port, as the proxy serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace of the Service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// The Service port's `port` number (its name is looked up in the Service).
    pub port: u16,
}

/// The ready endpoints (`ip:port`) of a Service port, from its EndpointSlices: the union of
/// the slices, endpoints whose `ready` is not false (falling back to `serving` while
/// terminating), the port matched by name, duplicates dropped.
pub fn ready_endpoints(store: &Store, sp: &ServicePort) -> Vec<SocketAddr> {
    let Some(svc) = store.get("services", &sp.namespace, &sp.service) else {
        return Vec::new();
    };
    let port_name = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["port"].as_u64() == Some(u64::from(sp.port)))
        })
        .map(|p| p["name"].as_str().unwrap_or_default().to_string());
    let Some(port_name) = port_name else {
        return Vec::new();
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for slice in store.list("endpointslices", Some(&sp.namespace)) {
        if slice
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            != Some(sp.service.as_str())
        {
            continue;
        }
        let Some(port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            })
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let c = &ep["conditions"];
            let usable = match c.get("ready").and_then(Value::as_bool) {
                Some(false) => c["terminating"] == true && c["serving"] == true,
                _ => true,
            };
            if !usable {
                continue;
            }
            for a in ep
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = a.as_str().and_then(|s| s.parse().ok()) {
                    let addr = SocketAddr::new(ip, port);
                    if !out.contains(&addr) {
                        out.push(addr);
                    }
                }
            }
        }
    }
    out
}

/// A running proxy listener for one Service port.
pub struct ServiceProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on `listen` and forwards to `sp`'s ready endpoints, read from `store` for each
    /// new connection (round robin among them).
    pub async fn start(
        store: Arc<RwLock<Store>>,
        sp: ServicePort,
        listen: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of file descriptors: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let endpoints = ready_endpoints(&store.read().expect("store lock"), &sp);
                if endpoints.is_empty() {
                    // No ready endpoint: refuse, as kube-proxy's REJECT does.
                    drop(client);
                    continue;
                }
                let target = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    match TcpStream::connect(target).await {
                        Ok(mut upstream) => {
                            let _ = upstream.set_nodelay(true);
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(%target, error = %e, "proxy: endpoint refused"),
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
