//! Golden files: every `testdata/<case>/input/` directory is rendered for every gateway, and the
//! output must match `testdata/<case>/expected/<ns>_<name>.json` byte for byte (and the
//! reported errors `expected/errors.txt`). `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! them; review every rewritten file as a user would.
//!
//! Each rendered config is also checked by stock Envoy itself: `envoy --mode validate` on a
//! bootstrap holding the rendered resources statically (RDS inlined, EDS as static endpoints,
//! SDS as static secrets; scoped RDS as an inline list of scopes with inline RouteConfigurations).
//! The test fails when Envoy is missing.
//!
//! Cases named `scoped-*` are rendered in the scoped route layout (`--route-layout scoped`),
//! `ondemand-*` in the on-demand layout (`--route-layout on-demand`).

mod common;

use std::path::{Path, PathBuf};

use knative_pilot::pipeline;
use knative_pilot::translate::{self, Options};

fn cases() -> Vec<(PathBuf, Options)> {
    pipeline::golden_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata"))
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// The config dump as `render` writes it.
fn render_json(snapshot: &knative_pilot::xds::Snapshot) -> String {
    let mut out = Vec::new();
    knative_pilot::xds::dump::write_json(snapshot, &mut out).expect("dump");
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn golden_cases_render_as_expected_and_envoy_accepts_them() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "expected golden cases under testdata/, found {cases:?}"
    );
    let mut failures = Vec::new();
    for (case, opts) in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let (inputs, mut errors) = pipeline::load(&case.join("input"));
        let expected_dir = case.join("expected");
        if update() {
            std::fs::create_dir_all(&expected_dir).unwrap();
        }
        for gw in translate::gateways(&inputs, opts) {
            let id = gw.id();
            let rendered = pipeline::render_gateway(&inputs, opts, &id).expect("render");
            errors.extend(rendered.errors.iter().cloned());
            // The bytes `render` writes (streamed resource by resource).
            let text = render_json(&rendered.snapshot);
            // Deterministic: a second render is byte-identical.
            let again = pipeline::render_gateway(&inputs, opts, &id).expect("render");
            let text2 = render_json(&again.snapshot);
            // Encoded as assembled (render) = the protos of `translate`, encoded.
            let labels = translate::pod_labels(&inputs, opts, &id).expect("labels");
            let full = knative_pilot::hub::snapshot(
                0,
                &translate::translate(&inputs, opts, &labels).config,
            );
            assert!(
                knative_pilot::xds::resource::same_resources(&rendered.snapshot, &full),
                "{name}/{id}: translate_encoded differs from translate"
            );
            // The one-tree form (`/debug/config_dump`) is the same document.
            let tree = knative_pilot::xds::dump::config_dump(&rendered.snapshot).expect("dump");
            assert_eq!(
                serde_json::to_string_pretty(&tree).unwrap() + "\n",
                text,
                "{name}/{id}: the config_dump tree differs from the streamed dump"
            );
            assert_eq!(text, text2, "{name}/{id}: rendering is not deterministic");
            let file = expected_dir.join(format!("{}.json", id.replace('/', "_")));
            if update() {
                std::fs::write(&file, &text).unwrap();
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(want) if want == text => {}
                    Ok(_) => failures.push(format!(
                        "{name}: gateway {id} differs from {} (UPDATE_GOLDEN=1 to rewrite after review)",
                        file.display()
                    )),
                    Err(e) => failures.push(format!("{name}: {}: {e}", file.display())),
                }
            }
            if let Err(out) = common::envoy_validate(&common::static_bootstrap::static_bootstrap(
                &rendered.snapshot,
            )) {
                failures.push(format!(
                    "{name}: Envoy rejects gateway {id}'s config:\n{out}"
                ));
            }
        }
        errors.sort();
        errors.dedup();
        let text: String = errors.iter().map(|e| format!("{e}\n")).collect();
        let file = expected_dir.join("errors.txt");
        if update() {
            std::fs::write(&file, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&file).unwrap_or_default();
            if want != text {
                failures.push(format!(
                    "{name}: errors differ:\n--- want\n{want}--- got\n{text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
