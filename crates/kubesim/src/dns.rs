//! Cluster DNS: the names CoreDNS' `kubernetes` plugin serves (Kubernetes' "DNS for Services
//! and Pods"), answered from the store, on the UDP port the kubelet points its pods'
//! `resolv.conf` at.
//!
//! * `<service>.<namespace>.svc.<domain>`: a Service's cluster IP; for a headless Service
//!   (`clusterIP: None`) the addresses of its ready endpoints.
//! * `<hostname>.<service>.<namespace>.svc.<domain>`: the endpoint of headless Service
//!   `<service>` whose `hostname` is `<hostname>` (a pod with `spec.hostname` and
//!   `spec.subdomain: <service>`, as a StatefulSet's pods are), while it is ready.
//!
//! As in CoreDNS, the records come from the EndpointSlices: a name appears when the endpoints
//! controller lists the pod and goes with the pod. "Ready" is the slice's `conditions.ready`,
//! which the controller sets for every pod of a Service with `publishNotReadyAddresses` (so a
//! starting or terminating pod is resolvable there). Records carry a 5 s TTL (the plugin's
//! default); resolvers inside pods (glibc, musl) do not cache, so a pod re-created on a new IP
//! resolves to it at the next lookup.
//!
//! Names outside the cluster domain are refused: pods under kubesim have no upstream to
//! forward to (the machine's own resolver is not theirs to use).
//!
//! The wire format is `hickory-proto`'s: parsing what any local process may send is what a
//! maintained DNS library is for.

use crate::store::Store;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType, rdata::A};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// CoreDNS' `kubernetes` plugin default TTL.
const TTL: u32 = 5;

/// The largest answer sent (to EDNS clients; others get 512 bytes at most).
const UDP_PAYLOAD: u16 = 1232;

/// Kubernetes' default cluster domain.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// What the cluster's DNS knows about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the cluster domain: not ours to answer.
    NotOurs,
    /// In the cluster domain, but no such name.
    NoSuchName,
    /// The name exists; its A records (possibly none: a Service without ready endpoints).
    Addresses(Vec<Ipv4Addr>),
}

/// Resolves `name` (any case, with or without the final dot) in cluster domain `domain`.
pub fn lookup(store: &Store, name: &str, domain: &str) -> Lookup {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(rest) = name
        .strip_suffix(domain.as_str())
        .and_then(|r| r.strip_suffix('.').or(r.is_empty().then_some("")))
    else {
        return Lookup::NotOurs;
    };
    // The zone and its `svc` subzone exist, with no address of their own.
    if rest.is_empty() || rest == "svc" {
        return Lookup::Addresses(Vec::new());
    }
    let Some(rest) = rest.strip_suffix(".svc") else {
        return Lookup::NoSuchName;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    match labels.as_slice() {
        [ns] => {
            if store.get("namespaces", "", ns).is_some() {
                Lookup::Addresses(Vec::new())
            } else {
                Lookup::NoSuchName
            }
        }
        [svc, ns] => service(store, ns, svc),
        [host, svc, ns] => endpoint_host(store, ns, svc, host),
        _ => Lookup::NoSuchName,
    }
}

fn service(store: &Store, ns: &str, name: &str) -> Lookup {
    let Some(svc) = store.get("services", ns, name) else {
        return Lookup::NoSuchName;
    };
    match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        Some("None") => Lookup::Addresses(ready_endpoints(store, ns, name, None)),
        Some(ip) => Lookup::Addresses(ip.parse().into_iter().collect()),
        None => Lookup::Addresses(Vec::new()),
    }
}

