//! Proto3 JSON written straight from a message's wire bytes and the descriptors ([`schema`]):
//! no `DynamicMessage`, no tree; each value goes to the serializer as it is read. It makes the
//! same serializer calls prost-reflect's serializer makes for the message decoded (with proto
//! field names and default fields skipped), so every serializer (pretty JSON, YAML, `Value`)
//! writes the same bytes; the tests hold the two together on every resource of the goldens and
//! of a synthetic cluster, and on random messages.
//!
//! Decoding follows prost-reflect's: a singular scalar's last record wins, a singular message's
//! records merge (their payloads concatenated), repeated scalars packed or not, the last member
//! set of a oneof wins, a map entry's last key wins; unknown fields are skipped. The one
//! difference: a map of several entries is written in key order (prost-reflect's is a `HashMap`'s).

use std::borrow::Cow;

use base64::{display::Base64Display, prelude::BASE64_STANDARD};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use super::schema::{fixed, record, records, schema, varint, FieldPlan, Rec, Rep, Schema, Ty};
use super::wkt;

/// How deep messages may nest (prost's decoding limit).
const DEPTH: u32 = 100;

/// An `Any`'s content (its type URL and value) as its JSON mapping: `{"@type", ...fields}`, or
/// `{"@type", "value"}` for a well-known type.
pub(super) struct AnyJson<'a> {
    pub type_url: &'a str,
    pub value: &'a [u8],
    pub depth: u32,
}

impl Serialize for AnyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let schema = schema().map_err(S::Error::custom)?;
        let name = self
            .type_url
            .rsplit_once('/')
            .map(|(_, n)| n)
            .ok_or_else(|| {
                S::Error::custom(format!(
                    "unsupported type url '{}': missing at least one '/'",
                    self.type_url
                ))
            })?;
        let msg = schema
            .message(name)
            .ok_or_else(|| S::Error::custom(format!("message '{name}' not found")))?;
        if schema.messages[msg].wkt.is_some() {
            let mut map = s.serialize_map(Some(2))?;
            map.serialize_entry("@type", self.type_url)?;
            map.serialize_entry(
                "value",
                &MessageJson {
                    msg,
                    bytes: self.value,
                    depth: self.depth + 1,
                },
            )?;
            return map.end();
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("@type", self.type_url)?;
        write_fields(&mut map, schema, msg, self.value, self.depth + 1)?;
        map.end()
    }
}

/// One message (by its index in the schema) as JSON.
pub(super) struct MessageJson<'a> {
    pub msg: usize,
    pub bytes: &'a [u8],
    pub depth: u32,
}

impl Serialize for MessageJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let schema = schema().map_err(S::Error::custom)?;
        if self.depth > DEPTH {
            return Err(S::Error::custom("recursion limit reached"));
        }
        if let Some(w) = schema.messages[self.msg].wkt {
            return wkt::serialize(w, self.bytes, s, self.depth);
        }
        let mut map = s.serialize_map(None)?;
        write_fields(&mut map, schema, self.msg, self.bytes, self.depth)?;
        map.end()
    }
}

fn custom<E: serde::ser::Error>(schema: &Schema, msg: usize, e: impl std::fmt::Display) -> E {
    E::custom(format!("decoding {}: {e}", schema.messages[msg].full_name))
}

/// Checks a record's wire type against its field's type.
fn check_wire<E: serde::ser::Error>(
    schema: &Schema,
    msg: usize,
    f: &FieldPlan,
    ty: Ty,
    wire: u8,
) -> Result<(), E> {
    if wire == ty.wire() {
        Ok(())
    } else {
        Err(custom(
            schema,
            msg,
            format!("invalid wire type {wire} for field {}", f.name),
        ))
    }
}

/// Writes the present fields of a message, in field-number order, into `map`.
fn write_fields<M: SerializeMap>(
    map: &mut M,
    schema: &'static Schema,
    msg: usize,
    bytes: &[u8],
    depth: u32,
) -> Result<(), M::Error> {
    let plan = &schema.messages[msg];
    let recs = records(plan, bytes).map_err(|e| custom(schema, msg, e))?;
    // Per field of a oneof: the position of its last record. The member whose record came last
    // is the one set; a record of another member before it cleared it, so only its records after
    // the last of another member count.
    let mut oneofs: Vec<(u32, u32, u32)> = Vec::new();
    for g in recs.chunk_by(|a, b| a.field == b.field) {
        if let Some(o) = plan.fields[g[0].field as usize].oneof {
            oneofs.push((o, g[0].field, g[g.len() - 1].pos));
        }
    }
    for g in recs.chunk_by(|a, b| a.field == b.field) {
        let f = &plan.fields[g[0].field as usize];
        let mut g = g;
        if let Some(o) = f.oneof {
            let members = oneofs.iter().filter(|(oo, _, _)| *oo == o);
            let winner = members.clone().max_by_key(|(_, _, pos)| *pos);
            if winner.map(|(_, field, _)| *field) != Some(g[0].field) {
                continue;
            }
            if let Some(cut) = members
                .filter(|(_, field, _)| *field != g[0].field)
                .map(|(_, _, pos)| *pos)
                .max()
            {
                let first = g.iter().position(|r| r.pos > cut).unwrap_or(g.len());
                g = &g[first..];
            }
        }
        match f.rep {
            Rep::Single => single(map, schema, msg, f, g, depth)?,
            Rep::List => list(map, schema, msg, f, g, depth)?,
            Rep::Map(k, v) => write_map(map, schema, msg, f, (k, v), g, depth)?,
        }
    }
    Ok(())
}

