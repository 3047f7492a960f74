//! Reads every `*.yaml`, `*.yml` and `*.json` file under a directory: multi-document YAML and
//! `kind: List` included. Hidden paths and editor backups (`.x.swp`, `x~`) are skipped; see
//! [`is_manifest`].

use std::path::{Path, PathBuf};

use super::json::{Digest, Read};
use super::unique_keys::UniqueValue;
use super::{ErrorCode, InputError, Origin, Sourced};
use crate::model::{parse_object, ParseError};

/// Everything read from one file (or a whole directory).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    pub objects: Vec<Sourced>,
    pub errors: Vec<InputError>,
}

impl Loaded {
    fn extend(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        self.errors.extend(other.errors);
    }
}

/// True for a manifest we read, `rel` being its path relative to the directory: a `*.yaml`,
/// `*.yml` or `*.json` file, not an editor backup (`x~`), with no hidden (`.`) component. The
/// last rule follows kubelet's layout of a mounted ConfigMap: the files are symlinks
/// (`f.yaml -> ..data/f.yaml`) into a hidden timestamped directory that `..data` points to, so
/// only the symlinks are read and nothing is read twice.
pub fn is_manifest(rel: &Path) -> bool {
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if hidden || name.ends_with('~') {
        return false;
    }
    matches!(
        rel.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml") | Some("json")
    )
}

/// All manifest files under `dir`, sorted, as paths relative to `dir`. Symlinks are followed
/// (to files and to directories, each directory once); hidden directories are not entered.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())) {
            continue;
        }
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let hidden = rel
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            let mut ft = entry.file_type()?;
            if ft.is_symlink() {
                // A dangling link reads as no file.
                match std::fs::metadata(&path) {
                    Ok(m) => ft = m.file_type(),
                    Err(_) => continue,
                }
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && is_manifest(rel) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every manifest under `dir` (on every core, see [`load_files`]).
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    match list_files(dir) {
        Ok(files) => {
            for one in load_files(dir, &files) {
                loaded.extend(one);
            }
        }
        Err(e) => loaded.errors.push(InputError {
            object: None,
            origin: None,
            message: format!("reading directory {}: {e}", dir.display()),
            code: ErrorCode::Parse,
            subject: None,
        }),
    }
    loaded
}

/// Reads the given files (paths relative to `dir`) as [`load_file`] does, on every core
/// ([`super::parallel::map`]); the results are in the order of `rels`.
pub fn load_files(dir: &Path, rels: &[PathBuf]) -> Vec<Loaded> {
    super::parallel::map(rels, |rel| load_file(dir, rel))
}

/// Reads one file, `rel` being its path relative to `dir`. A missing file reads as empty.
pub fn load_file(dir: &Path, rel: &Path) -> Loaded {
    load_file_known(dir, rel, &|_| false).0
}

/// [`load_file`], not typing again the objects whose text has a digest `known` accepts
/// ([`parse_text_known`]).
pub fn load_file_known(
    dir: &Path,
    rel: &Path,
    known: &dyn Fn(&Digest) -> bool,
) -> (Loaded, Digests) {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(text) => parse_text_known(rel, &text, known),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => (
            Loaded {
                objects: vec![],
                errors: vec![InputError {
                    object: None,
                    origin: Some(Origin {
                        file: rel.to_path_buf(),
                        doc: 0,
                        item: None,
                    }),
                    message: format!("cannot read file: {e}"),
                    code: ErrorCode::Parse,
                    subject: None,
                }],
            },
            Digests::default(),
        ),
    }
}

/// Parses the text of one file; `file` is only used to name origins. JSON is read straight
/// into the objects ([`super::json`]); a JSON file that does not read cleanly there, and YAML,
/// are read through `serde_json::Value` ([`parse_values`]), which words the errors.
pub fn parse_text(file: &Path, text: &str) -> Loaded {
    parse_text_known(file, text, &|_| false).0
}

