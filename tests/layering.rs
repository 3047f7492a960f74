//! The layering of ARCHITECTURE.md, enforced: reads every `crate::` path in the code under
//! `src/` (not comments, not `#[cfg(test)]` code: tests may use whatever helps) and fails on an
//! import between top-level modules that the table below does not allow.
//!
//! The nodes are the top-level modules, except `xds::resource`, the leaf of `xds` that the
//! stages below `xds` may import (`xds` itself is everything else under `src/xds/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may import whom (besides itself). Keep in step with ARCHITECTURE.md, "Layers".
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("khash", &["model"]),
    ("parallel", &[]),
    ("state", &["model"]),
    ("source", &["model", "state", "parallel"]),
    (
        "translate",
        &["model", "state", "xds::resource", "khash", "parallel"],
    ),
    ("xds::resource", &[]),
    ("xds", &["xds::resource"]),
    (
        "hub",
        &[
            "model",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "parallel",
        ],
    ),
    (
        "runtime",
        &[
            "model",
            "khash",
            "source",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "hub",
        ],
    ),
    // The tools: anything but the CLI.
    (
        "pipeline",
        &[
            "model",
            "source",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "hub",
        ],
    ),
    (
        "validate",
        &[
            "model",
            "khash",
            "source",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "hub",
        ],
    ),
    (
        "tools",
        &[
            "model",
            "khash",
            "source",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "hub",
            "runtime",
            "pipeline",
            "validate",
        ],
    ),
    (
        "cli",
        &[
            "model",
            "khash",
            "source",
            "state",
            "translate",
            "xds",
            "xds::resource",
            "hub",
            "runtime",
            "pipeline",
            "validate",
            "tools",
        ],
    ),
];

/// Edges against the flow that are still in the code, each to be removed by the change named.
/// The test fails when one of them is no longer used, so that this list only shrinks.
const PENDING: &[(&str, &str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The node a file belongs to (`None`: the crate root, `lib.rs` / `main.rs`).
fn node_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    match parts.as_slice() {
        [root] if root == "lib" || root == "main" => None,
        [top, sub, ..] if top == "xds" && sub == "resource" => Some("xds::resource".into()),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The node a `crate::` path names.
fn node_of_path(path: &str) -> String {
    let mut segs = path.split("::");
    let top = segs.next().unwrap_or_default();
    match (top, segs.next()) {
        ("xds", Some("resource")) => "xds::resource".into(),
        _ => top.to_string(),
    }
}

/// The code of a file that counts: up to its `#[cfg(test)]` part, without comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.split(" //").next().unwrap_or(l)))
}

#[test]
fn imports_follow_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(n, deps)| (*n, deps.iter().copied().collect()))
        .collect();
    let pending: BTreeSet<(&str, &str)> = PENDING.iter().map(|(a, b, _)| (*a, *b)).collect();
    let path_re =
        regex::Regex::new(r"\bcrate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)?)").expect("regex");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut bad = Vec::new();
    let mut used_pending = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&root).expect("under src");
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(from) = node_of(rel) else {
            continue;
        };
        let deps = allowed.get(from.as_str()).unwrap_or_else(|| {
            panic!(
                "{}: module {from:?} is not in the layering table (tests/layering.rs, ARCHITECTURE.md)",
                rel.display()
            )
        });
        let text = std::fs::read_to_string(file).expect("read");
        for (line_no, line) in code_lines(&text) {
            assert!(
                !line.contains("crate::{"),
                "{}:{line_no}: grouped `crate::{{..}}` imports are not checked; write one path per module",
                rel.display()
            );
            for cap in path_re.captures_iter(line) {
                let to = node_of_path(&cap[1]);
                if to == from || deps.contains(to.as_str()) {
                    continue;
                }
                if pending.contains(&(from.as_str(), to.as_str())) {
                    used_pending.insert((from.clone(), to.clone()));
                    continue;
                }
                bad.push(format!(
                    "{}:{line_no}: {from} imports {to} (`crate::{}`)",
                    rel.display(),
                    &cap[1]
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers (see ARCHITECTURE.md, \"Layers\"):\n{}",
        bad.join("\n")
    );
    for (from, to, why) in PENDING {
        assert!(
            used_pending.contains(&(from.to_string(), to.to_string())),
            "the pending edge {from} -> {to} ({why}) is gone: remove it from PENDING"
        );
    }
}

#[test]
fn the_table_has_no_cycles() {
    // A module's allowed imports may not reach back to it.
    let allowed: BTreeMap<&str, Vec<&str>> = ALLOWED
        .iter()
        .map(|(n, deps)| (*n, deps.to_vec()))
        .collect();
    for start in allowed.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = allowed[start].clone();
        while let Some(n) = todo.pop() {
            assert_ne!(n, *start, "{start} can reach itself through the table");
            if seen.insert(n) {
                todo.extend(allowed.get(n).cloned().unwrap_or_default());
            }
        }
    }
}
