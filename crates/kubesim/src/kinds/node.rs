//! `nodes`: cluster-scoped; the kubelet registers the one node it is (`kubectl get nodes`,
//! `describe node`), with its addresses, conditions and capacity.

use super::{NAMESPACED, Strategy, roundtrip};
use crate::resources::{FieldErrorStyle, ResourceType};
use serde_json::{Value, json};

/// `v1 nodes`.
pub static NODES: ResourceType = ResourceType {
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    status_subresource: true,
    field_error_style: FieldErrorStyle::Custom,
    storage: "nodes",
    strategy: &Node,
    ..NAMESPACED
};

/// The node strategy.
#[derive(Debug)]
pub struct Node;

impl Strategy for Node {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Node>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Node>()
    }

    fn columns(&self) -> Vec<super::Column> {
        vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| {
                if c["status"] == "True" {
                    "Ready"
                } else {
                    "NotReady"
                }
            })
            .unwrap_or("Unknown");
        let address = |kind: &str| {
            obj.pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == kind))
                .and_then(|x| x["address"].as_str())
                .unwrap_or("<none>")
                .to_string()
        };
        vec![
            json!(s(obj, "/metadata/name")),
            json!(ready),
            json!("<none>"),
            json!(age(obj)),
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(s(obj, "/status/nodeInfo/osImage")),
            json!(s(obj, "/status/nodeInfo/kernelVersion")),
            json!(s(obj, "/status/nodeInfo/containerRuntimeVersion")),
        ]
    }
}

/// The Node object a kubelet named `name` at `address` registers: Ready, with this machine's
/// kernel, CPUs and memory.
pub fn registration(name: &str, address: &str) -> Value {
    let now = crate::util::now_time();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let capacity =
        json!({"cpu": cpus.to_string(), "memory": format!("{mem_kib}Ki"), "pods": "110"});
    let condition = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH,
        }},
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0",
                "osImage": "kubesim",
                "kernelVersion": kernel,
                "containerRuntimeVersion": "kubesim://0.1.0",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}
