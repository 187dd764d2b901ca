//! Sixteen cards in one vreader, in the sixteen vpcd readers that
//! `vreader readers` gives pcscd, each used at the same time by its own
//! client: no card answers for another, none waits for another.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use e2e::{make_card, transmit, wait_for_card, Farm, Rig, DEADLINE};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use piv_applet::{AlgorithmId, Card, Slot};
use vpcd::names::reader_name;

const SIGNATURES_PER_CARD: usize = 25;

/// What a client must find in its reader: the card file's serial and the
/// public key of its 9A certificate.
struct Expected {
    serial: u32,
    key: p256::ecdsa::VerifyingKey,
}

fn expected(file: &Path) -> Expected {
    use der::{Decode, Encode};
    use p256::pkcs8::DecodePublicKey;
    let card = Card::open(file).expect("open card");
    let cert = card
        .certificate(Slot::AUTHENTICATION)
        .expect("9A certificate");
    let cert = x509_cert::Certificate::from_der(&cert).expect("certificate");
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let key = p256::PublicKey::from_public_key_der(&spki).expect("P-256 public key");
    Expected {
        serial: card.state().identity.serial,
        key: p256::ecdsa::VerifyingKey::from(key),
    }
}

fn ok(resp: &[u8], what: &str) -> Vec<u8> {
    assert!(
        resp.ends_with(&[0x90, 0x00]),
        "{what}: {}",
        hex::encode(resp)
    );
    resp[..resp.len() - 2].to_vec()
}

/// One client: its own card, checked by serial, then signatures that only
/// that card's key can make.
fn client(reader: &str, want: &Expected) {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
    let name = CString::new(reader).unwrap();
    let card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .unwrap_or_else(|e| panic!("connect {reader}: {e}"));
    let aid = &piv_applet::enums::PIV_AID[..piv_applet::enums::PIV_RID_LEN];
    let select = piv_applet::apdu::build_command(0, 0xA4, 0x04, 0x00, aid, None);
    ok(&transmit(&card, &select), "SELECT");
    let serial = ok(
        &transmit(&card, &[0x00, 0xF8, 0x00, 0x00, 0x00]),
        "GET SERIAL",
    );
    assert_eq!(
        serial,
        want.serial.to_be_bytes(),
        "{reader}: another card's serial"
    );
    let verify = [
        &[0x00, 0x20, 0x00, 0x80, 0x08][..],
        &piv_applet::state::pad_pin(piv_applet::state::DEFAULT_PIN),
    ]
    .concat();
    ok(&transmit(&card, &verify), "VERIFY");
    for i in 0..SIGNATURES_PER_CARD {
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&want.serial.to_be_bytes());
        digest[31] = i as u8;
        // GENERAL AUTHENTICATE: 7C { 82 (empty response), 81 challenge }.
        let mut apdu = vec![
            0x00, 0x87, 0x11, 0x9A, 0x26, 0x7C, 0x24, 0x82, 0x00, 0x81, 0x20,
        ];
        apdu.extend_from_slice(&digest);
        apdu.push(0x00);
        let resp = ok(&transmit(&card, &apdu), "GENERAL AUTHENTICATE");
        let outer = piv_applet::tlv::parse_one(&resp).expect("7C template");
        let sig = piv_applet::tlv::find(outer.value, 0x82).expect("82 response");
        let sig = p256::ecdsa::Signature::from_der(sig).expect("DER signature");
        want.key.verify_prehash(&digest, &sig).unwrap_or_else(|e| {
            panic!("{reader}, signature {i}: not made by this reader's card: {e}")
        });
    }
}

#[test]
fn sixteen_cards_answer_concurrently_without_cross_talk() {
    let mut rig = Rig::new();
    let cards_dir = rig.path("cards");
    std::fs::create_dir(&cards_dir).unwrap();
    let files: Vec<PathBuf> = (0..Farm::CARDS)
        .map(|i| cards_dir.join(format!("card-{i:02}.json")))
        .collect();
    for f in &files {
        make_card(
            f,
            AlgorithmId::Aes192,
            &[(Slot::AUTHENTICATION, AlgorithmId::EccP256)],
        );
    }
    let want: Vec<Expected> = files.iter().map(|f| expected(f)).collect();
    let mut serials: Vec<u32> = want.iter().map(|w| w.serial).collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), files.len(), "each card has its own serial");

    // Farm::start checks that pcscd names the readers as vpcd::names says.
    let _farm = Farm::start(&rig, false);
    let index = rig.vreader(&["--cards", cards_dir.to_str().unwrap()]);
    for n in 0..Farm::CARDS {
        wait_for_card(&reader_name(n), DEADLINE);
    }
    // `vreader run` printed where each card went, in file-name order.
    let log = rig.log(index);
    for (n, f) in files.iter().enumerate() {
        let line = format!(
            "slot {n}  connect 127.0.0.1:{}  reader \"{}\"  {}",
            35963 + n,
            reader_name(n as u32),
            f.display()
        );
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }

    std::thread::scope(|s| {
        for (n, w) in want.iter().enumerate() {
            let reader = reader_name(n as u32);
            s.spawn(move || client(&reader, w));
        }
    });
    rig.stop(index);
}

/// A seventeenth card has no reader in any pcscd: refused, named, before
/// any card is plugged in (and not left dialling forever).
#[test]
fn a_card_past_slot_fifteen_is_refused_before_any_is_plugged() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..=Farm::CARDS {
        make_card(
            &dir.path().join(format!("card-{i:02}.json")),
            AlgorithmId::Aes192,
            &[],
        );
    }
    let run = |extra: &[&str]| {
        let mut child = std::process::Command::new(e2e::vreader_bin())
            .args(["run", "--cards", dir.path().to_str().unwrap()])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("vreader run {extra:?} with 17 cards kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (stdout, err) = run(&[]);
    assert!(
        err.contains("card-16.json: slot 16 is past the 16 readers one pcscd serves"),
        "{err}"
    );
    assert!(stdout.is_empty(), "nothing placed: {stdout}");
    // From slot 10 on, the seventh card is the first without a reader.
    let (_, err) = run(&["--slot", "10"]);
    assert!(err.contains("card-06.json: slot 16"), "{err}");
}
