//! The OpenAPI documents kubectl reads: `/openapi/v3` (an index and one document per
//! group-version, JSON) and `/openapi/v2` (one document, as JSON or as the gnostic protobuf
//! kubectl asks for).
//!
//! Why kubectl needs them: `apply`/`create` validate by default, and kubectl decides how by
//! reading the documents. With v3, it looks for the `fieldValidation` query parameter on the
//! kind's PATCH operation and, finding it, lets the server refuse unknown fields
//! (`fieldValidation=Strict`, which kubesim implements in [`crate::api`]); kubectl 1.27 also
//! downloads and parses v2 before it decides, and fails when it cannot. `kubectl explain`
//! renders the v3 schemas. `apply` computes strategic merge patches from the documents'
//! `x-kubernetes-patch-*` extensions.
//!
//! The schemas come from the same k8s-openapi types the kinds decode with
//! ([`crate::kinds::Strategy::schema`], k8s-openapi's `schemars` support), so what kubectl
//! validates and explains is exactly what the server accepts. k8s-openapi's schemas do not
//! carry the patch extensions (the upstream OpenAPI has them only as Go struct tags), so they
//! are added here from the merge keys [`crate::patch`] merges by: one table for both.

use crate::resources::{RESOURCES, ResourceType};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

/// The documents, built once on first use (they depend only on the served kinds). Held as
/// `Bytes`, so that answering a request shares them instead of copying them.
pub struct Documents {
    /// `GET /openapi/v3`: every group-version's path and the URL of its document.
    pub v3_index: Bytes,
    /// `GET /openapi/v3/<path>`, keyed by `api/v1`, `apis/apps/v1`, ...: (hash, JSON).
    pub v3: BTreeMap<String, (String, Bytes)>,
    /// `GET /openapi/v2` as JSON.
    pub v2_json: Bytes,
    /// `GET /openapi/v2` as the gnostic `openapi.v2.Document` protobuf.
    pub v2_protobuf: Bytes,
}

/// The media type kubectl asks `/openapi/v2` for.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The Content-Type the real server answers it with: `@` is not allowed in a media type, and
/// Go's `mime.ParseMediaType` (client-go) refuses one that has it.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The documents (built on first call).
pub fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

/// A served kind with the name of its schema definition.
struct Kind {
    rt: &'static ResourceType,
    /// e.g. `io.k8s.api.core.v1.Pod`.
    definition: String,
}

fn build() -> Documents {
    let (kinds, definitions) = schemas();
    let v2 = v2_document(&kinds, &definitions);
    let mut v3 = BTreeMap::new();
    let mut index = Map::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    for k in &kinds {
        paths.insert(gv_path(k.rt));
    }
    for path in paths {
        let members: Vec<&Kind> = kinds.iter().filter(|k| gv_path(k.rt) == path).collect();
        let doc = v3_document(&members, &definitions);
        let body = serde_json::to_vec(&doc).expect("a JSON value serializes");
        let hash = content_hash(&body);
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
        v3.insert(path, (hash, Bytes::from(body)));
    }
    Documents {
        v3_index: serde_json::to_vec(&json!({"paths": index}))
            .expect("serializes")
            .into(),
        v3,
        v2_json: serde_json::to_vec(&v2).expect("serializes").into(),
        v2_protobuf: gnostic::document(&v2).into(),
    }
}

/// A stable content hash for the `?hash=` of the v3 URLs (clients cache by it). Not a
/// security boundary, so std's SipHash with its fixed keys does.
fn content_hash(body: &[u8]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        format!("api/{}", rt.version)
    } else {
        format!("apis/{}/{}", rt.group, rt.version)
    }
}

