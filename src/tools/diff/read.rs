//! Reading one side of a diff as a stream: a config dump's JSON is walked by a [`Scanner`] and
//! parsed section by section and item by item (each item from its own slice) straight into a
//! [`Normalizer`] (a route configuration's virtual hosts one by one), so neither the dump's text
//! nor its tree is ever held whole; only the normalised resources are. YAML, and JSON this reader refuses, go through the whole-document
//! path ([`super::parse_dump`], [`super::normalize`]) with the same results and messages.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::scan::{Scanner, Start};

use super::normalize::{ListOf, NOT_A_DUMP};
use super::{list_kinds, normalize, parse_dump, Kind, Normalized, Normalizer, Options, Pool};

/// One side of a diff, normalised.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub normalized: Normalized,
    /// The kinds a bare list of resources holds (None for a config dump).
    pub list_kinds: Option<BTreeSet<Kind>>,
}

/// Reads a dump from a file, or stdin for `-`, through the diff's `pool` if any (see
/// [`Normalizer::sharing`]); errors are prefixed by the path.
pub fn read_path(path: &Path, opts: &Options, pool: Option<&Pool>) -> Result<Side, String> {
    let named = |e: String| format!("{}: {e}", path.display());
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return match read_json_in(text.as_bytes(), opts, pool) {
            Ok(side) => side.map_err(named),
            Err(_) => whole(&text, opts).map_err(named),
        };
    }
    let file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
    match read_json_in(file, opts, pool) {
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
pub fn read_json(r: impl Read, opts: &Options) -> Result<Result<Side, String>, String> {
    read_json_in(r, opts, None)
}

/// [`read_json`] through the diff's `pool`: each resource equal to the other side's shares
/// its text ([`Normalizer::sharing`]).
fn read_json_in(
    r: impl Read,
    opts: &Options,
    pool: Option<&Pool>,
) -> Result<Result<Side, String>, String> {
    let mut s = Scanner::new(r);
    let mut n = Normalizer::sharing(opts, pool);
    let out = top(&mut s, &mut n)?;
    s.end()?;
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

/// The document: a dump's first `configs` list is read section by section; anything else is
/// skipped.
fn top<R: Read>(s: &mut Scanner<R>, n: &mut Normalizer<'_>) -> Result<Outcome, String> {
    match s.start()? {
        Start::Array => Ok(Outcome::List(s.value()?)),
        Start::Scalar => s.skip().map(|()| Outcome::NotADump),
        Start::Object => {
            let mut at = s.begin_object()?;
            let mut configs = false;
            while let Some(key) = s.next_key(&mut at)? {
                if key == "configs" && !configs {
                    configs = sections(s, n)?;
                } else {
                    s.skip()?;
                }
            }
            Ok(if configs {
                Outcome::Dump
            } else {
                Outcome::NotADump
            })
        }
    }
}

/// The `configs` list; `true` when it is a list.
fn sections<R: Read>(s: &mut Scanner<R>, n: &mut Normalizer<'_>) -> Result<bool, String> {
    if s.start()? != Start::Array {
        return s.skip().map(|()| false);
    }
    let mut at = s.begin_array()?;
    while s.next_item(&mut at)? {
        section(s, n)?;
    }
    Ok(true)
}

/// One section: its lists are read item by item once its `@type` is known (lists before it are
/// held until then).
fn section<R: Read>(s: &mut Scanner<R>, n: &mut Normalizer<'_>) -> Result<(), String> {
    if s.start()? != Start::Object {
        s.skip()?;
        n.begin_section("");
        n.end_section(0);
        return Ok(());
    }
    let mut at = s.begin_object()?;
    let mut typed = false;
    let mut held: Vec<(String, Value)> = Vec::new();
    let mut keys = 0;
    while let Some(key) = s.next_key(&mut at)? {
        keys += 1;
        if key == "@type" && !typed {
            let ty: Value = s.value()?;
            n.begin_section(ty.as_str().unwrap_or(""));
            typed = true;
            for (k, v) in held.drain(..) {
                list_value(n, &k, v);
            }
        } else if !typed {
            held.push((key, s.value()?));
        } else {
            list(s, n, &key)?;
        }
    }
    if !typed {
        n.begin_section("");
        for (k, v) in held {
            list_value(n, &k, v);
        }
    }
    n.end_section(keys);
    Ok(())
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
/// configuration split as it is read); lists that are not compared are skipped.
fn list<R: Read>(s: &mut Scanner<R>, n: &mut Normalizer<'_>, key: &str) -> Result<(), String> {
    let (of, rank) = n.list(key);
    if of == ListOf::Nothing || s.start()? != Start::Array {
        return s.skip();
    }
    let mut at = s.begin_array()?;
    while s.next_item(&mut at)? {
        if of == ListOf::Routes {
            route_item(s, n, rank)?;
        } else {
            let item: Value = s.value()?;
            n.item(key, item);
        }
    }
    Ok(())
}

/// An item of a route configuration list: only its first `route_config` is read.
fn route_item<R: Read>(s: &mut Scanner<R>, n: &mut Normalizer<'_>, rank: u8) -> Result<(), String> {
    if s.start()? != Start::Object {
        return s.skip();
    }
    let mut at = s.begin_object()?;
    let mut seen = false;
    while let Some(key) = s.next_key(&mut at)? {
        if key == "route_config" && !seen {
            seen = true;
            route_config(s, n, rank)?;
        } else {
            s.skip()?;
        }
    }
    Ok(())
}

/// A route configuration: its virtual hosts normalised one by one as they are read, the rest
/// kept as the route configuration's own tree.
fn route_config<R: Read>(
    s: &mut Scanner<R>,
    n: &mut Normalizer<'_>,
    rank: u8,
) -> Result<(), String> {
    if s.start()? != Start::Object {
        let v: Value = s.value()?;
        n.route_config(rank, v);
        return Ok(());
    }
    let mut at = s.begin_object()?;
    let mut rc = Map::new();
    // Virtual hosts read before the route configuration's name.
    let mut early: Vec<Value> = Vec::new();
    while let Some(key) = s.next_key(&mut at)? {
        if key == "virtual_hosts" {
            let route = rc.get("name").and_then(Value::as_str).map(str::to_string);
            virtual_hosts(s, n, rank, route.as_deref(), &mut early)?;
            // As the whole-document path: the list is not part of the route configuration.
            rc.remove("virtual_hosts");
        } else {
            let v: Value = s.value()?;
            rc.insert(key, v);
        }
    }
    let name = rc.get("name").and_then(Value::as_str).unwrap_or("");
    let name = name.to_string();
    for vh in early {
        n.virtual_host(rank, &name, vh);
    }
    n.route_config(rank, Value::Object(rc));
    Ok(())
}

/// A route configuration's `virtual_hosts`, each normalised as it is read (or held in `early`
/// while the route configuration's name is not known yet).
fn virtual_hosts<R: Read>(
    s: &mut Scanner<R>,
    n: &mut Normalizer<'_>,
    rank: u8,
    route: Option<&str>,
    early: &mut Vec<Value>,
) -> Result<(), String> {
    if s.start()? != Start::Array {
        return s.skip();
    }
    let mut at = s.begin_array()?;
    while s.next_item(&mut at)? {
        let vh: Value = s.value()?;
        match route {
            Some(route) => n.virtual_host(rank, route, vh),
            None => early.push(vh),
        }
    }
    Ok(())
}

/// A rendered snapshot as a diff side: its dump is written as compact JSON on one thread and read as a
/// stream on this one, through a pipe (the same reader as a dump file; never the whole dump in
/// memory). Read through the diff's `pool`, the resources equal to the other side's cost no
/// text of their own.
pub fn read_snapshot(
    snapshot: &crate::xds::Snapshot,
    opts: &Options,
    pool: Option<&Pool>,
) -> Result<Side, String> {
    let (r, w) = std::io::pipe().map_err(|e| format!("opening a pipe: {e}"))?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || crate::xds::dump::write_compact_json(snapshot, w));
        let read = read_json_in(r, opts, pool);
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

    /// Sides read through one pool hold the same resources as sides read alone, whichever
    /// is read first; the resources equal on both share one text, the changed ones keep their
    /// own.
    #[test]
    fn sides_read_through_one_pool_share_equal_text_only() {
        let p = "type.googleapis.com/envoy.admin.v3.";
        let dump = |timeout: &str| {
            json!({"configs": [{"@type": format!("{p}ClustersConfigDump"),
                "dynamic_active_clusters": [
                    {"cluster": {"name": "same", "type": "STRICT_DNS"}},
                    {"cluster": {"name": "changed", "connect_timeout": timeout}}]}]})
            .to_string()
        };
        let opts = Options::default();
        let alone = |t: &str| read_json(dump(t).as_bytes(), &opts).unwrap().unwrap();
        let key = |name: &str| (Kind::Cluster, name.to_string());
        for first in ["1s", "2s"] {
            let second = if first == "1s" { "2s" } else { "1s" };
            let pool = Pool::default();
            let read = |t: &str| {
                read_json_in(dump(t).as_bytes(), &opts, Some(&pool))
                    .unwrap()
                    .unwrap()
            };
            let (a, b) = (read(first), read(second));
            assert_eq!(a.normalized.resources, alone(first).normalized.resources);
            assert_eq!(b.normalized.resources, alone(second).normalized.resources);
            let (a, b) = (&a.normalized.resources, &b.normalized.resources);
            assert!(std::sync::Arc::ptr_eq(
                &a[&key("same")].0,
                &b[&key("same")].0
            ));
            assert!(!std::sync::Arc::ptr_eq(
                &a[&key("changed")].0,
                &b[&key("changed")].0
            ));
            assert_ne!(a[&key("changed")], b[&key("changed")]);
        }
    }
}
