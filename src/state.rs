//! The indexed set of objects currently known, from whatever source. No I/O: sources insert and
//! remove, translation reads. Iteration order is sorted (kind, namespace, name), so everything
//! derived from it is deterministic.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::model::diag::{ErrorCode, InputError, Origin};
use crate::model::Sourced;
use crate::model::{EndpointSlice, Endpoints, Kind, Object, ObjectKey, Service};

/// One known object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub object: Object,
    pub origin: Option<Origin>,
}

/// Label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One change a source reports: an object added or replaced, or removed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Arc<Entry>),
    Delete(ObjectKey),
}

/// The note on an error whose object's previous version is still served.
pub const PREVIOUS_VERSION_SERVED: &str = "; its previous version is still served";
/// The note on an error of a file that stopped parsing, whose previous objects are still served.
pub const PREVIOUS_OBJECTS_SERVED: &str = "; the file's previous objects are still served";

/// The last-good policy, in one place for every stage that applies it (a file that stops
/// parsing: `source::dir`; an object that stops parsing: `source::kube`; an object that stops
/// translating: `hub`): when the new version of something fails (`errors` is not empty) and
/// there is a last good version, that one keeps being served and every error says so (`note`
/// appended). Returns the version to serve instead of the new one; `None` when the new one is
/// good, or bad with nothing good before it (it is then left out).
pub fn keep_last_good<'e, T>(
    errors: impl IntoIterator<Item = &'e mut InputError>,
    last_good: Option<T>,
    note: &str,
) -> Option<T> {
    let mut errors: Vec<&mut InputError> = errors.into_iter().collect();
    if errors.is_empty() {
        return None;
    }
    let kept = last_good?;
    for e in &mut errors {
        e.message.push_str(note);
    }
    Some(kept)
}

/// Persistent maps (`imbl`): cloning the inputs (to publish them, or to keep the served version
/// beside the raw one) is O(1), and an insert copies only one path of the tree.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    objects: OrdMap<ObjectKey, Arc<Entry>>,
    /// (namespace, service) -> EndpointSlice names.
    slices_by_service: OrdMap<(String, String), OrdSet<String>>,
}

impl Inputs {
    /// Builds the state from a source's objects. A second object with the same kind/ns/name is
    /// reported and left out (the first one read wins). This is the one implementation of "first
    /// definition wins": the directory source applies it to the definitions of each object.
    pub fn from_sourced(objects: impl IntoIterator<Item = Sourced>) -> (Inputs, Vec<InputError>) {
        let mut inputs = Inputs::default();
        let mut errors = Vec::new();
        for s in objects {
            let key = s.object.key();
            if let Some(existing) = inputs.objects.get(&key) {
                errors.push(InputError {
                    object: Some(key),
                    origin: Some(s.origin),
                    message: format!(
                        "defined twice; keeping the one from {}",
                        existing
                            .origin
                            .as_ref()
                            .map(|o| o.to_string())
                            .unwrap_or_else(|| "elsewhere".to_string())
                    ),
                    code: ErrorCode::Invalid,
                    subject: None,
                });
                continue;
            }
            inputs.insert(s.object, Some(s.origin));
        }
        (inputs, errors)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Inserts or replaces an object.
    pub fn insert(&mut self, object: Object, origin: Option<Origin>) {
        self.insert_entry(Arc::new(Entry { object, origin }));
    }

    /// Every entry, shared (for keeping last-good versions without copying objects).
    pub fn entries(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<Entry>)> {
        self.objects.iter()
    }

    /// Inserts or replaces an object with a shared entry.
    pub fn insert_entry(&mut self, entry: Arc<Entry>) {
        let key = entry.object.key();
        let index = slice_index(&entry.object).map(|idx| (idx, key.name.clone()));
        // One walk of the tree: the replaced entry comes back from the insert.
        if let Some(old) = self.objects.insert(key, entry) {
            self.unindex(&old.object);
        }
        if let Some((idx, name)) = index {
            self.slices_by_service.entry(idx).or_default().insert(name);
        }
    }

    /// Removes an object; returns it when it was there.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<Entry>> {
        let old = self.objects.remove(key)?;
        self.unindex(&old.object);
        Some(old)
    }

    fn unindex(&mut self, object: &Object) {
        if let Some(idx) = slice_index(object) {
            if let Some(set) = self.slices_by_service.get_mut(&idx) {
                set.remove(object.metadata().name.as_deref().unwrap_or(""));
                if set.is_empty() {
                    self.slices_by_service.remove(&idx);
                }
            }
        }
    }