/// Every served kind's definition name and all definitions (draft-07 style `#/definitions/`
/// references), with the group-version-kind and patch extensions added.
fn schemas() -> (Vec<Kind>, Map<String, Value>) {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/definitions".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let mut kinds = Vec::new();
    for rt in RESOURCES {
        let reference = rt.strategy.schema(&mut generator);
        let definition = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/definitions/"))
            .expect("a kind's schema is a reference to its definition")
            .to_string();
        kinds.push(Kind { rt, definition });
    }
    // What the lists and the operations' answers refer to.
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    let mut definitions = generator.take_definitions(false);
    definitions.extend(operation_definitions());
    for k in &kinds {
        if let Some(Value::Object(d)) = definitions.get_mut(&k.definition) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk_extension(k.rt)]),
            );
        }
        let list = list_schema(k);
        definitions.insert(format!("{}List", k.definition), list);
    }
    for schema in definitions.values_mut() {
        add_patch_extensions(schema);
    }
    (kinds, definitions)
}

/// `<Kind>List`, as the real documents define it.
fn list_schema(k: &Kind) -> Value {
    let list_kind = format!("{}List", k.rt.kind);
    json!({
        "description": format!("{list_kind} is a list of {}.", k.rt.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "items": {"type": "array", "description": format!("Items is a list of {}.", k.rt.kind), "items": {"$ref": format!("#/definitions/{}", k.definition)}},
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta", "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [{"group": k.rt.group, "version": k.rt.version, "kind": list_kind}],
    })
}

/// Adds `x-kubernetes-patch-strategy` (and `-merge-key`) to the list properties that
/// [`crate::patch`] merges rather than replaces.
fn add_patch_extensions(schema: &mut Value) {
    let Some(Value::Object(props)) = schema.get_mut("properties") else {
        return;
    };
    for (field, prop) in props.iter_mut() {
        let Value::Object(p) = prop else { continue };
        if p.get("type").and_then(Value::as_str) != Some("array") {
            continue;
        }
        let item_ref = p
            .get("items")
            .and_then(|i| i.get("$ref"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The patch code tells container ports from Service ports by their fields; give it
        // an item of the kind this list holds.
        let sample = if item_ref.ends_with(".ContainerPort") {
            json!({"containerPort": 1})
        } else {
            json!({})
        };
        if let Some(key) = crate::patch::merge_key(field, &[sample]) {
            if field == "ports"
                && !(item_ref.ends_with(".ContainerPort") || item_ref.ends_with(".ServicePort"))
            {
                continue;
            }
            p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        } else if crate::patch::is_set_list(field) {
            p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        }
    }
}

/// The definitions reachable from `roots`, by following `$ref`s.
fn reachable(roots: &[String], definitions: &Map<String, Value>) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str)
                    && let Some(name) = r.strip_prefix("#/definitions/")
                {
                    out.push(name.to_string());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone())
            && let Some(d) = definitions.get(&name)
        {
            refs(d, &mut todo);
        }
    }
    seen
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the operation-id infix the real server uses.
fn op_infix(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "core".to_string()
    } else {
        rt.group.trim_end_matches(".k8s.io").to_string()
    };
    let mut out = String::new();
    for part in group.split('.') {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    let mut v = rt.version.chars();
    if let Some(f) = v.next() {
        out.extend(f.to_uppercase());
        out.push_str(v.as_str());
    }
    out
}

/// One REST operation, in a neutral form both document versions are written from.
struct Operation {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    /// Query parameter names.
    query: &'static [&'static str],
    /// The definition the body holds (writes).
    body: Option<String>,
    /// The definition a 200 holds.
    response: String,
}

