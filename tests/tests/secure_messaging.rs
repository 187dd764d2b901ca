//! Secure messaging through pcscd: the card set up by `vreader
//! secure-messaging`, driven by the project's own SM client (OpenSC's SM
//! client needs a build with --enable-piv-sm: docs/conformance.md), and
//! the clients that know nothing of SM still working on such a card.

use e2e::{connect, make_card, vreader_ok, CertFrom, OpenSc, Rig, READER0};
use piv_applet::client::Client;
use piv_applet::enums::Ins;
use piv_applet::sm::cvc::SignerPublicKey;
use piv_applet::sm::CipherSuite;
use piv_applet::{AlgorithmId, ObjectId, Slot, StatusWord};

/// A card with an RSA key in 9A and an EC key in 9C, given secure
/// messaging by the CLI with `extra` arguments (and a pairing code, from a
/// file), and plugged in.
fn rig_with_sm(extra: &[&str], pairing_code: Option<&str>) -> Rig {
    let mut rig = Rig::new();
    let card = rig.path("card.json");
    let code_file = rig.path_str("pairing-code");
    make_card(
        &card,
        AlgorithmId::Aes192,
        &[
            (Slot::AUTHENTICATION, AlgorithmId::Rsa2048),
            (Slot::SIGNATURE, AlgorithmId::EccP256),
        ],
    );
    let card_str = card.to_string_lossy().into_owned();
    let mut args = vec!["secure-messaging", card_str.as_str()];
    args.extend_from_slice(extra);
    if let Some(code) = pairing_code {
        std::fs::write(&code_file, format!("{code}\n")).unwrap();
        args.extend_from_slice(&["--pairing-code-file", &code_file]);
    }
    let said = vreader_ok(&args);
    assert!(said.contains("secure messaging on"), "{said}");
    let status = vreader_ok(&["status", &card_str]);
    assert!(status.contains("secure messaging:"), "{status}");
    assert!(!status.contains("secure messaging: off"), "{status}");
    rig.insert(&card);
    rig
}

fn pcsc_client(
    card: &pcsc::Card,
) -> Client<impl FnMut(&[u8]) -> Result<Vec<u8>, pcsc::Error> + '_> {
    let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    Client::new(move |apdu: &[u8]| card.transmit(apdu, &mut buf).map(|r| r.to_vec()))
}

/// Opens a session and checks the CVC with the certificate in 5FC122.
fn open<T>(c: &mut Client<T>, suite: CipherSuite)
where
    T: piv_applet::client::Transmit,
    T::Error: std::fmt::Debug,
{
    let cvc = c
        .open_secure_messaging(suite, *b"e2e-host")
        .expect("key establishment");
    let object = c
        .get_data(ObjectId::SM_CERT_SIGNER)
        .expect("GET DATA")
        .expect("the signer's certificate is on the card");
    let cert = piv_applet::tlv::find(&object, 0x70).expect("certificate");
    cvc.verify(&SignerPublicKey::from_certificate(cert).unwrap())
        .expect("the CVC is signed by the content signer");
}

fn get_chuid() -> Vec<u8> {
    let mut d = vec![0x5C, 0x03];
    d.extend_from_slice(&ObjectId::CHUID.to_bytes());
    d
}

fn sign_request() -> Vec<u8> {
    let mut inner = vec![0x82, 0x00, 0x81, 0x20];
    inner.extend_from_slice(&[0x5A; 32]);
    piv_applet::tlv::encode(0x7C, &inner)
}

#[test]
fn both_suites_through_pcscd() {
    for (suite, name) in [(CipherSuite::Cs2, "cs2"), (CipherSuite::Cs7, "cs7")] {
        let rig = rig_with_sm(&["--suite", name], None);
        let card = connect(READER0);
        let mut c = pcsc_client(&card);
        c.select().unwrap();
        let clear = c.send(Ins::GetData, 0x3F, 0xFF, &get_chuid()).unwrap();
        open(&mut c, suite);
        let secure = c
            .send_secure(Ins::GetData, 0x3F, 0xFF, &get_chuid(), Some(256))
            .unwrap();
        assert_eq!(secure.sw, StatusWord::Success);
        assert_eq!(secure.data, clear.data, "the same object under SM");
        let pin = piv_applet::state::pad_pin(piv_applet::state::DEFAULT_PIN);
        let r = c.send_secure(Ins::Verify, 0x00, 0x80, &pin, None).unwrap();
        assert_eq!(r.sw, StatusWord::Success);
        let r = c
            .send_secure(
                Ins::GeneralAuthenticate,
                0x11,
                0x9C,
                &sign_request(),
                Some(256),
            )
            .unwrap();
        assert_eq!(r.sw, StatusWord::Success, "{suite:?}: ECDSA under SM");
        drop(c);
        drop(card);
        drop(rig);
    }
}

