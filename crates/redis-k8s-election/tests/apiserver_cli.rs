//! The real binary's `apiserver` command: prints its URL once it accepts connections, writes a
//! kubeconfig that kube-rs uses as it is, and exits cleanly on SIGTERM.

use k8s_openapi::api::coordination::v1::Lease;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_redis-k8s-election");

/// Kills the child by PID if a test fails before it ends.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Guard, String) {
    let mut child = Command::new(BIN)
        .arg("apiserver")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the URL line");
    let url = line.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    (Guard(child), url)
}

#[tokio::test]
async fn serves_writes_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let (mut guard, url) = start(&[
        "--listen",
        "127.0.0.1:0",
        "--token",
        "T",
        "--write-kubeconfig",
        kc.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(text.contains(&url) && text.contains("token: \"T\""));

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kc).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let api: kube::Api<Lease> = kube::Api::default_namespaced(client);
    let lease: Lease = serde_json::from_value(
        serde_json::json!({"metadata":{"name":"x"},"spec":{"holderIdentity":"a"}}),
    )
    .unwrap();
    api.create(&Default::default(), &lease).await.unwrap();
    assert_eq!(
        api.get("x")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("a")
    );

    let pid = guard.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn configuration_errors_name_the_flag() {
    let out = Command::new(BIN)
        .args(["apiserver", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    // A port in use: a clear error naming --listen, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["apiserver", "--listen", &addr, "--token", "T"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen") && err.contains(&addr), "{err}");
}
