//! The manifest directory as a source: per-file object sets, reloaded file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::model::ObjectKey;
use crate::source::files::{self, Loaded};
use crate::source::{InputError, Sourced};
use crate::state::Inputs;

/// The manifest directory as per-file object sets, so that one file's change touches only that
/// file's objects, and a file that stops parsing keeps serving what it served before.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, Loaded>,
}

impl DirState {
    /// Re-reads the given files (relative paths); `None` re-reads the whole directory.
    pub fn reload(&mut self, dir: &Path, changed: Option<&BTreeSet<PathBuf>>) {
        let paths: BTreeSet<PathBuf> = match changed {
            Some(c) => c.clone(),
            None => {
                let now: BTreeSet<PathBuf> = files::list_files(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                self.files.retain(|p, _| now.contains(p));
                now
            }
        };
        for rel in paths {
            if !dir.join(&rel).is_file() {
                self.files.remove(&rel);
                continue;
            }
            let mut loaded = files::load_file(dir, &rel);
            let broken = loaded.errors.iter().any(|e| e.object.is_none());
            if broken {
                // Keep what this file served before for objects the new text no longer yields.
                if let Some(prev) = self.files.get(&rel) {
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
            self.files.insert(rel, loaded);
        }
    }

    /// The indexed inputs and every load error.
    pub fn inputs(&self) -> (Inputs, Vec<InputError>) {
        let objects: Vec<Sourced> = self
            .files
            .values()
            .flat_map(|l| l.objects.iter().cloned())
            .collect();
        let (inputs, mut errors) = Inputs::from_sourced(objects);
        errors.extend(self.files.values().flat_map(|l| l.errors.iter().cloned()));
        (inputs, errors)
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

    #[test]
    fn a_file_that_stops_parsing_keeps_serving_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), KINGRESS).unwrap();
        let mut state = DirState::default();
        state.reload(dir.path(), None);
        assert_eq!(state.inputs().0.len(), 2);
        std::fs::write(dir.path().join("a.yaml"), "kind: [broken\n").unwrap();
        state.reload(dir.path(), Some(&BTreeSet::from([PathBuf::from("a.yaml")])));
        let (inputs, errors) = state.inputs();
        assert_eq!(inputs.len(), 2, "previous objects kept");
        assert!(
            errors[0]
                .to_string()
                .contains("a.yaml document 1: malformed YAML"),
            "{}",
            errors[0]
        );
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        state.reload(dir.path(), Some(&BTreeSet::from([PathBuf::from("a.yaml")])));
        assert_eq!(state.inputs().0.len(), 0, "a deleted file's objects go");
    }
}
