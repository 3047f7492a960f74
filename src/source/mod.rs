//! Sources of objects. `files`/`dir` read a directory of manifests; `kube` watches the API server.
//! A source produces objects with their origin and errors that name where they came from; it
//! never decides what is served (that is `state` + `translate`).

/// The diagnostics types and [`Sourced`] live in [`crate::model`] (so `state` depends on
/// `model` only); re-exported for the sources.
pub use crate::model::diag::{ErrorCode, InputError, Origin};
pub use crate::model::Sourced;

pub mod dir;
pub mod files;
pub mod kube;
