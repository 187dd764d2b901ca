//! Provisioning with `vreader`: PKCS#12 and PEM imports, key generation
//! with a CSR, self-signed smart card logon certificates; refusals leave
//! the card file byte-identical.

use e2e::openssl::self_signed_rsa;
use e2e::{
    output_text, pkcs11_sign_and_verify, run, run_ok, vreader, vreader_bin, vreader_ok, CertFrom,
    Rig,
};

#[test]
fn pkcs12_rsa_and_ec_imports_sign_through_pcscd() {
    let mut rig = Rig::new();
    let dir = rig.dir.path().to_path_buf();
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    std::fs::write(p("pw"), "s3cret pass\n").unwrap();
    // RSA, exported with the legacy 3DES encryption older Windows uses.
    self_signed_rsa(&p("rsa.key"), &p("rsa.pem"), "/CN=p12 rsa");
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &p("rsa.key"),
            "-in",
            &p("rsa.pem"),
            "-out",
            &p("rsa.p12"),
            "-passout",
            "pass:s3cret pass",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ],
    );
    // EC, exported with OpenSSL 3's default (PBES2, AES-256, PBKDF2).
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p("ec.key"),
            "-out",
            &p("ec.pem"),
            "-subj",
            "/CN=p12 ec",
            "-days",
            "2",
        ],
    );
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &p("ec.key"),
            "-in",
            &p("ec.pem"),
            "-out",
            &p("ec.p12"),
            "-passout",
            "pass:s3cret pass",
        ],
    );
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    assert!(vreader_ok(&[
        "import",
        &card,
        "--slot",
        "9a",
        "--pkcs12",
        &p("rsa.p12"),
        "--password-file",
        &p("pw")
    ])
    .contains("RSA2048"));
    assert!(vreader_ok(&[
        "import",
        &card,
        "--slot",
        "9c",
        "--pkcs12",
        &p("ec.p12"),
        "--password-file",
        &p("pw")
    ])
    .contains("ECCP256"));
    rig.insert(std::path::Path::new(&card));
    pkcs11_sign_and_verify(
        &rig,
        "01",
        "SHA256-RSA-PKCS",
        &[],
        CertFrom::Pem(&p("rsa.pem")),
    );
    pkcs11_sign_and_verify(
        &rig,
        "02",
        "ECDSA-SHA256",
        &["--signature-format", "openssl"],
        CertFrom::Pem(&p("ec.pem")),
    );
}

#[test]
fn pem_keys_in_every_encoding_import() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    run_ok(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &p("pkcs8.pem"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "pkey",
            "-in",
            &p("pkcs8.pem"),
            "-traditional",
            "-out",
            &p("pkcs1.pem"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            &p("sec1.pem"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "pkey",
            "-in",
            &p("sec1.pem"),
            "-outform",
            "DER",
            "-out",
            &p("pkcs8.der"),
        ],
    );
    for (key, slot, alg) in [
        ("pkcs8.pem", "82", "RSA2048"),
        ("pkcs1.pem", "83", "RSA2048"),
        ("sec1.pem", "84", "ECCP384"),
        ("pkcs8.der", "85", "ECCP384"),
    ] {
        let out = vreader_ok(&["import", &card, "--slot", slot, "--key", &p(key)]);
        assert!(out.contains(alg), "{key}: {out}");
        // The public key on the card is the file's.
        vreader_ok(&[
            "export",
            &card,
            "--slot",
            slot,
            "--public-key",
            &p("card.pub"),
        ]);
        let theirs = run_ok("openssl", &["pkey", "-in", &p(key), "-pubout"]);
        assert_eq!(
            std::fs::read_to_string(p("card.pub")).unwrap(),
            theirs,
            "{key}"
        );
    }
}

#[test]
fn generated_key_csr_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    for (slot, alg) in [("9a", "RSA2048"), ("9d", "ECCP256")] {
        let csr = p(&format!("{slot}.csr"));
        vreader_ok(&[
            "generate",
            &card,
            "--slot",
            slot,
            "--algorithm",
            alg,
            "--csr",
            &csr,
            "--subject",
            "CN=Alice,O=Example Corp",
        ]);
        let out = run_ok(
            "openssl",
            &["req", "-in", &csr, "-verify", "-noout", "-subject"],
        );
        assert!(
            out.contains("verify OK") || out.contains("verify ok"),
            "{out}"
        );
        assert!(out.contains("CN = Alice"), "{out}");
        // The request carries the card's public key.
        vreader_ok(&[
            "export",
            &card,
            "--slot",
            slot,
            "--public-key",
            &p("card.pub"),
        ]);
        let req_pub = run_ok("openssl", &["req", "-in", &csr, "-noout", "-pubkey"]);
        assert_eq!(req_pub, std::fs::read_to_string(p("card.pub")).unwrap());
    }
}

