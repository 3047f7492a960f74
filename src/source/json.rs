//! JSON manifests read straight into the typed objects, without a `serde_json::Value` of each
//! object: a first pass over each document reads only `apiVersion`, `kind`, the `metadata`
//! name and namespace and whether `metadata`/`spec` are mappings (everything else skipped),
//! and splits a `kind: List`'s items as raw text; then each object is typed from its own text
//! by [`parse_document`] (so `model::check` runs on it), every pass through [`UniqueKeys`].
//!
//! This path only ever succeeds: a file with anything wrong in it (a syntax error, a duplicate
//! key, an object that fails its checks, a list item that is not an object) reads as `None`,
//! and `files::parse_text` reads it again through `serde_json::Value`, which words every error
//! exactly as it always has.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::unique_keys::UniqueKeys;
use crate::model::{check, parse_document, Document, Object};

/// The SHA-256 of an object's text (a document, or one item of a list document). Reading an
/// object is a pure function of its text, so a reload takes an object whose text has the
/// digest of one the same file yielded before from that earlier read, without typing it again
/// (`source::dir`). SHA-256 rather than a shorter hash: two texts taken as equal must be equal.
pub type Digest = [u8; 32];

/// The digest of an object's text.
pub fn digest(text: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// One document, or one item of a list document, read cleanly.
pub struct Clean {
    /// The document's number in the file, from 1.
    pub doc: usize,
    /// The item's index in a list document.
    pub item: Option<usize>,
    /// The digest of the object's text.
    pub digest: Digest,
    pub read: Read,
}

/// What one object's text read as.
pub enum Read {
    Object(Object),
    /// A document of a kind we do not serve: its kind.
    Skipped(String),
    /// A text the caller said it has read before (its digest is known): not read again.
    Known,
}

/// The documents of a JSON file (several concatenated values, as `serde_json`'s stream reads
/// them) as objects, `List` items expanded as `files::parse_text` expands them; `None` if any
/// of them does not read cleanly. An object whose digest `known` accepts is not typed
/// ([`Read::Known`]): it read cleanly before, and the same text reads the same.
pub fn read_clean(text: &str, known: &dyn Fn(&Digest) -> bool) -> Option<Vec<Clean>> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<DocHead>();
    let (mut start, mut doc) = (0, 0);
    while let Some(head) = stream.next() {
        let DocHead(head) = head.ok()?;
        let end = stream.byte_offset();
        let span = text.get(start..end)?;
        (start, doc) = (end, doc + 1);
        let Some(mut head) = head else {
            continue; // null
        };
        let kind = head.kind.as_deref().unwrap_or("");
        let is_list =
            kind == "List" || (matches!(head.items, Items::List(_)) && kind.ends_with("List"));
        if !is_list {
            let digest = digest(span);
            let read = if known(&digest) {
                Read::Known
            } else {
                read_object(span, head)?
            };
            out.push(Clean {
                doc,
                item: None,
                digest,
                read,
            });
            continue;
        }
        match std::mem::take(&mut head.items) {
            Items::Absent | Items::Null => {}
            Items::Other => return None,
            Items::List(items) => {
                for (j, raw) in items.into_iter().enumerate() {
                    let text = raw.get();
                    if text == "null" {
                        continue;
                    }
                    if !text.starts_with('{') {
                        return None;
                    }
                    let digest = digest(text);
                    let read = if known(&digest) {
                        Read::Known
                    } else {
                        let mut de = serde_json::Deserializer::from_str(text);
                        let head = (&mut de).deserialize_any(HeadVisitor).ok()??;
                        read_object(text, head)?
                    };
                    out.push(Clean {
                        doc,
                        item: Some(j),
                        digest,
                        read,
                    });
                }
            }
        }
    }
    Some(out)
}

/// One object from its text and its head: typed if served (through [`parse_document`]),
/// else read once through [`UniqueKeys`] (it must still be a clean document) and skipped.
fn read_object(text: &str, head: Head<'_>) -> Option<Read> {
    let kind = head.kind.as_deref().unwrap_or("").to_string();
    match parse_document(JsonDoc { text, head }) {
        Ok(Some(object)) => Some(Read::Object(object)),
        Ok(None) => typed::<IgnoredAny>(text).ok().map(|_| Read::Skipped(kind)),
        Err(_) => None,
    }
}

/// `text` (one JSON value) as a `T`, through [`UniqueKeys`].
fn typed<T: de::DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = T::deserialize(UniqueKeys(&mut de))?;
    de.end()?;
    Ok(value)
}

/// One object's text and what its first pass read.
struct JsonDoc<'a> {
    text: &'a str,
    head: Head<'a>,
}

