//! OpenSC against vreader through pcscd + vpcd. The checks themselves are
//! `e2e::OpenSc`'s, shared with the shim's tests.

use e2e::{make_card, CertFrom, OpenSc, Rig, READER0};
use piv_applet::{AlgorithmId, Slot};

fn rig_with_rsa_and_ec() -> Rig {
    let mut rig = Rig::new();
    let card = rig.path("card.json");
    make_card(
        &card,
        AlgorithmId::Aes192,
        &[
            (Slot::AUTHENTICATION, AlgorithmId::Rsa2048),
            (Slot::SIGNATURE, AlgorithmId::EccP256),
        ],
    );
    rig.insert(&card);
    rig
}

fn opensc(rig: &Rig) -> OpenSc {
    OpenSc::pcscd(READER0, rig.dir.path())
}

#[test]
fn opensc_tool_names_a_piv_card() {
    let rig = rig_with_rsa_and_ec();
    let opensc = opensc(&rig);
    opensc.names_a_piv_card();
    let atr = opensc.opensc_tool(&["-a"]);
    assert!(
        atr.to_uppercase()
            .contains("3B:8D:80:01:80:73:C0:21:C0:57:59:75:62:69:4B:65:79:F9"),
        "{atr}"
    );
}

#[test]
fn pkcs15_tool_lists_certificates_and_keys() {
    let rig = rig_with_rsa_and_ec();
    let opensc = opensc(&rig);
    let out = opensc.lists_the_piv_authentication_certificate();
    assert!(
        out.contains("X.509 Certificate [Certificate for PIV Authentication]"),
        "{out}"
    );
    assert!(
        out.contains("X.509 Certificate [Certificate for Digital Signature]"),
        "{out}"
    );
    assert!(out.contains("Private RSA Key [PIV AUTH key]"), "{out}");
    assert!(out.contains("Private EC Key [SIGN key]"), "{out}");
    // The certificates read back through OpenSC are the ones on the card.
    for (id, subject) in [("01", "CN = e2e 9A"), ("02", "CN = e2e 9C")] {
        let path = rig.path_str(&format!("{id}.pem"));
        let pem = opensc.pkcs15_tool(&["--read-certificate", id]);
        let start = pem
            .find("-----BEGIN CERTIFICATE-----")
            .expect("PEM certificate");
        std::fs::write(&path, &pem[start..]).unwrap();
        let text = e2e::run_ok("openssl", &["x509", "-in", &path, "-noout", "-subject"]);
        assert!(text.contains(subject), "{id}: {text}");
    }
}

#[test]
fn pkcs11_signatures_verify_with_openssl() {
    let rig = rig_with_rsa_and_ec();
    let opensc = opensc(&rig);
    opensc.sign_and_verify("01", "SHA256-RSA-PKCS", &[], CertFrom::Card);
    opensc.sign_and_verify(
        "02",
        "ECDSA-SHA256",
        &["--signature-format", "openssl"],
        CertFrom::Card,
    );
}

#[test]
fn pkcs11_tool_self_test_passes() {
    let rig = rig_with_rsa_and_ec();
    opensc(&rig).pkcs11_self_test();
}

/// The management key both test cards have (the YubiKey default).
const DEFAULT_KEY: &str = "01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:08";
/// The default key with its last byte changed.
const WRONG_KEY: &str = "01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:10";

/// piv-tool's management key authentication (`-A M:9B:<alg>`) on a new
/// card with management key algorithm `mgmt`: the default key is
/// accepted, a wrong one refused.
fn piv_tool_admin(mgmt: AlgorithmId, alg: &str) {
    let mut rig = Rig::new();
    let card = rig.path("card.json");
    make_card(&card, mgmt, &[]);
    rig.insert(&card);
    let key_file = rig.path_str("admin.key");
    let piv_tool = |key: &str| {
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        e2e::run::output_of(
            std::process::Command::new("piv-tool")
                .args(["-r", READER0, "-A", &format!("M:9B:{alg}")])
                .env("PIV_EXT_AUTH_KEY", &key_file),
        )
    };
    let ok = piv_tool(DEFAULT_KEY);
    assert!(
        ok.status.success(),
        "default {mgmt:?} key refused: {}",
        e2e::output_text(&ok)
    );
    let bad = piv_tool(WRONG_KEY);
    assert!(
        !bad.status.success(),
        "a wrong management key was accepted: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn piv_tool_admin_authentication() {
    piv_tool_admin(AlgorithmId::TripleDes, "03");
}

/// A card with YubiKey 5.7's default AES-192 management key: piv-tool
/// names the algorithm (0A) in the key reference.
#[test]
fn piv_tool_admin_authentication_aes192() {
    piv_tool_admin(AlgorithmId::Aes192, "0A");
}
