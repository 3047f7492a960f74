//! Each response body encoded once for every stream that sends it.
//!
//! The streams of one gateway (its replicas, and every stream after a change) send the same
//! resources: the same snapshot entries, in the same flavour, with the same version. The
//! [`Encoder`], shared by every stream of an ADS service, keeps the encoded message without its
//! nonce ([`Wire::encode_body`]) by what it carries, so each such body is encoded once and the
//! same bytes are written to every stream; a stream adds only the gRPC prefix and its nonce
//! field ([`Encoder::frames`]).
//!
//! A body is found again by the identity of the snapshot entries it carries (the `Arc`s, which
//! the cache holds, so an address is never reused while an entry is kept), its flavour, type,
//! version and removed names. What is kept: every body some stream is still writing (its
//! `Bytes` are shared), plus the latest body of each flavour and type, so streams that connect
//! one after the other (a rollout, a restart) share the first one's encoding; nothing else.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tonic::Status;

use super::conn::{Mode, Wire};
use super::resource::Resource;

/// What identifies a body.
#[derive(Debug)]
struct Key {
    hash: u64,
    mode: Mode,
    type_url: String,
    version: String,
    resources: Vec<Arc<Resource>>,
    removed: Vec<String>,
}

impl Key {
    fn matches(&self, hash: u64, w: &Wire) -> bool {
        self.hash == hash
            && self.mode == w.mode
            && self.type_url == w.type_url
            && self.version == w.version
            && self.removed == w.removed
            && self.resources.len() == w.resources.len()
            && self
                .resources
                .iter()
                .zip(&w.resources)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

fn hash_of(w: &Wire) -> u64 {
    let mut h = DefaultHasher::new();
    (w.mode as u8).hash(&mut h);
    w.type_url.hash(&mut h);
    w.version.hash(&mut h);
    w.removed.hash(&mut h);
    for r in &w.resources {
        (Arc::as_ptr(r) as usize).hash(&mut h);
    }
    h.finish()
}

/// One gRPC message to write: whole, or as its prefix, shared body and nonce field.
#[derive(Debug)]
pub enum Message {
    Whole(Bytes),
    Parts([Bytes; 3]),
}

/// The shared body cache (see the module docs).
#[derive(Debug, Default)]
pub struct Encoder {
    bodies: Mutex<Vec<(Key, Bytes)>>,
}

/// Encoding counters, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EncoderStats {
    /// Bodies kept now.
    pub kept: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The body of `w`, encoded now or found.
    fn body(&self, w: &Wire) -> Bytes {
        let hash = hash_of(w);
        let Ok(bodies) = self.bodies.lock() else {
            return Bytes::from(w.encode_body());
        };
        if let Some((_, b)) = bodies.iter().find(|(k, _)| k.matches(hash, w)) {
            return b.clone();
        }
        // Encoding a large body under the lock would hold every other stream's lookup; encode
        // outside it and insert (a stream doing the same meanwhile inserts a duplicate, which
        // the sweep below drops once nobody writes it).
        drop(bodies);
        let body = Bytes::from(w.encode_body());
        let Ok(mut bodies) = self.bodies.lock() else {
            return body;
        };
        // Drop what nobody writes any more, except the latest body of each flavour and type.
        let mut latest = std::collections::HashSet::new();
        latest.insert((w.mode, w.type_url.clone()));
        for i in (0..bodies.len()).rev() {
            let (k, b) = &bodies[i];
            let newest_of_kind = latest.insert((k.mode, k.type_url.clone()));
            if !newest_of_kind && b.is_unique() {
                bodies.remove(i);
            }
        }
        bodies.push((
            Key {
                hash,
                mode: w.mode,
                type_url: w.type_url.clone(),
                version: w.version.clone(),
                resources: w.resources.clone(),
                removed: w.removed.clone(),
            },
            body.clone(),
        ));
        body
    }

    /// The gRPC frame of `w` as chunks to write in order: the 5-byte prefix (uncompressed,
    /// big-endian length), the shared body, this stream's nonce field.
    pub fn frames(&self, w: &Wire, max: usize) -> Result<[Bytes; 3], Status> {
        let nonce = w.nonce_field();
        let len = w.body_len() + nonce.len();
        if len > max || len > u32::MAX as usize {
            return Err(Status::out_of_range(format!(
                "response of {len} bytes is above the limit of {max} bytes"
            )));
        }
        let body = self.body(w);
        let mut prefix = Vec::with_capacity(5);
        prefix.push(0);
        prefix.extend_from_slice(&(len as u32).to_be_bytes());
        Ok([Bytes::from(prefix), body, Bytes::from(nonce)])
    }

    /// [`Encoder::frames`], a message whose shared body is at most `whole_up_to` bytes written
    /// into one buffer of its exact size instead (prefix, body and nonce field, no buffer of
    /// their own: copying a small body costs less than writing three DATA frames).
    pub fn message(&self, w: &Wire, max: usize, whole_up_to: usize) -> Result<Message, Status> {
        let nonce_len = w.nonce_field_len();
        let len = w.body_len() + nonce_len;
        if len > max || len > u32::MAX as usize {
            return Err(Status::out_of_range(format!(
                "response of {len} bytes is above the limit of {max} bytes"
            )));
        }
        let body = self.body(w);
        let mut whole = Vec::with_capacity(5 + if body.len() > whole_up_to { 0 } else { len });
        whole.push(0);
        whole.extend_from_slice(&(len as u32).to_be_bytes());
        if body.len() > whole_up_to {
            return Ok(Message::Parts([
                Bytes::from(whole),
                body,
                Bytes::from(w.nonce_field()),
            ]));
        }
        whole.extend_from_slice(&body);
        w.put_nonce_field(&mut whole);
        Ok(Message::Whole(Bytes::from(whole)))
    }

    /// What is kept now.
    pub fn stats(&self) -> EncoderStats {
        self.bodies
            .lock()
            .map_or(EncoderStats::default(), |b| EncoderStats {
                kept: b.len(),
                bytes: b.iter().map(|(_, b)| b.len()).sum(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn res(name: &str, body: &[u8]) -> Arc<Resource> {
        Arc::new(Resource {
            name: name.to_string(),
            version: format!("v-{name}"),
            body: Any {
                type_url: "t".to_string(),
                value: body.to_vec(),
            },
            pair: Default::default(),
        })
    }

    fn wire(type_url: &str, nonce: &str, resources: &[Arc<Resource>]) -> Wire {
        Wire {
            mode: Mode::Delta,
            type_url: type_url.to_string(),
            version: "v".to_string(),
            nonce: nonce.to_string(),
            resources: resources.to_vec(),
            removed: Vec::new(),
        }
    }

    fn message(frames: &[Bytes; 3]) -> DeltaDiscoveryResponse {
        let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(all[0], 0);
        assert_eq!(len, all.len() - 5);
        DeltaDiscoveryResponse::decode(&all[5..]).expect("decodes")
    }

    #[test]
    fn streams_sending_the_same_entries_share_one_body_and_keep_their_nonce() {
        let enc = Encoder::new();
        let rs = [res("a", &[1; 1000]), res("b", b"x")];
        let one = enc
            .frames(&wire("t", "1", &rs), usize::MAX)
            .expect("frames");
        let two = enc
            .frames(&wire("t", "2", &rs), usize::MAX)
            .expect("frames");
        // The same bytes, not a copy.
        assert_eq!(one[1].as_ptr(), two[1].as_ptr());
        assert_eq!(message(&one), wire("t", "1", &rs).to_delta());
        assert_eq!(message(&two), wire("t", "2", &rs).to_delta());
        // Equal content in other entries (another snapshot's) is encoded on its own.
        let other = [res("a", &[1; 1000]), res("b", b"x")];
        let three = enc
            .frames(&wire("t", "3", &other), usize::MAX)
            .expect("frames");
        assert_ne!(one[1].as_ptr(), three[1].as_ptr());
        assert_eq!(message(&three), wire("t", "3", &other).to_delta());
    }

    #[test]
    fn only_bodies_being_written_and_the_latest_of_each_type_are_kept() {
        let enc = Encoder::new();
        let old = enc.frames(&wire("t", "1", &[res("a", b"1")]), usize::MAX);
        drop(old);
        let held = enc.frames(&wire("t", "2", &[res("b", b"2")]), usize::MAX);
        let _latest = enc.frames(&wire("t", "3", &[res("c", b"3")]), usize::MAX);
        let _other_type = enc.frames(&wire("u", "4", &[res("d", b"4")]), usize::MAX);
        // "a" was written and is not the latest of "t": gone. "b" is still being written.
        assert_eq!(enc.stats().kept, 3);
        drop(held);
        let _next = enc.frames(&wire("t", "5", &[res("e", b"5")]), usize::MAX);
        // "b" is dropped once written; "c" is still being written.
        assert_eq!(enc.stats().kept, 3);
    }

    #[test]
    fn a_small_message_is_one_buffer_a_large_one_its_parts_and_both_are_the_message() {
        let enc = Encoder::new();
        let rs = [res("a", &[1; 1000])];
        let w = wire("t", "17", &rs);
        let parts = enc.frames(&w, usize::MAX).expect("frames");
        match enc.message(&w, usize::MAX, 2000).expect("a message") {
            super::Message::Whole(b) => {
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(b.to_vec(), joined);
            }
            other => panic!("one buffer expected: {other:?}"),
        }
        match enc.message(&w, usize::MAX, 100).expect("a message") {
            super::Message::Parts(p) => {
                assert_eq!(message(&p), w.to_delta());
                assert_eq!(p[1].as_ptr(), parts[1].as_ptr(), "the shared body");
            }
            other => panic!("parts expected: {other:?}"),
        }
        let err = enc.message(&w, 50, 2000).expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_is_encoded() {
        let enc = Encoder::new();
        let err = enc
            .frames(&wire("t", "1", &[res("a", &[0; 100])]), 50)
            .expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert_eq!(enc.stats().kept, 0);
    }
}
