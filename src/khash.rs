//! K-Network-Hash: the value Knative's prober expects a gateway to echo back.
//!
//! Knative (`knative.dev/networking/pkg/ingress`, `ComputeHash`) hashes
//! `json.Marshal(ing.Spec) + namespace + name` with SHA-256 and hex-encodes it (lowercase). The spec
//! it marshals has been through `SetDefaults`. The JSON must be byte-exact with Go's
//! `encoding/json`, so this module writes it by hand over the typed [`IngressSpec`] instead of
//! going through serde:
//!
//! * struct fields in Go struct order (`ingress_types.go`), `omitempty` exactly per field tag;
//! * `IngressBackend` is embedded in `IngressBackendSplit`, so its fields come first, inline;
//! * maps with keys sorted bytewise;
//! * `intstr.IntOrString` as a bare integer or a string;
//! * non-`omitempty` slices (`paths`, `splits`) that are empty encode as `null` (a Go nil slice:
//!   what Go yields when the field is absent; Knative's validation rejects empty ones anyway);
//! * Go's HTML-safe string escaping (see [`write_go_string`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::kingress::{
    HeaderMatch, HttpIngressPath, HttpIngressRuleValue, IngressBackendSplit, IngressRule,
    IngressSpec, IngressTls, IntOrString,
};

/// The header the probe routes match and set (`header.HashKey`).
pub const HASH_HEADER: &str = "K-Network-Hash";
/// The value a prober sends in [`HASH_HEADER`] to ask for the hash (`header.HashValueOverride`).
pub const HASH_OVERRIDE_VALUE: &str = "override";
/// The header that marks a probe request (`header.ProbeKey`).
pub const PROBE_HEADER: &str = "K-Network-Probe";

/// Go `encoding/json` encoding of `spec`, exactly as `json.Marshal(spec)` would produce it.
/// No defaults are applied here.
pub fn go_json(spec: &IngressSpec) -> String {
    let mut out = String::with_capacity(512);
    write_spec(&mut out, spec);
    out
}

/// The K-Network-Hash of a KIngress: lowercase hex SHA-256 of the Go JSON of the defaulted spec,
/// followed by the namespace and the name.
pub fn k_network_hash(namespace: &str, name: &str, spec: &IngressSpec) -> String {
    let json = go_json(&spec.defaulted_cow());
    let mut hasher = Sha256::new();
    hasher.update(json.as_bytes());
    hasher.update(namespace.as_bytes());
    hasher.update(name.as_bytes());
    hex::encode(hasher.finalize())
}

/// Appends `s` as a Go `encoding/json` string literal (with `SetEscapeHTML(true)`, the default of
/// `json.Marshal`): `"` and `\` backslash-escaped; `\b`, `\f`, `\n`, `\r`, `\t` short escapes (Go
/// 1.22+); other control characters and `<`, `>`, `&` as `\u00xx` (lowercase hex); U+2028 and
/// U+2029 as `\u2028`, `\u2029`; everything else (DEL and all other non-ASCII included) literal.
pub fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    // Most names need no escape: copy the run up to the first character that might.
    let plain = s
        .bytes()
        .position(|b| !(0x20..0x80).contains(&b) || matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&'))
        .unwrap_or(s.len());
    out.push_str(&s[..plain]);
    for c in s[plain..].chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                // Infallible: writing to a String.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object being written: tracks the comma between members.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    /// Writes the member key (already a plain ASCII identifier) and returns the buffer for the value.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    /// `omitempty` string member.
    fn str_omitempty(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            write_go_string(self.key(key), value);
        }
    }

    /// `omitempty` string member stored as an `Option` (None and "" are both Go's "").
    fn opt_str_omitempty(&mut self, key: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.str_omitempty(key, v);
        }
    }

    /// Plain (not `omitempty`) string member.
    fn str(&mut self, key: &str, value: &str) {
        write_go_string(self.key(key), value);
    }

    /// `omitempty` `[]string` member.
    fn strings_omitempty(&mut self, key: &str, values: &[String]) {
        if !values.is_empty() {
            let out = self.key(key);
            write_array(out, values, |out, s| write_go_string(out, s));
        }
    }

    /// `omitempty` `map[string]string` member.
    fn string_map_omitempty(&mut self, key: &str, map: &Option<BTreeMap<String, String>>) {
        if let Some(m) = map.as_ref().filter(|m| !m.is_empty()) {
            let out = self.key(key);
            write_map(out, m, |out, v| write_go_string(out, v));
        }
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn write_array<T>(out: &mut String, items: &[T], mut f: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, item);
    }
    out.push(']');
}

