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
        "{path}: kustomization field {field:?} is not supported by kubesim's reader (it follows resources, components, patches, namespace and replicas); render it with `kubectl kustomize` and pass the output instead"
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
    load_dir_with(dir, &[])
}

/// As [`load_dir`], applying `extra_components` (directories relative to `dir`) after the
/// kustomization's own, as a kustomization that lists them would.
pub fn load_dir_with(dir: &Path, extra_components: &[String]) -> Result<Vec<Value>, ManifestError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ManifestError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        let k = dir.join(name);
        if k.is_file() {
            let text_of = |rel: &str| read(&dir.join(rel));
            return load_kustomization(
                &k.display().to_string(),
                &read(&k)?,
                |rel| {
                    let p: PathBuf = dir.join(rel);
                    if p.is_dir() {
                        load_dir(&p)
                    } else {
                        parse_documents(&p.display().to_string(), &read(&p)?)
                    }
                },
                &text_of,
                extra_components,
            );
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

/// Follows a kustomization: `resources` (each read by `resource`), then `components` and
/// `patches`, then the `namespace` and `replicas` transformers, as `kubectl kustomize`
/// applies them. `text` reads a file relative to the kustomization's directory (patch files,
/// components' `kustomization.yaml` and their files); `extra_components` are applied after
/// the kustomization's own (what `local --persistence` adds). Any other field is refused
/// rather than ignored, so a kustomization never means something else here than in a
/// cluster.
pub fn load_kustomization(
    path: &str,
    text: &str,
    mut resource: impl FnMut(&str) -> Result<Vec<Value>, ManifestError>,
    read: &dyn Fn(&str) -> Result<String, ManifestError>,
    extra_components: &[String],
) -> Result<Vec<Value>, ManifestError> {
    let k = kustomization_map(path, text, "Kustomization")?;
    let mut out = Vec::new();
    for r in string_list(path, &k, "resources")? {
        out.extend(resource(&r)?);
    }
    let mut components = string_list(path, &k, "components")?;
    components.extend(extra_components.iter().cloned());
    for c in components {
        let dir = c.trim_end_matches('/');
        let cpath = format!("{dir}/kustomization.yaml");
        let ck = kustomization_map(&cpath, &read(&cpath)?, "Component")?;
        let rel = |f: &str| format!("{dir}/{f}");
        for r in string_list(&cpath, &ck, "resources")? {
            out.extend(parse_documents(&rel(&r), &read(&rel(&r))?)?);
        }
        apply_patches(&cpath, &ck, &mut out, &|f: &str| read(&rel(f)))?;
    }
    apply_patches(path, &k, &mut out, read)?;
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

/// A kustomization (or component) file as a map, checked for the fields this reader follows
/// and for its kind.
fn kustomization_map(path: &str, text: &str, kind: &str) -> Result<Value, ManifestError> {
    let docs = parse_yaml(path, text)?;
    let k = docs.first().cloned().unwrap_or_else(|| json!({}));
    let Some(fields) = k.as_object() else {
        return Err(ManifestError::Object {
            path: path.into(),
            message: "a kustomization is a map".into(),
        });
    };
    for field in fields.keys() {
        let known = match kind {
            "Component" => matches!(
                field.as_str(),
                "apiVersion" | "kind" | "resources" | "patches"
            ),
            _ => matches!(
                field.as_str(),
                "apiVersion"
                    | "kind"
                    | "resources"
                    | "namespace"
                    | "replicas"
                    | "components"
                    | "patches"
            ),
        };
        if !known {
            return Err(ManifestError::Kustomize {
                path: path.into(),
                field: field.clone(),
            });
        }
    }
    let found = k["kind"].as_str().unwrap_or("Kustomization");
    if found != kind {
        return Err(ManifestError::Object {
            path: path.into(),
            message: format!("expected kind {kind}, found {found}"),
        });
    }
    Ok(k)
}

fn string_list(path: &str, k: &Value, field: &str) -> Result<Vec<String>, ManifestError> {
    k[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_str()
                .map(str::to_string)
                .ok_or_else(|| ManifestError::Object {
                    path: path.into(),
                    message: format!("{field} entry {r} is not a string"),
                })
        })
        .collect()
}

/// `patches`: each entry a file (`path`) or inline (`patch`), either a JSON 6902 list of
/// operations (which needs a `target`) or a strategic-merge patch (which names its object
/// by `kind` and `metadata.name` unless a `target` does).
fn apply_patches(
    path: &str,
    k: &Value,
    objects: &mut [Value],
    read: &dyn Fn(&str) -> Result<String, ManifestError>,
) -> Result<(), ManifestError> {
    let bad = |message: String| ManifestError::Object {
        path: path.into(),
        message,
    };
    for entry in k["patches"].as_array().into_iter().flatten() {
        let (source, text) = match (entry["path"].as_str(), entry["patch"].as_str()) {
            (Some(p), None) => (p.to_string(), read(p)?),
            (None, Some(t)) => ("inline patch".to_string(), t.to_string()),
            _ => {
                return Err(bad(format!(
                    "patches entry {entry} needs exactly one of path and patch"
                )));
            }
        };
        let docs = parse_yaml(&format!("{path}: {source}"), &text)?;
        let patch = docs.into_iter().next().unwrap_or(Value::Null);
        let target = &entry["target"];
        let (kind, name) = match (target["kind"].as_str(), target["name"].as_str()) {
            (Some(kd), Some(n)) => (kd.to_string(), n.to_string()),
            _ if patch.is_object() => (
                patch["kind"].as_str().unwrap_or_default().to_string(),
                patch
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => {
                return Err(bad(format!(
                    "{source}: a JSON 6902 patch needs a target with kind and name"
                )));
            }
        };
        let Some(obj) = objects
            .iter_mut()
            .find(|o| o["kind"] == kind.as_str() && meta_str(o, "name") == Some(name.as_str()))
        else {
            return Err(bad(format!("{source}: no {kind} {name} to patch")));
        };
        let result = if patch.is_array() {
            crate::patch::json_patch(obj, &patch)
        } else {
            crate::patch::strategic(obj, &patch)
        };
        result.map_err(|e| bad(format!("{source} on {kind} {name}: {e}")))?;
    }
    Ok(())
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

    fn no_files(r: &str) -> Result<String, ManifestError> {
        Err(ManifestError::Object {
            path: r.into(),
            message: "no such file".into(),
        })
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
            &no_files,
            &[],
        )
        .unwrap();
        assert_eq!(objs[0]["spec"]["replicas"], json!(5));
        assert_eq!(objs[0]["metadata"]["namespace"], "prod");
        assert_eq!(objs[1]["subjects"][0]["namespace"], "prod");
        let e = load_kustomization(
            "k",
            "resources: []\nimages: []\n",
            |_| Ok(vec![]),
            &no_files,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"images\" is not supported"), "{e}");
    }

    #[test]
    fn components_and_patches_strategic_and_json6902() {
        let base = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1', b: '2'}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec: {replicas: 3, volumeClaimTemplates: [{metadata: {name: d}}], template: {spec: {volumes: []}}}\n";
        let component = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n  - path: cm.yaml\n  - target: {kind: StatefulSet, name: s}\n    patch: |-\n      - op: remove\n        path: /spec/volumeClaimTemplates\n      - op: add\n        path: /spec/template/spec/volumes/-\n        value: {name: d, emptyDir: {}}\n";
        let files = |r: &str| match r {
            "comp/kustomization.yaml" => Ok(component.to_string()),
            "comp/cm.yaml" => Ok(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: changed}\n"
                    .to_string(),
            ),
            other => no_files(other),
        };
        let load = |k: &str, extra: &[String]| {
            load_kustomization("k", k, |r| parse_documents(r, base), &files, extra)
        };
        let objs = load("resources: [base.yaml]\ncomponents: [comp]\n", &[]).unwrap();
        assert_eq!(
            objs[0]["data"],
            json!({"a": "changed", "b": "2"}),
            "strategic merge"
        );
        assert!(objs[1]["spec"].get("volumeClaimTemplates").is_none());
        assert_eq!(
            objs[1]["spec"]["template"]["spec"]["volumes"][0]["name"],
            "d"
        );
        // The same component added from outside (local --persistence).
        let objs = load("resources: [base.yaml]\n", &["comp".to_string()]).unwrap();
        assert_eq!(objs[0]["data"]["a"], "changed");
        // A patch of an object that is not there, a 6902 patch without a target, and a
        // missing component are errors that name the file.
        let e = load(
            "resources: [base.yaml]\npatches: [{patch: 'apiVersion: v1\n\nkind: ConfigMap\n\nmetadata: {name: nope}'}]\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no ConfigMap nope"), "{e}");
        let e = load(
            "resources: [base.yaml]\npatches: [{patch: '[{op: remove, path: /data}]'}]\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a target"), "{e}");
        let e = load("resources: [base.yaml]\ncomponents: [missing]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("missing/kustomization.yaml"), "{e}");
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
