//! kubesim API server speed: Lease GET and PUT requests per second from kube-rs clients,
//! watch-event delivery latency to 100 concurrent watchers, and resident memory with 10,000
//! objects. Figures, not assertions: run with `cargo bench -p kubesim --bench apiserver`.
//!
//! The server runs in a child process (this binary re-executed with `KUBESIM_BENCH_SERVER`)
//! so that its resident memory is its own and the clients compete with it for the same two
//! cores, as they would on this machine.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: serve until stdin closes (the parent ended), printing the address first.
fn serve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server =
            kubesim::ApiServer::start(kubesim::Config::new("127.0.0.1:0".parse().unwrap(), TOKEN))
                .await
                .unwrap();
        println!("{} {}", server.addr(), server.ca_pem().replace('\n', "|"));
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .unwrap();
        server.shutdown().await;
    });
}

struct ServerProc {
    child: Child,
    addr: String,
    ca_pem: String,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server() -> ServerProc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("KUBESIM_BENCH_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (addr, ca) = line.trim().split_once(' ').unwrap();
    ServerProc {
        addr: addr.to_string(),
        ca_pem: ca.replace('|', "\n"),
        child,
    }
}

async fn client(url: &str, ca_pem: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = "default".into();
    config.auth_info.token = Some(TOKEN.to_string().into());
    if let Some(pem) = ca_pem {
        let der = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        use base64::Engine;
        config.root_cert = Some(vec![
            base64::engine::general_purpose::STANDARD
                .decode(der)
                .unwrap(),
        ]);
    }
    kube::Client::try_from(config).unwrap()
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"holderIdentity": "bench", "leaseDurationSeconds": 10}}),
    )
    .unwrap()
}

