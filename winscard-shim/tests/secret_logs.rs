//! No secret reaches a log. A real PC/SC client
//! (examples/secret_apdus.rs, the `pcsc` crate over our libpcsclite.so.1)
//! drives every kind of secret-carrying APDU, with a marker inside each
//! secret, through the shim at debug level: once against a card file in
//! the shim, once against `vreader run --listen` (RUST_LOG=debug), whose
//! log is searched too. Neither log may hold the marker in hex (either
//! case) or ASCII, nor the other secrets the client reports.
#![cfg(target_os = "linux")]

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use e2e::artifacts::{example, profile_dir};
use e2e::{output_text, vreader_bin, vreader_ok, KillOnDrop};

/// Runs examples/secret_apdus with our library as libpcsclite.so.1 and
/// the given shim configuration; returns the secrets it reports.
fn drive(dir: &Path, vars: &[(&str, String)]) -> Vec<String> {
    let profile = profile_dir();
    let client = example("winscard-shim", "secret_apdus");
    let libdir = dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let link = libdir.join("libpcsclite.so.1");
    if !link.exists() {
        // deps/ holds the library cargo built with this test; the copy in
        // the profile directory is only refreshed by a build of the
        // library itself.
        std::os::unix::fs::symlink(profile.join("deps/libwinscard.so"), &link).unwrap();
    }
    let shim_log = || {
        format!(
            "\nshim log:\n{}",
            std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
        )
    };
    let out = e2e::run::succeed(
        Command::new(&client)
            .env("LD_LIBRARY_PATH", &libdir)
            .env("VIRTUAL_PIV_LOG", dir.join("shim.log"))
            .env("VIRTUAL_PIV_LOG_LEVEL", "debug")
            .envs(vars.iter().map(|(k, v)| (k, v))),
        shim_log,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("secret-apdus: OK"),
        "secret_apdus did not finish:\n{}{}",
        output_text(&out),
        shim_log()
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("secret: "))
        .map(str::to_string)
        .collect()
}

/// Fails if `log` holds a secret; also checks that it logged APDUs at all
/// (a log without them would prove nothing).
fn assert_clean(what: &str, log: &str, secrets: &[String]) {
    assert!(
        log.contains("00A40400"),
        "{what}: no APDU trace, so nothing was checked:\n{log}"
    );
    let mut needles = vec![
        "QX7Z".to_string(),
        "5158375A".to_string(),
        "5158375a".to_string(),
    ];
    for s in secrets {
        needles.push(s.to_lowercase());
        needles.push(s.to_uppercase());
    }
    for n in &needles {
        if let Some(line) = log.lines().find(|l| l.contains(n.as_str())) {
            panic!("{what}: secret {n} in the log:\n{line}\n\nwhole log:\n{log}");
        }
    }
}

#[test]
fn no_secret_reaches_the_shim_log() {
    let dir = tempfile::tempdir().unwrap();
    let card = common::make_card(dir.path());
    let secrets = drive(
        dir.path(),
        &[("VIRTUAL_PIV_CARD_FILE", card.display().to_string())],
    );
    assert!(!secrets.is_empty());
    let log = std::fs::read_to_string(dir.path().join("shim.log")).unwrap();
    assert_clean("shim log", &log, &secrets);
}

#[test]
fn no_secret_reaches_the_vreader_or_shim_log() {
    let dir = tempfile::tempdir().unwrap();
    let card = common::make_card(dir.path());
    let addr = format!("127.0.0.1:{}", e2e::free_port());
    // The shim reaches a listening vreader only over the paired link.
    let link = dir.path().join("link");
    vreader_ok(&["pair", "--dir", link.to_str().unwrap()]);
    let vreader_log = dir.path().join("vreader.log");
    let out = std::fs::File::create(&vreader_log).unwrap();
    let child = Command::new(vreader_bin())
        .args(["run", "--card", card.to_str().unwrap(), "--listen", &addr])
        .arg("--link-credentials")
        .arg(link.join("vreader.pem"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start vreader");
    let child = KillOnDrop(child);
    e2e::wait_for_log(&vreader_log, "waiting for a reader");
    let secrets = drive(
        dir.path(),
        &[
            ("VIRTUAL_PIV_REMOTE", addr),
            (
                "VIRTUAL_PIV_LINK",
                link.join("shim.pem").display().to_string(),
            ),
        ],
    );
    drop(child);
    let log = std::fs::read_to_string(&vreader_log).unwrap();
    assert_clean("vreader log", &log, &secrets);
    let log = std::fs::read_to_string(dir.path().join("shim.log")).unwrap();
    assert_clean("shim log (remote card)", &log, &secrets);
}
