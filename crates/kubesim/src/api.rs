//! The registry: create, get, list, update, patch and delete with the real server's flow
//! (`registry/generic/registry/store.go` and the handlers), applied to the [`Store`].
//!
//! Everything here is synchronous and runs under the store's lock, so each request is one
//! atomic step, as one etcd transaction is.

use crate::event_convert;
use crate::kinds::Deletion;
use crate::patch::{self, PatchError, PatchType};
use crate::resources::{self, Generation, ResourceType, meta_mut, meta_str};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Cause, GroupResource, success_status};
use crate::store::{Key, Store};
use crate::util;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and report a `Warning` header (the server default).
    #[default]
    Warn,
    /// Reject them (400 for create/update, 422 for patch).
    Strict,
}

/// Options shared by writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, persist nothing.
    pub dry_run: bool,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (apply only).
    pub force: bool,
}

/// A successful write: HTTP code, body and `Warning` header texts.
#[derive(Debug)]
pub struct WriteOutcome {
    /// 200 or 201.
    pub code: u16,
    /// The object (or Status for most deletes).
    pub body: Value,
    /// Unknown-field warnings.
    pub warnings: Vec<String>,
}

impl WriteOutcome {
    /// A 201 Created with the stored object.
    fn created(body: Value, warnings: Vec<String>) -> Self {
        Self {
            code: 201,
            body,
            warnings,
        }
    }
}

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Parsed `labelSelector`.
    pub labels: LabelSelector,
    /// Parsed `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit`, 0 = no limit.
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

/// The object as this API version shows it (events.k8s.io converts from the core form).
pub fn to_view(rt: &ResourceType, stored: &Value) -> Value {
    if rt.group == "events.k8s.io" {
        event_convert::to_events_v1(stored)
    } else {
        stored.clone()
    }
}

fn to_storage(rt: &ResourceType, view: Value) -> Value {
    if rt.group == "events.k8s.io" {
        event_convert::to_core(&view)
    } else {
        view
    }
}

pub(crate) fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resource version: strconv.ParseUint: parsing \"{s}\": invalid syntax"
        ))
    })
}

fn namespace_gr() -> GroupResource {
    GroupResource {
        group: "",
        resource: "namespaces",
    }
}