#[test]
fn self_signed_logon_certificate_has_eku_and_upn() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    vreader_ok(&["generate", &card, "--slot", "9a", "--algorithm", "RSA2048"]);
    vreader_ok(&[
        "selfsign",
        &card,
        "--slot",
        "9a",
        "--subject",
        "CN=Alice",
        "--upn",
        "alice@example.test",
    ]);
    vreader_ok(&["export", &card, "--slot", "9a", "--cert", &p("cert.pem")]);
    let text = run_ok(
        "openssl",
        &["x509", "-in", &p("cert.pem"), "-noout", "-text"],
    );
    assert!(
        text.contains("Microsoft Smartcard Login") || text.contains("1.3.6.1.4.1.311.20.2.2"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("alice@example.test"), "{text}");
    assert!(
        text.contains("UPN")
            || text.contains("Universal Principal Name")
            || text.contains("1.3.6.1.4.1.311.20.2.3"),
        "{text}"
    );
}

#[test]
fn refusals_leave_the_card_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card, "--demo-key"]);
    let before = std::fs::read(&card).unwrap();
    self_signed_rsa(&p("a.key"), &p("a.pem"), "/CN=a");
    self_signed_rsa(&p("b.key"), &p("b.pem"), "/CN=b");
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &p("a.key"),
            "-in",
            &p("a.pem"),
            "-out",
            &p("a.p12"),
            "-passout",
            "pass:right",
        ],
    );
    std::fs::write(p("wrong"), "wrong\n").unwrap();
    let out = vreader(&[
        "import",
        &card,
        "--slot",
        "9a",
        "--pkcs12",
        &p("a.p12"),
        "--password-file",
        &p("wrong"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("password"), "{err}");
    let out = vreader(&[
        "import",
        &card,
        "--slot",
        "9a",
        "--key",
        &p("a.key"),
        "--cert",
        &p("b.pem"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&card).unwrap(),
        before,
        "card file changed by a refused import"
    );
    assert!(
        !run("ls", &[&dir.path().to_string_lossy()])
            .stdout
            .windows(4)
            .any(|w| w == b".tmp"),
        "temporary file left"
    );
}

/// 7.5: a passphrase-encrypted card file made by `vreader init --encrypt`
/// is served through pcscd with the passphrase from
/// $VREADER_PASSPHRASE_FILE, signs for OpenSC, refuses to open without
/// its passphrase, and can be turned back into a plain file.
#[test]
fn encrypted_card_file_serves_through_pcscd() {
    let mut rig = Rig::new();
    let (card, pw, cert) = (
        rig.path_str("card.json"),
        rig.path_str("pw"),
        rig.path_str("cert.pem"),
    );
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let out = vreader_ok(&[
        "init",
        "--demo-key",
        "--encrypt",
        "--passphrase-file",
        &pw,
        &card,
    ]);
    assert!(out.contains("encryption:      passphrase"), "{out}");
    let file = std::fs::read_to_string(&card).unwrap();
    assert!(
        file.contains("\"virtual-piv-card-sealed\"") && !file.contains("private_key"),
        "{file}"
    );

    // Without the passphrase (stdin is no terminal): a clear refusal.
    let out = vreader(&["status", &card]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&card) && err.contains("--passphrase-file"),
        "{err}"
    );
    std::fs::write(rig.path("bad"), "correct horse\n").unwrap();
    let out = vreader(&["status", "--passphrase-file", &rig.path_str("bad"), &card]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));

    vreader_ok(&[
        "export",
        "--passphrase-file",
        &pw,
        &card,
        "--slot",
        "9a",
        "--cert",
        &cert,
    ]);
    let i = rig.vreader_with_env(&["--card", &card], &[("VREADER_PASSPHRASE_FILE", &pw)]);
    e2e::wait_for_card(e2e::READER0, e2e::DEADLINE);
    pkcs11_sign_and_verify(&rig, "01", "SHA256-RSA-PKCS", &[], CertFrom::Pem(&cert));
    assert!(rig.stop(i).success());
    assert!(
        !rig.log(i).contains("correct horse"),
        "passphrase in the log"
    );
    // The PIN verification the signature needed was saved, still sealed.
    let file = std::fs::read_to_string(&card).unwrap();
    assert!(file.contains("\"virtual-piv-card-sealed\""));

    let out = vreader_ok(&["passphrase", "--passphrase-file", &pw, "--remove", &card]);
    assert!(out.contains("stored in clear"), "{out}");
    assert!(vreader_ok(&["status", &card]).contains("encryption:      none"));
}

/// `vreader` with extra environment variables (stdin is not a terminal).
fn vreader_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = e2e::run::output_of(
        std::process::Command::new(vreader_bin())
            .args(args)
            .envs(env.iter().copied()),
    );
    (out.status.success(), output_text(&out))
}

