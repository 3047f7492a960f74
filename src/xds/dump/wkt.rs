//! The well-known types' own JSON mappings, as prost-reflect's serializer writes them: each is
//! decoded from its bytes by prost (`prost-types`, or prost's own wrapper impls: the same
//! decoding prost-reflect's `transcode_to` ends in) and written with the same serializer calls.

use base64::{display::Base64Display, prelude::BASE64_STANDARD};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};

use super::json::AnyJson;
use super::schema::{record, Wkt};

/// prost-reflect's bounds (`check_duration`, `check_timestamp`).
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

fn decode<M: prost::Message + Default, E: serde::ser::Error>(bytes: &[u8]) -> Result<M, E> {
    M::decode(bytes).map_err(|e| E::custom(format!("error decoding: {e}")))
}

/// A `double` field: a finite number, else its name.
pub(super) fn double<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(v)
    } else if v == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if v == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_str("NaN")
    }
}

/// A `float` field: a finite number, else its name.
pub(super) fn float<S: Serializer>(v: f32, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f32(v)
    } else if v == f32::INFINITY {
        s.serialize_str("Infinity")
    } else if v == f32::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_str("NaN")
    }
}

/// A well-known type's value.
pub(super) fn serialize<S: Serializer>(
    w: Wkt,
    bytes: &[u8],
    s: S,
    depth: u32,
) -> Result<S::Ok, S::Error> {
    match w {
        Wkt::Any => {
            let (type_url, value) = any_parts(bytes).map_err(S::Error::custom)?;
            serde::Serialize::serialize(
                &AnyJson {
                    type_url,
                    value,
                    depth,
                },
                s,
            )
        }
        Wkt::Timestamp => {
            let t: prost_types::Timestamp = decode(bytes)?;
            if t.seconds < MIN_TIMESTAMP_SECONDS || MAX_TIMESTAMP_SECONDS < t.seconds {
                return Err(S::Error::custom("timestamp out of range"));
            }
            s.collect_str(&t)
        }
        Wkt::Duration => {
            let d: prost_types::Duration = decode(bytes)?;
            if d.seconds.unsigned_abs() > MAX_DURATION_SECONDS
                || d.nanos.unsigned_abs() > MAX_DURATION_NANOS
            {
                return Err(S::Error::custom("duration out of range"));
            }
            s.collect_str(&d)
        }
        Wkt::Float => s.serialize_f32(decode::<f32, _>(bytes)?),
        Wkt::Double => s.serialize_f64(decode::<f64, _>(bytes)?),
        Wkt::Int32 => s.serialize_i32(decode::<i32, _>(bytes)?),
        Wkt::Int64 => s.collect_str(&decode::<i64, _>(bytes)?),
        Wkt::UInt32 => s.serialize_u32(decode::<u32, _>(bytes)?),
        Wkt::UInt64 => s.collect_str(&decode::<u64, _>(bytes)?),
        Wkt::Bool => s.serialize_bool(decode::<bool, _>(bytes)?),
        Wkt::String => s.serialize_str(&decode::<String, _>(bytes)?),
        Wkt::Bytes => {
            let b: Vec<u8> = decode(bytes)?;
            s.collect_str(&Base64Display::new(&b, &BASE64_STANDARD))
        }
        Wkt::FieldMask => {
            let m: prost_types::FieldMask = decode(bytes)?;
            s.serialize_str(&field_mask(&m).map_err(S::Error::custom)?)
        }
        Wkt::Struct => structure(&decode(bytes)?, s),
        Wkt::ListValue => list(&decode(bytes)?, s),
        Wkt::Value => value(&decode(bytes)?, s),
        Wkt::Empty => s.collect_map(std::iter::empty::<((), ())>()),
    }
}

/// An `Any`'s type URL and value (the last record of each wins).
fn any_parts(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let (mut url, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut at = 0;
    while at < bytes.len() {
        let (number, wire, _, data) = record(bytes, &mut at)?;
        match (number, wire) {
            (1, 2) => {
                std::str::from_utf8(data).map_err(|e| format!("error decoding: {e}"))?;
                url = data;
            }
            (2, 2) => value = data,
            (1 | 2, w) => return Err(format!("error decoding: invalid wire type {w}")),
            _ => {}
        }
    }
    let url = std::str::from_utf8(url).map_err(|e| format!("error decoding: {e}"))?;
    Ok((url, value))
}

/// A FieldMask's paths in lowerCamelCase, joined by commas.
fn field_mask(m: &prost_types::FieldMask) -> Result<String, &'static str> {
    let mut out = String::new();
    for path in &m.paths {
        if !out.is_empty() {
            out.push(',');
        }
        for (i, part) in path.split('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            camel(&mut out, part).ok_or("cannot roundtrip field name through camelcase")?;
        }
    }
    Ok(out)
}

/// snake_case to lowerCamelCase; `None` when it would not read back.
fn camel(dst: &mut String, src: &str) -> Option<()> {
    let mut upper_next = false;
    for ch in src.chars() {
        if ch.is_ascii_uppercase() {
            return None;
        }
        if upper_next {
            let upper = ch.to_ascii_uppercase();
            if upper == ch {
                return None;
            }
            dst.push(upper);
            upper_next = false;
        } else if ch == '_' {
            upper_next = true;
        } else {
            dst.push(ch);
        }
    }
    Some(())
}

struct ValueJson<'a>(&'a prost_types::Value);

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        value(self.0, s)
    }
}

fn value<S: Serializer>(v: &prost_types::Value, s: S) -> Result<S::Ok, S::Error> {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => s.serialize_none(),
        Some(Kind::BoolValue(b)) => s.serialize_bool(*b),
        Some(Kind::NumberValue(n)) if n.is_finite() => s.serialize_f64(*n),
        Some(Kind::NumberValue(_)) => Err(S::Error::custom(
            "cannot serialize non-finite double in google.protobuf.Value",
        )),
        Some(Kind::StringValue(t)) => s.serialize_str(t),
        Some(Kind::ListValue(l)) => list(l, s),
        Some(Kind::StructValue(m)) => structure(m, s),
    }
}

fn structure<S: Serializer>(m: &prost_types::Struct, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(m.fields.len()))?;
    for (k, v) in &m.fields {
        map.serialize_entry(k, &ValueJson(v))?;
    }
    map.end()
}

fn list<S: Serializer>(l: &prost_types::ListValue, s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(l.values.len()))?;
    for v in &l.values {
        seq.serialize_element(&ValueJson(v))?;
    }
    seq.end()
}