/// Checks the namespace of a create: it must exist and not be terminating.
fn check_namespace(store: &Store, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    match store.get("namespaces", "", ns) {
        None => Err(ApiError::not_found(namespace_gr(), ns)),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
            Err(ApiError::forbidden(
                rt.gr(),
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

fn warnings_or_strict(
    rt: &ResourceType,
    unknown: Vec<String>,
    fv: FieldValidation,
    patch: bool,
) -> Result<Vec<String>, ApiError> {
    match fv {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(unknown
            .into_iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect()),
        FieldValidation::Strict if unknown.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => {
            let msg = format!(
                "strict decoding error: {}",
                unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if patch {
                Err(ApiError {
                    code: 422,
                    reason: "Invalid",
                    ..ApiError::bad_request(msg)
                })
            } else {
                // A create or update wraps the decoder's error as every decode error
                // (`transformDecodeError` in the real server's handlers).
                Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {msg}",
                    kind = rt.kind,
                    version = rt.version
                )))
            }
        }
    }
}

/// Fills namespace from the URL or rejects a mismatch (400).
fn settle_namespace(rt: &ResourceType, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if !rt.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(b) if b == ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// Reacts to a committed write the way controllers would: derived endpoints, namespace
/// cleanup, finalizer-complete deletions.
fn after_write(store: &mut Store, rt: &ResourceType, ns: &str) {
    rt.strategy.after_write(store, ns);
}

/// GET of one object.
pub fn get(store: &Store, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
    store
        .get(rt.storage, ns, name)
        .map(|o| to_view(rt, &o))
        .ok_or_else(|| ApiError::not_found(rt.gr(), name))
}

fn list_options_invalid(causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(
        "ListOptions.meta.k8s.io",
        "meta.k8s.io",
        "ListOptions",
        "",
        causes,
    )
}

/// Validates list options as `internalversion/validation` does.
pub fn validate_list_options(
    opts: &ListOptions,
    watch: bool,
    send_initial_events: Option<bool>,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let rv = opts.resource_version.as_deref().unwrap_or_default();
    if let Some(m) = opts.resource_version_match.as_deref() {
        if watch {
            if send_initial_events.is_none() {
                causes.push(Cause::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
            } else if m != "NotOlderThan" {
                causes.push(Cause::not_supported(
                    "resourceVersionMatch",
                    m,
                    &["NotOlderThan"],
                ));
            }
        } else {
            if rv.is_empty() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if opts.continue_token.is_some() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            match m {
                "Exact" if rv == "0" => causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                )),
                "Exact" | "NotOlderThan" => {}
                other => causes.push(Cause::not_supported(
                    "resourceVersionMatch",
                    other,
                    &["Exact", "NotOlderThan"],
                )),
            }
        }
    }
    if let Some(sie) = send_initial_events {
        if !watch {
            causes.push(Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        } else if sie && opts.resource_version_match.as_deref() != Some("NotOlderThan") {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(list_options_invalid(causes))
    }
}

/// Whether an object (storage form) matches list/watch selectors.
pub fn matches(obj: &Value, opts: &ListOptions) -> bool {
    opts.labels
        .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
        && opts.fields.matches(|f| resources::field_value(obj, f))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// LIST of a collection.
pub fn list(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<Value, ApiError> {
    for t in &opts.fields.0 {
        rt.check_field(&t.field)?;
    }
    // (snapshot RV, start-after key)
    let mut start_after: Option<Key> = None;
    let mut snapshot_rv: Option<u64> = None;
    if let Some(tok) = &opts.continue_token {
        let decoded: Value = unhex(tok)
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "continue key is not valid: illegal base64 data at input byte 0",
                )
            })?;
        let rv = decoded["rv"].as_u64().unwrap_or(0);
        let k = decoded["start"].as_array().and_then(|a| {
            Some((
                a.first()?.as_str()?.to_string(),
                a.get(1)?.as_str()?.to_string(),
            ))
        });
        snapshot_rv = Some(rv);
        start_after = k;
    } else if opts.resource_version_match.as_deref() == Some("Exact") {
        snapshot_rv = Some(parse_rv(opts.resource_version.as_deref().unwrap_or("0"))?);
    } else if let Some(rv) = opts.resource_version.as_deref().filter(|r| !r.is_empty()) {
        parse_rv(rv)?;
    }
    let (list_rv, items): (u64, Vec<Arc<Value>>) = match snapshot_rv {
        Some(rv) if rv < store.rv() => {
            let snap = store.snapshot_at(rt.storage, rv).map_err(|floor| {
                if opts.continue_token.is_some() {
                    ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
                } else {
                    ApiError::expired(format!("too old resource version: {rv} ({floor})"))
                }
            })?;
            let items = snap
                .into_iter()
                .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                .map(|(_, v)| v)
                .collect();
            (rv, items)
        }
        Some(rv) if rv > store.rv() => {
            return Err(ApiError {
                code: 504,
                reason: "Timeout",
                message: format!("Too large resource version: {rv}, current: {}", store.rv()),
                details: Some(
                    json!({"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1}),
                ),
                retry_after_seconds: None,
            });
        }
        _ => (store.rv(), store.list(rt.storage, ns)),
    };
    let mut out = Vec::new();
    let mut next: Option<Key> = None;
    for obj in items {
        let k = key(
            meta_str(&obj, "namespace").unwrap_or_default(),
            meta_str(&obj, "name").unwrap_or_default(),
        );
        if start_after.as_ref().is_some_and(|s| &k <= s) {
            continue;
        }
        if !matches(&obj, opts) {
            continue;
        }
        if opts.limit > 0 && out.len() == opts.limit {
            next = Some(k);
            break;
        }
        let mut view = to_view(rt, &obj);
        if let Some(m) = view.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        out.push((k, view));
    }
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(list_rv.to_string()));
    if next.is_some()
        && let Some((last, _)) = out.last()
    {
        let tok =
            json!({"v": "meta.k8s.io/v1", "rv": list_rv, "start": [last.0, last.1]}).to_string();
        meta.insert("continue".into(), json!(hex(&tok)));
    }
    Ok(json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": Value::Object(meta),
        "items": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    }))
}

/// Decodes a write body and settles kind/apiVersion, unknown fields and namespace.
fn decode_body(
    rt: &ResourceType,
    body: Value,
    ns: &str,
    opts: &WriteOptions,
    is_patch: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let (mut obj, unknown) = rt.decode(body)?;
    let warnings = warnings_or_strict(rt, unknown, opts.field_validation, is_patch)?;
    settle_namespace(rt, &mut obj, ns)?;
    Ok((obj, warnings))
}

fn validate_write_options(opts: &WriteOptions, kind: &str) -> Result<(), ApiError> {
    if let Some(m) = &opts.field_manager
        && (m.len() > 128 || m.chars().any(|c| c.is_control()))
    {
        return Err(ApiError::invalid(
            &format!("{kind}.meta.k8s.io"),
            "meta.k8s.io",
            kind,
            "",
            vec![Cause::invalid(
                "fieldManager",
                &json!(m),
                "must be at most 128 printable characters",
            )],
        ));
    }
    Ok(())
}

/// POST to a collection.
pub fn create(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    body: Value,
    opts: &WriteOptions,
) -> Result<WriteOutcome, ApiError> {
    validate_write_options(opts, "CreateOptions")?;
    let (obj, warnings) = decode_body(rt, body, ns, opts, false)?;
    let out = create_decoded(store, rt, ns, obj, opts)?;
    Ok(WriteOutcome {
        code: 201,
        body: out,
        warnings,
    })
}

fn create_decoded(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    if let Some(rv) = meta_str(&obj, "resourceVersion")
        && !rv.is_empty()
    {
        return Err(ApiError::reasonless(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let requested = meta_str(&obj, "name").unwrap_or_default().to_string();
    check_namespace(store, rt, ns, &requested)?;
    {
        let meta = meta_mut(&mut obj);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
            "resourceVersion",
        ] {
            meta.remove(f);
        }
    }
    let generate = meta_str(&obj, "generateName")
        .unwrap_or_default()
        .to_string();
    let use_generate = requested.is_empty() && !generate.is_empty();
    if use_generate {
        meta_mut(&mut obj).insert("name".into(), json!(util::generate_name(&generate)));
    }
    rt.strategy
        .defaults_on_create(&mut obj, &mut store.cluster_ip);
    resources::validate(rt, &obj, None)?;
    let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
    let store_ns = if rt.namespaced { ns } else { "" };
    let mut attempts = 0;
    while store.get(rt.storage, store_ns, &name).is_some() {
        if !use_generate || attempts >= 8 {
            return Err(ApiError::already_exists(rt.gr(), &name));
        }
        attempts += 1;
        name = util::generate_name(&generate);
        meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    {
        let meta = meta_mut(&mut obj);
        meta.insert("uid".into(), json!(util::new_uid()));
        meta.insert("creationTimestamp".into(), json!(util::now_time()));
        if rt.generation != Generation::None {
            meta.insert("generation".into(), json!(1));
        }
    }
    if opts.dry_run {
        return Ok(obj);
    }
    let stored = store.put(rt.storage, key(store_ns, &name), to_storage(rt, obj));
    after_write(store, rt, store_ns);
    rt.strategy.after_create(store, store_ns, &name);
    Ok(to_view(rt, &stored))
}

/// What part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: status changes are ignored where a status subresource exists.
    Main,
    /// The `/status` subresource: only status changes.
    Status,
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

/// Carries server-owned fields from the stored object, computes the generation, and applies
/// the status-subresource split.
fn prepare_update(rt: &ResourceType, new: &mut Value, old: &Value, part: Part) {
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    if part == Part::Status {
        // ResetObjectMetaForStatus + status strategy: only status moves.
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        *new = merged;
        return;
    }
    if rt.status_subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let meta = meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    meta.remove("managedFields");
    meta.remove("selfLink");
    let bump = match rt.generation {
        Generation::None => false,
        Generation::Spec => new.get("spec") != old.get("spec"),
        Generation::NonMetadata => {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                }
                v
            };
            strip(new) != strip(old)
                || new.pointer("/metadata/labels") != old.pointer("/metadata/labels")
        }
    };
    if bump {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(new).insert("generation".into(), json!(g));
    }
}

/// The shared tail of update and patch: validation, no-op detection, commit.
#[allow(clippy::too_many_arguments)]
fn commit_update(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    mut new: Value,
    old: &Value,
    part: Part,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    prepare_update(rt, &mut new, old, part);
    if part == Part::Main {
        rt.strategy.prepare_update(&mut new, old);
    }
    resources::validate(rt, &new, Some(old))?;
    if strip_rv(&new) == strip_rv(old) {
        return Ok(old.clone());
    }
    meta_mut(&mut new).insert(
        "resourceVersion".into(),
        old["metadata"]["resourceVersion"].clone(),
    );
    if opts.dry_run {
        return Ok(new);
    }
    let k = key(ns, name);
    let finished = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && (rt.kind != "Pod"
            || new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                == Some(0));
    let stored = store.put(rt.storage, k.clone(), to_storage(rt, new));
    if finished {
        // The last finalizer is gone: the pending deletion completes.
        store.remove(rt.storage, &k);
    }
    after_write(store, rt, ns);
    Ok(to_view(rt, &stored))
}

/// PUT of an item (main resource or `/status`).
pub fn update(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    body: Value,
    part: Part,
    opts: &WriteOptions,
) -> Result<WriteOutcome, ApiError> {
    validate_write_options(opts, "UpdateOptions")?;
    let (obj, warnings) = decode_body(rt, body, ns, opts, false)?;
    let body_name = meta_str(&obj, "name").unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let store_ns = if rt.namespaced { ns } else { "" };
    let Some(old) = store.get(rt.storage, store_ns, name) else {
        if rt.create_on_update && part == Part::Main {
            let mut obj = obj;
            meta_mut(&mut obj).remove("resourceVersion");
            let out = create_decoded(store, rt, ns, obj, opts)?;
            return Ok(WriteOutcome::created(out, warnings));
        }
        return Err(ApiError::not_found(rt.gr(), name));
    };
    let old = to_view(rt, &old);
    let body_rv = meta_str(&obj, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    if body_rv.is_empty() {
        if !rt.unconditional_update {
            // This error names the qualified resource, not the Kind (store.go's own check).
            return Err(ApiError::invalid(
                &rt.gr().qualified(),
                rt.group,
                rt.plural,
                name,
                vec![Cause::invalid(
                    "metadata.resourceVersion",
                    &json!(0),
                    "must be specified for an update",
                )],
            ));
        }
    } else {
        parse_rv(&body_rv)?;
        if Some(body_rv.as_str()) != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(rt.gr(), name));
        }
    }
    check_uid(rt, &obj, &old, name)?;
    let out = commit_update(store, rt, store_ns, name, obj, &old, part, opts)?;
    Ok(WriteOutcome {
        code: 200,
        body: out,
        warnings,
    })
}

fn check_uid(rt: &ResourceType, obj: &Value, old: &Value, name: &str) -> Result<(), ApiError> {
    let uid = meta_str(obj, "uid").unwrap_or_default();
    let old_uid = meta_str(old, "uid").unwrap_or_default();
    if !uid.is_empty() && uid != old_uid {
        return Err(ApiError::conflict_with(
            rt.gr(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    Ok(())
}

fn patch_options_invalid(cause: Cause) -> ApiError {
    ApiError::invalid(
        "PatchOptions.meta.k8s.io",
        "meta.k8s.io",
        "PatchOptions",
        "",
        vec![cause],
    )
}

/// PATCH of an item.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    ptype: PatchType,
    body: Value,
    part: Part,
    opts: &WriteOptions,
) -> Result<WriteOutcome, ApiError> {
    validate_write_options(opts, "PatchOptions")?;
    if ptype == PatchType::Apply && opts.field_manager.as_deref().is_none_or(str::is_empty) {
        return Err(patch_options_invalid(Cause::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    if ptype != PatchType::Apply && opts.force {
        return Err(patch_options_invalid(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    let store_ns = if rt.namespaced { ns } else { "" };
    let Some(old) = store.get(rt.storage, store_ns, name) else {
        if ptype == PatchType::Apply && part == Part::Main {
            let (mut obj, warnings) = decode_body(rt, body, ns, opts, true)?;
            let body_name = meta_str(&obj, "name").unwrap_or_default().to_string();
            if body_name.is_empty() {
                meta_mut(&mut obj).insert("name".into(), json!(name));
            } else if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            let out = create_decoded(store, rt, ns, obj, opts)?;
            return Ok(WriteOutcome::created(out, warnings));
        }
        return Err(ApiError::not_found(rt.gr(), name));
    };
    let old = to_view(rt, &old);
    let old_rv = meta_str(&old, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    let mut patched = old.clone();
    let applied = match ptype {
        PatchType::Merge | PatchType::Apply => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}",
                ));
            }
            patch::merge(&mut patched, &body);
            Ok(())
        }
        PatchType::Strategic => patch::strategic(&mut patched, &body),
        PatchType::Json => patch::json_patch(&mut patched, &body),
    };
    match applied {
        Ok(()) => {}
        Err(PatchError::Malformed(m)) => return Err(ApiError::bad_request(m)),
        Err(PatchError::OpFailed(_)) => {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "the server rejected our request due to an error in our request".into(),
                details: None,
                retry_after_seconds: None,
            });
        }
    }
    let patched_rv = meta_str(&patched, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    if !patched_rv.is_empty() && patched_rv != old_rv {
        return Err(ApiError::conflict(rt.gr(), name));
    }
    let (mut obj, warnings) = decode_body(rt, patched, ns, opts, true)?;
    let new_name = meta_str(&obj, "name").unwrap_or_default();
    if new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(old_rv));
    check_uid(rt, &obj, &old, name)?;
    let out = commit_update(store, rt, store_ns, name, obj, &old, part, opts)?;
    Ok(WriteOutcome {
        code: 200,
        body: out,
        warnings,
    })
}

/// DeleteOptions as sent in a DELETE body or query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// DELETE of an item.
pub fn delete(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<WriteOutcome, ApiError> {
    let store_ns = if rt.namespaced { ns } else { "" };
    let Some(old) = store.get(rt.storage, store_ns, name) else {
        return Err(ApiError::not_found(rt.gr(), name));
    };
    let old_uid = meta_str(&old, "uid").unwrap_or_default().to_string();
    if let Some(uid) = &opts.uid
        && *uid != old_uid
    {
        return Err(ApiError::conflict_with(
            rt.gr(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    let old_rv = meta_str(&old, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    if let Some(rv) = &opts.resource_version
        && *rv != old_rv
    {
        return Err(ApiError::conflict_with(
            rt.gr(),
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rv}"
            ),
        ));
    }
    let k = key(store_ns, name);
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    // Graceful pod deletion: a pod bound to a node stays, marked, until its kubelet confirms.
    let graceful_pod = rt.strategy.deletion() == Deletion::GracefulPod
        && !old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        && opts
            .grace_period_seconds
            .or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            > 0;
    let namespace = rt.strategy.deletion() == Deletion::Namespace;
    if (has_finalizers || graceful_pod) && !namespace {
        let mut marked = to_view(rt, &old);
        let grace = if graceful_pod {
            opts.grace_period_seconds
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
        } else {
            0
        };
        if marked
            .pointer("/metadata/deletionTimestamp")
            .is_none_or(Value::is_null)
        {
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(util::time_in(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if opts.dry_run {
                return Ok(WriteOutcome {
                    code: 200,
                    body: marked,
                    warnings: vec![],
                });
            }
            let stored = store.put(rt.storage, k, to_storage(rt, marked));
            after_write(store, rt, store_ns);
            return Ok(WriteOutcome {
                code: 200,
                body: to_view(rt, &stored),
                warnings: vec![],
            });
        }
        if !(graceful_pod && opts.grace_period_seconds == Some(0)) || has_finalizers {
            return Ok(WriteOutcome {
                code: 200,
                body: marked,
                warnings: vec![],
            });
        }
    }
    if opts.dry_run {
        let body = if rt.delete_returns_object {
            to_view(rt, &old)
        } else {
            success_status(rt.gr(), name, &old_uid)
        };
        return Ok(WriteOutcome {
            code: 200,
            body,
            warnings: vec![],
        });
    }
    if namespace {
        return delete_namespace(store, rt, name);
    }
    let last = store
        .remove(rt.storage, &k)
        .expect("present under the lock");
    rt.strategy.after_delete(store, store_ns, name);
    after_write(store, rt, store_ns);
    let body = if rt.delete_returns_object {
        to_view(rt, &last)
    } else {
        success_status(rt.gr(), name, &old_uid)
    };
    Ok(WriteOutcome {
        code: 200,
        body,
        warnings: vec![],
    })
}

/// Namespace deletion: the namespace turns Terminating, its content is removed (what the
/// namespace controller does), then the namespace itself goes.
fn delete_namespace(
    store: &mut Store,
    rt: &'static ResourceType,
    name: &str,
) -> Result<WriteOutcome, ApiError> {
    let k = key("", name);
    let mut marked = (*store.get("namespaces", "", name).expect("checked")).clone();
    meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(util::now_time()));
    marked["status"]["phase"] = json!("Terminating");
    let marked = store.put("namespaces", k.clone(), marked);
    let storages: Vec<&'static str> = resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced)
        .map(|r| r.storage)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for storage in storages {
        for obj in store.list(storage, Some(name)) {
            let n = meta_str(&obj, "name").unwrap_or_default().to_string();
            store.remove(storage, &key(name, &n));
        }
    }
    store.remove("namespaces", &k);
    Ok(WriteOutcome {
        code: 200,
        body: to_view(rt, &marked),
        warnings: vec![],
    })
}

/// DELETE of a collection: deletes every matching object and returns them as a List.
pub fn delete_collection(
    store: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    opts: &ListOptions,
    del: &DeleteOptions,
) -> Result<Value, ApiError> {
    let listed = list(
        store,
        rt,
        Some(ns),
        &ListOptions {
            limit: 0,
            continue_token: None,
            ..opts.clone()
        },
    )?;
    let mut items = Vec::new();
    for item in listed["items"].as_array().cloned().unwrap_or_default() {
        let name = meta_str(&item, "name").unwrap_or_default().to_string();
        match delete(store, rt, ns, &name, del) {
            Ok(out) => {
                let obj = if out.body["kind"] == "Status" {
                    item
                } else {
                    out.body
                };
                items.push(obj);
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": store.rv().to_string()},
        "items": items,
    }))
}

/// What a `pods/binding` POST does (the scheduler's write): sets `spec.nodeName` on a pod
/// that has none and marks it `PodScheduled`; a pod already bound is a 409, as
/// `pkg/registry/core/pod/storage` answers.
pub fn bind_pod(store: &mut Store, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
    let rt = resources::lookup("", "v1", "pods").expect("pods served");
    let old = store
        .get(rt.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(rt.gr(), name))?;
    let mut pod = to_view(rt, &old);
    let current = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !current.is_empty() {
        return Err(ApiError::conflict_with(
            rt.gr(),
            name,
            &format!("pod {name} is already assigned to node \"{current}\""),
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    pod["status"]["phase"] = json!("Pending");
    pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
        "lastProbeTime": null, "lastTransitionTime": util::now_time()}]);
    let stored = store.put(rt.storage, key(ns, name), to_storage(rt, pod));
    after_write(store, rt, ns);
    Ok(to_view(rt, &stored))
}
