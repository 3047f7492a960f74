//! What the proto3 JSON writer ([`super::json`]) needs of the descriptor pool, read once: per
//! message its fields in field-number order (the order prost-reflect's serializer writes them),
//! each with its name, type, cardinality, presence and oneof, and per enum its value names; and
//! the wire records of one encoded message, grouped by field.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();

/// The schema of the Envoy API descriptor pool ([`super::pool`]).
pub(super) fn schema() -> Result<&'static Schema, String> {
    SCHEMA
        .get_or_init(|| super::pool().map(Schema::build))
        .as_ref()
        .map_err(|e| e.clone())
}

pub(super) struct Schema {
    pub messages: Vec<MessagePlan>,
    pub enums: Vec<EnumPlan>,
    by_name: HashMap<String, usize>,
}

pub(super) struct MessagePlan {
    pub full_name: String,
    /// A well-known type with its own JSON mapping.
    pub wkt: Option<Wkt>,
    /// Sorted by number.
    pub fields: Vec<FieldPlan>,
}

pub(super) struct FieldPlan {
    pub number: u32,
    pub name: String,
    pub ty: Ty,
    pub rep: Rep,
    /// Written when set, even to its default (message fields, oneof members, proto3 optional).
    pub presence: bool,
    /// The oneof holding it (named by its lowest field number).
    pub oneof: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rep {
    Single,
    List,
    /// A map field: the types of its entries' key and value.
    Map(Ty, Ty),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ty {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(usize),
    Message(usize),
}

impl Ty {
    /// The wire type one value of this type is encoded with.
    pub fn wire(self) -> u8 {
        match self {
            Ty::Double | Ty::Fixed64 | Ty::Sfixed64 => 1,
            Ty::Float | Ty::Fixed32 | Ty::Sfixed32 => 5,
            Ty::String | Ty::Bytes | Ty::Message(_) => 2,
            _ => 0,
        }
    }

    /// Scalars a repeated field may pack into one length-delimited record.
    pub fn packable(self) -> bool {
        !matches!(self, Ty::String | Ty::Bytes | Ty::Message(_))
    }
}

pub(super) struct EnumPlan {
    /// `google.protobuf.NullValue`, written as `null`.
    pub null: bool,
    /// Each number's name as `EnumDescriptor::get_value` gives it, sorted by number.
    pub values: Vec<(i32, String)>,
}

impl EnumPlan {
    pub fn name(&self, number: i32) -> Option<&str> {
        self.values
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| self.values[i].1.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Wkt {
    Any,
    Timestamp,
    Duration,
    Struct,
    Float,
    Double,
    Int32,
    Int64,
    UInt32,
    UInt64,
    Bool,
    String,
    Bytes,
    FieldMask,
    ListValue,
    Value,
    Empty,
}

fn wkt(full_name: &str) -> Option<Wkt> {
    Some(match full_name {
        "google.protobuf.Any" => Wkt::Any,
        "google.protobuf.Timestamp" => Wkt::Timestamp,
        "google.protobuf.Duration" => Wkt::Duration,
        "google.protobuf.Struct" => Wkt::Struct,
        "google.protobuf.FloatValue" => Wkt::Float,
        "google.protobuf.DoubleValue" => Wkt::Double,
        "google.protobuf.Int32Value" => Wkt::Int32,
        "google.protobuf.Int64Value" => Wkt::Int64,
        "google.protobuf.UInt32Value" => Wkt::UInt32,
        "google.protobuf.UInt64Value" => Wkt::UInt64,
        "google.protobuf.BoolValue" => Wkt::Bool,
        "google.protobuf.StringValue" => Wkt::String,
        "google.protobuf.BytesValue" => Wkt::Bytes,
        "google.protobuf.FieldMask" => Wkt::FieldMask,
        "google.protobuf.ListValue" => Wkt::ListValue,
        "google.protobuf.Value" => Wkt::Value,
        "google.protobuf.Empty" => Wkt::Empty,
        _ => return None,
    })
}

impl Schema {
    fn build(pool: &DescriptorPool) -> Schema {
        let descs: Vec<MessageDescriptor> = pool.all_messages().collect();
        let by_name: HashMap<String, usize> = descs
            .iter()
            .enumerate()
            .map(|(i, m)| (m.full_name().to_string(), i))
            .collect();
        let enum_descs: Vec<_> = pool.all_enums().collect();
        let enum_by_name: HashMap<&str, usize> = enum_descs
            .iter()
            .enumerate()
            .map(|(i, e)| (e.full_name(), i))
            .collect();
        let enums = enum_descs
            .iter()
            .map(|e| {
                let mut values: Vec<(i32, String)> = e
                    .values()
                    .filter_map(|v| {
                        let n = v.number();
                        e.get_value(n).map(|v| (n, v.name().to_string()))
                    })
                    .collect();
                values.sort_by_key(|(n, _)| *n);
                values.dedup_by_key(|(n, _)| *n);
                EnumPlan {
                    null: e.full_name() == "google.protobuf.NullValue",
                    values,
                }
            })
            .collect();
        let ty = |kind: Kind| -> Ty {
            match kind {
                Kind::Double => Ty::Double,
                Kind::Float => Ty::Float,
                Kind::Int32 => Ty::Int32,
                Kind::Int64 => Ty::Int64,
                Kind::Uint32 => Ty::Uint32,
                Kind::Uint64 => Ty::Uint64,
                Kind::Sint32 => Ty::Sint32,
                Kind::Sint64 => Ty::Sint64,
                Kind::Fixed32 => Ty::Fixed32,
                Kind::Fixed64 => Ty::Fixed64,
                Kind::Sfixed32 => Ty::Sfixed32,
                Kind::Sfixed64 => Ty::Sfixed64,
                Kind::Bool => Ty::Bool,
                Kind::String => Ty::String,
                Kind::Bytes => Ty::Bytes,
                // Every message and enum of the pool is indexed above.
                Kind::Enum(e) => Ty::Enum(enum_by_name.get(e.full_name()).copied().unwrap_or(0)),
                Kind::Message(m) => Ty::Message(by_name.get(m.full_name()).copied().unwrap_or(0)),
            }
        };
        let messages = descs
            .iter()
            .map(|m| MessagePlan {
                full_name: m.full_name().to_string(),
                wkt: wkt(m.full_name()),
                fields: m
                    .fields()
                    .map(|f| {
                        let rep = match f.kind() {
                            Kind::Message(entry) if f.is_map() => {
                                let key = entry.map_entry_key_field().kind();
                                let value = entry.map_entry_value_field().kind();
                                Rep::Map(ty(key), ty(value))
                            }
                            _ if f.is_list() => Rep::List,
                            _ => Rep::Single,
                        };
                        FieldPlan {
                            number: f.number(),
                            name: f.name().to_string(),
                            ty: ty(f.kind()),
                            rep,
                            presence: f.supports_presence(),
                            oneof: f
                                .containing_oneof()
                                .and_then(|o| o.fields().map(|f| f.number()).min()),
                        }
                    })
                    .collect(),
            })
            .collect();
        Schema {
            messages,
            enums,
            by_name,
        }
    }

    /// The index of a message by its full name.
    pub fn message(&self, full_name: &str) -> Option<usize> {
        self.by_name.get(full_name).copied()
    }
}

/// One wire record of a known field.
#[derive(Clone, Copy)]
pub(super) struct Rec<'a> {
    /// Its index in the message's fields.
    pub field: u32,
    /// Its position among the message's records (wire order).
    pub pos: u32,
    pub wire: u8,
    /// A varint's value, or a fixed32/fixed64's bits.
    pub val: u64,
    /// A length-delimited record's payload.
    pub data: &'a [u8],
}

pub(super) fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".to_string())
}

pub(super) fn fixed<const N: usize>(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let end = at.checked_add(N).ok_or("length overflow")?;
    let b = buf.get(*at..end).ok_or("truncated field")?;
    *at = end;
    let mut v = [0u8; 8];
    v[..N].copy_from_slice(b);
    Ok(u64::from_le_bytes(v))
}

/// One record at `at`: its field number, wire type, value and payload.
pub(super) fn record<'a>(
    buf: &'a [u8],
    at: &mut usize,
) -> Result<(u32, u8, u64, &'a [u8]), String> {
    let key = varint(buf, at)?;
    let number = u32::try_from(key >> 3)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid field number {}", key >> 3))?;
    let wire = (key & 7) as u8;
    let (val, data): (u64, &[u8]) = match wire {
        0 => (varint(buf, at)?, &[]),
        1 => (fixed::<8>(buf, at)?, &[]),
        5 => (fixed::<4>(buf, at)?, &[]),
        2 => {
            let len = usize::try_from(varint(buf, at)?).map_err(|e| e.to_string())?;
            let end = at.checked_add(len).ok_or("length overflow")?;
            let data = buf.get(*at..end).ok_or("truncated field")?;
            *at = end;
            (0, data)
        }
        3 => {
            skip_group(buf, at, number, 0)?;
            (0, &[])
        }
        w => return Err(format!("unexpected wire type {w} (field {number})")),
    };
    Ok((number, wire, val, data))
}

/// Skips an (unknown) group's records up to its end.
fn skip_group(buf: &[u8], at: &mut usize, number: u32, depth: u32) -> Result<(), String> {
    if depth > 100 {
        return Err("recursion limit reached".to_string());
    }
    loop {
        if *at >= buf.len() {
            return Err("truncated group".to_string());
        }
        let key = varint(buf, at)?;
        let n = key >> 3;
        match key & 7 {
            4 if n == u64::from(number) => return Ok(()),
            4 => return Err("unexpected end group".to_string()),
            3 => skip_group(buf, at, n as u32, depth + 1)?,
            0 => {
                varint(buf, at)?;
            }
            1 => {
                fixed::<8>(buf, at)?;
            }
            5 => {
                fixed::<4>(buf, at)?;
            }
            2 => {
                let len = usize::try_from(varint(buf, at)?).map_err(|e| e.to_string())?;
                *at = at
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
            }
            w => return Err(format!("unexpected wire type {w}")),
        }
    }
}

/// The records of an encoded message that belong to its known fields (unknown ones are
/// skipped, as prost-reflect's serializer skips them), sorted by field, each field's records in
/// wire order.
pub(super) fn records<'a>(plan: &MessagePlan, buf: &'a [u8]) -> Result<Vec<Rec<'a>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut pos = 0u32;
    while at < buf.len() {
        let (number, wire, val, data) = record(buf, &mut at)?;
        if let Ok(field) = plan.fields.binary_search_by_key(&number, |f| f.number) {
            if wire == 3 {
                // A group: no field of the (proto3) Envoy API is one.
                return Err(format!("invalid wire type 3 for field {number}"));
            }
            out.push(Rec {
                field: field as u32,
                pos,
                wire,
                val,
                data,
            });
            pos += 1;
        }
    }
    if !out.is_sorted_by_key(|r| r.field) {
        out.sort_by_key(|r| r.field);
    }
    Ok(out)
}