/// What [`parse_text_known`] reads besides the objects.
#[derive(Debug, Default)]
pub struct Digests {
    /// The digest of each object's text, in [`Loaded::objects`]' order; empty when the file
    /// was read through `serde_json::Value` (YAML, or JSON that did not read cleanly).
    pub objects: Vec<Digest>,
    /// The objects whose digest was known, not typed again: where each is, and its digest.
    pub known: Vec<(Origin, Digest)>,
}

/// [`parse_text`], not typing the objects of a JSON file whose text has a digest `known`
/// accepts (they are in [`Digests::known`] instead of [`Loaded::objects`]; the caller has
/// them from an earlier read of the same text).
pub fn parse_text_known(
    file: &Path,
    text: &str,
    known: &dyn Fn(&Digest) -> bool,
) -> (Loaded, Digests) {
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    let Some(clean) = is_json
        .then(|| super::json::read_clean(text, known))
        .flatten()
    else {
        return (parse_values(file, text), Digests::default());
    };
    let (mut loaded, mut digests) = (Loaded::default(), Digests::default());
    for c in clean {
        let origin = Origin {
            file: file.to_path_buf(),
            doc: c.doc,
            item: c.item,
        };
        match c.read {
            Read::Object(object) => {
                loaded.objects.push(Sourced { object, origin });
                digests.objects.push(c.digest);
            }
            Read::Skipped(kind) => skipped(&origin, &kind),
            Read::Known => digests.known.push((origin, c.digest)),
        }
    }
    (loaded, digests)
}

/// [`parse_text`] through a `serde_json::Value` of each document.
fn parse_values(file: &Path, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let origin = |doc: usize, item: Option<usize>| Origin {
        file: file.to_path_buf(),
        doc,
        item,
    };
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    let docs: Vec<Result<serde_json::Value, String>> = if is_json {
        // A JSON file may hold several concatenated values.
        serde_json::Deserializer::from_str(text)
            .into_iter::<UniqueValue>()
            .map(|r| r.map(|u| u.0).map_err(|e| format!("malformed JSON: {e}")))
            .collect()
    } else {
        let options = yaml_options(text.len());
        split_documents(text)
            .into_iter()
            .map(|(line_offset, doc)| {
                serde_saphyr::from_str_with_options::<serde_json::Value>(doc, options.clone())
                    .map_err(|e| {
                        let message = yaml_error(&e, line_offset, text.len());
                        match duplicate_key_object(&e, doc, &options) {
                            Some(object) => format!("{message} (in {object})"),
                            None => message,
                        }
                    })
            })
            .collect()
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let doc_no = i + 1;
        match doc {
            Err(message) => loaded
                .errors
                .push(parse_error(origin(doc_no, None), message)),
            Ok(serde_json::Value::Null) => {}
            Ok(mut value) => {
                let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                let is_list = kind == "List"
                    || (value.get("items").is_some_and(|i| i.is_array()) && kind.ends_with("List"));
                if !is_list {
                    push_one(&mut loaded, value, origin(doc_no, None));
                    continue;
                }
                let kind = kind.to_string();
                // The items are moved out of the list, not copied.
                match value.get_mut("items").map(serde_json::Value::take) {
                    Some(serde_json::Value::Array(items)) => {
                        for (j, item) in items.into_iter().enumerate() {
                            if item.is_object() {
                                push_one(&mut loaded, item, origin(doc_no, Some(j)));
                            } else if !item.is_null() {
                                loaded.errors.push(parse_error(
                                    origin(doc_no, Some(j)),
                                    format!(
                                        "a {kind} item must be an object (a mapping), not {}",
                                        json_type(&item)
                                    ),
                                ));
                            }
                        }
                    }
                    None | Some(serde_json::Value::Null) => {}
                    Some(other) => loaded.errors.push(parse_error(
                        origin(doc_no, None),
                        format!(
                            "the items of a {kind} must be a list, not {}",
                            json_type(&other)
                        ),
                    )),
                }
            }
        }
    }
    loaded
}

/// Parses one YAML document (a config dump) with the limits manifests have.
pub fn parse_yaml(text: &str) -> Result<serde_json::Value, String> {
    serde_saphyr::from_str_with_options(text, yaml_options(text.len()))
        .map_err(|e| yaml_error(&e, 0, text.len()))
}

