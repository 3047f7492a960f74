//! Reading one side of a diff as a stream: a config dump's JSON is deserialized section by
//! section and item by item straight into a [`Normalizer`] (a route configuration's virtual
//! hosts one by one), so neither the dump's text nor its tree is ever held whole; only the
//! normalised resources are. YAML, and JSON this reader refuses, go through the whole-document
//! path ([`super::parse_dump`], [`super::normalize`]) with the same results and messages.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::normalize::{ListOf, NOT_A_DUMP};
use super::{list_kinds, normalize, parse_dump, Kind, Normalized, Normalizer, Options};

/// One side of a diff, normalised.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub normalized: Normalized,
    /// The kinds a bare list of resources holds (None for a config dump).
    pub list_kinds: Option<BTreeSet<Kind>>,
}

/// Reads a dump from a file, or stdin for `-`; errors are prefixed by the path.
pub fn read_path(path: &Path, opts: &Options) -> Result<Side, String> {
    let named = |e: String| format!("{}: {e}", path.display());
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return match read_json(text.as_bytes(), opts) {
            Ok(side) => side.map_err(named),
            Err(_) => whole(&text, opts).map_err(named),
        };
    }
    let file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
    match read_json(std::io::BufReader::with_capacity(1 << 16, file), opts) {
        Ok(side) => side.map_err(named),
        Err(_) => {
            let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
            whole(&text, opts).map_err(named)
        }
    }
}

/// The whole-document path: YAML or JSON text to a tree, then normalised.
fn whole(text: &str, opts: &Options) -> Result<Side, String> {
    let v = parse_dump(text)?;
    Ok(Side {
        normalized: normalize(&v, opts)?,
        list_kinds: list_kinds(&v),
    })
}

/// Streams JSON from `r` into a normalised side. The outer error is the JSON's (the caller then
/// tries the whole-document path, which also reads YAML); the inner one is about the dump.
pub fn read_json(r: impl Read, opts: &Options) -> Result<Result<Side, String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(r);
    let mut n = Normalizer::new(opts);
    let mut out = Outcome::Dump;
    Top {
        n: &mut n,
        out: &mut out,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(match out {
        Outcome::Dump => Ok(Side {
            normalized: n.finish(),
            list_kinds: None,
        }),
        Outcome::List(items) => {
            let v = Value::Array(items);
            normalize(&v, opts).map(|normalized| Side {
                normalized,
                list_kinds: list_kinds(&v),
            })
        }
        Outcome::NotADump => Err(NOT_A_DUMP.to_string()),
    })
}

/// What the top of the document was.
enum Outcome {
    Dump,
    /// A bare list of resources (small: read whole).
    List(Vec<Value>),
    NotADump,
}

