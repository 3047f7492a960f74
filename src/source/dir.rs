//! The manifest directory as a source: per-file object sets, reloaded file by file. A reload
//! costs what the changed files hold, not what the directory holds: it yields the [`Change`]s
//! for the objects those files define (or defined).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ObjectKey;
use crate::source::files::{self, Loaded};
use crate::source::InputError;
use crate::state::{Change, Entry};

/// The manifest directory as per-file object sets, so that one file's change touches only that
/// file's objects, and a file that stops parsing keeps serving what it served before.
///
/// An object defined more than once (in one file or several) is taken from the first definition
/// in path order, then document order, as [`crate::state::Inputs::from_sourced`] does; the other
/// definitions are reported.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, Loaded>,
    /// The files defining each object (the first one holds the definition in force).
    owners: BTreeMap<ObjectKey, BTreeSet<PathBuf>>,
    /// Objects defined more than once.
    duplicates: BTreeSet<ObjectKey>,
    /// What the changes so far have made of each object (the definition in force).
    current: BTreeMap<ObjectKey, Arc<Entry>>,
}

impl DirState {
    /// Re-reads the given files (relative paths); `None` re-reads the whole directory. Returns
    /// the changes to the objects, sorted by object.
    pub fn reload(&mut self, dir: &Path, changed: Option<&BTreeSet<PathBuf>>) -> Vec<Change> {
        let paths: BTreeSet<PathBuf> = match changed {
            Some(c) => c.clone(),
            None => {
                let mut now: BTreeSet<PathBuf> = files::list_files(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                // Files that are gone are reloaded too (as removed).
                now.extend(self.files.keys().cloned());
                now
            }
        };
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        for rel in paths {
            let loaded = if dir.join(&rel).is_file() {
                Some(self.load(dir, &rel))
            } else {
                None
            };
            if let Some(old) = self.files.get(&rel) {
                for s in &old.objects {
                    let key = s.object.key();
                    if let Some(owners) = self.owners.get_mut(&key) {
                        owners.remove(&rel);
                        if owners.is_empty() {
                            self.owners.remove(&key);
                        }
                    }
                    touched.insert(key);
                }
            }
            match loaded {
                Some(l) => {
                    for s in &l.objects {
                        let key = s.object.key();
                        self.owners
                            .entry(key.clone())
                            .or_default()
                            .insert(rel.clone());
                        touched.insert(key);
                    }
                    self.files.insert(rel, l);
                }
                None => {
                    self.files.remove(&rel);
                }
            }
        }
        let mut changes = Vec::new();
        for key in touched {
            let defs = self.definitions(&key);
            let duplicated = defs.len() > 1;
            let first = defs.first().map(|first| Entry {
                object: first.object.clone(),
                origin: Some(first.origin.clone()),
            });
            if duplicated {
                self.duplicates.insert(key.clone());
            } else {
                self.duplicates.remove(&key);
            }
            match first {
                Some(entry) => {
                    if self.current.get(&key).is_none_or(|c| **c != entry) {
                        let entry = Arc::new(entry);
                        self.current.insert(key, entry.clone());
                        changes.push(Change::Upsert(entry));
                    }
                }
                None => {
                    if self.current.remove(&key).is_some() {
                        changes.push(Change::Delete(key));
                    }
                }
            }
        }
        changes
    }

    /// Loads one file; a file that stops parsing keeps the objects it had that the new text no
    /// longer yields.
    fn load(&self, dir: &Path, rel: &Path) -> Loaded {
        let mut loaded = files::load_file(dir, rel);
        let broken = loaded.errors.iter().any(|e| e.object.is_none());
        if broken {
            if let Some(prev) = self.files.get(rel) {
                let now: BTreeSet<ObjectKey> =
                    loaded.objects.iter().map(|s| s.object.key()).collect();
                for s in &prev.objects {
                    if !now.contains(&s.object.key()) {
                        loaded.objects.push(s.clone());
                    }
                }
                for e in &mut loaded.errors {
                    if e.object.is_none() {
                        e.message
                            .push_str("; the file's previous objects are still served");
                    }
                }
            }
        }
        loaded
    }

    /// Every definition of an object, the one in force first.
    fn definitions(&self, key: &ObjectKey) -> Vec<&crate::source::Sourced> {
        self.owners
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|f| self.files.get(f))
            .flat_map(|l| l.objects.iter().filter(|s| &s.object.key() == key))
            .collect()
    }