fn single<M: SerializeMap>(
    map: &mut M,
    schema: &'static Schema,
    msg: usize,
    f: &FieldPlan,
    g: &[Rec<'_>],
    depth: u32,
) -> Result<(), M::Error> {
    let Some(last) = g.last() else {
        return Ok(());
    };
    for r in g {
        check_wire(schema, msg, f, f.ty, r.wire)?;
        if f.ty == Ty::String {
            std::str::from_utf8(r.data).map_err(|e| custom(schema, msg, e))?;
        }
    }
    if let Ty::Message(_) = f.ty {
        let data: Cow<[u8]> = if g.len() == 1 {
            Cow::Borrowed(last.data)
        } else {
            Cow::Owned(g.iter().flat_map(|r| r.data.iter().copied()).collect())
        };
        return map.serialize_entry(
            &f.name,
            &Scalar {
                ty: f.ty,
                val: 0,
                data: &data,
                depth,
            },
        );
    }
    if !f.presence && is_default(f.ty, last.val, last.data) {
        return Ok(());
    }
    map.serialize_entry(
        &f.name,
        &Scalar {
            ty: f.ty,
            val: last.val,
            data: last.data,
            depth,
        },
    )
}

/// A proto3 field without presence is written only when it is not its type's default.
fn is_default(ty: Ty, val: u64, data: &[u8]) -> bool {
    match ty {
        Ty::Double => f64::from_bits(val) == 0.0,
        Ty::Float => f32::from_bits(val as u32) == 0.0,
        Ty::Int32 | Ty::Uint32 | Ty::Sint32 | Ty::Fixed32 | Ty::Sfixed32 | Ty::Enum(_) => {
            val as u32 == 0
        }
        Ty::Int64 | Ty::Uint64 | Ty::Sint64 | Ty::Fixed64 | Ty::Sfixed64 | Ty::Bool => val == 0,
        Ty::String | Ty::Bytes => data.is_empty(),
        Ty::Message(_) => false,
    }
}

/// The elements of a repeated field: packed scalars unpacked, each other record one element.
fn elements<'a, E: serde::ser::Error>(
    schema: &Schema,
    msg: usize,
    f: &FieldPlan,
    g: &[Rec<'a>],
) -> Result<Vec<(u64, &'a [u8])>, E> {
    let mut out = Vec::with_capacity(g.len());
    for r in g {
        if r.wire == 2 && f.ty.packable() {
            let mut at = 0;
            while at < r.data.len() {
                let v = match f.ty.wire() {
                    0 => varint(r.data, &mut at),
                    1 => fixed::<8>(r.data, &mut at),
                    _ => fixed::<4>(r.data, &mut at),
                };
                out.push((v.map_err(|e| custom(schema, msg, e))?, &[][..]));
            }
            continue;
        }
        check_wire(schema, msg, f, f.ty, r.wire)?;
        if f.ty == Ty::String {
            std::str::from_utf8(r.data).map_err(|e| custom(schema, msg, e))?;
        }
        out.push((r.val, r.data));
    }
    Ok(out)
}

fn list<M: SerializeMap>(
    map: &mut M,
    schema: &'static Schema,
    msg: usize,
    f: &FieldPlan,
    g: &[Rec<'_>],
    depth: u32,
) -> Result<(), M::Error> {
    let items = elements(schema, msg, f, g)?;
    if items.is_empty() {
        return Ok(());
    }
    map.serialize_entry(
        &f.name,
        &List {
            ty: f.ty,
            items: &items,
            depth,
        },
    )
}

struct List<'a> {
    ty: Ty,
    items: &'a [(u64, &'a [u8])],
    depth: u32,
}

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for (val, data) in self.items {
            seq.serialize_element(&Scalar {
                ty: self.ty,
                val: *val,
                data,
                depth: self.depth,
            })?;
        }
        seq.end()
    }
}

/// A map key, ordered as its type orders.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    I(i64),
    U(u64),
    B(bool),
    S(&'a str),
}

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::I(v) => s.collect_str(v),
            Key::U(v) => s.collect_str(v),
            Key::B(v) => s.collect_str(v),
            Key::S(v) => s.serialize_str(v),
        }
    }
}

