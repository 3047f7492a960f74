//! Sources of objects. `files`/`dir` read a directory of manifests; `kube` watches the API server.
//! A source produces objects with their origin and errors that name where they came from; it
//! never decides what is served (that is `state` + `translate`). Running, a source sends
//! [`Batch`]es of [`Change`]s on a channel; it never calls the hub (the runtime's one debouncer
//! batches them into `Hub::apply`).

use crate::state::Change;

/// The diagnostics types and [`Sourced`] live in [`crate::model`] (so `state` depends on
/// `model` only); re-exported for the sources.
pub use crate::model::diag::{ErrorCode, InputError, Origin};
pub use crate::model::Sourced;

pub mod dir;
pub mod files;
pub mod kube;

/// What a running source reports: changes to apply in order, and the source's load errors now
/// (they replace the ones it reported before).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub errors: Vec<InputError>,
}

/// The channel a source reports on.
pub type BatchSender = tokio::sync::mpsc::UnboundedSender<Batch>;
