//! The wire writer ([`super::json`]) against prost-reflect's serializer, the path the dump took
//! before (kept here as the reference): the same text, pretty JSON and YAML, for every resource
//! of the golden inputs and of a synthetic cluster (both route layouts), and for random
//! messages of every type of the Envoy API (merged, with unknown fields, packed and unpacked).

use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, SerializeOptions, Value,
};
use serde::Serialize;

use super::json::AnyJson;
use super::pool;
use crate::translate::{self, Options, RouteLayout};
use crate::xds::Snapshot;

/// prost-reflect's JSON of an `Any` holding `bytes` (the dump's conversion before the wire
/// writer), written by `to_text`.
fn reference<T>(
    type_url: &str,
    bytes: &[u8],
    to_text: impl Fn(&DynamicMessage, &SerializeOptions) -> Result<T, String>,
) -> Result<T, String> {
    let any = pool()?
        .get_message_by_name("google.protobuf.Any")
        .ok_or("no Any")?;
    let mut msg = DynamicMessage::new(any);
    msg.set_field_by_name("type_url", Value::String(type_url.to_string()));
    msg.set_field_by_name("value", Value::Bytes(bytes::Bytes::copy_from_slice(bytes)));
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    to_text(&msg, &options)
}

fn reference_pretty(type_url: &str, bytes: &[u8]) -> Result<String, String> {
    reference(type_url, bytes, |m, o| {
        let mut out = serde_json::Serializer::pretty(Vec::new());
        m.serialize_with_options(&mut out, o)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out.into_inner()).map_err(|e| e.to_string())
    })
}

fn reference_yaml(type_url: &str, bytes: &[u8]) -> Result<String, String> {
    reference(type_url, bytes, |m, o| {
        struct With<'a>(&'a DynamicMessage, &'a SerializeOptions);
        impl Serialize for With<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_with_options(s, self.1)
            }
        }
        serde_saphyr::to_string(&With(m, o)).map_err(|e| e.to_string())
    })
}

fn pretty(type_url: &str, bytes: &[u8]) -> Result<String, String> {
    serde_json::to_string_pretty(&AnyJson {
        type_url,
        value: bytes,
        depth: 0,
    })
    .map_err(|e| e.to_string())
}

fn yaml(type_url: &str, bytes: &[u8]) -> Result<String, String> {
    serde_saphyr::to_string(&AnyJson {
        type_url,
        value: bytes,
        depth: 0,
    })
    .map_err(|e| e.to_string())
}

/// Every resource of the snapshot is written as the reference writes it (JSON; YAML too when
/// `yaml_too`); returns how many were compared.
fn same_as_reference(snapshot: &Snapshot, yaml_too: bool) -> usize {
    let mut n = 0;
    for map in snapshot.resources.values() {
        for (name, r) in map {
            let (url, bytes) = (&r.body.type_url, &r.body.value);
            let ours = pretty(url, bytes).expect("writes");
            assert_eq!(
                ours,
                reference_pretty(url, bytes).expect("reference"),
                "{name}"
            );
            if yaml_too {
                assert_eq!(yaml(url, bytes), reference_yaml(url, bytes), "{name}");
            }
            n += 1;
        }
    }
    n
}

fn render_all(inputs: &crate::state::Inputs, opts: &Options, yaml_too: bool) -> usize {
    let mut n = 0;
    for gw in translate::gateways(inputs, opts) {
        let rendered = crate::pipeline::render_gateway(inputs, opts, &gw.id()).expect("render");
        n += same_as_reference(&rendered.snapshot, yaml_too);
    }
    n
}

#[test]
fn every_golden_resource_is_written_as_prost_reflect_writes_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut n = 0;
    for (case, opts) in crate::pipeline::golden_cases(&root) {
        let (inputs, _) = crate::pipeline::load(&case.join("input"));
        n += render_all(&inputs, &opts, true);
    }
    assert!(n > 100, "compared only {n} resources");
}

