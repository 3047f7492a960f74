//! Reads every `*.yaml`, `*.yml` and `*.json` file under a directory: multi-document YAML and
//! `kind: List` included. Hidden files and editor backups (`.x.swp`, `x~`) are skipped.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// True for a file name we read.
pub fn is_manifest(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml") | Some("json")
    )
}

/// All manifest files under `dir`, sorted, as paths relative to `dir`.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let ft = entry.file_type()?;
            if ft.is_dir() && !hidden {
                stack.push(path);
            } else if is_manifest(&path) && (ft.is_file() || ft.is_symlink()) {
                if let Ok(rel) = path.strip_prefix(dir) {
                    out.push(rel.to_path_buf());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every manifest under `dir`.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    match list_files(dir) {
        Ok(files) => {
            for rel in files {
                loaded.extend(load_file(dir, &rel));
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

/// Reads one file, `rel` being its path relative to `dir`. A missing file reads as empty.
pub fn load_file(dir: &Path, rel: &Path) -> Loaded {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(text) => parse_text(rel, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::default(),
        Err(e) => Loaded {
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
    }
}

/// Parses the text of one file; `file` is only used to name origins.
pub fn parse_text(file: &Path, text: &str) -> Loaded {
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
            .into_iter::<serde_json::Value>()
            .map(|r| r.map_err(|e| format!("malformed JSON: {e}")))
            .collect()
    } else {
        let mut docs = Vec::new();
        for de in serde_yaml::Deserializer::from_str(text) {
            match serde_json::Value::deserialize(de) {
                Ok(v) => docs.push(Ok(v)),
                Err(e) => {
                    docs.push(Err(format!("malformed YAML: {e}")));
                    // The YAML stream cannot be resynchronised after a syntax error.
                    if e.location().is_some() {
                        break;
                    }
                }
            }
        }
        docs
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let doc_no = i + 1;
        match doc {
            Err(message) => loaded.errors.push(InputError {
                object: None,
                origin: Some(origin(doc_no, None)),
                message,
                code: ErrorCode::Parse,
                subject: None,
            }),
            Ok(serde_json::Value::Null) => {}
            Ok(value) => {
                let is_list = value.get("kind").and_then(|k| k.as_str()) == Some("List")
                    || (value.get("items").is_some_and(|i| i.is_array())
                        && value
                            .get("kind")
                            .and_then(|k| k.as_str())
                            .is_some_and(|k| k.ends_with("List")));
                if is_list {
                    let items = match value.get("items") {
                        Some(serde_json::Value::Array(items)) => items.clone(),
                        _ => Vec::new(),
                    };
                    for (j, item) in items.into_iter().enumerate() {
                        push_one(&mut loaded, item, origin(doc_no, Some(j)));
                    }
                } else {
                    push_one(&mut loaded, value, origin(doc_no, None));
                }
            }
        }
    }
    loaded
}

fn push_one(loaded: &mut Loaded, value: serde_json::Value, origin: Origin) {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    match parse_object(value) {
        Ok(Some(object)) => loaded.objects.push(Sourced { object, origin }),
        Ok(None) => tracing::debug!(%origin, kind, "skipping object of a kind we do not serve"),
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
            let object = crate::model::kind_from_name(&kind).map(|kind| crate::model::ObjectKey {
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
}