/// Visitor methods for the values a visitor does not expect: each handed to `other` as a
/// `Value` (maps and sequences are written by each visitor).
macro_rules! scalars_to_other {
    () => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
            self.other(Value::Bool(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
            self.other(Value::from(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
            self.other(Value::from(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
            self.other(Value::from(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            self.other(Value::String(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.other(Value::Null)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
            self.other(Value::Null)
        }
    };
}

struct Top<'a, 'o> {
    n: &'a mut Normalizer<'o>,
    out: &'a mut Outcome,
}

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Top<'_, '_> {
    fn other<E>(self, _: Value) -> Result<(), E> {
        *self.out = Outcome::NotADump;
        Ok(())
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a config dump")
    }
    scalars_to_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let items = Vec::<Value>::deserialize(SeqAccessDeserializer::new(seq))?;
        *self.out = Outcome::List(items);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut configs = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "configs" && !configs {
                configs = map.next_value_seed(Configs { n: &mut *self.n })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !configs {
            *self.out = Outcome::NotADump;
        }
        Ok(())
    }
}

/// The `configs` list; `true` when it is a list.
struct Configs<'a, 'o> {
    n: &'a mut Normalizer<'o>,
}

impl<'de> DeserializeSeed<'de> for Configs<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Configs<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of config dump sections")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        IgnoredAny::deserialize(MapAccessDeserializer::new(map))?;
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq
            .next_element_seed(Section { n: &mut *self.n })?
            .is_some()
        {}
        Ok(true)
    }
}

/// One section: its lists are read item by item once its `@type` is known (lists before it are
/// held until then).
struct Section<'a, 'o> {
    n: &'a mut Normalizer<'o>,
}

impl<'de> DeserializeSeed<'de> for Section<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Section<'_, '_> {
    fn other<E>(self, _: Value) -> Result<(), E> {
        self.n.begin_section("");
        self.n.end_section(0);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Section<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a config dump section")
    }
    scalars_to_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny::deserialize(SeqAccessDeserializer::new(seq))?;
        self.other(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut typed = false;
        let mut held: Vec<(String, Value)> = Vec::new();
        let mut keys = 0;
        while let Some(key) = map.next_key::<String>()? {
            keys += 1;
            if key == "@type" && !typed {
                let ty = map.next_value::<Value>()?;
                self.n.begin_section(ty.as_str().unwrap_or(""));
                typed = true;
                for (k, v) in held.drain(..) {
                    list_value(self.n, &k, v);
                }
            } else if !typed {
                held.push((key, map.next_value::<Value>()?));
            } else {
                map.next_value_seed(List {
                    n: &mut *self.n,
                    key: &key,
                })?;
            }
        }
        if !typed {
            self.n.begin_section("");
            for (k, v) in held {
                list_value(self.n, &k, v);
            }
        }
        self.n.end_section(keys);
        Ok(())
    }
}

/// A section's value read whole (it came before the section's `@type`).
fn list_value(n: &mut Normalizer<'_>, key: &str, v: Value) {
    if let Value::Array(items) = v {
        for item in items {
            n.item(key, item);
        }
    }
}

/// The list `key` of the current section: each item into the normaliser (a route
/// configuration split as it is read); lists that are not compared are skipped unread.
struct List<'a, 'o> {
    n: &'a mut Normalizer<'o>,
    key: &'a str,
}

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.n.list(self.key).0 == ListOf::Nothing {
            return d.deserialize_ignored_any(IgnoredAny).map(|_| ());
        }
        d.deserialize_any(self)
    }
}

impl List<'_, '_> {
    fn other<E>(self, _: Value) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of resources")
    }
    scalars_to_other!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        IgnoredAny::deserialize(MapAccessDeserializer::new(map)).map(|_| ())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (of, rank) = self.n.list(self.key);
        if of == ListOf::Routes {
            while seq
                .next_element_seed(RouteItem {
                    n: &mut *self.n,
                    rank,
                })?
                .is_some()
            {}
        } else {
            while let Some(item) = seq.next_element::<Value>()? {
                self.n.item(self.key, item);
            }
        }
        Ok(())
    }
}

/// An item of a route configuration list: only its `route_config` is read.
struct RouteItem<'a, 'o> {
    n: &'a mut Normalizer<'o>,
    rank: u8,
}

impl<'de> DeserializeSeed<'de> for RouteItem<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RouteItem<'_, '_> {
    fn other<E>(self, _: Value) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for RouteItem<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a route configuration entry")
    }
    scalars_to_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny::deserialize(SeqAccessDeserializer::new(seq)).map(|_| ())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "route_config" && !seen {
                seen = true;
                map.next_value_seed(RouteConfig {
                    n: &mut *self.n,
                    rank: self.rank,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A route configuration: its virtual hosts normalised one by one as they are read, the rest
/// kept as the route configuration's own tree.
struct RouteConfig<'a, 'o> {
    n: &'a mut Normalizer<'o>,
    rank: u8,
}

impl<'de> DeserializeSeed<'de> for RouteConfig<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RouteConfig<'_, '_> {
    fn other<E>(self, v: Value) -> Result<(), E> {
        self.n.route_config(self.rank, v);
        Ok(())
    }
}

impl<'de> Visitor<'de> for RouteConfig<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a route configuration")
    }
    scalars_to_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
        self.other(v)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut rc = Map::new();
        // Virtual hosts read before the route configuration's name.
        let mut early: Vec<Value> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "virtual_hosts" {
                let name = rc.get("name").and_then(Value::as_str).map(str::to_string);
                map.next_value_seed(VirtualHosts {
                    n: &mut *self.n,
                    rank: self.rank,
                    route: name,
                    early: &mut early,
                })?;
                // As the whole-document path: the list is not part of the route configuration.
                rc.remove("virtual_hosts");
            } else {
                let v = map.next_value::<Value>()?;
                rc.insert(key, v);
            }
        }
        let name = rc.get("name").and_then(Value::as_str).unwrap_or("");
        let name = name.to_string();
        for vh in early {
            self.n.virtual_host(self.rank, &name, vh);
        }
        self.n.route_config(self.rank, Value::Object(rc));
        Ok(())
    }
}

/// A route configuration's `virtual_hosts`, each normalised as it is read (or held in `early`
/// while the route configuration's name is not known yet).
struct VirtualHosts<'a, 'o> {
    n: &'a mut Normalizer<'o>,
    rank: u8,
    route: Option<String>,
    early: &'a mut Vec<Value>,
}

impl<'de> DeserializeSeed<'de> for VirtualHosts<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl VirtualHosts<'_, '_> {
    fn other<E>(self, _: Value) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for VirtualHosts<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of virtual hosts")
    }
    scalars_to_other!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        IgnoredAny::deserialize(MapAccessDeserializer::new(map)).map(|_| ())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(vh) = seq.next_element::<Value>()? {
            match &self.route {
                Some(route) => self.n.virtual_host(self.rank, route, vh),
                None => self.early.push(vh),
            }
        }
        Ok(())
    }
}