fn endpoint_host(store: &Store, ns: &str, svc: &str, host: &str) -> Lookup {
    let headless = store
        .get("services", ns, svc)
        .is_some_and(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None"));
    if !headless {
        return Lookup::NoSuchName;
    }
    let ips = ready_endpoints(store, ns, svc, Some(host));
    if ips.is_empty() {
        Lookup::NoSuchName
    } else {
        Lookup::Addresses(ips)
    }
}

/// The ready endpoints' IPv4 addresses of Service `svc`'s EndpointSlices (only those whose
/// `hostname` is `host`, when given), sorted, without duplicates.
fn ready_endpoints(store: &Store, ns: &str, svc: &str, host: Option<&str>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for slice in store.list("endpointslices", Some(ns)) {
        if slice
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            != Some(svc)
        {
            continue;
        }
        let endpoints = slice.get("endpoints").and_then(Value::as_array);
        for ep in endpoints.into_iter().flatten() {
            // An absent `ready` means ready (the EndpointSlice API's rule).
            if ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if let Some(host) = host
                && !ep
                    .get("hostname")
                    .and_then(Value::as_str)
                    .is_some_and(|h| h.eq_ignore_ascii_case(host))
            {
                continue;
            }
            let addresses = ep.get("addresses").and_then(Value::as_array);
            out.extend(
                addresses
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str()?.parse::<Ipv4Addr>().ok()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The answer to one query datagram; `None` for what is not a query worth answering (a
/// response, or bytes that are not a DNS header).
pub fn answer(store: &Store, domain: &str, request: &[u8]) -> Option<Vec<u8>> {
    let query = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => {
            // A malformed message that still has an ID gets FORMERR, as servers answer.
            if request.len() < 12 || request[2] & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([request[0], request[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = false;
    // A query with EDNS gets EDNS back (RFC 6891); its payload size bounds the answer.
    let limit = usize::from(query.max_payload().min(UDP_PAYLOAD));
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        reply.set_edns(edns);
    }
    let [q] = query.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    reply.add_query(q.clone());
    if query.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply.to_vec().ok();
    }
    match lookup(store, &q.name().to_ascii(), domain) {
        Lookup::NotOurs => reply.metadata.response_code = ResponseCode::Refused,
        Lookup::NoSuchName => {
            reply.metadata.authoritative = true;
            reply.metadata.response_code = ResponseCode::NXDomain;
        }
        Lookup::Addresses(ips) => {
            reply.metadata.authoritative = true;
            if q.query_class() == DNSClass::IN && q.query_type() == RecordType::A {
                for ip in ips {
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
                }
            }
        }
    }
    // There is no TCP to retry a truncated answer over: as many addresses as fit instead
    // (any of a headless Service's endpoints is as good as another).
    loop {
        let bytes = reply.to_vec().ok()?;
        if bytes.len() <= limit || reply.answers.is_empty() {
            return Some(bytes);
        }
        reply.answers.pop();
    }
}

/// The cluster's DNS server: one UDP socket, answered from the store.
pub struct DnsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Serves cluster domain `domain` on UDP `listen` (port 53 needs root).
    pub async fn start(
        store: Arc<RwLock<Store>>,
        listen: SocketAddr,
        domain: &str,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        let addr = socket.local_addr()?;
        let domain = domain.to_string();
        let task = tokio::spawn(async move {
            // 512 bytes is the classic UDP limit; EDNS clients may send up to 4096.
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let reply = {
                    let s = store.read().expect("store lock");
                    answer(&s, &domain, &buf[..n])
                };
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod's `/etc/resolv.conf`: nameservers, search domains, options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` line's domains.
    pub searches: Vec<String>,
    /// The `options` line's entries (`ndots:5`).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// What the kubelet writes for `dnsPolicy: ClusterFirst`: the cluster's nameserver, the
    /// pod's namespace's search domains, `ndots:5` (so `redis-0.redis-headless` resolves).
    pub fn cluster_first(nameserver: Ipv4Addr, namespace: &str, domain: &str) -> Self {
        Self {
            nameservers: vec![nameserver.to_string()],
            searches: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            options: vec!["ndots:5".into()],
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A pod's `/etc/hosts`, as the kubelet writes it: loopback names and the pod's own name
/// (its FQDN first when it has a subdomain).
pub fn hosts_file(
    ip: Ipv4Addr,
    hostname: &str,
    subdomain: Option<&str>,
    namespace: &str,
    domain: &str,
) -> String {
    let own = match subdomain {
        Some(sub) if !sub.is_empty() => {
            format!("{ip}\t{hostname}.{sub}.{namespace}.svc.{domain}\t{hostname}\n")
        }
        _ => format!("{ip}\t{hostname}\n"),
    };
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{own}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use serde_json::json;

    fn store() -> Store {
        let mut s = Store::default();
        let put = |s: &mut Store, kind: &'static str, ns: &str, obj: Value| {
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            s.put(kind, (ns.to_string(), name), obj);
        };
        put(
            &mut s,
            "namespaces",
            "",
            json!({"metadata": {"name": "default"}}),
        );
        put(
            &mut s,
            "services",
            "default",
            json!({"metadata": {"name": "redis-headless"}, "spec": {"clusterIP": "None"}}),
        );
        put(
            &mut s,
            "services",
            "default",
            json!({"metadata": {"name": "redis"}, "spec": {"clusterIP": "10.96.0.3"}}),
        );
        put(
            &mut s,
            "endpointslices",
            "default",
            json!({"metadata": {"name": "redis-headless-abc",
                "labels": {"kubernetes.io/service-name": "redis-headless"}},
            "endpoints": [
                {"addresses": ["127.0.60.2"], "hostname": "redis-0", "conditions": {"ready": true}},
                {"addresses": ["127.0.60.3"], "hostname": "redis-1", "conditions": {"ready": false}},
                {"addresses": ["127.0.60.4"], "hostname": "redis-2"}
            ]}),
        );
        s
    }

    #[test]
    fn names_resolve_as_cluster_dns_serves_them() {
        let s = store();
        let d = DEFAULT_DOMAIN;
        let ip = |x: &str| -> Ipv4Addr { x.parse().unwrap() };
        assert_eq!(
            lookup(&s, "redis-0.redis-headless.default.svc.cluster.local.", d),
            Lookup::Addresses(vec![ip("127.0.60.2")])
        );
        assert_eq!(
            lookup(&s, "REDIS-2.Redis-Headless.default.svc.cluster.local", d),
            Lookup::Addresses(vec![ip("127.0.60.4")]),
            "case-insensitive; an absent ready condition means ready"
        );
        assert_eq!(
            lookup(&s, "redis-1.redis-headless.default.svc.cluster.local", d),
            Lookup::NoSuchName,
            "not ready and not published"
        );
        assert_eq!(
            lookup(&s, "redis-headless.default.svc.cluster.local", d),
            Lookup::Addresses(vec![ip("127.0.60.2"), ip("127.0.60.4")])
        );
        assert_eq!(
            lookup(&s, "redis.default.svc.cluster.local", d),
            Lookup::Addresses(vec![ip("10.96.0.3")])
        );
        assert_eq!(
            lookup(&s, "redis-0.redis.default.svc.cluster.local", d),
            Lookup::NoSuchName,
            "host names exist only under headless Services"
        );
        for none in [
            "nope.default.svc.cluster.local",
            "redis.other.svc.cluster.local",
            "other.svc.cluster.local",
            "a.b.c.d.svc.cluster.local",
            "redis.default.cluster.local",
        ] {
            assert_eq!(lookup(&s, none, d), Lookup::NoSuchName, "{none}");
        }
        for empty in [
            "cluster.local",
            "svc.cluster.local",
            "default.svc.cluster.local",
        ] {
            assert_eq!(lookup(&s, empty, d), Lookup::Addresses(vec![]), "{empty}");
        }
        for other in ["example.com", "localhost", "notcluster.local", ""] {
            assert_eq!(lookup(&s, other, d), Lookup::NotOurs, "{other:?}");
        }
    }

    fn ask(s: &Store, name: &str, ty: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        Message::from_vec(&answer(s, DEFAULT_DOMAIN, &q.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn answers_on_the_wire() {
        let s = store();
        let r = ask(
            &s,
            "redis-0.redis-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        let ips: Vec<_> = r
            .answers
            .iter()
            .map(|a| match a.data {
                RData::A(A(ip)) => ip,
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ips, vec![Ipv4Addr::new(127, 0, 60, 2)]);
        assert_eq!(r.answers[0].ttl, TTL);
        // AAAA for a name that exists: no data, no error (so resolvers go on to the A answer).
        let r = ask(
            &s,
            "redis-0.redis-headless.default.svc.cluster.local.",
            RecordType::AAAA,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask(
            &s,
            "gone.redis-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(&s, "example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn a_large_service_answers_what_fits_in_one_datagram() {
        let mut s = store();
        let endpoints: Vec<Value> = (0..200u8)
            .map(|i| json!({"addresses": [format!("127.0.61.{i}")], "conditions": {"ready": true}}))
            .collect();
        s.put(
            "endpointslices",
            ("default".into(), "redis-headless-big".into()),
            json!({"metadata": {"name": "redis-headless-big",
                    "labels": {"kubernetes.io/service-name": "redis-headless"}},
                "endpoints": endpoints}),
        );
        let name = "redis-headless.default.svc.cluster.local.";
        let plain = {
            let mut q = Message::query();
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            answer(&s, DEFAULT_DOMAIN, &q.to_vec().unwrap()).unwrap()
        };
        assert!(plain.len() <= 512, "{}", plain.len());
        let r = Message::from_vec(&plain).unwrap();
        assert!(
            r.answers.len() > 10 && r.answers.len() < 202,
            "{}",
            r.answers.len()
        );
        assert!(!r.metadata.truncation);
        // With EDNS: more fit, and the answer carries EDNS too.
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        q.set_edns(edns);
        let big = answer(&s, DEFAULT_DOMAIN, &q.to_vec().unwrap()).unwrap();
        assert!(big.len() <= usize::from(UDP_PAYLOAD) && big.len() > 512);
        let r = Message::from_vec(&big).unwrap();
        assert!(r.edns.is_some());
    }

    #[test]
    fn bad_datagrams_get_formerr_or_nothing() {
        let s = store();
        assert_eq!(answer(&s, DEFAULT_DOMAIN, b""), None);
        assert_eq!(answer(&s, DEFAULT_DOMAIN, b"short"), None);
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xff; 20]);
        let r = Message::from_vec(&answer(&s, DEFAULT_DOMAIN, &junk).unwrap()).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered (no reflection loops between two servers).
        let mut q = Message::query();
        q.metadata.message_type = MessageType::Response;
        assert_eq!(answer(&s, DEFAULT_DOMAIN, &q.to_vec().unwrap()), None);
        // No question, or two: FORMERR.
        let q = Message::query();
        let r = Message::from_vec(&answer(&s, DEFAULT_DOMAIN, &q.to_vec().unwrap()).unwrap());
        assert_eq!(r.unwrap().metadata.response_code, ResponseCode::FormErr);
    }

    proptest::proptest! {
        #[test]
        fn no_datagram_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let s = store();
            let _ = answer(&s, DEFAULT_DOMAIN, &bytes);
        }
    }

    #[test]
    fn pod_files_read_as_the_kubelets() {
        assert_eq!(
            ResolvConf::cluster_first(Ipv4Addr::new(127, 0, 60, 1), "ns1", "cluster.local")
                .render(),
            "search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.60.1\noptions ndots:5\n"
        );
        let h = hosts_file(
            Ipv4Addr::new(127, 0, 60, 2),
            "redis-0",
            Some("redis-headless"),
            "default",
            "cluster.local",
        );
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.ends_with("127.0.60.2\tredis-0.redis-headless.default.svc.cluster.local\tredis-0\n")
        );
        let h = hosts_file(Ipv4Addr::new(127, 0, 60, 2), "web", None, "default", "x");
        assert!(h.ends_with("127.0.60.2\tweb\n"));
    }
}
