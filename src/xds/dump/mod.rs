//! Envoy admin `/config_dump`-shaped JSON (proto3 canonical JSON, proto field names, `@type` on
//! every Any) for a snapshot, written straight from each resource's wire bytes ([`json`]) with
//! the descriptors of the Envoy API that envoy-types was generated from
//! (`proto/envoy_descriptor_set.bin`, read once into [`schema`]).
//!
//! Private keys are redacted as Envoy's admin does; nothing else is changed. Output is
//! deterministic: resources are sorted by name, and no map we emit has more than one entry.

mod json;
mod schema;
#[cfg(test)]
mod tests;
mod wkt;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{json, Value};

use crate::xds::{Resource, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();

/// The Envoy API descriptor pool.
pub fn pool() -> Result<&'static DescriptorPool, String> {
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!("../../../proto/envoy_descriptor_set.bin")[..])
            .map_err(|e| format!("decoding the Envoy descriptor set: {e}"))
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// One `Any` as JSON with its `@type`, as one tree (for a small resource: a secret). Read back
/// from the compact text, so numbers are the JSON text the writer wrote.
pub fn any_to_json(type_url: &str, bytes: &[u8]) -> Result<Value, String> {
    let text = serde_json::to_vec(&json::AnyJson {
        type_url,
        value: bytes,
        depth: 0,
    })
    .map_err(|e| format!("encoding {type_url} as JSON: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("re-reading JSON: {e}"))
}

/// Replaces the key material of a Secret as Envoy's admin does for the fields its API marks
/// `sensitive`: a TLS certificate's private key, PKCS#12 bundle and password, session ticket
/// keys and a generic secret. Certificates (public) stay.
fn redact(mut v: Value) -> Value {
    let hidden = || json!({"inline_string": "[redacted]"});
    if let Some(tls) = v.get_mut("tls_certificate").and_then(Value::as_object_mut) {
        for field in ["private_key", "pkcs12", "password"] {
            if let Some(f) = tls.get_mut(field) {
                *f = hidden();
            }
        }
    }
    if let Some(keys) = v
        .get_mut("session_ticket_keys")
        .and_then(|k| k.get_mut("keys"))
        .and_then(Value::as_array_mut)
    {
        for k in keys {
            *k = hidden();
        }
    }
    if let Some(g) = v
        .get_mut("generic_secret")
        .and_then(|g| g.get_mut("secret"))
    {
        *g = hidden();
    }
    v
}

/// The snapshot as an Envoy admin ConfigDump, written section by section and resource by
/// resource by any serde serializer ([`write_json`] for `render`), each resource field by field
/// as its wire records are read: never the whole dump, nor one resource, as a tree. The same
/// document `config_dump` built as one `Value` before (and the same bytes: the goldens hold
/// them).
pub struct ConfigDump<'a> {
    snapshot: &'a Snapshot,
}

impl<'a> ConfigDump<'a> {
    pub fn new(snapshot: &'a Snapshot) -> ConfigDump<'a> {
        ConfigDump { snapshot }
    }

    fn of_type(&self, t: &str) -> impl Iterator<Item = &'a Resource> {
        self.snapshot
            .of_type(t)
            .into_iter()
            .flatten()
            .map(|(_, r)| &**r)
    }

    /// Scoped route configurations (scoped route layout only), grouped as Envoy's admin groups
    /// them: by the HCM's `scoped_routes` name, which prefixes every scope's name
    /// (`http.80/<host>`).
    fn scoped(&self) -> BTreeMap<&'a str, Vec<&'a Resource>> {
        let mut groups: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for (n, r) in self.snapshot.of_type(SCOPED_ROUTE).into_iter().flatten() {
            let group = n.split_once('/').map(|(g, _)| g).unwrap_or(n);
            groups.entry(group).or_default().push(r);
        }
        groups
    }
}

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

impl Serialize for ConfigDump<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let scoped = self.scoped();
        let res = |t: &str, f: fn(&'_ Resource) -> Obj<'_>| {
            List(self.of_type(t).map(f).map(Field::Obj).collect())
        };
        let mut sections = vec![
            section(
                "ClustersConfigDump",
                "dynamic_active_clusters",
                res(CLUSTER, |r| {
                    Obj(vec![
                        ("version_info", Field::Str(&r.version)),
                        ("cluster", Field::Any(r)),
                    ])
                }),
            ),
            section(
                "EndpointsConfigDump",
                "dynamic_endpoint_configs",
                res(ENDPOINT, |r| {
                    Obj(vec![
                        ("version_info", Field::Str(&r.version)),
                        ("endpoint_config", Field::Any(r)),
                    ])
                }),
            ),
            section(
                "ListenersConfigDump",
                "dynamic_listeners",
                res(LISTENER, |r| {
                    Obj(vec![
                        ("name", Field::Str(&r.name)),
                        (
                            "active_state",
                            Field::Obj(Obj(vec![
                                ("version_info", Field::Str(&r.version)),
                                ("listener", Field::Any(r)),
                            ])),
                        ),
                    ])
                }),
            ),
        ];
        if !scoped.is_empty() {
            let groups = scoped
                .iter()
                .map(|(name, configs)| {
                    Field::Obj(Obj(vec![
                        ("name", Field::Str(name)),
                        (
                            "scoped_route_configs",
                            Field::List(List(configs.iter().map(|r| Field::Any(r)).collect())),
                        ),
                    ]))
                })
                .collect();
            sections.push(section(
                "ScopedRoutesConfigDump",
                "dynamic_scoped_route_configs",
                List(groups),
            ));
        }
        sections.push(section(
            "RoutesConfigDump",
            "dynamic_route_configs",
            res(ROUTE, |r| {
                Obj(vec![
                    ("version_info", Field::Str(&r.version)),
                    ("route_config", Field::Any(r)),
                ])
            }),
        ));
        sections.push(section(
            "SecretsConfigDump",
            "dynamic_active_secrets",
            res(SECRET, |r| {
                Obj(vec![
                    ("name", Field::Str(&r.name)),
                    ("version_info", Field::Str(&r.version)),
                    ("secret", Field::Secret(r)),
                ])
            }),
        ));
        Obj(vec![("configs", Field::List(List(sections)))]).serialize(s)
    }
}