    /// Every load error, and a report for each object defined more than once.
    pub fn errors(&self) -> Vec<InputError> {
        let mut errors: Vec<InputError> = self
            .files
            .values()
            .flat_map(|l| l.errors.iter().cloned())
            .collect();
        for key in &self.duplicates {
            let defs = self.definitions(key);
            let Some((first, rest)) = defs.split_first() else {
                continue;
            };
            for d in rest {
                errors.push(InputError {
                    object: Some(key.clone()),
                    origin: Some(d.origin.clone()),
                    message: format!("defined twice; keeping the one from {}", first.origin),
                    code: crate::source::ErrorCode::Invalid,
                    subject: None,
                });
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINGRESS: &str = r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata: {name: hello, namespace: default}
spec:
  rules:
  - hosts: [hello.default.example.com]
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: 100}
---
apiVersion: v1
kind: Service
metadata: {name: hello-00001, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8012}]
"#;

    use crate::state::Inputs;

    /// Feeds the reloads' changes into inputs, as the hub does.
    struct Fed {
        state: DirState,
        inputs: Inputs,
    }

    impl Fed {
        fn new() -> Fed {
            Fed {
                state: DirState::default(),
                inputs: Inputs::default(),
            }
        }

        fn reload(&mut self, dir: &Path, changed: Option<&[&str]>) -> usize {
            let changed: Option<BTreeSet<PathBuf>> =
                changed.map(|c| c.iter().map(PathBuf::from).collect());
            let changes = self.state.reload(dir, changed.as_ref());
            let n = changes.len();
            self.inputs.apply(changes);
            n
        }

        /// The inputs and errors a full load of the directory gives now.
        fn full(dir: &Path) -> (Inputs, Vec<InputError>) {
            crate::pipeline::load(dir)
        }
    }

    #[test]
    fn reloads_give_what_a_full_load_gives_and_touch_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: {port}}}]}}\n---\n")
        };
        let write = |f: &str, text: String| std::fs::write(dir.path().join(f), text).unwrap();
        let check = |fed: &Fed| {
            let (inputs, mut errors) = Fed::full(dir.path());
            assert!(fed.inputs.changes_to(&inputs).is_empty(), "same objects");
            let mut got = fed.state.errors();
            got.sort();
            errors.sort();
            assert_eq!(got, errors, "same errors");
        };
        write("a.yaml", format!("{}{}", svc("a", 80), svc("b", 80)));
        write("b.yaml", svc("c", 80));
        let mut fed = Fed::new();
        assert_eq!(fed.reload(dir.path(), None), 3);
        check(&fed);
        // One object of one file changes: one change.
        write("a.yaml", format!("{}{}", svc("a", 81), svc("b", 80)));
        assert_eq!(fed.reload(dir.path(), Some(&["a.yaml"])), 1);
        check(&fed);
        // A duplicate in a later file: reported, the first definition stays (no change).
        write("c.yaml", svc("a", 99));
        assert_eq!(fed.reload(dir.path(), Some(&["c.yaml"])), 0);
        check(&fed);
        assert!(fed.state.errors()[0]
            .to_string()
            .contains("defined twice; keeping the one from a.yaml document 1"));
        // The first definition goes: the duplicate takes over (and b, now document 1, has a
        // new origin).
        write("a.yaml", svc("b", 80));
        assert_eq!(fed.reload(dir.path(), Some(&["a.yaml"])), 2);
        check(&fed);
        assert!(fed.state.errors().is_empty());
        // Files removed, found by a rescan.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
        assert_eq!(fed.reload(dir.path(), None), 2);
        check(&fed);
        assert_eq!(fed.inputs.len(), 1);
    }

    #[test]
    fn a_file_that_stops_parsing_keeps_serving_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), KINGRESS).unwrap();
        let mut fed = Fed::new();
        fed.reload(dir.path(), None);
        assert_eq!(fed.inputs.len(), 2);
        std::fs::write(dir.path().join("a.yaml"), "kind: [broken\n").unwrap();
        fed.reload(dir.path(), Some(&["a.yaml"]));
        let errors = fed.state.errors();
        assert_eq!(fed.inputs.len(), 2, "previous objects kept");
        assert!(
            errors[0]
                .to_string()
                .contains("a.yaml document 1: malformed YAML"),
            "{}",
            errors[0]
        );
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        fed.reload(dir.path(), Some(&["a.yaml"]));
        assert_eq!(fed.inputs.len(), 0, "a deleted file's objects go");
    }
}
