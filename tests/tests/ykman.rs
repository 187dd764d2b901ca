//! ykman (yubikey-manager) against vreader through pcscd + vpcd: its CLI
//! on what a YubiKey user does first, and Yubico's own PIV device tests
//! (tests/device of its source distribution, unpatched), each on a default
//! card (AES-192 management key, as a YubiKey 5.7 ships) and on one made
//! with `vreader init --mgmt-alg tdes` (what yubico-piv-tool 2.2 needs).
//!
//! ykman, pytest and the unpacked tests come from the venv that
//! scripts/setup-ykman.sh makes (scripts/test.sh runs it); without it these
//! tests fail and say so.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use e2e::openssl::{issue, self_signed_rsa};
use e2e::run::{output_of, succeed};
use e2e::ykpiv::ykpiv;
use e2e::{
    output_text as text, pkcs11_sign_and_verify, run_ok, vreader_ok, CertFrom, Rig, READER0,
};

/// The yubikey-manager release scripts/setup-ykman.sh pins.
const YKMAN_VERSION: &str = "5.9.2";
const DEFAULT_MGMT: &str = "010203040506070801020304050607080102030405060708";

/// Where scripts/setup-ykman.sh puts the venv: `$YKMAN_VENV`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/virtual-piv/ykman-venv` (an empty
/// variable counts as unset, as in the script's `${VAR:-...}`).
fn venv_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("YKMAN_VENV") {
        return dir.into();
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").expect("HOME is not set")).join(".cache"));
    cache.join("virtual-piv/ykman-venv")
}

/// The venv, checked: a missing one fails the test with what to run.
struct Venv {
    ykman: PathBuf,
    python: PathBuf,
    /// The unpacked sdist (pyproject.toml and tests/), pytest's rootdir.
    src: PathBuf,
}

fn venv() -> Venv {
    let dir = venv_dir();
    let v = Venv {
        ykman: dir.join("bin/ykman"),
        python: dir.join("bin/python"),
        src: dir.join(format!("yubikey_manager-{YKMAN_VERSION}")),
    };
    for needed in [&v.ykman, &v.python, &v.src.join("tests/device/test_piv.py")] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/setup-ykman.sh to install ykman {YKMAN_VERSION} and its \
             device tests (it puts them in {}; set YKMAN_VENV for another place)",
            needed.display(),
            dir.display()
        );
    }
    v
}

/// Management key algorithm of the card under test.
#[derive(Clone, Copy, PartialEq)]
enum Mgmt {
    /// `vreader init`'s default, AES-192 as on a YubiKey 5.7.
    Default,
    /// `vreader init --mgmt-alg tdes`.
    Tdes,
}

impl Mgmt {
    /// How `ykman piv info` names the algorithm.
    fn ykman_name(self) -> &'static str {
        match self {
            Mgmt::Default => "AES192",
            Mgmt::Tdes => "TDES",
        }
    }
}