#[test]
fn the_contactless_profile_through_pcscd() {
    let rig = rig_with_sm(&["--suite", "cs2", "--contactless"], Some("24681357"));
    let card = connect(READER0);
    let mut c = pcsc_client(&card);
    let pin = piv_applet::state::pad_pin(piv_applet::state::DEFAULT_PIN);
    let r = c.send(Ins::Verify, 0x00, 0x80, &pin).unwrap();
    assert_eq!(
        r.sw,
        StatusWord::SecurityStatusNotSatisfied,
        "no PIN in the clear"
    );
    open(&mut c, CipherSuite::Cs2);
    let r = c.send_secure(Ins::Verify, 0x00, 0x80, &pin, None).unwrap();
    assert_eq!(
        r.sw,
        StatusWord::SecurityStatusNotSatisfied,
        "no PIN before the pairing code"
    );
    let r = c
        .send_secure(Ins::Verify, 0x00, 0x98, b"24681357", None)
        .unwrap();
    assert_eq!(r.sw, StatusWord::Success);
    let r = c.send_secure(Ins::Verify, 0x00, 0x80, &pin, None).unwrap();
    assert_eq!(r.sw, StatusWord::Success, "the VCI is open");
    drop(c);
    drop(card);
    drop(rig);
}

/// OpenSC as Debian builds it (no SM) and yubico-piv-tool use a card with
/// secure messaging as any other.
#[test]
fn clients_without_sm_keep_working() {
    let rig = rig_with_sm(&["--suite", "cs2"], None);
    OpenSc::pcscd(READER0, rig.dir.path()).suite(CertFrom::Card);
    let status = e2e::ykpiv::ykpiv_ok(&["-a", "status"]);
    assert!(status.contains("Slot 9a"), "{status}");
}

/// `--ca-key/--ca-cert`: the content signer made for the card has a
/// certificate issued by the user's CA (openssl verifies the chain), and
/// the card's CVC verifies with that signer's key.
#[test]
fn a_content_signer_issued_by_the_users_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    e2e::run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-subj",
            "/CN=SM test CA",
            "-days",
            "2",
        ],
    );
    vreader_ok(&["init", &p("card.json")]);
    vreader_ok(&[
        "secure-messaging",
        &p("card.json"),
        "--suite",
        "cs7",
        "--ca-key",
        &p("ca.key"),
        "--ca-cert",
        &p("ca.pem"),
    ]);
    let card = piv_applet::Card::open(p("card.json")).unwrap();
    let object = card.state().objects[&ObjectId::SM_CERT_SIGNER].clone();
    let cert = piv_applet::tlv::find(&object, 0x70).expect("certificate");
    std::fs::write(
        p("signer.pem"),
        piv_applet::credentials::pem("CERTIFICATE", cert),
    )
    .unwrap();
    let verified = e2e::run_ok(
        "openssl",
        &["verify", "-CAfile", &p("ca.pem"), &p("signer.pem")],
    );
    assert!(verified.contains(": OK"), "{verified}");
    let cvc = card.state().secure_messaging.as_ref().unwrap().cvc.clone();
    drop(card);
    piv_applet::sm::Cvc::decode(&cvc)
        .unwrap()
        .verify(&SignerPublicKey::from_certificate(cert).unwrap())
        .expect("the CVC is signed by the CA-issued signer");
    // A signer key with a certificate for another key is refused, and the
    // card keeps what it had.
    let out = e2e::vreader(&[
        "secure-messaging",
        &p("card.json"),
        "--suite",
        "cs7",
        "--signer-key",
        &p("ca.key"),
        "--signer-cert",
        &p("signer.pem"),
    ]);
    assert!(!out.status.success());
    let said = e2e::output_text(&out);
    assert!(said.contains("for another key"), "{said}");
    let after = piv_applet::Card::open(p("card.json")).unwrap();
    assert_eq!(after.state().secure_messaging.as_ref().unwrap().cvc, cvc);
}
