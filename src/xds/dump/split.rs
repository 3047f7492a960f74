//! One protobuf message as proto3 JSON without ever holding a large one as one tree: a message
//! of at most [`SPLIT_BYTES`] is decoded and converted whole (prost-reflect, then a
//! `serde_json::Value`, exactly as before); a larger one (the `http.80` RouteConfiguration holds
//! every virtual host of a gateway) is written field by field from its wire records, its repeated
//! message fields element by element, each element again by this rule. The output is the same
//! bytes as converting the whole message: the fields go in the order prost-reflect writes them
//! (`MessageDescriptor::fields`), each field's value converted by prost-reflect from the records
//! of that field alone.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

/// Messages up to this encoded size are converted whole.
pub(super) const SPLIT_BYTES: usize = 64 * 1024;

fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
}

/// A message decoded and converted whole: proto3 JSON through prost-reflect, read back as a
/// `Value` (so numbers are written as the JSON text prost-reflect wrote).
pub(super) fn message_value(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Value, String> {
    let name = desc.full_name();
    let msg =
        DynamicMessage::decode(desc.clone(), bytes).map_err(|e| format!("decoding {name}: {e}"))?;
    let mut out = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut out, &options())
        .map_err(|e| format!("encoding {name} as JSON: {e}"))?;
    serde_json::from_slice(&out.into_inner()).map_err(|e| format!("re-reading JSON: {e}"))
}

/// One message as JSON, split when large (see the module docs); `type_url` adds `@type` first,
/// as for a resource in an `Any`.
pub(super) struct Message<'a> {
    pub desc: MessageDescriptor,
    pub bytes: &'a [u8],
    pub type_url: Option<&'a str>,
}

impl Serialize for Message<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !splittable(&self.desc) || self.bytes.len() <= SPLIT_BYTES {
            return whole(&self.desc, self.bytes, self.type_url)
                .map_err(S::Error::custom)?
                .serialize_with_options(s, &options());
        }
        let fields = split(&self.desc, self.bytes).map_err(S::Error::custom)?;
        let mut map = s.serialize_map(Some(fields.len() + usize::from(self.type_url.is_some())))?;
        if let Some(t) = self.type_url {
            map.serialize_entry("@type", t)?;
        }
        for (field, value) in &fields {
            match value {
                FieldJson::Whole(v) => map.serialize_entry(field.name(), v)?,
                FieldJson::Elements(desc, items) => map.serialize_entry(
                    field.name(),
                    &Elements {
                        desc: desc.clone(),
                        items,
                    },
                )?,
            }
        }
        map.end()
    }
}

/// A message decoded whole, to be written straight into the output serializer (no
/// intermediate text or tree); with a `type_url`, as the `google.protobuf.Any` holding it, whose
/// JSON mapping is `{"@type": type_url, ...its fields}`: the same bytes as [`message_value`]
/// with [`with_type`].
fn whole(
    desc: &MessageDescriptor,
    bytes: &[u8],
    type_url: Option<&str>,
) -> Result<DynamicMessage, String> {
    let name = desc.full_name();
    let Some(type_url) = type_url else {
        return DynamicMessage::decode(desc.clone(), bytes)
            .map_err(|e| format!("decoding {name}: {e}"));
    };
    let any = desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Any")
        .ok_or("google.protobuf.Any is not in the descriptor pool")?;
    let mut msg = DynamicMessage::new(any);
    msg.set_field_by_name(
        "type_url",
        prost_reflect::Value::String(type_url.to_string()),
    );
    msg.set_field_by_name(
        "value",
        prost_reflect::Value::Bytes(bytes::Bytes::copy_from_slice(bytes)),
    );
    Ok(msg)
}

/// `{"@type": type_url, ...fields of v}`.
pub(super) fn with_type(type_url: &str, v: Value) -> Value {
    let mut obj = Map::new();
    obj.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = v {
        obj.extend(fields);
    }
    Value::Object(obj)
}

/// Well-known types have their own JSON mapping (an `Any` adds `@type`, a `Struct` is a map):
/// they are always converted whole.
fn splittable(desc: &MessageDescriptor) -> bool {
    !desc.full_name().starts_with("google.protobuf.")
}

