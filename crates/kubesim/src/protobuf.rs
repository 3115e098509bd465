//! Decoding of the Kubernetes protobuf request bodies that kubectl's typed clients send
//! (`kubectl create namespace|serviceaccount|token|secret|configmap`), into JSON.
//!
//! The real server accepts `application/vnd.kubernetes.protobuf` for every built-in type.
//! kubesim decodes only the envelope and the few small messages those commands send, by field
//! number from `generated.proto`; anything else is answered 415 with a clear message. A full
//! protobuf schema stack (prost plus the Kubernetes .proto files) would dwarf the rest of the
//! stand-in for these five messages.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The bytes are not valid protobuf or lack the envelope.
    #[error("invalid protobuf body: {0}")]
    Malformed(&'static str),
    /// A valid envelope for a kind kubesim does not decode from protobuf.
    #[error(
        "kubesim decodes protobuf only for Namespace, ServiceAccount, TokenRequest, Secret, ConfigMap and the access reviews, not {0}; send JSON instead"
    )]
    Unsupported(String),
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(ProtoError::Malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed("varint too long"))
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| ProtoError::Malformed("length overflow"))?;
                if len > self.buf.len() {
                    return Err(ProtoError::Malformed("truncated field"));
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(b)
            }
            1 => {
                self.skip(8)?;
                Field::Varint(0)
            }
            5 => {
                self.skip(4)?;
                Field::Varint(0)
            }
            _ => return Err(ProtoError::Malformed("unsupported wire type")),
        };
        Ok(Some((key >> 3, field)))
    }

    fn skip(&mut self, n: usize) -> Result<(), ProtoError> {
        if n > self.buf.len() {
            return Err(ProtoError::Malformed("truncated fixed field"));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

/// A map<string,string> entry (key = 1, value = 2); `bytes_value` base64-encodes the value.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ProtoError> {
    let mut k = String::new();
    let mut v = Value::String(String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) if bytes_value => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(x))
            }
            (2, Field::Bytes(x)) => v = json!(string(x)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), json!(string(x)?));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), json!(string(x)?));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), json!(string(x)?));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

/// The string fields `layout` names (number, JSON key) of message `b`.
fn strings_of(b: &[u8], layout: &[(u64, &str)]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (Some(&(_, key)), Field::Bytes(x)) = (layout.iter().find(|(k, _)| *k == n), f) {
            m.insert(key.into(), json!(string(x)?));
        }
    }
    Ok(Value::Object(m))
}

/// `SelfSubjectAccessReviewSpec` (`kubectl auth can-i`): resource attributes (namespace,
/// verb, group, version, resource, subresource, name) or non-resource ones (path, verb).
fn access_review_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut spec = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                let layout = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                spec.insert("resourceAttributes".into(), strings_of(x, &layout)?);
            }
            (2, Field::Bytes(x)) => {
                spec.insert(
                    "nonResourceAttributes".into(),
                    strings_of(x, &[(1, "path"), (2, "verb")])?,
                );
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

fn token_request_spec(b: &[u8]) -> Result<Value, ProtoError> {
    let mut audiences = Vec::new();
    let mut spec = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => audiences.push(json!(string(x)?)),
            (4, Field::Varint(v)) => {
                spec.insert("expirationSeconds".into(), json!(v as i64));
            }
            _ => {}
        }
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Ok(Value::Object(spec))
}

/// How a kind's protobuf message maps to its JSON (field 1 is always `metadata`): kubesim
/// decodes the few kinds kubectl and client-go send as protobuf.
#[derive(Debug)]
pub struct ProtoLayout {
    /// Map fields.
    pub maps: &'static [ProtoMap],
    /// String fields: number and JSON key.
    pub strings: &'static [(u64, &'static str)],
}

/// A map field of a [`ProtoLayout`].
#[derive(Debug)]
pub struct ProtoMap {
    /// The field number.
    pub field: u64,
    /// The JSON key.
    pub key: &'static str,
    /// Values are bytes (base64 in JSON), not strings.
    pub bytes: bool,
}

/// Decodes a protobuf body to the JSON object the same request would have sent.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or(ProtoError::Malformed("missing the k8s\\0 prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    // TokenRequest is the body of the `serviceaccounts/token` subresource, not a kind of its
    // own; every other body is laid out as its kind says.
    if kind == "SelfSubjectAccessReview" || kind == "SelfSubjectRulesReview" {
        for (n, f) in fields(raw)? {
            if let (2, Field::Bytes(x)) = (n, f) {
                let spec = if kind == "SelfSubjectAccessReview" {
                    access_review_spec(x)?
                } else {
                    strings_of(x, &[(1, "namespace")])?
                };
                obj.insert("spec".into(), spec);
            }
        }
        return Ok(Value::Object(obj));
    }
    if kind == "TokenRequest" {
        for (n, f) in fields(raw)? {
            match (n, f) {
                (1, Field::Bytes(x)) => {
                    obj.insert("metadata".into(), object_meta(x)?);
                }
                (2, Field::Bytes(x)) => {
                    obj.insert("spec".into(), token_request_spec(x)?);
                }
                _ => {}
            }
        }
        return Ok(Value::Object(obj));
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let layout = crate::resources::by_kind(group, &kind)
        .and_then(|rt| rt.protobuf)
        .ok_or_else(|| ProtoError::Unsupported(kind.clone()))?;
    let mut maps: Vec<Map<String, Value>> = vec![Map::new(); layout.maps.len()];
    for (n, f) in fields(raw)? {
        let Field::Bytes(x) = f else { continue };
        if n == 1 {
            obj.insert("metadata".into(), object_meta(x)?);
        } else if let Some(at) = layout.maps.iter().position(|m| m.field == n) {
            let (k, v) = map_entry(x, layout.maps[at].bytes)?;
            maps[at].insert(k, v);
        } else if let Some(&(_, key)) = layout.strings.iter().find(|(f, _)| *f == n) {
            obj.insert(key.into(), json!(string(x)?));
        }
    }
    for (m, entries) in layout.maps.iter().zip(maps) {
        if !entries.is_empty() {
            obj.insert(m.key.into(), Value::Object(entries));
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_bytes(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let type_meta = [field_bytes(1, b"v1"), field_bytes(2, b"Namespace")].concat();
        let meta = field_bytes(1, b"ns1");
        let raw = field_bytes(1, &meta);
        let body = [
            MAGIC.to_vec(),
            field_bytes(1, &type_meta),
            field_bytes(2, &raw),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "ns1");
    }

    #[test]
    fn rejects_other_kinds_and_garbage() {
        let type_meta = [field_bytes(1, b"v1"), field_bytes(2, b"Pod")].concat();
        let body = [MAGIC.to_vec(), field_bytes(1, &type_meta)].concat();
        assert!(matches!(decode(&body), Err(ProtoError::Unsupported(_))));
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let body = [MAGIC.to_vec(), tail].concat();
            let _ = decode(&body);
        }
    }
}
