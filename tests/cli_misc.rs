//! The small commands: `version` / `--version`, `completion`, `synth`'s report and exit codes.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(args)
        .output()
        .expect("run knative-pilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn render_says_when_nothing_is_routable() {
    let empty = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/empty/input");
    let (code, out, err) = run(&["render", "--from", empty, "--gateway", "external"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blackhole:80"), "{out}");
    assert!(
        err.contains("no routable object for gateway external"),
        "{err}"
    );
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/split-tag/input");
    let (code, _, err) = run(&["render", "--from", seed, "--gateway", "external"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("no routable object"), "{err}");
}

#[test]
fn version_and_dash_dash_version_agree() {
    let want = env!("CARGO_PKG_VERSION");
    let (code, out, err) = run(&["--version"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("knative-pilot {want}"));
    let (code, out, err) = run(&["version"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("knative-pilot {want} (tested with Envoy 1.40.0)")),
        "{out}"
    );
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completion", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["knative-pilot", "render", "serve", "validate", "--from"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, err) = run(&["completion", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
}

#[test]
fn synth_says_what_it_wrote_and_exits_2_when_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("cluster");
    let (code, out, err) = run(&[
        "synth",
        "--services",
        "3",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 3 services"), "{out}");
    assert!(out.contains(out_dir.to_str().expect("utf-8")), "{out}");
    assert!(std::fs::read_dir(&out_dir).expect("written").count() > 0);
    // A file where the directory should be: an I/O error, exit 2, naming the path.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").expect("write");
    let bad = blocker.join("cluster");
    let (code, _, err) = run(&["synth", "--out", bad.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(bad.to_str().expect("utf-8")), "{err}");
}

/// README's "Command line" section names every flag `--help` lists, for every command.
#[test]
fn readme_synopsis_names_every_flag_of_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("## Command line")
        .expect("a Command line section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    let section = &readme[start..end];
    let flag = regex::Regex::new(r"--[a-z][a-z0-9-]*").expect("regex");
    let mut missing = Vec::new();
    for cmd in [
        "render",
        "serve",
        "demo",
        "diff",
        "validate",
        "synth",
        "completion",
        "proxy-status",
        "proxy-config",
    ] {
        let (code, help, err) = run(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd} --help: {err}");
        for f in flag.find_iter(&help).map(|m| m.as_str()) {
            if f != "--help" && f != "--version" && !section.contains(f) {
                missing.push(format!("{cmd} {f}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "README's Command line section lacks: {missing:?}"
    );
}

/// A failed write to stdout (here a full disk, `/dev/full`) is an I/O error: exit 2 with a
/// message naming the command, not a panic.
#[test]
fn a_failed_stdout_write_exits_2() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/split-tag/input");
    for args in [
        &["render", "--from", seed][..],
        &["validate", "--from", seed][..],
        &["version"][..],
        &["completion", "bash"][..],
        &["--help"][..],
        &["render", "--help"][..],
        &["--version"][..],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
            .args(args)
            .stdout(full)
            .output()
            .expect("run knative-pilot");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let cmd = args
            .iter()
            .find(|a| ["--help", "--version"].contains(a))
            .unwrap_or(&args[0]);
        assert!(
            err.contains(&format!("knative-pilot {cmd}: writing stdout")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
