//! Sources of objects. `files`/`dir` read a directory of manifests; `kube` watches the API server.
//! A source produces objects with their origin and errors that name where they came from; it
//! never decides what is served (that is `state` + `translate`). Running, a source sends
//! [`Batch`]es of [`Change`]s on a channel; it never calls the hub (the runtime's one debouncer
//! batches them into `Hub::apply`).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::model::{Object, ObjectKey};
use crate::state::Change;

pub mod dir;
pub mod files;
pub mod kube;

/// Where an object came from: a file (relative to the watched directory), the 1-based YAML
/// document number in it, and for `kind: List` the 0-based item index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub doc: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.doc)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// What a running source reports: changes to apply in order, and the source's load errors now
/// (they replace the ones it reported before).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub errors: Vec<InputError>,
}

/// The channel a source reports on.
pub type BatchSender = tokio::sync::mpsc::UnboundedSender<Batch>;

/// One object read by a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    pub object: Object,
    pub origin: Origin,
}

/// A problem with the inputs: names the object when known and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InputError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.object, &self.origin) {
            (Some(o), Some(src)) => write!(f, "{o} ({src}): {}", self.message),
            (Some(o), None) => write!(f, "{o}: {}", self.message),
            (None, Some(src)) => write!(f, "{src}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}