/// Runs `tasks` loops for `dur`, each calling `op`; returns (requests/s, p50 ms, p99 ms).
async fn load<F, Fut>(tasks: usize, dur: Duration, op: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < dur {
                let t0 = Instant::now();
                op(t).await;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

async fn bench_requests(url: &str, ca: Option<&str>, label: &str, rows: &mut Vec<String>) {
    const CLIENTS: usize = 4;
    const TASKS: usize = 32;
    let clients: Vec<kube::Client> =
        futures::future::join_all((0..CLIENTS).map(|_| client(url, ca))).await;
    let apis: Arc<Vec<Api<Lease>>> =
        Arc::new(clients.into_iter().map(Api::default_namespaced).collect());
    for t in 0..TASKS {
        let _ = apis[0]
            .create(&PostParams::default(), &lease(&format!("{label}-{t}")))
            .await;
    }
    let dur = Duration::from_secs(5);
    let a = apis.clone();
    let l = label.to_string();
    let (rps, p50, p99) = load(TASKS, dur, move |t| {
        let a = a.clone();
        let name = format!("{l}-{t}");
        async move {
            a[t % CLIENTS].get(&name).await.unwrap();
        }
    })
    .await;
    rows.push(format!(
        "| Lease GET ({label}) | {rps:.0} req/s | {p50:.2} ms | {p99:.2} ms |"
    ));
    let a = apis.clone();
    let l = label.to_string();
    let current: Arc<Vec<tokio::sync::Mutex<Option<Lease>>>> =
        Arc::new((0..TASKS).map(|_| tokio::sync::Mutex::new(None)).collect());
    let (rps, p50, p99) = load(TASKS, dur, move |t| {
        let a = a.clone();
        let current = current.clone();
        let name = format!("{l}-{t}");
        async move {
            let api = &a[t % CLIENTS];
            let mut slot = current[t].lock().await;
            let mut obj = match slot.take() {
                Some(o) => o,
                None => api.get(&name).await.unwrap(),
            };
            let spec = obj.spec.as_mut().unwrap();
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            *slot = Some(
                api.replace(&name, &PostParams::default(), &obj)
                    .await
                    .unwrap(),
            );
        }
    })
    .await;
    rows.push(format!(
        "| Lease PUT ({label}) | {rps:.0} req/s | {p50:.2} ms | {p99:.2} ms |"
    ));
}

async fn bench_watch(url: &str, rows: &mut Vec<String>) {
    const WATCHERS: usize = 100;
    const UPDATES: usize = 300;
    let writer = Api::<Lease>::default_namespaced(client(url, None).await);
    let created = writer
        .create(&PostParams::default(), &lease("watched"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let sends: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut ready = Vec::new();
    let wclients: Vec<kube::Client> =
        futures::future::join_all((0..10).map(|_| client(url, None))).await;
    for w in 0..WATCHERS {
        let api = Api::<Lease>::default_namespaced(wclients[w % 10].clone());
        let tx = tx.clone();
        let rv = rv.clone();
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        ready.push(rrx);
        tokio::spawn(async move {
            let wp = WatchParams::default()
                .fields("metadata.name=watched")
                .timeout(280);
            let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
            let _ = rtx.send(());
            let mut seen = 0;
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Modified(l) = ev {
                    let _ = tx.send((l.metadata.resource_version.unwrap(), Instant::now()));
                    seen += 1;
                    if seen == UPDATES {
                        break;
                    }
                }
            }
        });
    }
    drop(tx);
    // `watch()` returns once the response headers arrived, i.e. after the server subscribed
    // the watch, so every watcher is live when this loop ends.
    for r in ready {
        r.await.unwrap();
    }
    let mut cur = created;
    for i in 0..UPDATES {
        cur.spec.as_mut().unwrap().lease_transitions = Some(i as i32 + 1);
        let t0 = Instant::now();
        cur = writer
            .replace("watched", &PostParams::default(), &cur)
            .await
            .unwrap();
        sends
            .lock()
            .unwrap()
            .push((cur.metadata.resource_version.clone().unwrap(), t0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lat = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sent: std::collections::HashMap<String, Instant> =
        sends.lock().unwrap().iter().cloned().collect();
    while let Ok(Some((rv, at))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Some(t0) = sent.get(&rv) {
            lat.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows.push(format!(
        "| Watch delivery, {WATCHERS} watchers × {UPDATES} updates ({} events) | p50 {:.2} ms | p99 {:.2} ms | max {:.2} ms |",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    ));
}

async fn bench_memory(url: &str, pid: u32, rows: &mut Vec<String>) {
    let api = Api::<Lease>::default_namespaced(client(url, None).await);
    let before = rss_kib(pid);
    let api = Arc::new(api);
    let mut handles = Vec::new();
    for t in 0..16 {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            for i in (t..10_000).step_by(16) {
                api.create(&PostParams::default(), &lease(&format!("mem-{i:05}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let after = rss_kib(pid);
    rows.push(format!(
        "| Resident memory with 10,000 Leases | {:.1} MiB | empty server: {:.1} MiB | |",
        after as f64 / 1024.0,
        before as f64 / 1024.0
    ));
}

fn main() {
    if std::env::var_os("KUBESIM_BENCH_SERVER").is_some() {
        serve();
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = vec![
        "| measure | value | p50 / detail | p99 / detail |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    // Memory on a fresh server, so the figure is the objects' and not a load test's history.
    {
        let fresh = spawn_server();
        let url = format!("http://{}", fresh.addr);
        rt.block_on(bench_memory(&url, fresh.child.id(), &mut rows));
    }
    let server = spawn_server();
    let http = format!("http://{}", server.addr);
    let https = format!("https://{}", server.addr);
    rt.block_on(async {
        bench_requests(&http, None, "http", &mut rows).await;
        bench_requests(&https, Some(&server.ca_pem), "https", &mut rows).await;
        bench_watch(&http, &mut rows).await;
    });
    println!("\nkubesim API server, kube-rs clients (4 clients, 32 concurrent tasks, 5 s per row)");
    for r in rows {
        println!("{r}");
    }
}