/// `{"@type": <admin type>, <key>: [items]}`.
fn section<'a>(ty: &'static str, key: &'static str, items: List<'a>) -> Field<'a> {
    Field::Obj(Obj(vec![
        ("@type", Field::Type(ty)),
        (key, Field::List(items)),
    ]))
}

/// The skeleton of the dump: objects of known keys, lists, and resources converted one at a
/// time while they are written.
enum Field<'a> {
    Str(&'a str),
    /// An admin section type (`ADMIN` + the name).
    Type(&'static str),
    /// A resource with its `@type`.
    Any(&'a Resource),
    /// A secret with its key material redacted.
    Secret(&'a Resource),
    Obj(Obj<'a>),
    List(List<'a>),
}

struct Obj<'a>(Vec<(&'static str, Field<'a>)>);
struct List<'a>(Vec<Field<'a>>);

impl Serialize for Obj<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in &self.0 {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Type(ty) => s.collect_str(&format_args!("{ADMIN}{ty}")),
            Field::Any(r) => json::AnyJson {
                type_url: &r.body.type_url,
                value: &r.body.value,
                depth: 0,
            }
            .serialize(s),
            Field::Secret(r) => any_to_json(&r.body.type_url, &r.body.value)
                .map(redact)
                .map_err(S::Error::custom)?
                .serialize(s),
            Field::Obj(o) => o.serialize(s),
            Field::List(l) => l.serialize(s),
        }
    }
}

/// The snapshot as Envoy admin ConfigDump JSON, as one `Value` (`/debug/config_dump`).
pub fn config_dump(snapshot: &Snapshot) -> Result<Value, String> {
    serde_json::to_value(ConfigDump::new(snapshot)).map_err(|e| e.to_string())
}

/// Writes the snapshot's ConfigDump as pretty JSON and a newline to `out` (buffered here),
/// resource by resource. An error converting a resource names it; an I/O error is returned as
/// is (a closed pipe is not a failure to report).
pub fn write_json(snapshot: &Snapshot, out: impl Write) -> Result<(), DumpError> {
    write_with(snapshot, out, serde_json::ser::PrettyFormatter::new())
}

/// [`write_json`] without the indentation (a third of the bytes), for a program to read
/// (`diff`'s rendered side).
pub fn write_compact_json(snapshot: &Snapshot, out: impl Write) -> Result<(), DumpError> {
    write_with(snapshot, out, serde_json::ser::CompactFormatter)
}

fn write_with(
    snapshot: &Snapshot,
    out: impl Write,
    formatter: impl serde_json::ser::Formatter,
) -> Result<(), DumpError> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut ser = serde_json::Serializer::with_formatter(&mut w, formatter);
    ConfigDump::new(snapshot).serialize(&mut ser).map_err(|e| {
        if e.is_io() {
            DumpError::Io(e.into())
        } else {
            DumpError::Convert(e.to_string())
        }
    })?;
    w.write_all(b"\n").map_err(DumpError::Io)?;
    w.flush().map_err(DumpError::Io)
}

/// Writes the snapshot's ConfigDump as YAML to `out` (buffered here), resource by resource.
pub fn write_yaml(snapshot: &Snapshot, out: impl Write) -> Result<(), DumpError> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    serde_saphyr::to_io_writer(&mut w, &ConfigDump::new(snapshot))
        .map_err(|e| DumpError::Convert(e.to_string()))?;
    w.flush().map_err(DumpError::Io)
}

/// Why [`write_json`] or [`write_yaml`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Writing the output.
    #[error("writing: {0}")]
    Io(std::io::Error),
    /// A resource that does not convert to JSON (it names the message type).
    #[error("{0}")]
    Convert(String),
}
