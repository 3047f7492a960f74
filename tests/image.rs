//! What can be proved of the image here, without docker: the binary it ships (built as the
//! `Dockerfile` builds it: `--target x86_64-unknown-linux-gnu` with `-C
//! target-feature=+crt-static`, here in the cheap `image-test` profile) runs in an empty root
//! directory, with no libc or loader from the host, as the image's user 65532, and serves
//! `--help` and `render` exactly as the host binary does. A dynamically linked binary copied
//! into the same root does not start (the proof that the root is empty).
//!
//! The static binary is built by this test into `<target dir>/image/` (a separate target dir,
//! so the normal build is not invalidated; cold: several minutes, then a no-op), unless
//! `KNATIVE_PILOT_STATIC_BIN` names one. Running in the root needs `chroot`: as root, or
//! through a user namespace (`unshare -r`); the test fails, saying so, when neither works.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = "x86_64-unknown-linux-gnu";
const PROFILE: &str = "image-test";
/// The image's user (the Dockerfile's `USER`, the Deployment's `runAsUser`).
const IMAGE_USER: &str = "65532:65532";

/// `<target dir>`: this test binary is `<target dir>/<profile>/deps/image-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The static binary: `KNATIVE_PILOT_STATIC_BIN`, else built now (a no-op when up to date).
fn static_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KNATIVE_PILOT_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let dir = target_dir().join("image");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!(
        "tests/image.rs: building the image's static binary (cargo build --profile {PROFILE} \
         --target {TARGET}, RUSTFLAGS=-C target-feature=+crt-static) into {}; the first time \
         takes several minutes",
        dir.display()
    );
    let status = Command::new(&cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--locked",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
        ])
        .args(["--bin", "knative-pilot"])
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("running {cargo}: {e}"));
    assert!(
        status.success(),
        "building the static binary failed ({status}); it needs glibc's static libraries \
         (libc.a: Debian/Ubuntu libc6-dev)"
    );
    dir.join(TARGET).join(PROFILE).join("knative-pilot")
}

/// How this machine can run a command inside a root directory.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chroot {
    /// We are root: `chroot --userspec 65532:65532`, as the image's user.
    AsRoot,
    /// Through a user namespace where we are root: `unshare -r chroot` (our own uid outside).
    UserNamespace,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn in_root(how: Chroot, root: &Path, args: &[&str]) -> Output {
    let root = root.to_str().expect("utf-8 path");
    let mut cmd = match how {
        Chroot::AsRoot => {
            let mut c = Command::new("chroot");
            c.args(["--userspec", IMAGE_USER, root]);
            c
        }
        Chroot::UserNamespace => {
            let mut c = Command::new("unshare");
            c.args(["-r", "chroot", root]);
            c
        }
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running chroot: {e}"))
}

/// The way to chroot here, proved with the static binary itself; panics saying why not.
fn chroot_method(root: &Path) -> Chroot {
    let how = if is_root() {
        Chroot::AsRoot
    } else {
        Chroot::UserNamespace
    };
    let probe = in_root(how, root, &["/knative-pilot", "version"]);
    // chroot's own 126/127: it changed root but the command could not be executed there.
    assert!(
        !matches!(probe.status.code(), Some(126 | 127)),
        "the binary does not start in an empty root ({}): it is not statically linked; \
         stderr: {}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        probe.status.success(),
        "cannot run a command in an empty root with {how:?} ({}): this test needs `chroot` as \
         root, or unprivileged user namespaces for `unshare -r chroot` (sysctl \
         kernel.unprivileged_userns_clone=1); stderr: {}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
    how
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Readable (and the directories enterable) by the image's user.
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).expect("metadata");
    let mode = if meta.is_dir() || meta.permissions().mode() & 0o100 != 0 {
        0o755
    } else {
        0o644
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if meta.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            open_up(&e.expect("entry").path());
        }
    }
}

#[test]
fn the_image_binary_runs_in_an_empty_root_and_renders_as_the_host_binary() {
    let bin = static_binary();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/seed-virtualservice/input");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&bin, root.path().join("knative-pilot"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", bin.display()));
    copy_tree(&input, &root.path().join("in"));
    // The control: a dynamically linked host binary, in the same root.
    let dynamic = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a /bin/true");
    std::fs::copy(dynamic, root.path().join("true")).expect("copy true");
    open_up(root.path());
    let entries: Vec<String> = std::fs::read_dir(root.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries.len(),
        3,
        "the root holds only the binaries and the input: {entries:?}"
    );

    let how = chroot_method(root.path());
    eprintln!("running in {} with {how:?}", root.path().display());

    // The root really is empty: the dynamic binary finds no loader or libc there.
    assert!(Command::new(dynamic).status().expect("run true").success());
    let t = in_root(how, root.path(), &["/true"]);
    assert!(
        !t.status.success(),
        "{dynamic} ran in the empty root: the root is not empty, this test proves nothing"
    );

    let help = in_root(how, root.path(), &["/knative-pilot", "--help"]);
    let out = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success(),
        "--help: {}",
        String::from_utf8_lossy(&help.stderr)
    );
    for cmd in ["serve", "render", "proxy-status"] {
        assert!(out.contains(cmd), "--help lacks {cmd}: {out}");
    }

    let image = in_root(
        how,
        root.path(),
        &[
            "/knative-pilot",
            "render",
            "--from",
            "/in",
            "--gateway",
            "external",
        ],
    );
    assert!(
        image.status.success(),
        "render in the empty root: {}",
        String::from_utf8_lossy(&image.stderr)
    );
    let host = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["render", "--from"])
        .arg(&input)
        .args(["--gateway", "external"])
        .output()
        .expect("host render");
    assert!(
        host.status.success(),
        "{}",
        String::from_utf8_lossy(&host.stderr)
    );
    assert!(
        String::from_utf8_lossy(&host.stdout).contains("0.0.0.0_8080"),
        "the host render is a real config"
    );
    assert!(
        image.stdout == host.stdout,
        "render in the empty root differs from the host binary's"
    );
}