/// A new card file made by `vreader init` in reader slot 0; returns its
/// serial as `vreader status` reports it.
fn insert_card(rig: &mut Rig, mgmt: Mgmt) -> u32 {
    let card = rig.path_str("card.json");
    let mut init = vec!["init", card.as_str()];
    if mgmt == Mgmt::Tdes {
        init.extend(["--mgmt-alg", "tdes"]);
    }
    vreader_ok(&init);
    let status = vreader_ok(&["status", &card]);
    let serial = status
        .lines()
        .find_map(|l| l.strip_prefix("serial:"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no serial in vreader status:\n{status}"));
    rig.insert(&rig.path("card.json"));
    serial
}

/// ykman on reader 0.
fn ykman_command(v: &Venv, args: &[&str]) -> Command {
    let mut cmd = Command::new(&v.ykman);
    cmd.args(["--reader", READER0]).args(args);
    cmd
}

fn ykman(v: &Venv, args: &[&str]) -> Output {
    output_of(&mut ykman_command(v, args))
}

fn ykman_ok(v: &Venv, args: &[&str]) -> String {
    text(&succeed(&mut ykman_command(v, args), String::new))
}

/// `ykman piv certificates generate` with the default management key and
/// PIN: a self-signed certificate for the key whose public half is in
/// `public`.
fn self_signed_certificate(v: &Venv, slot: &str, public: &str, subject: &str) {
    let out = ykman_ok(
        v,
        &[
            "piv",
            "certificates",
            "generate",
            "-m",
            DEFAULT_MGMT,
            "-P",
            "123456",
            "-s",
            subject,
            slot,
            public,
        ],
    );
    assert!(out.contains("Certificate generated"), "{out}");
}

/// Whether `out` has the line `want`, ignoring how ykman pads its
/// columns (runs of blanks count as one space).
fn has_line(out: &str, want: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = norm(want);
    out.lines().any(|l| norm(l) == want)
}

/// The DER form of a PEM file, through `openssl <command>` (`x509` for a
/// certificate, `pkey -pubin` for a public key), to compare contents
/// rather than text.
fn der(command: &[&str], pem: &str) -> Vec<u8> {
    let out = format!("{pem}.der");
    let mut args = command.to_vec();
    args.extend(["-in", pem, "-outform", "DER", "-out", &out]);
    run_ok("openssl", &args);
    std::fs::read(out).unwrap()
}

fn cert_der(pem: &str) -> Vec<u8> {
    der(&["x509"], pem)
}

fn public_der(pem: &str) -> Vec<u8> {
    der(&["pkey", "-pubin"], pem)
}

/// The public key a PEM certificate is for, in DER.
fn cert_public_der(cert: &str) -> Vec<u8> {
    let public = format!("{cert}.pub.pem");
    run_ok(
        "openssl",
        &["x509", "-in", cert, "-noout", "-pubkey", "-out", &public],
    );
    public_der(&public)
}

fn cli(mgmt: Mgmt) {
    let v = venv();
    let mut rig = Rig::new();
    let serial = insert_card(&mut rig, mgmt);
    let p = |n: &str| rig.path_str(n);
    let m = DEFAULT_MGMT;

    // info: the Management application's serial and version are the
    // card's, and PIV is there.
    let info = ykman_ok(&v, &["info"]);
    println!("ykman info:\n{info}");
    assert!(
        has_line(&info, &format!("Serial number: {serial}")),
        "serial {serial}:\n{info}"
    );
    assert!(has_line(&info, "Firmware version: 5.7.1"), "{info}");
    assert!(
        info.lines()
            .any(|l| l.starts_with("PIV") && l.contains("Enabled")),
        "PIV is not enabled:\n{info}"
    );

    let piv = ykman_ok(&v, &["piv", "info"]);
    println!("ykman piv info:\n{piv}");
    for want in [
        "PIV version: 5.7.1",
        "PIN tries remaining: 3/3",
        "PUK tries remaining: 3/3",
        "WARNING: Using default PIN!",
        "WARNING: Using default Management key!",
        &format!("Management key algorithm: {}", mgmt.ykman_name()),
    ] {
        assert!(
            has_line(&piv, want),
            "no {want:?} in ykman piv info:\n{piv}"
        );
    }

    // keys generate + certificates generate: a self-signed certificate of
    // the generated key, signed by it, that OpenSC signs with too.
    for (slot, alg, id, mechanism, extra) in [
        (
            "9a",
            "ECCP256",
            "01",
            "ECDSA-SHA256",
            &["--signature-format", "openssl"][..],
        ),
        ("9c", "RSA2048", "02", "SHA256-RSA-PKCS", &[][..]),
    ] {
        let public = p(&format!("{slot}.pub.pem"));
        ykman_ok(
            &v,
            &["piv", "keys", "generate", "-m", m, "-a", alg, slot, &public],
        );
        self_signed_certificate(&v, slot, &public, &format!("CN=ykman {slot}"));
        let cert = p(&format!("{slot}.cert.pem"));
        ykman_ok(&v, &["piv", "certificates", "export", slot, &cert]);
        assert_eq!(
            public_der(&public),
            cert_public_der(&cert),
            "{slot}: the certificate is not for the generated key"
        );
        let verified = run_ok(
            "openssl",
            &["verify", "-CAfile", &cert, "-check_ss_sig", &cert],
        );
        assert!(verified.contains(": OK"), "{slot}: {verified}");
        pkcs11_sign_and_verify(&rig, id, mechanism, extra, CertFrom::Card);
    }

    // certificates import --verify: a CA-issued certificate for 9c's key
    // is accepted (the card signs with the key to prove it), read back
    // unchanged by yubico-piv-tool; one for another key is refused.
    self_signed_rsa(&p("ca.key"), &p("ca.pem"), "/CN=ykman e2e CA");
    issue(
        &p("9c.pub.pem"),
        "/CN=imported 9c",
        &p("ca.pem"),
        &p("ca.key"),
        &p("9c.issued.pem"),
    );
    let out = ykman_ok(
        &v,
        &[
            "piv",
            "certificates",
            "import",
            "--verify",
            "-m",
            m,
            "-P",
            "123456",
            "9c",
            &p("9c.issued.pem"),
        ],
    );
    assert!(
        out.contains("Certificate imported into slot SIGNATURE"),
        "{out}"
    );
    let back = ykpiv(&[
        "-a",
        "read-certificate",
        "-s",
        "9c",
        "-o",
        &p("9c.back.pem"),
    ]);
    assert!(back.status.success(), "{}", text(&back));
    assert_eq!(cert_der(&p("9c.issued.pem")), cert_der(&p("9c.back.pem")));
    let wrong = ykman(
        &v,
        &[
            "piv",
            "certificates",
            "import",
            "--verify",
            "-m",
            m,
            "-P",
            "123456",
            "9c",
            &p("9a.cert.pem"),
        ],
    );
    assert!(
        !wrong.status.success() && text(&wrong).contains("does not match the private key"),
        "a certificate for 9a's key was imported into 9c ({}):\n{}",
        wrong.status,
        text(&wrong)
    );

    // access change-pin: the new PIN is the card's PIN for other clients.
    let out = ykman_ok(
        &v,
        &[
            "piv",
            "access",
            "change-pin",
            "-P",
            "123456",
            "-n",
            "654321",
        ],
    );
    assert!(out.contains("New PIN set."), "{out}");
    let old = ykpiv(&["-a", "verify-pin", "-P", "123456"]);
    assert!(
        !old.status.success() && text(&old).contains("2 tries left"),
        "the old PIN: {}",
        text(&old)
    );
    let new = ykpiv(&["-a", "verify-pin", "-P", "654321"]);
    assert!(
        new.status.success() && text(&new).contains("Successfully verified PIN"),
        "the new PIN: {}",
        text(&new)
    );

    // change-management-key --protect: a random key of the same
    // algorithm, stored on the card behind the PIN; the PIN alone then
    // authorises management, the default key no longer does.
    let out = ykman_ok(
        &v,
        &[
            "piv",
            "access",
            "change-management-key",
            "-m",
            m,
            "-P",
            "654321",
            "--protect",
            "-f",
        ],
    );
    assert!(out.contains("New management key set."), "{out}");
    let piv = ykman_ok(&v, &["piv", "info"]);
    println!("ykman piv info after --protect:\n{piv}");
    assert!(
        has_line(
            &piv,
            "Management key is stored on the YubiKey, protected by PIN."
        ) && !has_line(&piv, "WARNING: Using default Management key!")
            && has_line(
                &piv,
                &format!("Management key algorithm: {}", mgmt.ykman_name())
            ),
        "{piv}"
    );
    ykman_ok(
        &v,
        &[
            "piv",
            "keys",
            "generate",
            "-P",
            "654321",
            "-a",
            "ECCP256",
            "9d",
            &p("9d.pub.pem"),
        ],
    );
    let refused = ykman(
        &v,
        &[
            "piv",
            "keys",
            "generate",
            "-m",
            m,
            "-a",
            "ECCP256",
            "9e",
            &p("9e.pub.pem"),
        ],
    );
    assert!(
        !refused.status.success()
            && text(&refused).contains("Authentication with management key failed"),
        "the default management key still works after --protect:\n{}",
        text(&refused)
    );

    // reset: PIN, PUK and management key are the defaults again, the keys
    // and certificates are gone. The default management key is AES-192
    // after a reset whatever the card was made with, as on a YubiKey 5.7
    // (Yubico's test_management_key_metadata checks this too).
    let out = ykman_ok(&v, &["piv", "reset", "-f"]);
    assert!(out.contains("Reset complete"), "{out}");
    let piv = ykman_ok(&v, &["piv", "info"]);
    println!("ykman piv info after reset:\n{piv}");
    for want in [
        "WARNING: Using default PIN!",
        "WARNING: Using default PUK!",
        "WARNING: Using default Management key!",
        "Management key algorithm: AES192",
        "PIN tries remaining: 3/3",
    ] {
        assert!(has_line(&piv, want), "no {want:?} after reset:\n{piv}");
    }
    for gone in ["protected by PIN", "Slot 9A", "Slot 9C", "Slot 9D"] {
        assert!(!piv.contains(gone), "{gone:?} after reset:\n{piv}");
    }
    let pin = ykpiv(&["-a", "verify-pin", "-P", "123456"]);
    assert!(
        pin.status.success(),
        "default PIN after reset: {}",
        text(&pin)
    );
    ykman_ok(
        &v,
        &[
            "piv",
            "keys",
            "generate",
            "-m",
            m,
            "-a",
            "ECCP256",
            "9a",
            &p("after.pem"),
        ],
    );
    let after = ykman_ok(&v, &["info"]);
    assert!(
        has_line(&after, &format!("Serial number: {serial}")),
        "{after}"
    );
}

#[test]
fn cli_on_default_card() {
    cli(Mgmt::Default);
}

#[test]
fn cli_on_tdes_card() {
    cli(Mgmt::Tdes);
}

/// ykman knows nothing of PIV secure messaging: on a card that offers it
/// (without the contactless profile) it works as before.
#[test]
fn cli_on_a_card_with_secure_messaging() {
    let v = venv();
    let mut rig = Rig::new();
    let card = rig.path_str("card.json");
    vreader_ok(&["init", &card]);
    vreader_ok(&["secure-messaging", &card, "--suite", "cs7"]);
    rig.insert(&rig.path("card.json"));
    let info = ykman_ok(&v, &["piv", "info"]);
    assert!(has_line(&info, "PIV version: 5.7.1"), "{info}");
    let public = rig.path_str("9a.pub.pem");
    let m = DEFAULT_MGMT;
    ykman_ok(
        &v,
        &[
            "piv", "keys", "generate", "-m", m, "-a", "ECCP256", "9a", &public,
        ],
    );
    self_signed_certificate(&v, "9a", &public, "CN=sm");
}

/// pytest's counts from its last line, e.g. "3 failed, 97 passed, 12
/// skipped in 61.2s".
#[derive(Debug, Default)]
struct Counts {
    passed: u32,
    failed: u32,
    errors: u32,
    skipped: u32,
    other: Vec<String>,
}

fn parse_counts(summary: &str) -> Counts {
    let mut c = Counts::default();
    let body = summary.trim().trim_matches('=').trim();
    let body = body.rsplit_once(" in ").map_or(body, |(b, _)| b);
    for part in body.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse().ok()), words.next())
        else {
            c.other.push(part.to_string());
            continue;
        };
        match what {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "error" | "errors" => c.errors = n,
            "skipped" => c.skipped = n,
            _ => c.other.push(part.to_string()),
        }
    }
    c
}

