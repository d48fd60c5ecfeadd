//! Decoding of the Kubernetes protobuf wire format for the few request bodies real clients send
//! that way: client-go (helm's release storage) POSTs and PUTs Secrets and ConfigMaps as
//! `application/vnd.kubernetes.protobuf`.
//!
//! Only decoding, only Secret and ConfigMap with the ObjectMeta fields such clients set; anything
//! else is answered 415 by the HTTP layer. Responses are always JSON, which these clients accept
//! (`Accept: application/vnd.kubernetes.protobuf,application/json`). Field numbers are those of
//! `k8s.io/api/core/v1/generated.proto` and `apimachinery/pkg/apis/meta/v1/generated.proto`.

use serde_json::{json, Map, Value};

/// The body is not protobuf we understand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("failed to decode protobuf body: {0}")]
pub struct ProtobufError(pub String);

const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: number and payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn err(what: &str) -> ProtobufError {
    ProtobufError(what.to_string())
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtobufError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| err("truncated varint"))?;
        *pos += 1;
        out |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(err("varint too long"))
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtobufError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| err("length overflow"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(|| err("truncated field"))?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                continue;
            }
            5 => {
                pos += 4;
                continue;
            }
            other => return Err(ProtobufError(format!("unsupported wire type {other}"))),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| err("invalid utf-8 string"))
}

/// A `map<string, string|bytes>` entry (key = 1, value = 2); bytes values become base64 like JSON.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), ProtobufError> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) if binary => value = Value::String(base64(b)),
            (2, Field::Bytes(b)) => value = Value::String(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers, mut owners) =
        (Map::new(), Map::new(), Vec::new(), Vec::new());
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = meta.insert("name".into(), json!(text(b)?)),
            (2, Field::Bytes(b)) => _ = meta.insert("generateName".into(), json!(text(b)?)),
            (3, Field::Bytes(b)) => _ = meta.insert("namespace".into(), json!(text(b)?)),
            (5, Field::Bytes(b)) => _ = meta.insert("uid".into(), json!(text(b)?)),
            (6, Field::Bytes(b)) => _ = meta.insert("resourceVersion".into(), json!(text(b)?)),
            (11, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, false)?;
                annotations.insert(k, v);
            }
            (13, Field::Bytes(b)) => owners.push(owner_reference(b)?),
            (14, Field::Bytes(b)) => finalizers.push(json!(text(b)?)),
            _ => {}
        }
    }
    for (name, value, present) in [
        ("labels", Value::Object(labels.clone()), !labels.is_empty()),
        (
            "annotations",
            Value::Object(annotations.clone()),
            !annotations.is_empty(),
        ),
        (
            "finalizers",
            Value::Array(finalizers.clone()),
            !finalizers.is_empty(),
        ),
        (
            "ownerReferences",
            Value::Array(owners.clone()),
            !owners.is_empty(),
        ),
    ] {
        if present {
            meta.insert(name.into(), value);
        }
    }
    Ok(Value::Object(meta))
}

fn owner_reference(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut owner = Map::new();
    for (n, f) in fields(bytes)? {
        let (key, value) = match (n, f) {
            (1, Field::Bytes(b)) => ("kind", json!(text(b)?)),
            (3, Field::Bytes(b)) => ("name", json!(text(b)?)),
            (4, Field::Bytes(b)) => ("uid", json!(text(b)?)),
            (5, Field::Bytes(b)) => ("apiVersion", json!(text(b)?)),
            (6, Field::Varint(v)) => ("controller", json!(v != 0)),
            (7, Field::Varint(v)) => ("blockOwnerDeletion", json!(v != 0)),
            _ => continue,
        };
        owner.insert(key.into(), value);
    }
    Ok(Value::Object(owner))
}

/// Secret (1 metadata, 2 data, 3 type, 4 stringData, 5 immutable) or ConfigMap (1 metadata,
/// 2 data, 3 binaryData, 4 immutable).
fn object(kind: &str, api_version: &str, bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    let (mut data, mut extra) = (Map::new(), Map::new());
    for (n, f) in fields(bytes)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(b)) => object["metadata"] = object_meta(b)?,
            ("Secret", 2, Field::Bytes(b)) | ("ConfigMap", 2, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, kind == "Secret")?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(b)) => object["type"] = json!(text(b)?),
            ("Secret", 4, Field::Bytes(b)) | ("ConfigMap", 3, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, kind == "ConfigMap")?;
                extra.insert(k, v);
            }
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                object["immutable"] = json!(v != 0)
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        object["data"] = Value::Object(data);
    }
    if !extra.is_empty() {
        let name = if kind == "Secret" {
            "stringData"
        } else {
            "binaryData"
        };
        object[name] = Value::Object(extra);
    }
    Ok(object)
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope holding a Secret or ConfigMap.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| err("missing k8s magic prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta)? {
                    match (m, g) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret" | "ConfigMap") => object(&kind, &api_version, raw),
        _ => Err(ProtobufError(format!(
            "protobuf is only emulated for v1 Secret and ConfigMap, not {api_version} {kind}"
        ))),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_protobuf_secret_decodes_to_its_json_form() {
        let label = [field(1, b"owner"), field(2, b"helm")].concat();
        let meta = [field(1, b"rel"), field(11, &label)].concat();
        let data = [field(1, b"release"), field(2, b"hi!")].concat();
        let secret = [
            field(1, &meta),
            field(2, &data),
            field(3, b"helm.sh/release.v1"),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        assert_eq!(
            decode(&body).expect("decodes"),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                   "metadata": {"name": "rel", "labels": {"owner": "helm"}}, "data": {"release": "aGkh"}})
        );
    }

    #[test]
    fn base64_pads_like_the_standard_encoding() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
