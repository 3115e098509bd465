//! Manifests in, objects stored: what `kubectl apply -f` / `kubectl apply -k` does for kubesim's
//! local mode, without kubectl. YAML is read as Kubernetes reads it (YAML 1.1 through
//! `sigs.k8s.io/yaml`: `0440` is octal, `yes`/`no` are booleans), a `kustomization.yaml` is
//! followed for the subset the shipped manifests use, and each object is created or, when it
//! exists, replaced, through the same API code paths (validation, defaults, RBAC-relevant
//! objects) as a request would take.

use crate::api::{self, FieldValidation, Part, WriteOptions};
use crate::resources::{self, meta_str};
use crate::store::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Why manifests could not be read or applied. Each says which file or object.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("{path}: not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A document is not an object with `apiVersion` and `kind`, or of a kind not served.
    #[error("{path}: {message}")]
    Object {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A kustomization uses a field this reader does not implement.
    #[error(
        "{path}: kustomization field {field:?} is not supported by kubesim's reader (it follows resources, namespace and replicas); render it with `kubectl kustomize` and pass the output instead"
    )]
    Kustomize {
        /// The kustomization file.
        path: String,
        /// The field.
        field: String,
    },
    /// The API refused an object.
    #[error("{kind} {name}: {message}")]
    Refused {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The API server's message.
        message: String,
    },
}

/// Parses a multi-document YAML (or JSON) text into objects, expanding `kind: List`, skipping
/// empty documents.
pub fn parse_documents(path: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let docs = parse_yaml(path, text)?;
    let mut out = Vec::new();
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        let bad = |message: String| ManifestError::Object {
            path: path.into(),
            message,
        };
        if !doc.is_object() {
            return Err(bad(format!("a document is not an object: {doc}")));
        }
        if doc["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && let Some(items) = doc.get("items").and_then(Value::as_array)
        {
            out.extend(items.iter().cloned());
            continue;
        }
        for field in ["apiVersion", "kind"] {
            if doc[field].as_str().is_none_or(str::is_empty) {
                return Err(bad(format!("a document has no {field}")));
            }
        }
        out.push(doc);
    }
    Ok(out)
}

/// Reads a manifest directory: its `kustomization.yaml` when there is one, otherwise every
/// `.yaml`, `.yml` and `.json` file in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Value>, ManifestError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ManifestError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        let k = dir.join(name);
        if k.is_file() {
            return load_kustomization(&k.display().to_string(), &read(&k)?, |rel| {
                let p: PathBuf = dir.join(rel);
                if p.is_dir() {
                    load_dir(&p)
                } else {
                    parse_documents(&p.display().to_string(), &read(&p)?)
                }
            });
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(parse_documents(&f.display().to_string(), &read(&f)?)?);
    }
    Ok(out)
}

/// Follows a kustomization: `resources` (each read by `resource`), then the `namespace` and
/// `replicas` transformers, as `kubectl kustomize` applies them. Any other field is refused
/// rather than ignored, so a kustomization never means something else here than in a cluster.
pub fn load_kustomization(
    path: &str,
    text: &str,
    mut resource: impl FnMut(&str) -> Result<Vec<Value>, ManifestError>,
) -> Result<Vec<Value>, ManifestError> {
    let docs = parse_yaml(path, text)?;
    let k = docs.first().cloned().unwrap_or_else(|| json!({}));
    let Some(fields) = k.as_object() else {
        return Err(ManifestError::Object {
            path: path.into(),
            message: "a kustomization is a map".into(),
        });
    };
    for field in fields.keys() {
        if !matches!(
            field.as_str(),
            "apiVersion" | "kind" | "resources" | "namespace" | "replicas"
        ) {
            return Err(ManifestError::Kustomize {
                path: path.into(),
                field: field.clone(),
            });
        }
    }
    let mut out = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let Some(r) = r.as_str() else {
            return Err(ManifestError::Object {
                path: path.into(),
                message: format!("resources entry {r} is not a string"),
            });
        };
        out.extend(resource(r)?);
    }
    if let Some(ns) = k["namespace"].as_str() {
        for o in &mut out {
            if is_namespaced(o) {
                o["metadata"]["namespace"] = json!(ns);
            }
            // kustomize also moves RoleBinding subjects that are ServiceAccounts.
            if o["kind"] == "RoleBinding" {
                for s in o["subjects"].as_array_mut().into_iter().flatten() {
                    if s["kind"] == "ServiceAccount" {
                        s["namespace"] = json!(ns);
                    }
                }
            }
        }
    }
    for r in k["replicas"].as_array().into_iter().flatten() {
        let (Some(name), Some(count)) = (r["name"].as_str(), r["count"].as_u64()) else {
            return Err(ManifestError::Object {
                path: path.into(),
                message: format!("replicas entry {r} needs name and count"),
            });
        };
        set_replicas(&mut out, name, count as usize);
    }
    Ok(out)
}