impl Document for JsonDoc<'_> {
    fn api_version(&self) -> Option<&str> {
        self.head.api_version.as_deref()
    }

    fn kind(&self) -> Option<&str> {
        self.head.kind.as_deref()
    }

    fn meta(&self, key: &str) -> Option<&str> {
        match key {
            "name" => self.head.name.as_deref(),
            "namespace" => self.head.namespace.as_deref(),
            _ => None,
        }
    }

    fn shape(&self) -> Result<(), String> {
        match self.head.not_mapping {
            Some((field, what)) => Err(check::not_a_mapping(field, what)),
            None => Ok(()),
        }
    }

    fn decode<T: de::DeserializeOwned>(self) -> Result<T, String> {
        typed(self.text).map_err(|e| e.to_string())
    }
}

/// What the first pass reads of an object.
#[derive(Default)]
struct Head<'a> {
    api_version: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    /// A field of [`check::MAPPINGS`] that is not a mapping (nor null), and what it is.
    not_mapping: Option<(&'static str, &'static str)>,
    items: Items<'a>,
}

/// A document's `items`.
#[derive(Default)]
enum Items<'a> {
    #[default]
    Absent,
    Null,
    /// A list: each item's text.
    List(Vec<&'a RawValue>),
    /// Anything else.
    Other,
}

/// A top-level document's head, read through [`UniqueKeys`] (so everything but the items,
/// which are read later, is checked); `None` for `null`; an error for what is not an object.
struct DocHead<'a>(Option<Head<'a>>);

impl<'de> Deserialize<'de> for DocHead<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UniqueKeys(d).deserialize_any(HeadVisitor).map(DocHead)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = Option<Head<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut head = Head::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "apiVersion" => head.api_version = map.next_value::<Text>()?.0,
                "kind" => head.kind = map.next_value::<Text>()?.0,
                "items" => head.items = map.next_value::<ItemsOf>()?.0,
                _ => match check::MAPPINGS.iter().find(|f| **f == &*key) {
                    Some(&field) => match map.next_value::<Mapping>()? {
                        Mapping::Map { name, namespace } => {
                            if field == "metadata" {
                                (head.name, head.namespace) = (name, namespace);
                            }
                        }
                        Mapping::Null => {}
                        Mapping::Not(what) => {
                            head.not_mapping.get_or_insert((field, what));
                        }
                    },
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(Some(head))
    }
}

/// A mapping's key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
            .and_then(|t| t.ok_or_else(|| de::Error::custom("a key that is not a string")))
            .map(Key)
    }
}

/// A value that is a string (`Some`), or anything else (`None`, skipped).
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

/// Skips the rest of a list or a mapping.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|_| None)
    }
}

/// `metadata` or `spec`: a mapping (with the `name` and `namespace` strings it has), null, or
/// something else, in words.
enum Mapping<'a> {
    Map {
        name: Option<Cow<'a, str>>,
        namespace: Option<Cow<'a, str>>,
    },
    Null,
    Not(&'static str),
}

impl<'de> Deserialize<'de> for Mapping<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MappingVisitor)
    }
}

struct MappingVisitor;

impl<'de> Visitor<'de> for MappingVisitor {
    type Value = Mapping<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut namespace) = (None, None);
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => name = map.next_value::<Text>()?.0,
                "namespace" => namespace = map.next_value::<Text>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Mapping::Map { name, namespace })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Mapping::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|_| Mapping::Not("a list"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Mapping::Not("a string"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Mapping::Not("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Mapping::Not("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Mapping::Not("a number"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Mapping::Not("a boolean"))
    }
}

/// A document's `items`, each item kept as its text.
struct ItemsOf<'a>(Items<'a>);

impl<'de> Deserialize<'de> for ItemsOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemsVisitor).map(ItemsOf)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            items.push(raw);
        }
        Ok(Items::List(items))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Items::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|_| Items::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Items::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Items::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Items::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Items::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Items::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one object of a JSON text, as the file loader reads it.
    fn object(text: &str) -> Object {
        let mut clean = read_clean(text, &|_| false).expect("reads cleanly");
        match clean.pop().map(|c| c.read) {
            Some(Read::Object(o)) => o,
            _ => panic!("one object"),
        }
    }

    #[test]
    fn decoded_lists_hold_no_spare_room() {
        // Decoded from text, a list's length is not known ahead: one port took four places.
        let Object::Endpoints(e) = object(
            r#"{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}],
                             "ports": [{"name": "http", "port": 8012}]}]}"#,
        ) else {
            panic!("an Endpoints");
        };
        let subsets = e.subsets.as_ref().expect("subsets");
        let addresses = subsets[0].addresses.as_ref().expect("addresses");
        let ports = subsets[0].ports.as_ref().expect("ports");
        assert_eq!((addresses.len(), addresses.capacity()), (3, 3));
        assert_eq!((ports.len(), ports.capacity()), (1, 1));
        let Object::Service(s) = object(
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8012}]}}"#,
        ) else {
            panic!("a Service");
        };
        let ports = s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports");
        assert_eq!((ports.len(), ports.capacity()), (1, 1));
    }
}