/// The collection and item paths of a kind, with their operations.
fn operations(k: &Kind) -> Vec<(String, Vec<&'static str>, Vec<Operation>)> {
    let rt = k.rt;
    let prefix = format!("/{}", gv_path(rt));
    let (collection, scope, ns_params) = if rt.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural),
            "Namespaced",
            vec!["namespace"],
        )
    } else {
        (format!("{prefix}/{}", rt.plural), "", vec![])
    };
    let infix = op_infix(rt);
    let kind = rt.kind;
    let def = k.definition.clone();
    let list = format!("{def}List");
    let status = "io.k8s.apimachinery.pkg.apis.meta.v1.Status".to_string();
    const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut item_params = vec!["name"];
    item_params.extend(ns_params.iter().copied());
    let mut out = vec![(
        collection.clone(),
        ns_params.clone(),
        vec![
            Operation {
                method: "get",
                action: "list",
                id: format!("list{infix}{scope}{kind}"),
                description: format!("list or watch objects of kind {kind}"),
                query: &[
                    "allowWatchBookmarks",
                    "continue",
                    "fieldSelector",
                    "labelSelector",
                    "limit",
                    "pretty",
                    "resourceVersion",
                    "resourceVersionMatch",
                    "sendInitialEvents",
                    "timeoutSeconds",
                    "watch",
                ],
                body: None,
                response: list,
            },
            Operation {
                method: "post",
                action: "post",
                id: format!("create{infix}{scope}{kind}"),
                description: format!("create a {kind}"),
                query: WRITE,
                body: Some(def.clone()),
                response: def.clone(),
            },
        ],
    )];
    out.push((
        format!("{collection}/{{name}}"),
        item_params,
        vec![
            Operation {
                method: "get",
                action: "get",
                id: format!("read{infix}{scope}{kind}"),
                description: format!("read the specified {kind}"),
                query: &["pretty"],
                body: None,
                response: def.clone(),
            },
            Operation {
                method: "put",
                action: "put",
                id: format!("replace{infix}{scope}{kind}"),
                description: format!("replace the specified {kind}"),
                query: WRITE,
                body: Some(def.clone()),
                response: def.clone(),
            },
            Operation {
                method: "patch",
                action: "patch",
                id: format!("patch{infix}{scope}{kind}"),
                description: format!("partially update the specified {kind}"),
                query: &[
                    "dryRun",
                    "fieldManager",
                    "fieldValidation",
                    "force",
                    "pretty",
                ],
                body: Some("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into()),
                response: def.clone(),
            },
            Operation {
                method: "delete",
                action: "delete",
                id: format!("delete{infix}{scope}{kind}"),
                description: format!("delete a {kind}"),
                query: &[
                    "dryRun",
                    "gracePeriodSeconds",
                    "pretty",
                    "propagationPolicy",
                ],
                body: None,
                response: status,
            },
        ],
    ));
    out
}

/// Definitions the operations refer to beyond the kinds' own.
fn operation_definitions() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    m
}

fn query_type(name: &str) -> &'static str {
    match name {
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        "allowWatchBookmarks" | "watch" | "force" | "sendInitialEvents" => "boolean",
        _ => "string",
    }
}

fn query_description(name: &str) -> &'static str {
    match name {
        "fieldValidation" => {
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default) and Strict."
        }
        "dryRun" => "When present, indicates that modifications should not be persisted.",
        "fieldManager" => {
            "fieldManager is a name associated with the actor or entity that is making these changes."
        }
        _ => "",
    }
}