/// A non-`omitempty` slice: Go writes a nil slice as `null`.
fn write_array_or_null<T>(out: &mut String, items: &[T], f: impl FnMut(&mut String, &T)) {
    if items.is_empty() {
        out.push_str("null");
    } else {
        write_array(out, items, f);
    }
}

/// Go sorts string map keys bytewise, which is `BTreeMap<String, _>`'s order.
fn write_map<V>(out: &mut String, map: &BTreeMap<String, V>, mut f: impl FnMut(&mut String, &V)) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_go_string(out, k);
        out.push(':');
        f(out, v);
    }
    out.push('}');
}

fn write_spec(out: &mut String, spec: &IngressSpec) {
    let mut o = Obj::open(out);
    if !spec.tls.is_empty() {
        write_array(o.key("tls"), &spec.tls, write_tls);
    }
    if !spec.rules.is_empty() {
        write_array(o.key("rules"), &spec.rules, write_rule);
    }
    o.opt_str_omitempty("httpOption", &spec.http_option);
    o.close();
}

fn write_tls(out: &mut String, tls: &IngressTls) {
    let mut o = Obj::open(out);
    o.strings_omitempty("hosts", &tls.hosts);
    o.str_omitempty("secretName", &tls.secret_name);
    o.str_omitempty("secretNamespace", &tls.secret_namespace);
    o.close();
}

fn write_rule(out: &mut String, rule: &IngressRule) {
    let mut o = Obj::open(out);
    o.strings_omitempty("hosts", &rule.hosts);
    o.opt_str_omitempty("visibility", &rule.visibility);
    if let Some(http) = &rule.http {
        write_http(o.key("http"), http);
    }
    o.close();
}

fn write_http(out: &mut String, http: &HttpIngressRuleValue) {
    let mut o = Obj::open(out);
    write_array_or_null(o.key("paths"), &http.paths, write_path);
    o.close();
}

fn write_path(out: &mut String, path: &HttpIngressPath) {
    let mut o = Obj::open(out);
    o.opt_str_omitempty("path", &path.path);
    o.opt_str_omitempty("rewriteHost", &path.rewrite_host);
    if let Some(h) = path.headers.as_ref().filter(|h| !h.is_empty()) {
        write_map(o.key("headers"), h, write_header_match);
    }
    write_array_or_null(o.key("splits"), &path.splits, write_split);
    o.string_map_omitempty("appendHeaders", &path.append_headers);
    o.close();
}

fn write_header_match(out: &mut String, m: &HeaderMatch) {
    let mut o = Obj::open(out);
    o.str("exact", &m.exact);
    o.close();
}

fn write_split(out: &mut String, split: &IngressBackendSplit) {
    let mut o = Obj::open(out);
    // Embedded IngressBackend: its fields are promoted, in its own order.
    o.str("serviceNamespace", &split.service_namespace);
    o.str("serviceName", &split.service_name);
    write_int_or_string(o.key("servicePort"), &split.service_port);
    if split.percent != 0 {
        let _ = write!(o.key("percent"), "{}", split.percent);
    }
    o.string_map_omitempty("appendHeaders", &split.append_headers);
    o.close();
}