#[test]
fn every_synthetic_cluster_resource_is_written_as_prost_reflect_writes_it() {
    use crate::tools::synth::{Form, Synth};
    let mut n = 0;
    for form in [Form::Route, Form::Virtualservice] {
        let inputs = Synth::new(150, form).inputs();
        for layout in [RouteLayout::Istio, RouteLayout::Scoped] {
            let opts = Options {
                route_layout: layout,
                ..Options::default()
            };
            n += render_all(&inputs, &opts, false);
        }
    }
    assert!(n > 1000, "compared only {n} resources");
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const STRINGS: &[&str] = &[
    "",
    "a",
    "x_y",
    "fooBar",
    "é \" \\ \n\t\u{1}",
    "a.b_c",
    "/p/",
];

/// A random value of a field's kind; `depth` bounds nesting.
fn value(rng: &mut Rng, kind: &Kind, depth: u32, maps: bool) -> Value {
    match kind {
        Kind::Double => {
            Value::F64(rng.pick(&[0.0, -0.0, 1.5, -2e300, 0.1, f64::NAN, f64::INFINITY]))
        }
        Kind::Float => Value::F32(rng.pick(&[0.0, 0.1, -3.25, 1e-7, f32::NAN, f32::NEG_INFINITY])),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(rng.pick(&[0, 1, -1, 300, i32::MIN, i32::MAX]))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(rng.pick(&[0, 7, -7, 1 << 40, i64::MIN, i64::MAX]))
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.pick(&[0, 1, 128, u32::MAX])),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.pick(&[0, 1, 1 << 35, u64::MAX])),
        Kind::Bool => Value::Bool(rng.below(2) == 0),
        Kind::String => Value::String(rng.pick(STRINGS).to_string()),
        Kind::Bytes => Value::Bytes(bytes::Bytes::from(
            (0..rng.below(5))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>(),
        )),
        Kind::Enum(e) => {
            let numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            if numbers.is_empty() || rng.below(8) == 0 {
                Value::EnumNumber(12345)
            } else {
                Value::EnumNumber(rng.pick(&numbers))
            }
        }
        Kind::Message(m) => Value::Message(message(rng, m, depth + 1, maps)),
    }
}

fn map_key(rng: &mut Rng, kind: &Kind) -> MapKey {
    match kind {
        Kind::Bool => MapKey::Bool(rng.below(2) == 0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(rng.pick(&[0, -5, 9])),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(rng.pick(&[0, -5, 9])),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(rng.pick(&[0, 5])),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(rng.pick(&[0, 5])),
        _ => MapKey::String(rng.pick(STRINGS).to_string()),
    }
}

/// A random message: each field set or not; lists of up to three; a map of at most one entry
/// (`maps`), since prost-reflect writes several in a `HashMap`'s order.
fn message(rng: &mut Rng, desc: &MessageDescriptor, depth: u32, maps: bool) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if desc.full_name() == "google.protobuf.Any" && rng.below(4) != 0 {
        let all: Vec<MessageDescriptor> = desc.parent_pool().all_messages().collect();
        let inner = &all[rng.below(all.len() as u64) as usize];
        let payload = message(rng, inner, depth + 1, maps).encode_to_vec();
        let url = format!("type.googleapis.com/{}", inner.full_name());
        msg.set_field_by_name("type_url", Value::String(url));
        msg.set_field_by_name("value", Value::Bytes(payload.into()));
        return msg;
    }
    if depth > 4 {
        return msg;
    }
    let fields: Vec<FieldDescriptor> = desc.fields().collect();
    for f in fields {
        if rng.below(3) == 0 {
            continue;
        }
        let kind = f.kind();
        let v = if f.is_map() {
            if !maps {
                continue;
            }
            let Kind::Message(entry) = &kind else {
                continue;
            };
            let k = map_key(rng, &entry.map_entry_key_field().kind());
            let v = value(rng, &entry.map_entry_value_field().kind(), depth, maps);
            Value::Map([(k, v)].into_iter().collect())
        } else if f.is_list() {
            Value::List(
                (0..rng.below(4))
                    .map(|_| value(rng, &kind, depth, maps))
                    .collect(),
            )
        } else {
            value(rng, &kind, depth, maps)
        };
        msg.set_field(&f, v);
    }
    msg
}

