//! Where the programs under test are, built on demand: `cargo test -p
//! <package>` builds only that package's own targets, and a test must not
//! run a stale or missing binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `<target>/<profile>/` of the running test or bench: test binaries live
/// in its `deps/`, binaries and libraries in it.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Runs `cargo build --quiet <args>` in the profile and target directory of
/// the running test (so a release bench gets release binaries).
pub fn cargo_build(args: &[&str]) {
    let dir = profile_dir();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target = dir.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root())
        .args(["build", "--quiet"])
        .args(args)
        .env("CARGO_TARGET_DIR", &target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} to build {args:?}: {e}",
            cargo.to_string_lossy()
        )
    });
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The vreader binary: `$VREADER_BIN`, else vreader built by cargo in the
/// profile of the running test or bench (so a release bench measures a
/// release vreader). It is (re)built once per process, as `cargo test -p
/// e2e` would otherwise run a stale or missing binary: cargo builds other
/// packages' binaries only for their own tests.
pub fn vreader_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VREADER_BIN") {
            let p = PathBuf::from(p);
            assert!(p.exists(), "VREADER_BIN={} does not exist", p.display());
            return p;
        }
        cargo_build(&["-p", "vreader"]);
        let bin = profile_dir().join("vreader");
        assert!(
            bin.exists(),
            "{} is missing after cargo build -p vreader (set VREADER_BIN to the binary)",
            bin.display()
        );
        bin
    })
    .clone()
}

/// An example of `package`, built once per process if it is missing (cargo
/// builds examples for `cargo test` of their package, not for a single
/// `--test`).
pub fn example(package: &str, name: &str) -> PathBuf {
    let p = profile_dir().join("examples").join(name);
    if !p.is_file() {
        cargo_build(&["-p", package, "--example", name]);
    }
    assert!(p.is_file(), "{} is missing after cargo build", p.display());
    p
}
