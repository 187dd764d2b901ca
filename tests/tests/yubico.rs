//! yubico-piv-tool (libykpiv) against vreader through pcscd + vpcd. The
//! card uses a 3DES management key, as yubico-piv-tool 2.2 predates AES
//! management keys.

use e2e::openssl::{issue, self_signed_rsa};
use e2e::ykpiv::{ykpiv, ykpiv_ok};
use e2e::{make_card, output_text as text, run_ok, Rig};
use piv_applet::AlgorithmId;

fn rig() -> Rig {
    let mut rig = Rig::new();
    let card = rig.path("card.json");
    make_card(&card, AlgorithmId::TripleDes, &[]);
    rig.insert(&card);
    rig
}

#[test]
fn status_pins_and_puk() {
    let _rig = rig();
    let status = ykpiv_ok(&["-a", "status"]);
    assert!(status.contains("Version:\t5.7.1"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    assert!(ykpiv_ok(&["-a", "verify-pin", "-P", "123456"]).contains("Successfully verified PIN"));
    assert!(
        ykpiv_ok(&["-a", "change-pin", "-P", "123456", "-N", "654321"])
            .contains("Successfully changed the pin code")
    );
    let old = ykpiv(&["-a", "verify-pin", "-P", "123456"]);
    assert!(
        !old.status.success() && text(&old).contains("2 tries left"),
        "{}",
        text(&old)
    );
    assert!(ykpiv_ok(&["-a", "verify-pin", "-P", "654321"]).contains("Successfully verified PIN"));
    // Block the PIN, then unblock it with the PUK.
    for left in ["2 tries left", "1 tries left", "blocked"] {
        let out = ykpiv(&["-a", "verify-pin", "-P", "000000"]);
        assert!(text(&out).contains(left), "{}", text(&out));
    }
    let blocked = ykpiv(&["-a", "verify-pin", "-P", "654321"]);
    assert!(text(&blocked).contains("blocked"), "{}", text(&blocked));
    assert!(
        ykpiv_ok(&["-a", "unblock-pin", "-P", "12345678", "-N", "123456"])
            .contains("Successfully unblocked")
    );
    assert!(ykpiv_ok(&["-a", "verify-pin", "-P", "123456"]).contains("Successfully verified PIN"));
}

#[test]
fn generate_import_read_and_attest() {
    let rig = rig();
    let p = |n: &str| rig.path_str(n);
    for (slot, alg) in [("9a", "RSA2048"), ("9c", "ECCP256")] {
        let public = p(&format!("{slot}.pub.pem"));
        assert!(
            ykpiv_ok(&["-a", "generate", "-s", slot, "-A", alg, "-o", &public])
                .contains("Successfully generated")
        );
        // yubico-piv-tool's own selfsign is broken with OpenSSL 3: issue the
        // certificate with openssl for the generated public key.
        if !rig.path("ca.pem").exists() {
            self_signed_rsa(&p("ca.key"), &p("ca.pem"), "/CN=e2e CA");
        }
        let cert = p(&format!("{slot}.cert.pem"));
        issue(
            &public,
            &format!("/CN=card {slot}"),
            &p("ca.pem"),
            &p("ca.key"),
            &cert,
        );
        assert!(
            ykpiv_ok(&["-a", "import-certificate", "-s", slot, "-i", &cert])
                .contains("Successfully imported")
        );
        let back = p(&format!("{slot}.back.pem"));
        ykpiv_ok(&["-a", "read-certificate", "-s", slot, "-o", &back]);
        let der = |f: &str| run_ok("openssl", &["x509", "-in", f, "-outform", "DER"]);
        assert_eq!(der(&cert), der(&back), "certificate read back differs");
        // Attestation chains to the F9 certificate and attests this key.
        let att = p(&format!("{slot}.att.pem"));
        ykpiv_ok(&["-a", "attest", "-s", slot, "-o", &att]);
        ykpiv_ok(&["-a", "read-certificate", "-s", "f9", "-o", &p("f9.pem")]);
        assert!(run_ok("openssl", &["verify", "-CAfile", &p("f9.pem"), &att]).contains("OK"));
        let attested = run_ok("openssl", &["x509", "-in", &att, "-noout", "-pubkey"]);
        assert_eq!(attested, std::fs::read_to_string(&public).unwrap());
    }
    let status = ykpiv_ok(&["-a", "status"]);
    assert!(
        status.contains("Slot 9a") && status.contains("CN=card 9a"),
        "{status}"
    );
    assert!(
        status.contains("Slot 9c") && status.contains("ECCP256"),
        "{status}"
    );
}

#[test]
fn reset_after_pin_and_puk_are_blocked() {
    let _rig = rig();
    ykpiv_ok(&["-a", "generate", "-s", "9a", "-A", "ECCP256"]);
    assert!(
        ykpiv(&["-a", "attest", "-s", "9a"]).status.success(),
        "the key is there before reset"
    );
    let early = ykpiv(&["-a", "reset"]);
    assert!(
        !early.status.success(),
        "reset must need a blocked PIN and PUK"
    );
    for _ in 0..3 {
        ykpiv(&["-a", "verify-pin", "-P", "000000"]);
        ykpiv(&["-a", "unblock-pin", "-P", "00000000", "-N", "123456"]);
    }
    let puk = ykpiv(&["-a", "unblock-pin", "-P", "12345678", "-N", "123456"]);
    assert!(text(&puk).contains("blocked"), "{}", text(&puk));
    assert!(ykpiv_ok(&["-a", "reset"]).contains("Successfully reset"));
    assert!(ykpiv_ok(&["-a", "verify-pin", "-P", "123456"]).contains("Successfully verified PIN"));
    assert!(
        !ykpiv(&["-a", "attest", "-s", "9a"]).status.success(),
        "the key survived reset"
    );
}