fn gvk_extension(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

/// The OpenAPI 3.0 document of one group-version.
fn v3_document(kinds: &[&Kind], definitions: &Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for k in kinds {
        for (path, path_params, ops) in operations(k) {
            let mut item = Map::new();
            for op in ops {
                let params: Vec<Value> = op
                    .query
                    .iter()
                    .map(|q| {
                        json!({"name": q, "in": "query", "description": query_description(q),
                               "schema": {"type": query_type(q), "uniqueItems": true}})
                    })
                    .collect();
                let mut o = json!({
                    "tags": [k.rt.api_version()],
                    "description": op.description,
                    "operationId": op.id,
                    "parameters": params,
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", op.response)}}}},
                        "401": {"description": "Unauthorized"},
                    },
                    "x-kubernetes-action": op.action,
                    "x-kubernetes-group-version-kind": gvk_extension(k.rt),
                });
                if let Some(body) = op.body {
                    let types: &[&str] = if op.method == "patch" {
                        &[
                            "application/apply-patch+yaml",
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/strategic-merge-patch+json",
                        ]
                    } else {
                        &["*/*"]
                    };
                    let content: Map<String, Value> = types
                        .iter()
                        .map(|t| {
                            (
                                t.to_string(),
                                json!({"schema": {"$ref": format!("#/components/schemas/{body}")}}),
                            )
                        })
                        .collect();
                    o["requestBody"] = json!({"content": content, "required": true});
                }
                item.insert(op.method.into(), o);
            }
            let params: Vec<Value> = path_params
                .iter()
                .map(|p| json!({"name": p, "in": "path", "required": true, "description": format!("{p} of the object"), "schema": {"type": "string", "uniqueItems": true}}))
                .collect();
            item.insert("parameters".into(), json!(params));
            paths.insert(path, Value::Object(item));
        }
    }
    let mut roots: Vec<String> = Vec::new();
    for k in kinds {
        roots.push(k.definition.clone());
        roots.push(format!("{}List", k.definition));
    }
    roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.Status".into());
    roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into());
    let mut schemas = Map::new();
    for name in reachable(&roots, definitions) {
        if let Some(s) = definitions.get(&name) {
            schemas.insert(name, to_v3_schema(s));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::MAJOR, crate::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Rewrites a draft-style schema for OpenAPI 3.0: references point into
/// `#/components/schemas`, and a reference with siblings (a description) becomes
/// `allOf: [{$ref}]` beside them, since 3.0 ignores a `$ref`'s siblings; the real server
/// publishes the same shape.
fn to_v3_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                if k == "$ref" {
                    continue;
                }
                out.insert(k.clone(), to_v3_schema(x));
            }
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let r = r.replacen("#/definitions/", "#/components/schemas/", 1);
                if out.is_empty() {
                    out.insert("$ref".into(), json!(r));
                } else {
                    out.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3_schema).collect()),
        other => other.clone(),
    }
}

/// The Swagger 2.0 document of every served kind.
fn v2_document(kinds: &[Kind], definitions: &Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for k in kinds {
        for (path, path_params, ops) in operations(k) {
            let mut item = Map::new();
            for op in ops {
                let mut params: Vec<Value> = op
                    .query
                    .iter()
                    .map(|q| {
                        json!({"name": q, "in": "query", "type": query_type(q),
                               "uniqueItems": true, "description": query_description(q)})
                    })
                    .collect();
                if let Some(body) = &op.body {
                    params.insert(0, json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("#/definitions/{body}")}}));
                }
                item.insert(
                    op.method.into(),
                    json!({
                        "tags": [k.rt.api_version()],
                        "description": op.description,
                        "operationId": op.id,
                        "consumes": ["*/*"],
                        "produces": ["application/json"],
                        "schemes": ["https"],
                        "parameters": params,
                        "responses": {
                            "200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{}", op.response)}},
                            "401": {"description": "Unauthorized"},
                        },
                        "x-kubernetes-action": op.action,
                        "x-kubernetes-group-version-kind": gvk_extension(k.rt),
                    }),
                );
            }
            let params: Vec<Value> = path_params
                .iter()
                .map(|p| json!({"name": p, "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": format!("{p} of the object")}))
                .collect();
            item.insert("parameters".into(), json!(params));
            paths.insert(path, Value::Object(item));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::MAJOR, crate::discovery::MINOR)},
        "paths": paths,
        "definitions": definitions,
    })
}

/// The gnostic `openapi.v2` protobuf encoding of a Swagger 2.0 JSON document: what
/// client-go's `OpenAPISchema()` decodes (it accepts nothing else). Written by hand because
/// only this one message family is needed, for the subset of Swagger the documents above
/// use, and a protobuf code generator would bring a build-time compiler for it; field
/// numbers are those of gnostic's `openapiv2/OpenAPIv2.proto`.
mod gnostic {
    use serde_json::{Map, Value};