fn parse_error(origin: Origin, message: String) -> InputError {
    InputError {
        object: None,
        origin: Some(origin),
        message,
        code: ErrorCode::Parse,
        subject: None,
    }
}

/// A JSON value's type, in words, for messages.
fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// How many times its own size a YAML file may grow to once its aliases are expanded (scalar
/// bytes, plus [`EXPANSION_ALLOWANCE`]): a manifest repeats a block through aliases a few
/// times; an alias bomb repeats it thousands of times.
pub const EXPANSION_FACTOR: usize = 16;
/// Expansion every file may have whatever its size (1 MiB), so a small file may still alias.
pub const EXPANSION_ALLOWANCE: usize = 1 << 20;
/// The deepest nesting of lists and mappings a document may have.
pub const MAX_DEPTH: usize = 64;

/// The parser's limits for a file of `len` bytes: alias expansion is bounded by a multiple of
/// the file's size (bytes of scalars, nodes and events), so memory stays proportional to what
/// is on disk; duplicate keys are errors (Kubernetes rejects them too).
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_total_scalar_bytes = len
        .saturating_mul(EXPANSION_FACTOR)
        .saturating_add(EXPANSION_ALLOWANCE);
    // Without aliases a node or an event takes at least a byte of text; the defaults stay as
    // the allowance.
    budget.max_nodes = budget.max_nodes.saturating_add(len);
    budget.max_events = budget.max_events.saturating_add(len.saturating_mul(2));
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.alias_limits.max_total_replayed_events = options
        .alias_limits
        .max_total_replayed_events
        .saturating_add(len);
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.with_snippet = false;
    options
}

/// The documents of a YAML stream, each with the number of lines before it. A line starting
/// with `---` or `...` (then a space, a tab or the line's end) can only be a document marker
/// (YAML forbids it inside content), so this split is exact; parsing each document on its own
/// keeps one broken document from hiding the ones after it. Text before the first marker is a
/// document when it holds more than blank lines, comments and directives.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
    };
    let has_content = |chunk: &str| {
        chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !l.starts_with('%')
        })
    };
    let mut docs = Vec::new();
    // The current document: its first byte and line, and whether a `---` opened it.
    let (mut start, mut start_line, mut explicit) = (0usize, 0usize, false);
    let mut offset = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if marker(line, "---") {
            let chunk = &text[start..offset];
            if explicit || has_content(chunk) {
                docs.push((start_line, chunk));
            }
            (start, start_line, explicit) = (offset, n, true);
        } else if marker(line, "...") {
            let chunk = &text[start..offset];
            if explicit || has_content(chunk) {
                docs.push((start_line, chunk));
            }
            (start, start_line, explicit) = (offset + line.len(), n + 1, false);
        }
        offset += line.len();
    }
    let chunk = &text[start..];
    if explicit || has_content(chunk) {
        docs.push((start_line, chunk));
    }
    docs
}

/// For a duplicate key: the object the document would define (`Kind ns/name`), read again
/// keeping the first of the duplicates, so the message names it. The object itself is not
/// loaded: which of the values was meant is unknown.
fn duplicate_key_object(
    e: &serde_saphyr::Error,
    doc: &str,
    options: &serde_saphyr::Options,
) -> Option<String> {
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    if !matches!(inner, serde_saphyr::Error::DuplicateMappingKey { .. }) {
        return None;
    }
    let mut options = options.clone();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
    let v: serde_json::Value = serde_saphyr::from_str_with_options(doc, options).ok()?;
    let kind = v.get("kind")?.as_str()?;
    let meta = |k: &str| {
        v.pointer(&format!("/metadata/{k}"))
            .and_then(|n| n.as_str())
    };
    let name = meta("name")?;
    Some(format!(
        "{kind} {}/{name}",
        meta("namespace").unwrap_or("default")
    ))
}