/// A rendered snapshot as a diff side: its dump is written as compact JSON on one thread and read as a
/// stream on this one, through a pipe (the same reader as a dump file; never the whole dump in
/// memory).
pub fn read_snapshot(snapshot: &crate::xds::Snapshot, opts: &Options) -> Result<Side, String> {
    let (r, w) = std::io::pipe().map_err(|e| format!("opening a pipe: {e}"))?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || crate::xds::dump::write_compact_json(snapshot, w));
        let read = read_json(std::io::BufReader::with_capacity(1 << 16, r), opts);
        let wrote = writer
            .join()
            .map_err(|_| "writing the rendered dump panicked".to_string())?;
        // A reader that stopped early closed the pipe: its own error is the one to report.
        let side = read.map_err(|e| format!("reading the rendered dump: {e}"))?;
        wrote.map_err(|e| format!("writing the rendered dump: {e}"))?;
        side
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The stream reader and the whole-document path give the same resources and notes.
    fn same_as_whole(v: &Value, opts: &Options) {
        let text = serde_json::to_string(v).unwrap();
        let streamed = read_json(text.as_bytes(), opts).unwrap();
        let whole = whole(&text, opts);
        match (streamed, whole) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.normalized.resources, b.normalized.resources, "{text}");
                assert_eq!(a.normalized.notes, b.normalized.notes, "{text}");
                assert_eq!(a.list_kinds, b.list_kinds, "{text}");
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("{text}: streamed {a:?}, whole {b:?}"),
        }
    }

    #[test]
    fn streaming_equals_the_whole_document_path() {
        let p = "type.googleapis.com/envoy.admin.v3.";
        let dump = json!({"configs": [
            {"@type": format!("{p}BootstrapConfigDump"), "bootstrap": {"node": {"id": "x"}}},
            {"@type": format!("{p}ClustersConfigDump"),
             "static_clusters": [{"cluster": {"name": "xds-grpc", "type": "EDS"}}],
             "dynamic_warming_clusters": [{"cluster": {"name": "c", "type": "EDS",
                "connect_timeout": "1.500s"}}],
             "dynamic_active_clusters": [{"cluster": {"name": "c", "type": "EDS",
                "connect_timeout": "10s"}}, {"cluster": {"name": "d", "type": "STATIC"}}]},
            {"dynamic_listeners": [{"name": "l", "active_state": {"listener": {"name": "l"}}},
                {"name": "bad", "error_state": {"details": "nope"}}],
             "@type": format!("{p}ListenersConfigDump")},
            {"@type": format!("{p}RoutesConfigDump"), "dynamic_route_configs": [
                {"version_info": "1", "route_config": {"virtual_hosts": [
                    {"name": "early", "domains": ["b", "a"]}], "name": "http.80",
                    "validate_clusters": false}},
                {"route_config": {"name": "http.81", "virtual_hosts": [
                    {"name": "h:81", "routes": [{"match": {"prefix": "/"}}]}]}},
                {"route_config": "odd"}, 7]},
            {"@type": format!("{p}EndpointsConfigDump"), "dynamic_endpoint_configs": [
                {"endpoint_config": {"cluster_name": "c", "policy": {"overprovisioning_factor": 140}}},
                {"endpoint_config": {"cluster_name": "xds-grpc"}},
                {"endpoint_config": {"cluster_name": "d"}}]},
            {"@type": format!("{p}SecretsConfigDump"), "dynamic_active_secrets": [
                {"name": "s", "secret": {"tls_certificate": {"private_key": "k"}}}]},
            {"@type": format!("{p}ScopedRoutesConfigDump")},
            {"@type": format!("{p}ClustersConfigDump")},
            {"@type": format!("{p}Unknown"), "x": [1]},
            "not a section"
        ]});
        same_as_whole(&dump, &Options::default());
        same_as_whole(
            &dump,
            &Options {
                keep_static: true,
                skip: vec!["cluster:d".parse().unwrap()],
                ..Default::default()
            },
        );
        same_as_whole(
            &json!([{"name": "c", "connect_timeout": "1s"}]),
            &Options::default(),
        );
        same_as_whole(&json!({"configs": {}}), &Options::default());
        same_as_whole(&json!({"other": 1}), &Options::default());
        same_as_whole(&json!(3), &Options::default());
        assert!(read_json(&b"configs: []\n"[..], &Options::default()).is_err());
    }
}