    /// Applies a source's changes in order.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            match c {
                Change::Upsert(e) => self.insert_entry(e),
                Change::Delete(k) => {
                    self.remove(&k);
                }
            }
        }
    }

    /// The changes that turn `self` into `newer` (objects compared by value): upserts, then
    /// deletes, each sorted by key.
    pub fn changes_to(&self, newer: &Inputs) -> Vec<Change> {
        let mut out = Vec::new();
        for (k, e) in &newer.objects {
            match self.objects.get(k) {
                Some(old) if Arc::ptr_eq(old, e) || **old == **e => {}
                _ => out.push(Change::Upsert(e.clone())),
            }
        }
        for k in self.objects.keys() {
            if !newer.objects.contains_key(k) {
                out.push(Change::Delete(k.clone()));
            }
        }
        out
    }

    /// The shared entry of an object.
    pub fn entry(&self, key: &ObjectKey) -> Option<&Arc<Entry>> {
        self.objects.get(key)
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Entry> {
        self.objects
            .get(&ObjectKey {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .map(|e| e.as_ref())
    }

    /// Every object, sorted by kind, namespace, name.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        self.objects.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// Objects of one kind, sorted by namespace, name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        let start = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(k, v)| (k, v.as_ref()))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        match self.get(Kind::Service, namespace, name).map(|e| &e.object) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        }
    }

    pub fn endpoints(&self, namespace: &str, name: &str) -> Option<&Endpoints> {
        match self
            .get(Kind::Endpoints, namespace, name)
            .map(|e| &e.object)
        {
            Some(Object::Endpoints(s)) => Some(s),
            _ => None,
        }
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        match self
            .get(Kind::ConfigMap, namespace, name)
            .map(|e| &e.object)
        {
            Some(Object::ConfigMap(s)) => Some(s),
            _ => None,
        }
    }

    /// EndpointSlices of a Service, sorted by name.
    pub fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<&EndpointSlice> {
        let Some(names) = self
            .slices_by_service
            .get(&(namespace.to_string(), service.to_string()))
        else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| {
                match self
                    .get(Kind::EndpointSlice, namespace, n)
                    .map(|e| &e.object)
                {
                    Some(Object::EndpointSlice(s)) => Some(s.as_ref()),
                    _ => None,
                }
            })
            .collect()
    }
}

/// (namespace, service name) of an EndpointSlice.
/// Inputs for unit tests: the objects of YAML text as the file source reads them (file
/// `t.yaml`); the text must read without errors.
#[cfg(test)]
impl Inputs {
    pub(crate) fn from_test_yaml(yaml: &str) -> Inputs {
        let loaded = crate::source::files::parse_text(std::path::Path::new("t.yaml"), yaml);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        Inputs::from_sourced(loaded.objects).0
    }
}

fn slice_index(object: &Object) -> Option<(String, String)> {
    let Object::EndpointSlice(slice) = object else {
        return None;
    };
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((object.key().namespace, svc.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(yaml: &str) -> Inputs {
        Inputs::from_test_yaml(yaml)
    }

    #[test]
    fn the_last_good_version_is_kept_only_when_the_new_one_fails_and_says_so() {
        let error = |m: &str| InputError {
            object: None,
            origin: None,
            message: m.to_string(),
            code: crate::model::diag::ErrorCode::Invalid,
            subject: None,
        };
        // Good now: serve the new version, whatever came before.
        let mut none: Vec<InputError> = Vec::new();
        assert_eq!(
            keep_last_good(&mut none, Some(1), PREVIOUS_VERSION_SERVED),
            None
        );
        // Bad, nothing good before: left out, the error as it is.
        let mut errors = vec![error("bad")];
        assert_eq!(
            keep_last_good(&mut errors, None::<u8>, PREVIOUS_VERSION_SERVED),
            None
        );
        assert_eq!(errors[0].message, "bad");
        // Bad, with a last good version: that one is served and every error says so.
        let mut errors = vec![error("bad"), error("worse")];
        assert_eq!(
            keep_last_good(&mut errors, Some(7), PREVIOUS_VERSION_SERVED),
            Some(7)
        );
        assert_eq!(
            errors[0].message,
            "bad; its previous version is still served"
        );
        assert_eq!(
            errors[1].message,
            "worse; its previous version is still served"
        );
    }

    #[test]
    fn changes_to_then_apply_reproduces_the_newer_inputs() {
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: {port}}}]}}\n---\n")
        };
        let old = inputs(&format!("{}{}", svc("a", 80), svc("b", 80)));
        let new = inputs(&format!("{}{}", svc("b", 81), svc("c", 80)));
        let changes = old.changes_to(&new);
        let names: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Upsert(e) => format!("+{}", e.object.key().name),
                Change::Delete(k) => format!("-{}", k.name),
            })
            .collect();
        assert_eq!(names, ["+b", "+c", "-a"]);
        let mut applied = old.clone();
        applied.apply(changes);
        assert!(applied.changes_to(&new).is_empty());
        assert_eq!(applied.len(), 2);
        assert!(new.changes_to(&new).is_empty());
    }
}
