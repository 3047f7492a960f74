//! A response as the machine decided it, by reference to the snapshot's resources ([`Wire`]),
//! and its encoding in two parts: the message without its nonce, which is the same for every
//! stream sent the same resources (so the ADS shell encodes it once and writes the same bytes to
//! each of them, `crate::xds::encoder`), and the nonce field, appended per stream. Protobuf
//! allows fields in any order, and a field after the others is read as any other.
//!
//! [`Wire::to_delta`] / [`Wire::to_sotw`] give the same message as a prost struct (the machine's
//! `on_request` / `on_snapshot` return those, for tests and tools).

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as PbResource,
};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use super::Mode;
use crate::xds::resource::Resource;

/// Field numbers shared by `DiscoveryResponse` and `DeltaDiscoveryResponse`.
const VERSION: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
/// `DeltaDiscoveryResponse.removed_resources`.
const REMOVED: u32 = 6;
/// `Resource` (Delta): version, resource, name.
const RES_VERSION: u32 = 1;
const RES_BODY: u32 = 2;
const RES_NAME: u32 = 3;

/// One response to send on one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub mode: Mode,
    pub type_url: String,
    /// `version_info` (SotW) / `system_version_info` (Delta).
    pub version: String,
    pub nonce: String,
    /// The resources carried, shared with the snapshot they come from.
    pub resources: Vec<Arc<Resource>>,
    /// Delta: names removed (always empty for SotW).
    pub removed: Vec<String>,
}

/// The encoded length of a non-empty string field (proto3 leaves empty ones out).
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Length of an embedded message field whose message is `len` bytes.
fn msg_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

impl Wire {
    /// The length of one resource's message (Delta: `Resource`; SotW: the `Any`).
    fn resource_len(&self, r: &Resource) -> usize {
        let body = r.body.encoded_len();
        match self.mode {
            Mode::Sotw => body,
            Mode::Delta => {
                str_len(RES_VERSION, &r.version)
                    + msg_len(RES_BODY, body)
                    + str_len(RES_NAME, &r.name)
            }
        }
    }

    /// The length of the message without its nonce.
    pub fn body_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| msg_len(RESOURCES, self.resource_len(r)))
            .sum();
        let removed: usize = self.removed.iter().map(|n| msg_len(REMOVED, n.len())).sum();
        str_len(VERSION, &self.version) + resources + str_len(TYPE_URL, &self.type_url) + removed
    }

    /// The whole message's encoded length.
    pub fn encoded_len(&self) -> usize {
        self.body_len() + self.nonce_field_len()
    }

    /// The message without its nonce, encoded: the same bytes for every stream that sends these
    /// resources in this flavour with this version.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.body_len());
        put_str(VERSION, &self.version, &mut buf);
        for r in &self.resources {
            encode_key(RESOURCES, WireType::LengthDelimited, &mut buf);
            encode_varint(self.resource_len(r) as u64, &mut buf);
            match self.mode {
                Mode::Sotw => r.body.encode_raw(&mut buf),
                Mode::Delta => {
                    put_str(RES_VERSION, &r.version, &mut buf);
                    encode_key(RES_BODY, WireType::LengthDelimited, &mut buf);
                    encode_varint(r.body.encoded_len() as u64, &mut buf);
                    r.body.encode_raw(&mut buf);
                    put_str(RES_NAME, &r.name, &mut buf);
                }
            }
        }
        put_str(TYPE_URL, &self.type_url, &mut buf);
        for n in &self.removed {
            encode_key(REMOVED, WireType::LengthDelimited, &mut buf);
            encode_varint(n.len() as u64, &mut buf);
            buf.extend_from_slice(n.as_bytes());
        }
        buf
    }

    /// This stream's nonce as a field, to follow [`Wire::encode_body`].
    pub fn nonce_field(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.nonce_field_len());
        self.put_nonce_field(&mut buf);
        buf
    }

    /// The length of [`Wire::nonce_field`].
    pub fn nonce_field_len(&self) -> usize {
        str_len(NONCE, &self.nonce)
    }

    /// [`Wire::nonce_field`], appended to `buf`.
    pub fn put_nonce_field(&self, buf: &mut Vec<u8>) {
        put_str(NONCE, &self.nonce, buf);
    }

    /// The Delta message (bodies copied).
    pub fn to_delta(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.version.clone(),
            resources: self
                .resources
                .iter()
                .map(|r| PbResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: self.type_url.clone(),
            removed_resources: self.removed.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }

    /// The SotW message (bodies copied).
    pub fn to_sotw(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version.clone(),
            resources: self.resources.iter().map(|r| r.body.clone()).collect(),
            type_url: self.type_url.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }
}

impl<R> super::Step<R> {
    /// The same step with each response converted.
    pub fn map<T>(self, f: impl FnMut(R) -> T) -> super::Step<T> {
        super::Step {
            responses: self.responses.into_iter().map(f).collect(),
            events: self.events,
            refused: self.refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn res(name: &str, version: &str, body: &[u8]) -> Arc<Resource> {
        Arc::new(Resource {
            name: name.to_string(),
            version: version.to_string(),
            body: Any {
                type_url: "type.googleapis.com/x".to_string(),
                value: body.to_vec(),
            },
            pair: Default::default(),
        })
    }

    fn wire(mode: Mode, nonce: &str) -> Wire {
        Wire {
            mode,
            type_url: "type.googleapis.com/x".to_string(),
            version: "v1".to_string(),
            nonce: nonce.to_string(),
            resources: vec![res("a", "1", b"aa"), res("b", "", &[7; 300])],
            removed: if mode == Mode::Delta {
                vec!["gone".to_string()]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn body_then_nonce_decodes_to_the_prost_message_of_either_flavour() {
        for nonce in ["", "17"] {
            let d = wire(Mode::Delta, nonce);
            let mut bytes = d.encode_body();
            assert_eq!(bytes.len(), d.body_len());
            bytes.extend(d.nonce_field());
            assert_eq!(bytes.len(), d.encoded_len());
            assert_eq!(d.encoded_len(), d.to_delta().encoded_len());
            let decoded = DeltaDiscoveryResponse::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(decoded, d.to_delta());

            let s = wire(Mode::Sotw, nonce);
            let mut bytes = s.encode_body();
            bytes.extend(s.nonce_field());
            assert_eq!(s.encoded_len(), s.to_sotw().encoded_len());
            let decoded = DiscoveryResponse::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(decoded, s.to_sotw());
        }
    }

    #[test]
    fn two_streams_sending_the_same_resources_share_the_body_not_the_nonce() {
        let (a, b) = (wire(Mode::Delta, "1"), wire(Mode::Delta, "2"));
        assert_eq!(a.encode_body(), b.encode_body());
        assert_ne!(a.nonce_field(), b.nonce_field());
    }
}