/// The message for a YAML document that does not load, with line numbers in the file.
fn yaml_error(e: &serde_saphyr::Error, line_offset: usize, len: usize) -> String {
    use serde_saphyr::Error;
    let mut inner = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let at = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| {
            format!(
                " at line {}, column {}",
                l.line() + line_offset as u64,
                l.column()
            )
        })
        .unwrap_or_default();
    match inner {
        Error::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("malformed YAML: duplicate key {key:?}{at}"),
            None => format!("malformed YAML: duplicate key{at}"),
        },
        Error::Budget {
            breach: serde_saphyr::budget::BudgetBreach::Depth { depth },
            ..
        } => format!("YAML nested {depth} deep, more than {MAX_DEPTH}{at}"),
        Error::Budget { breach, .. } => format!(
            "YAML over the limits for a file of {len} bytes ({}){at}: aliases expanding to \
             more than {EXPANSION_FACTOR} times the file",
            breach_words(breach)
        ),
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => format!(
            "YAML over the limits for a file of {len} bytes (alias expansion){at}: aliases \
             expanding to more than {EXPANSION_FACTOR} times the file"
        ),
        _ => format!(
            "malformed YAML: {}",
            e.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
                line_offset: line_offset as u64,
            })
        ),
    }
}

/// A budget breach in words.
fn breach_words(b: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match b {
        B::ScalarBytes { total_scalar_bytes } => {
            format!("{total_scalar_bytes} bytes of values")
        }
        B::Nodes { nodes } => format!("{nodes} nodes"),
        B::Events { events } => format!("{events} parser events"),
        B::Aliases { aliases } => format!("{aliases} aliases"),
        B::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases of {anchors} anchors")
        }
        other => format!("{other:?}"),
    }
}

/// A document of a kind we do not serve (logged at debug).
fn skipped(origin: &Origin, kind: &str) {
    tracing::debug!(%origin, kind, "skipping object of a kind we do not serve");
}

