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

/// A 156 KB file with one 100 KB anchor aliased 20,000 times (2 GB once expanded), next to good
/// manifests: `render` and `validate` name the file and keep going, the good host renders,
/// and both run under a 1 GB address-space limit (`ulimit -v`), so the expansion never happens.
#[test]
fn an_alias_bomb_is_reported_naming_its_file_within_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb, namespace: default}}\ndata:\n  a: &a {}\n  l:\n",
        "x".repeat(100_000)
    );
    for _ in 0..20_000 {
        bomb.push_str("  - *a\n");
    }
    std::fs::write(dir.path().join("bomb.yaml"), &bomb).expect("write bomb");
    let inputs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/errors/input");
    for f in [
        "good.yaml",
        "istio-gateway-services.yaml",
        "revision-services.yaml",
    ] {
        std::fs::copy(inputs.join(f), dir.path().join(f)).expect("copy a good manifest");
    }
    let run = |cmd: &str| {
        let script = format!("ulimit -v 1048576 && exec \"$0\" {cmd} --from \"$1\"");
        let out = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_knative-pilot")])
            .arg(dir.path())
            .output()
            .expect("run knative-pilot under ulimit");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run("render --gateway external");
    assert_eq!(code, 1, "render exits 1 (something left out): {err}");
    assert!(
        err.contains("error: bomb.yaml document 1: YAML over the limits for a file of"),
        "{err}"
    );
    assert!(
        out.contains("\"good.default.example.com\""),
        "the good host renders"
    );
    let (code, out, err) = run("validate");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("bomb.yaml document 1: YAML over the limits"),
        "{out}\n{err}"
    );
}
