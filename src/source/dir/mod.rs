//! The manifest directory as a source: per-file object sets, reloaded file by file. A reload
//! costs what the changed files hold, not what the directory holds: it yields the [`Change`]s
//! for the objects those files define (or defined). [`watch`] follows the directory (notify)
//! and [`run`] turns its events into [`Batch`]es. A vanished directory is not "every object
//! deleted": its last objects stay served until it reappears. A mounted ConfigMap (kubelet's
//! `..data` layout) is read through its visible links only and reloaded when `..data` swaps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{HashMap, ObjectKey};
use crate::source::files::{self, Digests, Loaded};
use crate::source::parallel::map as parallel_map;
use crate::source::{Digest, InputError, Sourced};
use crate::state::{keep_last_good, Change, Entry, Inputs, PREVIOUS_OBJECTS_SERVED};

mod watch;

pub use watch::{run, watch, FileEvent};

/// The manifest directory as per-file object sets, so that one file's change touches only that
/// file's objects, and a file that stops parsing keeps serving what it served before.
///
/// An object defined more than once (in one file or several) is taken from the first definition
/// in path order, then document order, as [`crate::state::Inputs::from_sourced`] does; the other
/// definitions are reported.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, FileObjects>,
    /// The files defining each object (the first one holds the definition in force). Hashed:
    /// nothing reads these maps in order (the changes are sorted from `touched`).
    owners: HashMap<ObjectKey, BTreeSet<PathBuf>>,
    /// Objects defined more than once.
    duplicates: BTreeSet<ObjectKey>,
    /// What the changes so far have made of each object (the definition in force).
    current: HashMap<ObjectKey, Arc<Entry>>,
}

/// Files read by [`DirState::read`], not yet applied: each file's text read as objects, or
/// `None` for a file that is not there (any more).
#[derive(Default)]
pub struct Reads {
    files: BTreeMap<PathBuf, Option<(Loaded, Digests)>>,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// One file's objects (shared: the definition in force is sent as it is, not copied), its
/// errors, and where each object's definitions are among them.
struct FileObjects {
    objects: Vec<Arc<Entry>>,
    errors: Vec<InputError>,
    /// Each object's definitions: indices into `objects`, in document order.
    by_key: HashMap<ObjectKey, Vec<usize>>,
    /// The objects read from JSON text by the digest of their text: a reload does not type
    /// again the objects whose text did not change, and sends them as they were.
    by_digest: HashMap<Digest, usize>,
}

impl FileObjects {
    /// A file read (`loaded`, with its `digests`), with the objects it keeps from before it
    /// stopped parsing; the objects whose text was known are taken from `before`, the same
    /// file's previous read.
    fn new(
        loaded: Loaded,
        digests: Digests,
        kept: Vec<Arc<Entry>>,
        before: Option<&FileObjects>,
    ) -> FileObjects {
        let mut read: Vec<(Arc<Entry>, Option<Digest>)> = Vec::new();
        let mut texts = digests.objects.into_iter();
        for s in loaded.objects {
            let entry = Entry {
                object: s.object,
                origin: Some(s.origin),
            };
            read.push((Arc::new(entry), texts.next()));
        }
        for (origin, digest) in digests.known {
            // `known` accepted only the digests of `before`: it has each one.
            let Some(prev) = before
                .and_then(|b| b.objects.get(*b.by_digest.get(&digest)?))
                .cloned()
            else {
                tracing::error!(file = %origin.file.display(), doc = origin.doc, "an object read before is missing; it is left out until its file changes");
                continue;
            };
            let entry = if prev.origin.as_ref() == Some(&origin) {
                prev
            } else {
                Arc::new(Entry {
                    object: prev.object.clone(),
                    origin: Some(origin),
                })
            };
            read.push((entry, Some(digest)));
        }
        // Document order, as a first read gives it (duplicates in one file: the first wins).
        read.sort_by_key(|(e, _)| e.origin.as_ref().map(|o| (o.doc, o.item)));
        let mut by_digest = HashMap::with_capacity_and_hasher(read.len(), Default::default());
        let mut objects = Vec::with_capacity(read.len() + kept.len());
        for (entry, digest) in read {
            if let Some(d) = digest {
                by_digest.insert(d, objects.len());
            }
            objects.push(entry);
        }
        objects.extend(kept);
        let mut by_key: HashMap<ObjectKey, Vec<usize>> =
            HashMap::with_capacity_and_hasher(objects.len(), Default::default());
        for (i, e) in objects.iter().enumerate() {
            by_key.entry(e.object.key()).or_default().push(i);
        }
        FileObjects {
            objects,
            errors: loaded.errors,
            by_key,
            by_digest,
        }
    }

