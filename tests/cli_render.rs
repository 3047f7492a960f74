//! `knative-pilot render` as a user runs it: exit codes, error lines naming the objects, and
//! what still renders next to bad input.

use std::process::Command;

fn render(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .arg("render")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run knative-pilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn seed_inputs_render_istio_names_and_keep_local_hosts_local() {
    for input in [
        "testdata/seed-virtualservice/input",
        "testdata/seed-route/input",
    ] {
        let (code, ext, err) = render(&["--from", input, "--gateway", "external"]);
        assert_eq!(code, 0, "{input}: {err}");
        assert!(
            ext.contains("\"outbound|80||my-service-00001-nex.default.svc.cluster.local\""),
            "{input}"
        );
        assert!(ext.contains("\"name\": \"0.0.0.0_8080\""), "{input}");
        assert!(ext.contains("\"name\": \"http.80\""), "{input}");
        assert!(
            ext.contains("\"my-service.default.example.com\""),
            "{input}"
        );
        assert!(
            !ext.contains("internal-my-service"),
            "{input}: cluster-local service on the external gateway"
        );
        assert!(
            !ext.contains("\"my-service.default.svc.cluster.local\""),
            "{input}"
        );

        let (code, local, err) = render(&["--from", input, "--gateway", "local"]);
        assert_eq!(code, 0, "{input}: {err}");
        assert!(
            local.contains("\"internal-my-service.default.svc.cluster.local\""),
            "{input}"
        );
        assert!(
            local.contains("\"my-service.default.svc.cluster.local\""),
            "{input}"
        );
        // Byte-identical run to run.
        assert_eq!(render(&["--from", input, "--gateway", "local"]).1, local);
    }
    let (code, yaml, _) = render(&["--from", "testdata/seed-route/input", "--format", "yaml"]);
    assert_eq!(code, 0);
    assert!(yaml.starts_with("configs:\n"), "{yaml}");
}

#[test]
fn bad_objects_are_named_and_left_out_and_the_rest_renders() {
    let (code, out, err) = render(&["--from", "testdata/errors/input", "--gateway", "external"]);
    assert_eq!(code, 1, "exit 1 when something was left out");
    assert!(
        out.contains("\"good.default.example.com\""),
        "good objects still render"
    );
    for line in [
        "error: malformed.yaml document 2: malformed YAML",
        "error: Ingress default/bad-percent (bad-percent.yaml document 1): rule 0 path 0: split percents sum to 90, not 100",
        "error: Ingress default/missing-svc (missing-service.yaml document 1): backend Service default/missing-svc-00001 not found",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    let (code, _, err) = render(&["--from", "testdata/errors/input", "--gateway", "nope/nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("known gateways"), "{err}");
    let (code, _, _) = render(&["--from", "/nonexistent/dir"]);
    assert_eq!(code, 2);
}