fn key(ty: Ty, val: u64, data: &[u8]) -> Result<Key<'_>, String> {
    Ok(match ty {
        Ty::Int32 | Ty::Sfixed32 => Key::I(i64::from(val as u32 as i32)),
        Ty::Sint32 => Key::I(i64::from(zigzag32(val))),
        Ty::Int64 | Ty::Sfixed64 => Key::I(val as i64),
        Ty::Sint64 => Key::I(zigzag64(val)),
        Ty::Uint32 | Ty::Fixed32 => Key::U(u64::from(val as u32)),
        Ty::Uint64 | Ty::Fixed64 => Key::U(val),
        Ty::Bool => Key::B(val != 0),
        Ty::String => Key::S(std::str::from_utf8(data).map_err(|e| e.to_string())?),
        other => return Err(format!("invalid map key type {other:?}")),
    })
}

fn write_map<M: SerializeMap>(
    map: &mut M,
    schema: &'static Schema,
    msg: usize,
    f: &FieldPlan,
    (kt, vt): (Ty, Ty),
    g: &[Rec<'_>],
    depth: u32,
) -> Result<(), M::Error> {
    let err = |e: String| custom::<M::Error>(schema, msg, format!("map {}: {e}", f.name));
    let mut entries: Vec<(Key, u64, Cow<[u8]>)> = Vec::with_capacity(g.len());
    for r in g {
        check_wire(schema, msg, f, f.ty, r.wire)?;
        let (mut k, mut kd) = (0u64, &[][..]);
        let (mut v, mut vd): (u64, Cow<[u8]>) = (0, Cow::Borrowed(&[]));
        let mut at = 0;
        while at < r.data.len() {
            let (number, wire, val, data) = record(r.data, &mut at).map_err(err)?;
            let expect = match number {
                1 => kt.wire(),
                2 => vt.wire(),
                _ => continue,
            };
            if wire != expect {
                return Err(err(format!(
                    "invalid wire type {wire} for entry field {number}"
                )));
            }
            if number == 1 {
                (k, kd) = (val, data);
            } else if let Ty::Message(_) = vt {
                vd = if vd.is_empty() {
                    Cow::Borrowed(data)
                } else {
                    Cow::Owned([&vd[..], data].concat())
                };
            } else {
                if vt == Ty::String {
                    std::str::from_utf8(data).map_err(|e| err(e.to_string()))?;
                }
                (v, vd) = (val, Cow::Borrowed(data));
            }
        }
        entries.push((key(kt, k, kd).map_err(err)?, v, vd));
    }
    // The last entry of a key wins; sorted, so the output does not depend on the wire order.
    entries.reverse();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    map.serialize_entry(
        &f.name,
        &MapJson {
            ty: vt,
            entries: &entries,
            depth,
        },
    )
}

struct MapJson<'a> {
    ty: Ty,
    entries: &'a [(Key<'a>, u64, Cow<'a, [u8]>)],
    depth: u32,
}

impl Serialize for MapJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, val, data) in self.entries {
            map.serialize_entry(
                k,
                &Scalar {
                    ty: self.ty,
                    val: *val,
                    data,
                    depth: self.depth,
                },
            )?;
        }
        map.end()
    }
}

fn zigzag32(val: u64) -> i32 {
    let v = val as u32;
    ((v >> 1) as i32) ^ (-((v & 1) as i32))
}

fn zigzag64(val: u64) -> i64 {
    ((val >> 1) as i64) ^ (-((val & 1) as i64))
}

/// One value of a field: a varint's or fixed's bits in `val`, a length-delimited payload in
/// `data`.
struct Scalar<'a> {
    ty: Ty,
    val: u64,
    data: &'a [u8],
    depth: u32,
}

impl Serialize for Scalar<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let val = self.val;
        match self.ty {
            Ty::Double => wkt::double(f64::from_bits(val), s),
            Ty::Float => wkt::float(f32::from_bits(val as u32), s),
            Ty::Int32 | Ty::Sfixed32 => s.serialize_i32(val as u32 as i32),
            Ty::Sint32 => s.serialize_i32(zigzag32(val)),
            Ty::Int64 | Ty::Sfixed64 => s.collect_str(&(val as i64)),
            Ty::Sint64 => s.collect_str(&zigzag64(val)),
            Ty::Uint32 | Ty::Fixed32 => s.serialize_u32(val as u32),
            Ty::Uint64 | Ty::Fixed64 => s.collect_str(&val),
            Ty::Bool => s.serialize_bool(val != 0),
            Ty::String => {
                s.serialize_str(std::str::from_utf8(self.data).map_err(S::Error::custom)?)
            }
            Ty::Bytes => s.collect_str(&Base64Display::new(self.data, &BASE64_STANDARD)),
            Ty::Enum(e) => {
                let schema = schema().map_err(S::Error::custom)?;
                let plan = &schema.enums[e];
                let n = val as u32 as i32;
                if plan.null {
                    s.serialize_none()
                } else if let Some(name) = plan.name(n) {
                    s.serialize_str(name)
                } else {
                    s.serialize_i32(n)
                }
            }
            Ty::Message(msg) => MessageJson {
                msg,
                bytes: self.data,
                depth: self.depth + 1,
            }
            .serialize(s),
        }
    }
}