    /// The definitions of `key` in this file, in document order.
    fn definitions<'a>(&'a self, key: &ObjectKey) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        let at = self.by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        at.iter().filter_map(|&i| self.objects.get(i))
    }
}

impl DirState {
    /// Re-reads the given files (relative paths); `None` re-reads the whole directory. Returns
    /// the changes to the objects, sorted by object. The files are read on every core
    /// ([`files::load_files`]); what an object's definitions make of it is found through
    /// each file's index, so a reload costs what the reloaded files hold.
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
        let mut reads = Reads::default();
        self.read(dir, paths, &mut reads);
        self.apply(reads)
    }

    /// Reads the given files (relative paths) into `reads` (a file read again replaces its
    /// earlier read), without changing the state: [`DirState::apply`] takes them in. So a run
    /// of events can be read as it comes, and applied once it has settled (or dropped).
    pub fn read(&self, dir: &Path, paths: BTreeSet<PathBuf>, reads: &mut Reads) {
        let present: Vec<PathBuf> = paths
            .iter()
            .filter(|rel| dir.join(rel).is_file())
            .cloned()
            .collect();
        let known = |rel: &Path, d: &Digest| {
            self.files
                .get(rel)
                .is_some_and(|f| f.by_digest.contains_key(d))
        };
        let loads = parallel_map(&present, |rel| {
            files::load_file_known(dir, rel, &|d| known(rel, d))
        });
        let mut loads: BTreeMap<PathBuf, (Loaded, Digests)> =
            present.into_iter().zip(loads).collect();
        for rel in paths {
            let read = loads.remove(&rel);
            reads.files.insert(rel, read);
        }
    }

    /// Takes in what [`DirState::read`] read (nothing may have been applied in between):
    /// the changes to the objects, sorted by object.
    pub fn apply(&mut self, reads: Reads) -> Vec<Change> {
        let mut read = reads.files;
        let paths: Vec<PathBuf> = read.keys().cloned().collect();
        // Sorted and deduplicated once below: cheaper than a sorted set of 50,000 keys.
        let mut touched: Vec<ObjectKey> = Vec::new();
        // Room for what the reads bring at once (the first load: every object), instead of
        // growing the maps step by step.
        let incoming: usize = read.values().flatten().map(|(l, _)| l.objects.len()).sum();
        self.owners.reserve(incoming);
        self.current.reserve(incoming);
        touched.reserve(incoming);
        for rel in paths {
            let loaded = read.remove(&rel).flatten().map(|(mut l, digests)| {
                let kept = self.keep_previous(&rel, &mut l);
                FileObjects::new(l, digests, kept, self.files.get(&rel))
            });
            if let Some(old) = self.files.get(&rel) {
                for key in old.by_key.keys() {
                    if let Some(owners) = self.owners.get_mut(key) {
                        owners.remove(&rel);
                        if owners.is_empty() {
                            self.owners.remove(key);
                        }
                    }
                    touched.push(key.clone());
                }
            }
            match loaded {
                Some(file) => {
                    for key in file.by_key.keys() {
                        self.owners
                            .entry(key.clone())
                            .or_default()
                            .insert(rel.clone());
                        touched.push(key.clone());
                    }
                    self.files.insert(rel, file);
                }
                None => {
                    self.files.remove(&rel);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut changes = Vec::new();
        for key in touched {
            let (first, duplicated) = self.in_force(&key);
            if duplicated {
                self.duplicates.insert(key.clone());
            } else {
                self.duplicates.remove(&key);
            }
            match first {
                Some(entry) => {
                    if self
                        .current
                        .get(&key)
                        .is_none_or(|c| !Arc::ptr_eq(c, &entry) && **c != *entry)
                    {
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

    /// A file just read, `rel`: if it stopped parsing, the objects it had that the new text
    /// no longer yields (they are kept, and its errors say so).
    fn keep_previous(&self, rel: &Path, loaded: &mut Loaded) -> Vec<Arc<Entry>> {
        // Errors that name no object: the file (or a document of it) did not parse.
        let broken = loaded.errors.iter_mut().filter(|e| e.object.is_none());
        let before = self.files.get(rel);
        let Some(prev) = keep_last_good(broken, before, PREVIOUS_OBJECTS_SERVED) else {
            return Vec::new();
        };
        let now: BTreeSet<ObjectKey> = loaded.objects.iter().map(|s| s.object.key()).collect();
        prev.objects
            .iter()
            .filter(|e| !now.contains(&e.object.key()))
            .cloned()
            .collect()
    }

    /// The definition in force of an object (first definition wins, as
    /// [`Inputs::from_sourced`] decides it), and whether it has more than one.
    fn in_force(&self, key: &ObjectKey) -> (Option<Arc<Entry>>, bool) {
        let mut defs = self.definitions(key);
        match (defs.next(), defs.next()) {
            (None, _) => (None, false),
            (Some(one), None) => (Some(Arc::clone(one)), false),
            _ => {
                let defs = self.definitions(key).filter_map(|e| sourced(e));
                let (one, _) = Inputs::from_sourced(defs);
                (one.entry(key).cloned(), true)
            }
        }
    }

    /// Every definition of an object, the one in force first (walked, not collected: nearly
    /// every object has one).
    fn definitions<'a>(&'a self, key: &'a ObjectKey) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.owners
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|f| self.files.get(f))
            .flat_map(move |f| f.definitions(key))
    }

    /// Every load error, and a report for each object defined more than once.
    pub fn errors(&self) -> Vec<InputError> {
        let mut errors: Vec<InputError> = self
            .files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        for key in &self.duplicates {
            let defs = self.definitions(key).filter_map(|e| sourced(e));
            errors.extend(Inputs::from_sourced(defs).1);
        }
        errors
    }
}

/// A file's object as a source's definition (every object read from a file has an origin).
fn sourced(e: &Entry) -> Option<Sourced> {
    Some(Sourced {
        object: e.object.clone(),
        origin: e.origin.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const KINGRESS: &str = r#"apiVersion: networking.internal.knative.dev/v1alpha1
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

        /// The state fed so far is what a full load of the directory gives now: the same
        /// objects and the same errors.
        fn check(&self, dir: &Path) {
            let (inputs, mut errors) = crate::pipeline::load(dir);
            assert!(self.inputs.changes_to(&inputs).is_empty(), "same objects");
            let mut got = self.state.errors();
            got.sort();
            errors.sort();
            assert_eq!(got, errors, "same errors");
        }
    }

    #[test]
    fn reloads_give_what_a_full_load_gives_and_touch_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: {port}}}]}}\n---\n")
        };
        let write = |f: &str, text: String| std::fs::write(dir.path().join(f), text).unwrap();
        write("a.yaml", format!("{}{}", svc("a", 80), svc("b", 80)));
        write("b.yaml", svc("c", 80));
        let mut fed = Fed::new();
        assert_eq!(fed.reload(dir.path(), None), 3);
        fed.check(dir.path());
        // One object of one file changes: one change.
        write("a.yaml", format!("{}{}", svc("a", 81), svc("b", 80)));
        assert_eq!(fed.reload(dir.path(), Some(&["a.yaml"])), 1);
        fed.check(dir.path());
        // A duplicate in a later file: reported, the first definition stays (no change).
        write("c.yaml", svc("a", 99));
        assert_eq!(fed.reload(dir.path(), Some(&["c.yaml"])), 0);
        fed.check(dir.path());
        assert!(fed.state.errors()[0]
            .to_string()
            .contains("defined twice; keeping the one from a.yaml document 1"));
        // The first definition goes: the duplicate takes over (and b, now document 1, has a
        // new origin).
        write("a.yaml", svc("b", 80));
        assert_eq!(fed.reload(dir.path(), Some(&["a.yaml"])), 2);
        fed.check(dir.path());
        assert!(fed.state.errors().is_empty());
        // Files removed, found by a rescan.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
        assert_eq!(fed.reload(dir.path(), None), 2);
        fed.check(dir.path());
        assert_eq!(fed.inputs.len(), 1);
    }

    /// JSON objects whose text did not change are not typed again: the reload sends them as
    /// the same shared entries, and what it gives is still what a full load gives (origins
    /// included, when items move; duplicates with the same text).
    #[test]
    fn json_objects_with_unchanged_text_are_taken_from_the_previous_read() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"ports":[{{"port":{port}}}]}}}}"#
            )
        };
        let list = |items: &[String]| {
            format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
                items.join(",")
            )
        };
        let write = |text: String| std::fs::write(dir.path().join("a.json"), text).unwrap();
        let key = |name: &str| ObjectKey {
            kind: crate::model::Kind::Service,
            namespace: "default".into(),
            name: name.into(),
        };
        write(list(&[svc("a", 80), svc("b", 80), svc("c", 80)]));
        let mut fed = Fed::new();
        assert_eq!(fed.reload(dir.path(), None), 3);
        let before: Vec<Arc<Entry>> = ["a", "b", "c"]
            .iter()
            .map(|n| fed.state.current[&key(n)].clone())
            .collect();
        // One item changes: one change; the others are the entries read before.
        write(list(&[svc("a", 80), svc("b", 81), svc("c", 80)]));
        assert_eq!(fed.reload(dir.path(), Some(&["a.json"])), 1);
        fed.check(dir.path());
        assert!(Arc::ptr_eq(&fed.state.current[&key("a")], &before[0]));
        assert!(!Arc::ptr_eq(&fed.state.current[&key("b")], &before[1]));
        assert!(Arc::ptr_eq(&fed.state.current[&key("c")], &before[2]));
        // An item inserted in front: the others keep their text but move (new origins).
        write(list(&[
            svc("d", 80),
            svc("a", 80),
            svc("b", 81),
            svc("c", 80),
        ]));
        assert_eq!(fed.reload(dir.path(), Some(&["a.json"])), 4);
        fed.check(dir.path());
        let origin = fed.state.current[&key("c")].origin.clone().unwrap();
        assert_eq!((origin.doc, origin.item), (1, Some(3)));
        // The same text twice in one file: a duplicate, reported as a full load reports it.
        write(list(&[svc("a", 80), svc("a", 80), svc("c", 80)]));
        fed.reload(dir.path(), Some(&["a.json"]));
        fed.check(dir.path());
        assert_eq!(fed.state.errors().len(), 1, "{:?}", fed.state.errors());
        // A file that stops reading cleanly is read through `Value` (no digests), then again
        // cleanly: still right.
        write(list(&[svc("a", 80), "7".to_string(), svc("c", 82)]));
        fed.reload(dir.path(), Some(&["a.json"]));
        assert_eq!(fed.state.errors().len(), 1, "{:?}", fed.state.errors());
        write(list(&[svc("a", 80), svc("c", 82)]));
        fed.reload(dir.path(), Some(&["a.json"]));
        fed.check(dir.path());
        assert_eq!(fed.inputs.len(), 2);
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