/// Yubico's PIV device tests, as Yubico runs them on a YubiKey: the
/// suite's own `--reader` and `--device` options (the serial must match
/// the card's), nothing patched or deselected.
fn device_tests(mgmt: Mgmt) {
    let v = venv();
    let mut rig = Rig::new();
    let serial = insert_card(&mut rig, mgmt).to_string();
    let out = Command::new(&v.python)
        .current_dir(&v.src)
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rfEs",
            "--color=no",
        ])
        .args(["tests/device/test_piv.py", "tests/device/cli/piv"])
        .args(["--reader", READER0, "--device", &serial])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run pytest");
    let all = text(&out);
    // The whole run for the record (cargo shows it when the test fails).
    println!("{all}");
    let last = all
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let summary: String = all
        .lines()
        .skip_while(|l| !l.contains("short test summary info"))
        .collect::<Vec<_>>()
        .join("\n");
    let c = parse_counts(last);
    let card = match mgmt {
        Mgmt::Default => "default card",
        Mgmt::Tdes => "3DES card",
    };
    println!(
        "ykman {YKMAN_VERSION} device tests, {card}: {} passed, {} failed, {} errors, {} skipped {:?}",
        c.passed, c.failed, c.errors, c.skipped, c.other
    );
    assert!(
        out.status.success() && c.failed == 0 && c.errors == 0 && c.passed > 0,
        "ykman's device tests on the {card} ({}): {c:?}\n{summary}\n{last}",
        out.status
    );
}

#[test]
fn yubico_device_tests_on_default_card() {
    device_tests(Mgmt::Default);
}

#[test]
fn yubico_device_tests_on_tdes_card() {
    device_tests(Mgmt::Tdes);
}

#[test]
fn pytest_counts_parse() {
    let c = parse_counts("=== 2 failed, 90 passed, 14 skipped, 1 error in 80.11s (0:01:20) ===");
    assert_eq!((c.passed, c.failed, c.errors, c.skipped), (90, 2, 1, 14));
    assert!(c.other.is_empty());
    let c = parse_counts("============ no tests ran in 0.12s ============");
    assert_eq!(c.passed, 0);
}
