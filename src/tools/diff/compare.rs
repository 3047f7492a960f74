//! Comparing normalised resources: field paths and both values, and the reports.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Kind, Resources};

/// One field that differs inside a resource. `a`/`b` are None where the field is absent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// How one resource differs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    pub kind: Kind,
    pub name: String,
    /// "only_in_a", "only_in_b" or "changed".
    pub change: &'static str,
    pub fields: Vec<FieldChange>,
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Compares two normalised configurations, resource by resource (sorted by kind, name).
pub fn compare(a: &Resources, b: &Resources) -> Vec<Difference> {
    let keys: BTreeSet<&(Kind, String)> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (kind, name) = (key.0, key.1.clone());
        match (a.get(key), b.get(key)) {
            (Some(_), None) => out.push(Difference {
                kind,
                name,
                change: "only_in_a",
                fields: vec![],
            }),
            (None, Some(_)) => out.push(Difference {
                kind,
                name,
                change: "only_in_b",
                fields: vec![],
            }),
            (Some(va), Some(vb)) if va != vb => {
                let mut fields = Vec::new();
                diff_value("", &va.value(), &vb.value(), &mut fields);
                out.push(Difference {
                    kind,
                    name,
                    change: "changed",
                    fields,
                });
            }
            _ => {}
        }
    }
    out
}

fn diff_value(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => diff_value(&p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        a: x.cloned(),
                        b: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            if xa.len() == xb.len() {
                for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                    diff_value(&format!("{path}[{i}]"), x, y, out);
                }
                return;
            }
            // Align by content so one inserted route does not show as every later one changed.
            let sa: Vec<String> = xa.iter().map(|v| v.to_string()).collect();
            let sb: Vec<String> = xb.iter().map(|v| v.to_string()).collect();
            let only_a = |out: &mut Vec<FieldChange>, from: usize, to: usize| {
                for (i, v) in xa.iter().enumerate().take(to).skip(from) {
                    out.push(FieldChange {
                        path: format!("{path}[{i}]"),
                        a: Some(v.clone()),
                        b: None,
                    });
                }
            };
            let only_b = |out: &mut Vec<FieldChange>, from: usize, to: usize| {
                for (j, v) in xb.iter().enumerate().take(to).skip(from) {
                    out.push(FieldChange {
                        path: format!("{path}[+{j}]"),
                        a: None,
                        b: Some(v.clone()),
                    });
                }
            };
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &sa, &sb) {
                match op {
                    similar::DiffOp::Equal { .. } => {}
                    similar::DiffOp::Delete {
                        old_index, old_len, ..
                    } => only_a(out, old_index, old_index + old_len),
                    similar::DiffOp::Insert {
                        new_index, new_len, ..
                    } => only_b(out, new_index, new_index + new_len),
                    similar::DiffOp::Replace {
                        old_index,
                        old_len,
                        new_index,
                        new_len,
                    } => {
                        let common = old_len.min(new_len);
                        for d in 0..common {
                            diff_value(
                                &format!("{path}[{}]", old_index + d),
                                &xa[old_index + d],
                                &xb[new_index + d],
                                out,
                            );
                        }
                        only_a(out, old_index + common, old_index + old_len);
                        only_b(out, new_index + common, new_index + new_len);
                    }
                }
            }
        }
        _ => {
            if a != b {
                out.push(FieldChange {
                    path: path.to_string(),
                    a: Some(a.clone()),
                    b: Some(b.clone()),
                });
            }
        }
    }
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 160 {
                let cut: String = s.chars().take(157).collect();
                format!("{cut}...")
            } else {
                s
            }
        }
    }
}

/// The plain report: one line per resource (`-` only in A, `+` only in B, `~` changed), the
/// changed fields under it, and a summary line.
pub fn report(diffs: &[Difference], label_a: &str, label_b: &str, compared: usize) -> String {
    let mut s = String::new();
    if diffs.is_empty() {
        s.push_str(&format!(
            "equal: {compared} resources compared ({label_a} vs {label_b})\n"
        ));
        return s;
    }
    s.push_str(&format!("--- a: {label_a}\n+++ b: {label_b}\n"));
    let (mut only_a, mut only_b, mut changed) = (0, 0, 0);
    for d in diffs {
        match d.change {
            "only_in_a" => {
                only_a += 1;
                s.push_str(&format!("- {} {} (only in a)\n", d.kind, d.name));
            }
            "only_in_b" => {
                only_b += 1;
                s.push_str(&format!("+ {} {} (only in b)\n", d.kind, d.name));
            }
            _ => {
                changed += 1;
                s.push_str(&format!("~ {} {}\n", d.kind, d.name));
                for f in &d.fields {
                    s.push_str(&format!(
                        "    {}: {} -> {}\n",
                        f.path,
                        short(&f.a),
                        short(&f.b)
                    ));
                }
            }
        }
    }
    s.push_str(&format!(
        "{} resource(s) differ: {only_a} only in a, {only_b} only in b, {changed} changed ({compared} compared)\n",
        diffs.len()
    ));
    s
}

/// A unified diff of the normalised YAML of each differing resource; ANSI colors when `color`.
pub fn unified(a: &Resources, b: &Resources, diffs: &[Difference], color: bool) -> String {
    let yaml = |v: Option<&super::Canon>| -> String {
        v.map(|v| serde_saphyr::to_string(&v.value()).unwrap_or_default())
            .unwrap_or_default()
    };
    let mut s = String::new();
    for d in diffs {
        let key = (d.kind, d.name.clone());
        let (ya, yb) = (yaml(a.get(&key)), yaml(b.get(&key)));
        let text = similar::TextDiff::from_lines(&ya, &yb)
            .unified_diff()
            .context_radius(4)
            .header(
                &format!("a/{}/{}", d.kind, d.name),
                &format!("b/{}/{}", d.kind, d.name),
            )
            .to_string();
        for line in text.lines() {
            let code = if !color {
                ""
            } else if line.starts_with("+++") || line.starts_with("---") {
                "\x1b[1m"
            } else if line.starts_with('+') {
                "\x1b[32m"
            } else if line.starts_with('-') {
                "\x1b[31m"
            } else if line.starts_with("@@") {
                "\x1b[36m"
            } else {
                ""
            };
            if code.is_empty() {
                s.push_str(line);
            } else {
                s.push_str(&format!("{code}{line}\x1b[0m"));
            }
            s.push('\n');
        }
    }
    s
}