/// A repeated message field's elements, each by [`Message`].
struct Elements<'a> {
    desc: MessageDescriptor,
    items: &'a [&'a [u8]],
}

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for bytes in self.items {
            seq.serialize_element(&Message {
                desc: self.desc.clone(),
                bytes,
                type_url: None,
            })?;
        }
        seq.end()
    }
}

/// One present field of a split message.
enum FieldJson<'a> {
    /// Converted from the field's records alone.
    Whole(Value),
    /// A repeated message field: each element's encoding.
    Elements(MessageDescriptor, Vec<&'a [u8]>),
}

/// The present fields of a message in prost-reflect's order, each converted or listed.
fn split<'a>(
    desc: &MessageDescriptor,
    bytes: &'a [u8],
) -> Result<Vec<(FieldDescriptor, FieldJson<'a>)>, String> {
    let records = records(bytes).map_err(|e| format!("decoding {}: {e}", desc.full_name()))?;
    let mut out = Vec::new();
    for field in desc.fields() {
        let of_field: Vec<&Record<'a>> = records
            .iter()
            .filter(|r| r.number == field.number())
            .collect();
        if of_field.is_empty() {
            continue;
        }
        let element = match field.kind() {
            Kind::Message(m) if field.is_list() && splittable(&m) => Some(m),
            _ => None,
        };
        if let Some(m) = element {
            if of_field.iter().all(|r| r.payload.is_some()) {
                let items = of_field.iter().filter_map(|r| r.payload).collect();
                out.push((field, FieldJson::Elements(m, items)));
                continue;
            }
        }
        let mut only: Vec<u8> = Vec::new();
        for r in &of_field {
            only.extend_from_slice(r.whole);
        }
        if let Value::Object(mut m) = message_value(desc, &only)? {
            if let Some(v) = m.remove(field.name()) {
                out.push((field, FieldJson::Whole(v)));
            }
        }
    }
    Ok(out)
}

/// One wire record: its field number, the whole record (key included) and, for a
/// length-delimited one, its payload.
struct Record<'a> {
    number: u32,
    whole: &'a [u8],
    payload: Option<&'a [u8]>,
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
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

/// The top-level records of an encoded message.
fn records(buf: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = varint(buf, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| format!("field number {}", key >> 3))?;
        let mut payload = None;
        let end = match key & 7 {
            0 => {
                varint(buf, &mut at)?;
                at
            }
            1 => at + 8,
            5 => at + 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).map_err(|e| e.to_string())?;
                let end = at.checked_add(len).ok_or("length overflow")?;
                payload = Some(buf.get(at..end).ok_or("truncated field")?);
                end
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push(Record {
            number,
            whole: buf.get(start..end).ok_or("truncated field")?,
            payload,
        });
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
    use prost::Message as _;

    /// A route configuration well over the split size converts to the same JSON as converting it
    /// whole.
    #[test]
    fn a_split_message_is_the_same_json_as_the_whole() {
        let rc = RouteConfiguration {
            name: "http.80".into(),
            virtual_hosts: (0..2000)
                .map(|i| VirtualHost {
                    name: format!("h{i}:80"),
                    domains: vec![format!("h{i}.example.com"), format!("h{i}.example.com:*")],
                    routes: vec![Route {
                        name: format!("r{i}"),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
            ignore_port_in_host_matching: true,
            ..Default::default()
        };
        let bytes = rc.encode_to_vec();
        assert!(bytes.len() > SPLIT_BYTES);
        let desc = super::super::pool()
            .unwrap()
            .get_message_by_name("envoy.config.route.v3.RouteConfiguration")
            .unwrap();
        let url = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
        let whole = with_type(url, message_value(&desc, &bytes).unwrap());
        let split = Message {
            desc,
            bytes: &bytes,
            type_url: Some(url),
        };
        assert_eq!(
            serde_json::to_string_pretty(&split).unwrap(),
            serde_json::to_string_pretty(&whole).unwrap()
        );
        assert_eq!(serde_json::to_value(&split).unwrap(), whole);
    }
}
