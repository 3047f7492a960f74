//! Sources of objects. `files`/`dir` read a directory of manifests; `kube` watches the API server.
//! A source produces objects with their origin and errors that name where they came from; it
//! never decides what is served (that is `state` + `translate`).

/// The diagnostics types live in [`crate::model::diag`]; re-exported for the sources.
pub use crate::model::diag::{ErrorCode, InputError, Origin};
use crate::model::Object;

pub mod dir;
pub mod files;
pub mod kube;

/// One object read by a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    pub object: Object,
    pub origin: Origin,
}
