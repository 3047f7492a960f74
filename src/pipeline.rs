//! The stages glued together for one-shot use (`render`, golden tests): read a directory,
//! index it, translate for one gateway, build the snapshot.

use std::path::{Path, PathBuf};

use crate::source::{files, InputError};
use crate::state::Inputs;
use crate::translate::{self, Options, RouteLayout};
use crate::xds::Snapshot;

/// What rendering one gateway produced: the encoded resources (no protos of them are kept).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub snapshot: Snapshot,
    /// Gateways (`ns/name`) that apply to the rendered proxy.
    pub gateways: Vec<String>,
    /// Whether any route configuration has a virtual host other than the `blackhole:<port>`
    /// ones (else every request gets 404).
    pub routable: bool,
    /// Translation errors, sorted.
    pub errors: Vec<InputError>,
}

/// The golden cases under `testdata` (each directory with an `input/`), sorted, with the
/// options each is rendered with: the route layout its name's prefix gives (`scoped-`,
/// `ondemand-`), the defaults otherwise. The golden test and the tests that hold another path
/// to every golden case read them here.
pub fn golden_cases(testdata: &Path) -> Vec<(PathBuf, Options)> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input").is_dir())
        .collect();
    cases.sort();
    cases
        .into_iter()
        .map(|case| {
            let name = case
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let route_layout = if name.starts_with("scoped-") {
                RouteLayout::Scoped
            } else if name.starts_with("ondemand-") {
                RouteLayout::OnDemand
            } else {
                RouteLayout::Istio
            };
            let opts = Options {
                route_layout,
                ..Options::default()
            };
            (case, opts)
        })
        .collect()
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
    let t = translate::translate_encoded(inputs, opts, &labels, 0);
    Ok(Rendered {
        snapshot: t.snapshot,
        gateways: t.gateways,
        routable: t.routable,
        errors: t.errors,
    })
}