/// The YAML documents of a text, as Kubernetes reads YAML (1.1: a leading-zero integer such
/// as a volume's `defaultMode: 0440` is octal).
fn parse_yaml(path: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    serde_saphyr::from_multiple_with_options(text, options).map_err(|e| ManifestError::Yaml {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Sets `spec.replicas` of the workload named `name` (what kustomize's `replicas` does).
/// Returns whether one was found.
pub fn set_replicas(objects: &mut [Value], name: &str, count: usize) -> bool {
    let mut found = false;
    for o in objects.iter_mut() {
        if matches!(
            o["kind"].as_str(),
            Some("StatefulSet" | "Deployment" | "ReplicaSet")
        ) && meta_str(o, "name") == Some(name)
        {
            o["spec"]["replicas"] = json!(count);
            found = true;
        }
    }
    found
}

fn is_namespaced(o: &Value) -> bool {
    let (group, _) = split_api_version(o["apiVersion"].as_str().unwrap_or_default());
    resources::by_kind(group, o["kind"].as_str().unwrap_or_default())
        .is_some_and(|rt| rt.namespaced)
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// What applying one object did, as kubectl prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `kind.group/name`, e.g. `statefulset.apps/redis`.
    pub object: String,
    /// `created`, `configured` or `unchanged`.
    pub action: &'static str,
}

/// Creates each object in `namespace` (unless it names its own), or replaces it when it
/// exists, with strict field validation (kubectl's default): an unknown or misspelt field is
/// an error, not silently dropped.
pub fn apply(
    store: &mut Store,
    namespace: &str,
    objects: &[Value],
) -> Result<Vec<Applied>, ManifestError> {
    let opts = WriteOptions {
        field_validation: FieldValidation::Strict,
        field_manager: Some("kubesim-apply".into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let refused = |message: String| ManifestError::Refused {
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        let (group, version) = split_api_version(obj["apiVersion"].as_str().unwrap_or_default());
        let rt = resources::by_kind(group, &kind)
            .filter(|rt| rt.version == version)
            .ok_or_else(|| refused(format!("{} {kind} is not served", obj["apiVersion"])))?;
        let ns = if rt.namespaced {
            meta_str(obj, "namespace").unwrap_or(namespace).to_string()
        } else {
            String::new()
        };
        let label = format!(
            "{}{}/{name}",
            rt.kind.to_lowercase(),
            if rt.group.is_empty() {
                String::new()
            } else {
                format!(".{}", rt.group)
            }
        );
        let action = match api::get(store, rt, &ns, &name) {
            Err(_) => {
                api::create(store, rt, &ns, obj.clone(), &opts)
                    .map_err(|e| refused(e.to_string()))?;
                "created"
            }
            Ok(current) => {
                let mut desired = obj.clone();
                desired["metadata"]["resourceVersion"] =
                    current["metadata"]["resourceVersion"].clone();
                if rt.strategy.apply_keeps_status() {
                    // Fields the server set on create (status, clusterIP) are kept.
                    if let Some(status) = current.get("status") {
                        desired["status"] = status.clone();
                    }
                }
                let out = api::update(store, rt, &ns, &name, desired, Part::Main, &opts)
                    .map_err(|e| refused(e.to_string()))?;
                if out.body["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
                {
                    "unchanged"
                } else {
                    "configured"
                }
            }
        };
        out.push(Applied {
            object: label,
            action,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_read_as_kubernetes_reads_it() {
        let docs = parse_documents(
            "t.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nx: 0440\ny: \"no\"\nz: no\n---\n\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["x"], json!(288));
        assert_eq!(docs[0]["y"], json!("no"));
        assert_eq!(docs[0]["z"], json!(false));
        assert_eq!(docs[1]["kind"], "ConfigMap");
    }

    #[test]
    fn documents_without_kind_or_broken_yaml_are_errors_naming_the_file() {
        let e = parse_documents("a.yaml", "apiVersion: v1\nmetadata: {}\n").unwrap_err();
        assert!(
            e.to_string().contains("a.yaml: a document has no kind"),
            "{e}"
        );
        let e = parse_documents("b.yaml", "a: [1, 2\n").unwrap_err();
        assert!(e.to_string().starts_with("b.yaml: not valid YAML"), "{e}");
        let e = parse_documents("c.yaml", "- 1\n- 2\n").unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
    }

    #[test]
    fn kustomization_follows_resources_namespace_and_replicas_and_refuses_the_rest() {
        let set = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: redis}\nspec: {replicas: 3}\n";
        let rb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: ServiceAccount, name: redis}]\n";
        let objs = load_kustomization(
            "k",
            "resources: [set.yaml, rb.yaml]\nnamespace: prod\nreplicas: [{name: redis, count: 5}]\n",
            |r| match r {
                "set.yaml" => parse_documents(r, set),
                _ => parse_documents(r, rb),
            },
        )
        .unwrap();
        assert_eq!(objs[0]["spec"]["replicas"], json!(5));
        assert_eq!(objs[0]["metadata"]["namespace"], "prod");
        assert_eq!(objs[1]["subjects"][0]["namespace"], "prod");
        let e =
            load_kustomization("k", "resources: []\npatches: []\n", |_| Ok(vec![])).unwrap_err();
        assert!(
            e.to_string().contains("\"patches\" is not supported"),
            "{e}"
        );
    }

    #[test]
    fn apply_creates_then_reports_unchanged_and_configured() {
        let mut store = Store::default();
        let ns = resources::lookup("", "v1", "namespaces").unwrap();
        api::create(
            &mut store,
            ns,
            "",
            json!({"metadata": {"name": "default"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let cm = parse_documents(
            "c",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: pw}\n",
        )
        .unwrap();
        let first = apply(&mut store, "default", &cm).unwrap();
        assert_eq!(
            first[0],
            Applied {
                object: "configmap/c".into(),
                action: "created"
            }
        );
        let secret = store.get("secrets", "default", "s").unwrap();
        assert_eq!(
            secret["data"]["password"], "cHc=",
            "stringData merged into data"
        );
        assert!(secret.get("stringData").is_none());
        let again = apply(&mut store, "default", &cm[..1]).unwrap();
        assert_eq!(again[0].action, "unchanged");
        let mut changed = cm[0].clone();
        changed["data"]["a"] = json!("c");
        assert_eq!(
            apply(&mut store, "default", &[changed]).unwrap()[0].action,
            "configured"
        );
        let typo = parse_documents(
            "t",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: t}\ndatta: {}\n",
        )
        .unwrap();
        let e = apply(&mut store, "default", &typo).unwrap_err();
        assert!(e.to_string().contains("datta"), "{e}");
        let unknown =
            parse_documents("u", "apiVersion: v9\nkind: Gadget\nmetadata: {name: g}\n").unwrap();
        assert!(
            apply(&mut store, "default", &unknown)
                .unwrap_err()
                .to_string()
                .contains("not served")
        );
    }
}