    /// A protobuf varint (LEB128).
    pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        if !s.is_empty() {
            bytes(out, field, s.as_bytes());
        }
    }

    fn boolean(out: &mut Vec<u8>, field: u32, b: bool) {
        if b {
            varint(out, u64::from(field << 3));
            varint(out, 1);
        }
    }

    fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
        m.get(k).and_then(Value::as_str).unwrap_or_default()
    }

    fn strings(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                bytes(out, field, s.as_bytes());
            }
        }
    }

    /// `Any { yaml = 2 }`: JSON is YAML, and the yaml text is what kube-openapi reads.
    fn any(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 2, &v.to_string());
        out
    }

    /// `NamedAny` vendor extensions (`x-` keys) of an object, at `field`.
    fn extensions(out: &mut Vec<u8>, field: u32, m: &Map<String, Value>) {
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Vec::new();
            string(&mut named, 1, k);
            bytes(&mut named, 2, &any(v));
            bytes(out, field, &named);
        }
    }

    /// `openapi.v2.Document`.
    pub fn document(v: &Value) -> Vec<u8> {
        let empty = Map::new();
        let m = v.as_object().unwrap_or(&empty);
        let mut out = Vec::new();
        string(&mut out, 1, str_of(m, "swagger"));
        if let Some(Value::Object(info)) = m.get("info") {
            let mut i = Vec::new();
            string(&mut i, 1, str_of(info, "title"));
            string(&mut i, 2, str_of(info, "version"));
            bytes(&mut out, 2, &i);
        }
        if let Some(Value::Object(paths)) = m.get("paths") {
            let mut p = Vec::new();
            for (name, item) in paths {
                let mut named = Vec::new();
                string(&mut named, 1, name);
                bytes(&mut named, 2, &path_item(item));
                bytes(&mut p, 2, &named);
            }
            bytes(&mut out, 8, &p);
        }
        if let Some(Value::Object(defs)) = m.get("definitions") {
            bytes(&mut out, 9, &named_schemas(defs));
        }
        out
    }

    /// A message of `NamedSchema`s at field 1 (`Definitions`, `Properties`).
    fn named_schemas(m: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, s) in m {
            let mut named = Vec::new();
            string(&mut named, 1, name);
            bytes(&mut named, 2, &schema(s));
            bytes(&mut out, 1, &named);
        }
        out
    }

    fn path_item(v: &Value) -> Vec<u8> {
        let empty = Map::new();
        let m = v.as_object().unwrap_or(&empty);
        let mut out = Vec::new();
        for (method, field) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("options", 6),
            ("head", 7),
            ("patch", 8),
        ] {
            if let Some(op) = m.get(method) {
                bytes(&mut out, field, &operation(op));
            }
        }
        for p in m
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            bytes(&mut out, 9, &parameters_item(p));
        }
        extensions(&mut out, 10, m);
        out
    }

    fn operation(v: &Value) -> Vec<u8> {
        let empty = Map::new();
        let m = v.as_object().unwrap_or(&empty);
        let mut out = Vec::new();
        strings(&mut out, 1, m.get("tags"));
        string(&mut out, 3, str_of(m, "description"));
        string(&mut out, 5, str_of(m, "operationId"));
        strings(&mut out, 6, m.get("produces"));
        strings(&mut out, 7, m.get("consumes"));
        for p in m
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            bytes(&mut out, 8, &parameters_item(p));
        }
        if let Some(Value::Object(responses)) = m.get("responses") {
            let mut r = Vec::new();
            for (code, resp) in responses {
                let empty = Map::new();
                let resp = resp.as_object().unwrap_or(&empty);
                let mut response = Vec::new();
                string(&mut response, 1, str_of(resp, "description"));
                if let Some(s) = resp.get("schema") {
                    let mut item = Vec::new();
                    bytes(&mut item, 1, &schema(s));
                    bytes(&mut response, 2, &item);
                }
                let mut value = Vec::new();
                bytes(&mut value, 1, &response);
                let mut named = Vec::new();
                string(&mut named, 1, code);
                bytes(&mut named, 2, &value);
                bytes(&mut r, 1, &named);
            }
            bytes(&mut out, 9, &r);
        }
        strings(&mut out, 10, m.get("schemes"));
        extensions(&mut out, 13, m);
        out
    }

    /// `ParametersItem { parameter = 1 }` holding a body, query or path parameter.
    fn parameters_item(v: &Value) -> Vec<u8> {
        let empty = Map::new();
        let m = v.as_object().unwrap_or(&empty);
        let mut parameter = Vec::new();
        match str_of(m, "in") {
            "body" => {
                let mut b = Vec::new();
                string(&mut b, 1, str_of(m, "description"));
                string(&mut b, 2, str_of(m, "name"));
                string(&mut b, 3, "body");
                boolean(&mut b, 4, m.get("required") == Some(&Value::Bool(true)));
                if let Some(s) = m.get("schema") {
                    bytes(&mut b, 5, &schema(s));
                }
                bytes(&mut parameter, 1, &b);
            }
            location => {
                // Query (field 3) and path (field 4) sub-schemas share their first fields.
                let (oneof, type_field, unique_field) = if location == "path" {
                    (4, 5, 19)
                } else {
                    (3, 6, 20)
                };
                let mut p = Vec::new();
                boolean(&mut p, 1, m.get("required") == Some(&Value::Bool(true)));
                string(&mut p, 2, location);
                string(&mut p, 3, str_of(m, "description"));
                string(&mut p, 4, str_of(m, "name"));
                string(&mut p, type_field, str_of(m, "type"));
                boolean(
                    &mut p,
                    unique_field,
                    m.get("uniqueItems") == Some(&Value::Bool(true)),
                );
                let mut non_body = Vec::new();
                bytes(&mut non_body, oneof, &p);
                bytes(&mut parameter, 2, &non_body);
            }
        }
        let mut out = Vec::new();
        bytes(&mut out, 1, &parameter);
        out
    }

    /// `openapi.v2.Schema`.
    fn schema(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Value::Object(m) = v else { return out };
        string(&mut out, 1, str_of(m, "$ref"));
        string(&mut out, 2, str_of(m, "format"));
        string(&mut out, 3, str_of(m, "title"));
        string(&mut out, 4, str_of(m, "description"));
        if let Some(d) = m.get("default") {
            bytes(&mut out, 5, &any(d));
        }
        strings(&mut out, 19, m.get("required"));
        for e in m
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            bytes(&mut out, 20, &any(e));
        }
        match m.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                let mut a = Vec::new();
                // proto3 writes a set oneof member even when false.
                varint(&mut a, 2 << 3);
                varint(&mut a, u64::from(*b));
                bytes(&mut out, 21, &a);
            }
            Some(s @ Value::Object(_)) => {
                let mut a = Vec::new();
                bytes(&mut a, 1, &schema(s));
                bytes(&mut out, 21, &a);
            }
            _ => {}
        }
        match m.get("type") {
            Some(Value::String(t)) => {
                let mut t_item = Vec::new();
                string(&mut t_item, 1, t);
                bytes(&mut out, 22, &t_item);
            }
            Some(ts @ Value::Array(_)) => {
                let mut t_item = Vec::new();
                strings(&mut t_item, 1, Some(ts));
                bytes(&mut out, 22, &t_item);
            }
            _ => {}
        }
        match m.get("items") {
            Some(Value::Array(items)) => {
                let mut i = Vec::new();
                for s in items {
                    bytes(&mut i, 1, &schema(s));
                }
                bytes(&mut out, 23, &i);
            }
            Some(s @ Value::Object(_)) => {
                let mut i = Vec::new();
                bytes(&mut i, 1, &schema(s));
                bytes(&mut out, 23, &i);
            }
            _ => {}
        }
        for s in m
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            bytes(&mut out, 24, &schema(s));
        }
        if let Some(Value::Object(props)) = m.get("properties") {
            bytes(&mut out, 25, &named_schemas(props));
        }
        boolean(&mut out, 27, m.get("readOnly") == Some(&Value::Bool(true)));
        extensions(&mut out, 31, m);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_definition_with_its_group_version_kind() {
        let (kinds, definitions) = schemas();
        assert_eq!(kinds.len(), RESOURCES.len());
        for k in &kinds {
            // The definition is named after the kind's own Go type: a kind whose schema()
            // named another type than canonicalize() decodes with shows up here.
            let suffix = format!(".{}.{}", k.rt.version, k.rt.kind);
            assert!(
                k.definition.ends_with(&suffix),
                "{} for {}",
                k.definition,
                k.rt.kind
            );
            let d = &definitions[&k.definition];
            assert_eq!(
                d["x-kubernetes-group-version-kind"][0]["kind"], k.rt.kind,
                "{}",
                k.definition
            );
            assert!(d["properties"]["metadata"].is_object(), "{}", k.definition);
        }
    }

    #[test]
    fn every_reference_resolves_in_both_versions() {
        let docs = documents();
        let v2: Value = serde_json::from_slice(&docs.v2_json).unwrap();
        let defs = v2["definitions"].as_object().unwrap();
        let all = reachable(&defs.keys().cloned().collect::<Vec<_>>(), defs);
        for name in all {
            assert!(defs.contains_key(&name), "v2 refers to missing {name}");
        }
        for (path, (_, body)) in &docs.v3 {
            let doc: Value = serde_json::from_slice(body).unwrap();
            let text = body.clone();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let needle = b"#/components/schemas/";
            let mut i = 0;
            while let Some(at) = text[i..].windows(needle.len()).position(|w| w == needle) {
                let start = i + at + needle.len();
                let end = start + text[start..].iter().position(|&c| c == b'"').unwrap();
                let name = std::str::from_utf8(&text[start..end]).unwrap();
                assert!(
                    schemas.contains_key(name),
                    "{path} refers to missing {name}"
                );
                i = end;
            }
        }
    }

    #[test]
    fn strategic_merge_lists_carry_the_merge_keys_the_server_merges_by() {
        let (_, d) = schemas();
        let container = &d["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(container["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(container["x-kubernetes-patch-strategy"], "merge");
        let ports = &d["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let svc_ports = &d["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
        // An atomic list stays atomic.
        let args = &d["io.k8s.api.core.v1.Container"]["properties"]["args"];
        assert!(args.get("x-kubernetes-patch-strategy").is_none());
    }

    #[test]
    fn every_patch_operation_offers_field_validation() {
        // kubectl's check (QueryParamVerifierV3): the kind's PATCH operation lists the
        // fieldValidation query parameter, so kubectl leaves unknown fields to the server.
        for (path, (_, body)) in &documents().v3 {
            let doc: Value = serde_json::from_slice(body).unwrap();
            let mut patches = 0;
            for (_, item) in doc["paths"].as_object().unwrap() {
                if let Some(op) = item.get("patch") {
                    patches += 1;
                    assert!(op["x-kubernetes-group-version-kind"]["kind"].is_string());
                    assert!(
                        op["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
                    );
                }
            }
            assert!(patches > 0, "{path}");
        }
    }

    #[test]
    fn a_reference_with_a_description_becomes_all_of_in_v3() {
        let v = to_v3_schema(&json!({"$ref": "#/definitions/A", "description": "d"}));
        assert_eq!(
            v,
            json!({"allOf": [{"$ref": "#/components/schemas/A"}], "description": "d"})
        );
        let bare = to_v3_schema(&json!({"$ref": "#/definitions/A"}));
        assert_eq!(bare, json!({"$ref": "#/components/schemas/A"}));
    }

    #[test]
    fn the_protobuf_encoding_starts_with_the_swagger_version_and_varints_are_leb128() {
        let pb = gnostic::document(&json!({"swagger": "2.0"}));
        assert_eq!(pb, [0x0a, 3, b'2', b'.', b'0']);
        let mut v = Vec::new();
        gnostic::varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        // A 300-byte string carries that varint as its length prefix.
        let pb = gnostic::document(&json!({ "swagger": "x".repeat(300) }));
        assert_eq!(pb[1..3], [0xac, 0x02]);
    }
}