fn push_one(loaded: &mut Loaded, value: serde_json::Value, origin: Origin) {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    match parse_object(value) {
        Ok(Some(object)) => loaded.objects.push(Sourced { object, origin }),
        Ok(None) => skipped(&origin, &kind),
        Err(ParseError::NoKind) => loaded.errors.push(InputError {
            object: None,
            origin: Some(origin),
            message: "document has no kind".to_string(),
            code: ErrorCode::Parse,
            subject: None,
        }),
        Err(ParseError::Invalid {
            kind: _,
            namespace,
            name,
            message,
        }) => {
            let object =
                crate::model::kind_of(&api_version, &kind).map(|kind| crate::model::ObjectKey {
                    kind,
                    namespace,
                    name,
                });
            let message = if object.is_none() {
                format!("{kind}: {message}")
            } else {
                message
            };
            let code = if object.is_none() {
                ErrorCode::Parse
            } else {
                ErrorCode::Invalid
            };
            loaded.errors.push(InputError {
                object,
                origin: Some(origin),
                message,
                code,
                subject: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn multi_document_list_and_errors_name_file_and_document() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n\
                    - apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: skip}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: 7}\n---\n\
                    key: [unclosed\n";
        let loaded = parse_text(Path::new("x/svc.yaml"), text);
        let names: Vec<String> = loaded
            .objects
            .iter()
            .map(|o| o.object.key().to_string())
            .collect();
        assert_eq!(names, vec!["Service ns/a", "Service default/b"]);
        assert_eq!(loaded.objects[1].origin.item, Some(0));
        assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
        let first = loaded.errors[0].to_string();
        assert!(
            first.starts_with("Service default/bad (x/svc.yaml document 3)"),
            "{first}"
        );
        let second = loaded.errors[1].to_string();
        assert!(
            second.starts_with("x/svc.yaml document 4: malformed YAML"),
            "{second}"
        );
    }

    #[test]
    fn a_bad_gateway_is_filed_under_its_own_api() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                    metadata: {name: g, namespace: ns}\nspec: []\n---\n\
                    apiVersion: networking.istio.io/v1\nkind: Gateway\n\
                    metadata: {name: i, namespace: ns}\nspec: []\n";
        let loaded = parse_text(Path::new("gw.yaml"), text);
        let kinds: Vec<Option<Kind>> = loaded
            .errors
            .iter()
            .map(|e| e.object.as_ref().map(|k| k.kind))
            .collect();
        assert_eq!(kinds, vec![Some(Kind::K8sGateway), Some(Kind::Gateway)]);
        assert!(
            loaded.errors[0]
                .to_string()
                .starts_with("gateway.networking.k8s.io/Gateway ns/g (gw.yaml document 1)"),
            "{}",
            loaded.errors[0]
        );
    }

    fn errors(text: &str) -> Vec<String> {
        parse_text(Path::new("f.yaml"), text)
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn documents_split_exactly_and_keep_their_numbers_and_lines() {
        let text = "# leading comment\n---\n---\na: 1\n...\n# between\n--- \nb: [\n---\nkind: x\nc: 1\nc: 2\n";
        let docs = split_documents(text);
        let lines: Vec<usize> = docs.iter().map(|d| d.0).collect();
        assert_eq!(lines, vec![1, 2, 6, 8], "{docs:?}");
        let errors = errors(text);
        assert_eq!(errors.len(), 3, "{errors:?}");
        // A broken document does not hide the next one; lines are the file's.
        assert!(
            errors[0].starts_with("f.yaml document 2: document has no kind"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("f.yaml document 3: malformed YAML"),
            "{}",
            errors[1]
        );
        assert!(
            errors[1].contains("line 8") || errors[1].contains("line 9"),
            "{}",
            errors[1]
        );
        assert_eq!(
            errors[2],
            "f.yaml document 4: malformed YAML: duplicate key \"c\" at line 12, column 1"
        );
        // A document that is only a marker still counts.
        assert_eq!(split_documents("a: 1\n---\n").len(), 2);
        assert_eq!(split_documents("").len(), 0);
        assert_eq!(split_documents("---a: 1\n").len(), 1, "not a marker");
    }

    #[test]
    fn alias_expansion_is_bounded_by_the_file_size_and_names_the_file() {
        // One 100 KB anchor aliased 20,000 times: 2 GB once expanded.
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n  a: &a {}\n  l:\n",
            "x".repeat(100_000)
        );
        for _ in 0..20_000 {
            text.push_str("  - *a\n");
        }
        let loaded = parse_text(Path::new("dir/bomb.yaml"), &text);
        assert!(loaded.objects.is_empty());
        let e = loaded.errors[0].to_string();
        assert!(
            e.starts_with("dir/bomb.yaml document 1: YAML over the limits for a file of"),
            "{e}"
        );
        assert!(
            e.contains("aliases expanding to more than 16 times the file"),
            "{e}"
        );
        // Billion laughs and deep nesting too.
        let mut laughs = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (n, p) in ["b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g"])
        {
            laughs.push_str(&format!(
                "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            ));
        }
        assert!(
            errors(&laughs)[0].contains("YAML over the limits"),
            "{:?}",
            errors(&laughs)
        );
        let deep = format!("kind: x\na: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(
            errors(&deep)[0].contains("nested 65 deep, more than 64"),
            "{:?}",
            errors(&deep)
        );
        // A few aliases in an ordinary manifest are fine.
        let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: &l {app: a}, annotations: *l}\n";
        assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    }

    #[test]
    fn lists_with_items_that_are_not_objects_are_reported() {
        let text = "apiVersion: v1\nkind: List\nitems: {a: 1}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- just a string\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- [1]\n";
        let loaded = parse_text(Path::new("l.yaml"), text);
        assert_eq!(loaded.objects.len(), 1);
        let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            vec![
                "l.yaml document 1: the items of a List must be a list, not an object",
                "l.yaml document 2 item 0: a List item must be an object (a mapping), not a string",
                "l.yaml document 2 item 2: a List item must be an object (a mapping), not a list",
            ]
        );
    }

    #[test]
    fn json_duplicate_keys_are_reported() {
        let dup = "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"a\", \"name\": \"b\"}}\n";
        let loaded = parse_text(Path::new("s.json"), dup);
        assert!(loaded.objects.is_empty());
        let e = loaded.errors[0].to_string();
        assert!(
            e.starts_with("s.json document 1: malformed JSON: duplicate key \"name\" at line 1"),
            "{e}"
        );
        let ok = "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"c\"}, \"x\": [1.5, null, true, -1, \"s\"]}\n\
                  {\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"d\"}}";
        let loaded = parse_text(Path::new("s.json"), ok);
        assert_eq!(loaded.objects.len(), 2, "{:?}", loaded.errors);
    }

    /// Every golden input (as JSON) and a synthetic namespace: the objects read straight from
    /// the text are the ones the `Value` path reads, and a file without errors is read
    /// straight (not through the `Value` path).
    #[test]
    fn json_is_read_straight_into_the_objects_the_value_path_gives() {
        let mut texts = vec![serde_json::to_string(
            &crate::tools::synth::Synth::new(30, crate::tools::synth::Form::Route)
                .namespace_list(0, 1),
        )
        .unwrap()];
        for case in std::fs::read_dir("testdata").unwrap() {
            let input = case.unwrap().path().join("input");
            for f in std::fs::read_dir(&input).into_iter().flatten() {
                let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                let docs: Vec<String> = split_documents(&text)
                    .into_iter()
                    .filter_map(|(_, d)| parse_yaml(d).ok())
                    .map(|v| serde_json::to_string_pretty(&v).unwrap())
                    .collect();
                texts.push(docs.join("\n"));
            }
        }
        let mut straight = 0;
        for text in &texts {
            let file = Path::new("f.json");
            let by_value = parse_values(file, text);
            assert_eq!(parse_text(file, text), by_value, "{text}");
            if by_value.errors.is_empty() {
                assert!(
                    super::super::json::read_clean(text, &|_| false).is_some(),
                    "{text}"
                );
                straight += by_value.objects.len();
            }
        }
        assert!(straight > 100, "{straight} objects read straight");
    }

    /// JSON that is not clean anywhere (in a field no type reads, a list's own fields, a
    /// kind we skip) is read through the `Value` path, so it fails as before with the same
    /// words.
    #[test]
    fn json_that_does_not_read_cleanly_keeps_its_errors() {
        let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}"#;
        let cases = [
            // A duplicate key where no type reads it.
            format!(r#"{svc}, "x": {{"y": [{{"k": 1, "k": 2}}]}}}}"#),
            format!(r#"{{"apiVersion": "v1", "kind": "List", "metadata": {{"a": 1, "a": 2}}, "items": [{svc}}}]}}"#),
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"a": 1, "a": 1}}"#.to_string(),
            format!(r#"{{"apiVersion": "v1", "kind": "List", "items": [{svc}, "status": {{"b": 1, "b": 1}}}}]}}"#),
            // Shapes, checks, items, documents.
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress", "metadata": {"name": "i"}, "spec": []}]}"#.to_string(),
            r#"{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "999.1.1.1"}]}]}"#.to_string(),
            format!(r#"{{"apiVersion": "v1", "kind": "List", "items": [null, 1, {svc}}}]}}"#),
            format!(r#"{svc}}} "just a string" {svc}}}"#),
            format!(r#"{svc}}} {svc}, "spec": {{"ports": [1]}}}}"#),
            format!(r#"{svc}}} {{"kind": 7}} {svc}"#),
            r#"{"kind": "List", "items": {"a": 1}}"#.to_string(),
        ];
        for text in &cases {
            assert!(
                super::super::json::read_clean(text, &|_| false).is_none(),
                "{text}"
            );
            let by_value = parse_values(Path::new("f.json"), text);
            assert!(!by_value.errors.is_empty(), "{text}");
            assert_eq!(parse_text(Path::new("f.json"), text), by_value);
        }
        // The duplicate is reported where serde_json reports an error of its mapping, as
        // before: once the duplicate's value is read (here the last: after the closing brace).
        let dup = format!(r#"{svc}, "x": {{"y": [{{"k": 1, "k": 22}}]}}}}"#);
        let e = parse_text(Path::new("f.json"), &dup).errors[0].to_string();
        let col = dup.find("22}").unwrap() + 3;
        assert_eq!(
            e,
            format!(
                "f.json document 1: malformed JSON: duplicate key \"k\" at line 1 column {col}"
            )
        );
    }
}