fn pin_block(v: &[u8]) -> Vec<u8> {
    let mut b = v.to_vec();
    b.resize(8, 0xFF);
    b
}

/// Set-pin, set-puk and set-management-key take the new
/// secret from a file or an environment variable (no terminal here, so no
/// prompt: a clear error instead); the command-line form still works but
/// warns that the value is visible.
#[test]
fn new_credentials_come_from_files_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    let state = || piv_applet::store::load(std::path::Path::new(&card)).unwrap();

    std::fs::write(p("pin"), "24681357\n").unwrap();
    let out = vreader_ok(&["set-pin", &card, "--new-pin-file", &p("pin")]);
    assert!(!out.contains("WARN"), "{out}");
    assert_eq!(&state().pin.value[..], &pin_block(b"24681357")[..]);

    let (ok, out) = vreader_env(&["set-pin", &card], &[("VREADER_NEW_PIN", "13572468")]);
    assert!(ok && !out.contains("WARN"), "{out}");
    assert_eq!(&state().pin.value[..], &pin_block(b"13572468")[..]);

    let (ok, out) = vreader_env(&["set-pin", &card], &[]);
    assert!(
        !ok && out.contains("--new-pin-file") && out.contains("VREADER_NEW_PIN"),
        "{out}"
    );
    assert_eq!(&state().pin.value[..], &pin_block(b"13572468")[..]);

    let out = vreader_ok(&["set-pin", &card, "--new-pin", "11223344"]);
    assert!(
        out.contains("WARN") && out.contains("--new-pin-file") && out.contains("process list"),
        "{out}"
    );
    assert_eq!(&state().pin.value[..], &pin_block(b"11223344")[..]);

    std::fs::write(p("puk"), "87654321").unwrap();
    vreader_ok(&["set-puk", &card, "--new-puk-file", &p("puk")]);
    assert_eq!(&state().puk.value[..], &pin_block(b"87654321")[..]);
    let (ok, out) = vreader_env(&["set-puk", &card], &[("VREADER_NEW_PUK", "11112222")]);
    assert!(ok, "{out}");
    assert_eq!(&state().puk.value[..], &pin_block(b"11112222")[..]);
    let out = vreader_ok(&["set-puk", &card, "--new-puk", "33334444"]);
    assert!(
        out.contains("WARN") && out.contains("--new-puk-file"),
        "{out}"
    );

    let key = "00112233445566778899aabbccddeeff0011223344556677";
    std::fs::write(p("key"), format!("{key}\n")).unwrap();
    vreader_ok(&[
        "set-management-key",
        &card,
        "--algorithm",
        "aes192",
        "--key-file",
        &p("key"),
    ]);
    assert_eq!(hex::encode(state().mgmt.key_bytes()), key);
    let key2 = "ffeeddccbbaa99887766554433221100ffeeddccbbaa9988";
    let (ok, out) = vreader_env(
        &["set-management-key", &card, "--algorithm", "aes192"],
        &[("VREADER_MANAGEMENT_KEY", key2)],
    );
    assert!(ok && !out.contains("WARN"), "{out}");
    assert_eq!(hex::encode(state().mgmt.key_bytes()), key2);
    let out = vreader_ok(&[
        "set-management-key",
        &card,
        "--algorithm",
        "aes192",
        "--key",
        key,
    ]);
    assert!(out.contains("WARN") && out.contains("--key-file"), "{out}");
    assert_eq!(hex::encode(state().mgmt.key_bytes()), key);
}

/// With a passphrase file configured, a plain card file
/// (an encrypted one swapped for it) is refused, naming the file, before
/// anything is changed; --allow-plain accepts it.
#[test]
fn a_plain_card_file_is_refused_when_a_passphrase_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let card = p("card.json");
    vreader_ok(&["init", &card]);
    std::fs::write(p("pw"), "a passphrase\n").unwrap();
    let before = std::fs::read(&card).unwrap();
    let (ok, out) = vreader_env(
        &["set-pin", &card, "--new-pin", "24681357"],
        &[("VREADER_PASSPHRASE_FILE", &p("pw"))],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&card) && out.contains("not encrypted") && out.contains("--allow-plain"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&card).unwrap(),
        before,
        "the card file changed"
    );
    let (ok, out) = vreader_env(
        &["status", "--allow-plain", &card],
        &[("VREADER_PASSPHRASE_FILE", &p("pw"))],
    );
    assert!(ok && out.contains("encryption:      none"), "{out}");
    // Encrypting a plain file is what `passphrase` is for.
    vreader_ok(&[
        "passphrase",
        "--passphrase-file",
        &p("pw"),
        "--new-passphrase-file",
        &p("pw"),
        &card,
    ]);
    let (ok, out) = vreader_env(&["status", &card], &[("VREADER_PASSPHRASE_FILE", &p("pw"))]);
    assert!(ok && out.contains("encryption:      passphrase"), "{out}");
}
