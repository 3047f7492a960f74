//! The stages glued together for one-shot use (`render`, golden tests): read a directory,
//! index it, translate for one gateway, build the snapshot.

use std::path::Path;

use crate::source::{files, InputError};
use crate::state::Inputs;
use crate::translate::{self, Options, Translation};
use crate::xds::Snapshot;

/// What rendering one gateway produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub translation: Translation,
    pub snapshot: Snapshot,
    /// Load errors and translation errors, sorted.
    pub errors: Vec<InputError>,
}

/// Reads `dir` into indexed inputs; errors name file and document.
pub fn load(dir: &Path) -> (Inputs, Vec<InputError>) {
    let loaded = files::load_dir(dir);
    let (inputs, mut errors) = Inputs::from_sourced(loaded.objects);
    errors.extend(loaded.errors);
    (inputs, errors)
}

/// Renders the config of `gateway` (`ns/name`, `external` or `local`) as a pod of that gateway
/// would get it (its labels: [`translate::pod_labels`]).
pub fn render_gateway(inputs: &Inputs, opts: &Options, gateway: &str) -> Result<Rendered, String> {
    let labels = translate::pod_labels(inputs, opts, gateway).ok_or_else(|| {
        let known: Vec<String> = translate::gateways(inputs, opts)
            .iter()
            .map(|g| g.id())
            .collect();
        format!(
            "no gateway {gateway:?}; known gateways: {}",
            known.join(", ")
        )
    })?;
    let translation = translate::translate(inputs, opts, &labels);
    let snapshot = crate::hub::snapshot(0, &translation.config);
    let errors = translation.errors.clone();
    Ok(Rendered {
        translation,
        snapshot,
        errors,
    })
}
