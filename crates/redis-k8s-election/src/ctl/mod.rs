//! Operator commands: `status`, `switchover`, `pause`, `resume`, `history`. They read the
//! group from the Lease and the pods (as the sidecars publish themselves there) and talk to
//! the sidecars' HTTP APIs, like `patronictl` does with Patroni's.

pub mod view;

use crate::wire::SwitchoverReply;
use kube_coord::{Coord, CoordError, history};
use std::path::PathBuf;
use std::time::Duration;
use view::{LeaseView, Member};

/// Why a command failed. The message says what was being done; the source (printed after it)
/// says why.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No Kubernetes client.
    #[error("--kubeconfig")]
    Client(#[source] kube_coord::client::ClientError),
    /// A Kubernetes request failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: CoordError,
    },
    /// A request to a sidecar failed.
    #[error("{what}")]
    Http {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// A file cannot be read.
    #[error("{what}")]
    File {
        /// What was being read.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The group is not in a state the command can act on, or a sidecar refused.
    #[error("{0}")]
    Refused(String),
    /// The output cannot be encoded.
    #[error("encoding the output")]
    Encode(#[source] serde_json::Error),
}

type Result<T, E = CtlError> = std::result::Result<T, E>;

fn api(what: impl Into<String>) -> impl FnOnce(CoordError) -> CtlError {
    let what = what.into();
    move |source| CtlError::Api { what, source }
}

fn http_err(what: impl Into<String>) -> impl FnOnce(reqwest::Error) -> CtlError {
    let what = what.into();
    move |source| CtlError::Http { what, source }
}

/// Which group, and how to reach the Kubernetes API.
#[derive(clap::Args, Debug, Clone)]
pub struct GroupArgs {
    /// Kubeconfig file; without it, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace; default: the kubeconfig's or the in-cluster namespace.
    #[arg(long, short = 'n', env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The Lease the group competes for.
    #[arg(long, env = "LEASE_NAME", default_value = "redis")]
    pub lease_name: String,
    /// The Service the leader routes to itself.
    #[arg(long, env = "LEADER_SERVICE", default_value = "redis-leader")]
    pub leader_service: String,
    /// Pod label holding `leader` / `replica`.
    #[arg(long, env = "ROLE_LABEL", default_value = "redis-role")]
    pub role_label: String,
    /// Timeout of each Kubernetes and sidecar request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// The sidecars serve HTTPS (`--http-tls`, components/tls): the CA certificate (`ca.crt`)
    /// their certificate must chain to. Without it the sidecars are called over plain HTTP.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// The name each sidecar's certificate must carry, `{pod}` and `{namespace}` replaced.
    #[arg(long, default_value = DEFAULT_TLS_SERVER_NAME)]
    pub tls_server_name: String,
}

/// `--tls-server-name`'s default: the pod's DNS name under the shipped headless Service, which
/// the group's certificate carries (`*.redis-headless.<namespace>.svc.cluster.local`).
pub const DEFAULT_TLS_SERVER_NAME: &str = "{pod}.redis-headless.{namespace}.svc.cluster.local";

impl GroupArgs {
    /// How to call pod `pod`'s sidecar in namespace `ns`: HTTPS checked against the CA and
    /// its name with `--tls-ca-file`, plain HTTP without.
    fn api_tls(&self, ns: &str, pod: &str) -> Result<Option<crate::api_tls::ApiTls>> {
        let Some(file) = &self.tls_ca_file else {
            return Ok(None);
        };
        let ca_pem = std::fs::read(file).map_err(|source| CtlError::File {
            what: format!("--tls-ca-file {}", file.display()),
            source,
        })?;
        Ok(Some(crate::api_tls::ApiTls {
            ca_pem,
            name: self
                .tls_server_name
                .replace("{pod}", pod)
                .replace("{namespace}", ns),
        }))
    }

    /// A client for pod `pod`'s sidecar (see [`Self::api_tls`]) and the URL of `path` on it
    /// at `addr`.
    fn api(
        &self,
        ns: &str,
        pod: &str,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(reqwest::Client, String)> {
        let tls = self.api_tls(ns, pod)?;
        let client = crate::api_tls::builder(tls.as_ref())
            .map_err(|e| CtlError::Refused(format!("--tls-ca-file: {e}")))?
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(http_err("building the HTTP client"))?;
        Ok((client, crate::api_tls::url(tls.as_ref(), addr, path)))
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
}

/// `status` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// `switchover` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// The pod to hand the leadership to; default: the best caught-up replica.
    #[arg(long)]
    to: Option<String>,
    /// Switch over even while the group is paused.
    #[arg(long)]
    force: bool,
    /// File holding the sidecars' admin bearer token.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    /// How long to wait for the outcome.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `force-election` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ForceElectionArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// File holding the sidecars' admin bearer token.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    /// How long to wait for each sidecar's answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `history` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// `pause` / `resume` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct PauseArgs {
    #[command(flatten)]
    group: GroupArgs,
}

/// Kubernetes access for the group `g` names, and its namespace.
pub async fn coord(g: &GroupArgs) -> Result<(Coord, String)> {
    let (client, ns) = kube_coord::client::connect(g.kubeconfig.as_deref(), g.namespace.as_deref())
        .await
        .map_err(CtlError::Client)?;
    Ok((
        Coord::new(client, &ns, &g.lease_name, g.request_timeout),
        ns,
    ))
}

async fn lease(coord: &Coord, g: &GroupArgs, ns: &str) -> Result<election::elector::ObservedLease> {
    coord
        .get_lease()
        .await
        .map_err(api(format!("reading Lease {ns}/{}", g.lease_name)))?
        .ok_or_else(|| {
            CtlError::Refused(format!(
                "no Lease {ns}/{}: is the group running, and are --lease-name and --namespace right?",
                g.lease_name
            ))
        })
}

/// The group's pods with each sidecar's `/status`.
async fn members(coord: &Coord, g: &GroupArgs) -> Result<Vec<Member>> {
    let peers = coord
        .peers()
        .await
        .map_err(api("listing the group's pods"))?;
    let mut out = Vec::new();
    for p in peers {
        let (status, unreachable) = if let Err(why) = p.vouched_http() {
            (None, Some(why))
        } else {
            let (http, url) = g.api(
                coord.namespace(),
                &p.name,
                &p.http,
                "/status",
                g.request_timeout,
            )?;
            match http.get(&url).send().await {
                Ok(r) => match r.json::<crate::wire::StatusReport>().await {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(format!("{url}: {e}"))),
                },
                Err(e) => (None, Some(format!("{url}: {e}"))),
            }
        };
        out.push(Member {
            role_label: p.labels.get(&g.role_label).cloned(),
            pod: p.name,
            address: p.address,
            status,
            unreachable,
        });
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(out)
}

/// What `status` shows: the Lease, each member with its sidecar's report, where the leader
/// Service routes, and every disagreement.
pub struct Snapshot {
    /// The Lease, if it exists.
    pub lease: Option<LeaseView>,
    /// The group's pods.
    pub members: Vec<Member>,
    /// The pod the leader Service routes to.
    pub routed: Option<String>,
    /// Disagreements, in words.
    pub problems: Vec<String>,
}

impl Snapshot {
    /// The table `status` prints.
    pub fn render(&self) -> String {
        view::render(
            self.lease.as_ref(),
            &self.members,
            &self.problems,
            unix_now(),
        )
    }
}

/// Reads the group as `status` shows it.
pub async fn snapshot(coord: &Coord, g: &GroupArgs) -> Result<Snapshot> {
    let lease = coord
        .get_lease()
        .await
        .map_err(api("reading the Lease"))?
        .map(|l| LeaseView {
            name: g.lease_name.clone(),
            holder: l.record.holder,
            holder_address: l.record.holder_address,
            epoch: l.record.transitions,
            paused: l.record.paused,
        });
    let members = members(coord, g).await?;
    let routed = coord
        .service_routes_to(&g.leader_service)
        .await
        .ok()
        .flatten();
    let problems = view::problems(
        lease.as_ref(),
        &members,
        routed.as_deref(),
        &g.leader_service,
    );
    Ok(Snapshot {
        lease,
        members,
        routed,
        problems,
    })
}

/// `redis-k8s-election status`.
pub async fn status(a: StatusArgs) -> Result<()> {
    let (coord, _) = coord(&a.group).await?;
    let snap = snapshot(&coord, &a.group).await?;
    match a.output {
        Output::Json => println!(
            "{:#}",
            view::to_json(
                snap.lease.as_ref(),
                &snap.members,
                snap.routed.as_deref(),
                &snap.problems
            )
        ),
        Output::Table => print!("{}", snap.render()),
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `redis-k8s-election switchover`: asks the leader's sidecar to hand over, then checks the
/// Lease names the new leader.
/// The admin token from `file`, trimmed; an empty file is an error.
fn admin_token(file: &std::path::Path) -> Result<String> {
    let token = std::fs::read_to_string(file).map_err(|source| CtlError::File {
        what: format!("--admin-token-file {}", file.display()),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(CtlError::Refused(format!(
            "--admin-token-file {} is empty",
            file.display()
        )));
    }
    Ok(token.to_string())
}

/// `redis-k8s-election force-election`: every pod of the group in a cold start stops waiting
/// for a majority of the members and runs for the lease with the members present.
pub async fn force_election(a: ForceElectionArgs) -> Result<()> {
    let token = admin_token(&a.admin_token_file)?;
    let (coord, ns) = coord(&a.group).await?;
    let peers = coord
        .peers()
        .await
        .map_err(api("listing the group's pods"))?;
    let mut told = 0;
    for p in &peers {
        let addr = match p.vouched_http() {
            Ok(a) => a,
            Err(why) => {
                println!("{}: not told ({why})", p.name);
                continue;
            }
        };
        let (http, url) = a
            .group
            .api(&ns, &p.name, addr, "/force-election", a.timeout)?;
        let reply = http.post(url).bearer_auth(&token).send().await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                println!("{}: not reached ({e})", p.name);
                continue;
            }
        };
        let code = reply.status();
        let text = reply.text().await.unwrap_or_default();
        match serde_json::from_str::<crate::wire::ForceElectionDone>(&text) {
            Ok(d) if code.is_success() => {
                told += 1;
                if d.cold {
                    println!(
                        "{}: forced; runs for the lease with the members present{}",
                        d.pod,
                        if d.waiting_for.is_empty() {
                            String::new()
                        } else {
                            format!(" (was waiting for {})", d.waiting_for.join(", "))
                        }
                    );
                } else {
                    println!("{}: not in a cold start (nothing to force)", d.pod);
                }
            }
            _ => println!("{}: refused ({code}): {text}", p.name),
        }
    }
    if told == 0 {
        return Err(CtlError::Refused(
            "no sidecar of the group took the request".into(),
        ));
    }
    Ok(())
}

pub async fn switchover(a: SwitchoverArgs) -> Result<()> {
    let token = admin_token(&a.admin_token_file)?;
    let token = token.as_str();
    let (coord, ns) = coord(&a.group).await?;
    let before = lease(&coord, &a.group, &ns).await?;
    let leader = before.record.holder.clone();
    if leader.is_empty() {
        return Err(CtlError::Refused(
            "the group has no leader to switch over from".into(),
        ));
    }
    let peers = coord
        .peers()
        .await
        .map_err(api("listing the group's pods"))?;
    let http = match peers
        .iter()
        .find(|p| p.name == leader)
        .map(|p| p.vouched_http())
    {
        Some(Ok(h)) => h.to_string(),
        Some(Err(why)) => {
            return Err(CtlError::Refused(format!("the leader {leader}: {why}")));
        }
        None => {
            return Err(CtlError::Refused(format!("the leader {leader} has no pod")));
        }
    };
    let mut body = serde_json::Map::new();
    if let Some(to) = &a.to {
        body.insert("to".into(), to.clone().into());
    }
    body.insert("force".into(), a.force.into());
    let (client, url) = a.group.api(&ns, &leader, &http, "/switchover", a.timeout)?;
    let reply = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(http_err(format!("asking the leader {leader} at {http}")))?;
    let code = reply.status();
    let answer: SwitchoverReply = reply.json().await.map_err(http_err(format!(
        "the leader {leader} answered {code} without a switchover reply"
    )))?;
    let done = match answer {
        SwitchoverReply::Done(d) if code.is_success() && d.ok => d,
        SwitchoverReply::Refused(r) => {
            return Err(CtlError::Refused(format!(
                "switchover refused by {leader} ({code}, {}): {}",
                r.code, r.error
            )));
        }
        SwitchoverReply::Done(_) => {
            return Err(CtlError::Refused(format!(
                "switchover refused by {leader} ({code}, ?): no reason given"
            )));
        }
    };
    let after = lease(&coord, &a.group, &ns).await?;
    if after.record.holder != done.to {
        return Err(CtlError::Refused(format!(
            "the leader reported a hand-over to {}, but the Lease now names {:?}",
            done.to, after.record.holder
        )));
    }
    println!(
        "switched over from {leader} to {} at epoch {}: writes held {} ms; leader Service {}",
        done.to,
        done.epoch,
        // Whole milliseconds, as `history` shows the same figure.
        // (a hair above the float, so that a whole number the float holds just under rounds
        // as the Duration it came from does).
        (done.pause_ms.max(0.0) + 1e-9).floor() as u64,
        if done.routed {
            "routed to the new leader"
        } else {
            "NOT yet routed (check `status`)"
        }
    );
    Ok(())
}

/// `redis-k8s-election pause` / `resume`.
pub async fn set_paused(a: PauseArgs, pause: bool) -> Result<()> {
    let (coord, ns) = coord(&a.group).await?;
    let before = lease(&coord, &a.group, &ns).await?;
    if before.record.is_paused() == pause {
        println!(
            "Lease {ns}/{} is {} already{}",
            a.group.lease_name,
            if pause { "paused" } else { "not paused" },
            if pause {
                format!(" ({})", before.record.paused)
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    let marker = pause.then(|| {
        let who = std::env::var("USER").unwrap_or_else(|_| "redis-k8s-election".into());
        format!("since {} by {who}", kube_coord::now_rfc3339())
    });
    let after = coord
        .set_paused(marker.as_deref())
        .await
        .map_err(api("writing the Lease"))?;
    if pause {
        println!(
            "paused: no automatic failover in {ns}/{} until `resume`; leader {} keeps leading",
            a.group.lease_name,
            if after.record.holder.is_empty() {
                "(none)"
            } else {
                &after.record.holder
            }
        );
    } else {
        println!(
            "resumed: automatic failover in {ns}/{} is on again",
            a.group.lease_name
        );
    }
    Ok(())
}

/// `redis-k8s-election history`.
pub async fn history(a: HistoryArgs) -> Result<()> {
    let (coord, ns) = coord(&a.group).await?;
    let l = lease(&coord, &a.group, &ns).await?;
    let entries = history::parse(&l.record.history);
    match a.output {
        Output::Json => println!(
            "{:#}",
            serde_json::to_value(&entries).map_err(CtlError::Encode)?
        ),
        Output::Table => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.epoch.to_string(),
                        e.time.clone(),
                        if e.from.is_empty() {
                            "-".into()
                        } else {
                            e.from.clone()
                        },
                        e.to.clone(),
                        e.reason.clone(),
                        format!("{} ms", e.duration_ms),
                    ]
                })
                .collect();
            print!(
                "{}",
                view::table(
                    &["EPOCH", "TIME", "FROM", "TO", "REASON", "DURATION"],
                    &rows
                )
            );
        }
    }
    Ok(())
}