fn write_int_or_string(out: &mut String, v: &IntOrString) {
    match v {
        IntOrString::Int(i) => {
            let _ = write!(out, "{i}");
        }
        IntOrString::String(s) => write_go_string(out, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn esc(s: &str) -> String {
        let mut out = String::new();
        write_go_string(&mut out, s);
        out
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(esc(""), r#""""#);
        assert_eq!(esc("plain /path?x=1"), r#""plain /path?x=1""#);
        assert_eq!(esc("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(esc("q\"b\\"), r#""q\"b\\""#);
        assert_eq!(esc("\n\r\t"), r#""\n\r\t""#);
        assert_eq!(esc("\u{8}\u{c}"), r#""\b\f""#);
        assert_eq!(
            esc("\u{0}\u{1}\u{1f}\u{b}"),
            r#""\u0000\u0001\u001f\u000b""#
        );
        assert_eq!(esc("\u{7f}"), "\"\u{7f}\"");
        assert_eq!(esc("x\u{2028}y\u{2029}"), r#""x\u2028y\u2029""#);
        assert_eq!(esc("é✓😀'"), "\"é✓😀'\"");
    }

    #[test]
    fn omitempty_and_nil_rules() {
        let spec = IngressSpec::default();
        assert_eq!(go_json(&spec), "{}");

        let spec = IngressSpec {
            tls: vec![IngressTls::default()],
            rules: vec![
                IngressRule::default(),
                IngressRule {
                    visibility: Some(String::new()),
                    http: Some(HttpIngressRuleValue {
                        paths: vec![HttpIngressPath {
                            path: Some(String::new()),
                            headers: Some(BTreeMap::new()),
                            append_headers: Some(BTreeMap::new()),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                },
                IngressRule {
                    http: Some(HttpIngressRuleValue::default()),
                    ..Default::default()
                },
            ],
            http_option: Some(String::new()),
        };
        assert_eq!(
            go_json(&spec),
            r#"{"tls":[{}],"rules":[{},{"http":{"paths":[{"splits":null}]}},{"http":{"paths":null}}]}"#
        );
    }

    #[test]
    fn split_fields_and_sorted_maps() {
        let split = IngressBackendSplit {
            service_namespace: String::new(),
            service_name: "s".into(),
            service_port: IntOrString::String("http2".into()),
            percent: 0,
            append_headers: Some(BTreeMap::from([
                ("b".to_string(), "1".to_string()),
                ("B".to_string(), "2".to_string()),
                ("a".to_string(), "<".to_string()),
            ])),
        };
        let mut out = String::new();
        write_split(&mut out, &split);
        assert_eq!(
            out,
            r#"{"serviceNamespace":"","serviceName":"s","servicePort":"http2","appendHeaders":{"B":"2","a":"\u003c","b":"1"}}"#
        );
        let split = IngressBackendSplit {
            service_port: IntOrString::Int(80),
            percent: 25,
            ..Default::default()
        };
        let mut out = String::new();
        write_split(&mut out, &split);
        assert_eq!(
            out,
            r#"{"serviceNamespace":"","serviceName":"","servicePort":80,"percent":25}"#
        );
    }

    fn manifest_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn check_vectors(path: &Path) -> usize {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("vector file is JSON");
        let vectors = doc["vectors"].as_array().expect("vectors array");
        assert!(!vectors.is_empty());
        for v in vectors {
            let ns = v["namespace"].as_str().expect("namespace");
            let name = v["name"].as_str().expect("name");
            let want = v["k_network_hash"].as_str().expect("hash");
            let spec: IngressSpec =
                serde_json::from_value(v["spec_as_stored"].clone()).expect("spec parses");
            assert_eq!(
                k_network_hash(ns, name, &spec),
                want,
                "vector {ns}/{name}: json was {}",
                go_json(&spec.defaulted())
            );
        }
        vectors.len()
    }

    #[test]
    fn hash_vectors_repo_copy() {
        assert_eq!(
            check_vectors(&manifest_dir().join("testdata/knative-hash-vectors.json")),
            3
        );
    }

    #[test]
    fn hash_vectors_shared_reference() {
        let shared = manifest_dir().join("../shared/reference/knative-hash-vectors.json");
        if !shared.exists() {
            eprintln!("skipping: {} not present", shared.display());
            return;
        }
        check_vectors(&shared);
        // The repo copy must not drift from the reference.
        let a: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&shared).expect("read shared"))
                .expect("shared JSON");
        let b: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(manifest_dir().join("testdata/knative-hash-vectors.json"))
                .expect("read testdata"),
        )
        .expect("testdata JSON");
        assert_eq!(a, b, "testdata copy differs from shared/reference");
    }

    #[test]
    fn hello_vector_json_is_exact() {
        let split = |rev: &str, pct: i64| IngressBackendSplit {
            service_namespace: "default".into(),
            service_name: rev.into(),
            service_port: IntOrString::Int(80),
            percent: pct,
            append_headers: Some(BTreeMap::from([
                ("Knative-Serving-Namespace".into(), "default".into()),
                ("Knative-Serving-Revision".into(), rev.into()),
            ])),
        };
        let spec = IngressSpec {
            tls: vec![],
            rules: vec![IngressRule {
                hosts: vec!["hello.default.example.com".into()],
                visibility: None,
                http: Some(HttpIngressRuleValue {
                    paths: vec![HttpIngressPath {
                        splits: vec![split("hello-00001", 0)],
                        ..Default::default()
                    }],
                }),
            }],
            http_option: Some("Enabled".into()),
        };
        assert_eq!(
            go_json(&spec.defaulted()),
            concat!(
                r#"{"rules":[{"hosts":["hello.default.example.com"],"visibility":"ExternalIP","#,
                r#""http":{"paths":[{"splits":[{"serviceNamespace":"default","serviceName":"hello-00001","#,
                r#""servicePort":80,"percent":100,"appendHeaders":{"Knative-Serving-Namespace":"default","#,
                r#""Knative-Serving-Revision":"hello-00001"}}]}]}}],"httpOption":"Enabled"}"#
            )
        );
    }
}