/// Compares the two writers on one encoding: both the same text, or both an error.
fn check(url: &str, bytes: &[u8], what: &str) {
    match (pretty(url, bytes), reference_pretty(url, bytes)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("{what}: ours {a:?}, reference {b:?}"),
    }
}

#[test]
fn random_messages_of_every_type_are_written_as_prost_reflect_writes_them() {
    let pool = pool().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ok = 0;
    for desc in pool.all_messages() {
        if desc.is_map_entry() {
            continue;
        }
        let url = format!("type.googleapis.com/{}", desc.full_name());
        let a = message(&mut rng, &desc, 0, true).encode_to_vec();
        let b = message(&mut rng, &desc, 0, false).encode_to_vec();
        check(&url, &a, &format!("{url} A"));
        // Merged: singular fields replaced or merged, lists appended, oneofs switched.
        check(&url, &[&a[..], &a[..]].concat(), &format!("{url} A+A"));
        check(&url, &[&a[..], &b[..]].concat(), &format!("{url} A+B"));
        // An unknown field (number 1000+) and an unknown group are skipped.
        let mut unknown = a.clone();
        unknown.extend_from_slice(&[0xc0, 0x3e, 0x07, 0xc3, 0x3e, 0x08, 0x01, 0xc4, 0x3e]);
        if desc.get_field(1000).is_none() && desc.get_field(1001).is_none() {
            check(&url, &unknown, &format!("{url} unknown"));
        }
        ok += usize::from(pretty(&url, &a).is_ok());
    }
    assert!(ok > 1000, "only {ok} random messages converted");
}

/// A repeated scalar sent unpacked, packed and both at once reads as one list.
#[test]
fn repeated_scalars_packed_and_unpacked_are_one_list() {
    let pool = pool().unwrap();
    let desc = pool
        .get_message_by_name("envoy.config.route.v3.RetryPolicy")
        .unwrap();
    let f = desc.get_field_by_name("retriable_status_codes").unwrap();
    let n = f.number() as u8;
    let url = "type.googleapis.com/envoy.config.route.v3.RetryPolicy";
    let unpacked = [n << 3, 0xf7, 0x03, n << 3, 0x05];
    let packed = [(n << 3) | 2, 3, 0xf7, 0x03, 0x05];
    for bytes in [
        &unpacked[..],
        &packed[..],
        &[&unpacked[..], &packed[..]].concat(),
    ] {
        check(url, bytes, "retriable_status_codes");
        assert!(pretty(url, bytes).unwrap().contains("503"));
    }
}

#[test]
fn every_sensitive_secret_field_is_redacted_and_certificates_stay() {
    let secret = serde_json::json!({
        "name": "kubernetes://ns/s",
        "tls_certificate": {
            "certificate_chain": {"inline_bytes": "Q0VSVA=="},
            "private_key": {"inline_bytes": "S0VZ"},
            "password": {"inline_string": "hunter2"},
            "pkcs12": {"inline_bytes": "UEsx"}
        },
        "session_ticket_keys": {"keys": [{"inline_bytes": "a2V5MQ=="}]},
        "generic_secret": {"secret": {"inline_string": "token"}}
    });
    let text = super::redact(secret).to_string();
    for leaked in ["S0VZ", "hunter2", "UEsx", "a2V5MQ==", "token"] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
    assert!(text.contains("Q0VSVA=="), "the certificate stays: {text}");
    assert_eq!(text.matches("[redacted]").count(), 5, "{text}");
}
