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
pub use json::Digest;

pub mod dir;
pub mod files;
mod json;
pub mod kube;
mod parallel;
mod unique_keys;

/// What a running source reports: changes to apply in order, and the source's load errors now
/// (they replace the ones it reported before).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub errors: Vec<InputError>,
}

/// The channel a source reports on.
pub type BatchSender = tokio::sync::mpsc::UnboundedSender<Batch>;

/// Whether a running source follows its input, shared with `/ready` and `/debug/syncz`. A
/// source that loses its input (the `--from` directory is gone) keeps the objects it last
/// sent, so the gateways keep serving them, and says so here until the input is back.
#[derive(Debug, Clone, Default)]
pub struct Health(std::sync::Arc<std::sync::RwLock<Option<String>>>);

impl Health {
    /// The input is gone: `why` (the last objects are kept).
    pub fn set_stale(&self, why: String) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(why);
        }
    }

    /// The input is followed again.
    pub fn set_live(&self) {
        if let Ok(mut g) = self.0.write() {
            *g = None;
        }
    }

    /// Why the source serves its last objects, if it does.
    pub fn stale(&self) -> Option<String> {
        self.0.read().ok().and_then(|g| g.clone())
    }
}
