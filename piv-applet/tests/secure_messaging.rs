//! Secure messaging and the virtual contact interface through the card's
//! APDU interface, driven by the project's own host side (`piv_applet::sm`):
//! what is allowed with each credential and refused without it.

use piv_applet::apdu::{build_command, Response};
use piv_applet::client::Client;
use piv_applet::enums::Ins;
use piv_applet::keys::KeyMaterial;
use piv_applet::sm::cvc::SignerPublicKey;
use piv_applet::sm::{Channel, CipherSuite, Cvc, Initiator};
use piv_applet::x509::{self, CertRequest};
use piv_applet::{AlgorithmId, Card, CardOptions, PinPolicy, Slot, StatusWord, TouchPolicy};

const PAIRING: &str = "12345678";

/// A card made for the test behind the project's host-side client.
struct Host {
    c: Client<Card>,
}

fn signer(suite: CipherSuite) -> (KeyMaterial, Vec<u8>) {
    let key = KeyMaterial::generate(suite.key_algorithm()).unwrap();
    let cert = x509::self_signed(
        &key,
        &CertRequest {
            subject: "CN=Test content signer",
            serial: &[1],
            not_before: x509::valid_from_now(),
            days: 30,
            extensions: vec![],
        },
    )
    .unwrap();
    (key, cert)
}

fn card(suite: Option<CipherSuite>, contactless: bool, pairing: Option<&str>) -> Host {
    let mut card = Card::ephemeral(&CardOptions::default()).unwrap();
    if let Some(suite) = suite {
        let (key, cert) = signer(suite);
        card.enable_secure_messaging(suite, &key, &cert, contactless, pairing)
            .unwrap();
    }
    // A card authentication key (no PIN) and a PIV authentication key.
    card.generate_key(
        Slot::CARD_AUTHENTICATION,
        AlgorithmId::EccP256,
        PinPolicy::Never,
        TouchPolicy::Never,
    )
    .unwrap();
    card.generate_key(
        Slot::AUTHENTICATION,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    Host {
        c: Client::new(card),
    }
}

impl Host {
    fn card(&mut self) -> &mut Card {
        self.c.transport()
    }

    /// One command in the clear, its answer collected over GET RESPONSE.
    fn plain(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Response {
        self.c.send(Ins::from(ins), p1, p2, data).unwrap()
    }

    /// One APDU as is, its answer collected over GET RESPONSE.
    fn collect(&mut self, apdu: &[u8]) -> Response {
        self.c.exchange(apdu).unwrap()
    }

    fn establish(&mut self, suite: CipherSuite) -> Cvc {
        self.c
            .open_secure_messaging(suite, *b"testhost")
            .expect("key establishment")
    }

    /// A session whose channel the test holds itself, to send what a
    /// client never would.
    fn raw_session(&mut self, suite: CipherSuite) -> Channel {
        let host = Initiator::new(suite, *b"testhost");
        let r = self.plain(0x87, suite.algorithm(), 0x04, &host.request());
        assert_eq!(r.sw, StatusWord::Success, "key establishment");
        host.finish(&r.data)
            .expect("the card's answer checks out")
            .0
    }

    /// The inner status word of a protected command the card answered
    /// protected.
    fn secure_sw(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<usize>) -> u16 {
        self.secure(ins, p1, p2, data, le)
            .expect("a protected answer")
            .1
    }

    /// One protected command: the inner data and status word, or the
    /// outer status word when the card answered in the clear.
    fn secure(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<usize>,
    ) -> Result<(Vec<u8>, u16), StatusWord> {
        match self.c.send_secure(Ins::from(ins), p1, p2, data, le) {
            Ok(r) => Ok((r.data.to_vec(), r.sw.into())),
            Err(e) => Err(e.status().expect("the card answered in the clear")),
        }
    }
}

fn get_data(tag: &[u8]) -> Vec<u8> {
    let mut d = vec![0x5C, tag.len() as u8];
    d.extend_from_slice(tag);
    d
}

const CHUID: [u8; 3] = [0x5F, 0xC1, 0x02];
const PIV_AUTH_CERT: [u8; 3] = [0x5F, 0xC1, 0x05];

fn pin_block(pin: &[u8]) -> Vec<u8> {
    piv_applet::state::pad_pin(pin).to_vec()
}

/// A GENERAL AUTHENTICATE signature request with a 32-byte digest.
fn sign_request() -> Vec<u8> {
    let mut inner = vec![0x82, 0x00, 0x81, 0x20];
    inner.extend_from_slice(&[0x5A; 32]);
    let mut d = vec![0x7C, inner.len() as u8];
    d.extend(inner);
    d
}

#[test]
fn a_card_without_secure_messaging_answers_as_before() {
    let mut h = card(None, false, None);
    let select = h.plain(0xA4, 0x04, 0x00, &piv_applet::enums::PIV_AID);
    assert!(!select
        .data
        .windows(3)
        .any(|w| w == [0x80, 0x01, 0x27] || w == [0x80, 0x01, 0x2E]));
    let host = Initiator::new(CipherSuite::Cs2, [0; 8]);
    assert_eq!(
        h.plain(0x87, 0x27, 0x04, &host.request()).sw,
        StatusWord::IncorrectP1P2
    );
    assert_eq!(
        h.collect(&[0x0C, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02])
            .sw,
        StatusWord::SecureMessagingNotSupported
    );
    assert_eq!(
        h.plain(0x20, 0x00, 0x98, PAIRING.as_bytes()).sw,
        StatusWord::ReferenceNotFound
    );
    assert_eq!(
        h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x5F, 0xC1, 0x22])).sw,
        StatusWord::FileNotFound
    );
}

#[test]
fn both_suites_carry_every_kind_of_command() {
    for suite in [CipherSuite::Cs2, CipherSuite::Cs7] {
        let mut h = card(Some(suite), false, None);
        let select = h.plain(0xA4, 0x04, 0x00, &piv_applet::enums::PIV_AID);
        assert!(
            select
                .data
                .windows(3)
                .any(|w| w == [0x80, 0x01, suite.algorithm()]),
            "SELECT names the suite"
        );
        let cvc = h.establish(suite);
        // The CVC verifies with the key of the certificate in 5FC122.
        let signer = h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x5F, 0xC1, 0x22]));
        assert_eq!(signer.sw, StatusWord::Success);
        let object = piv_applet::tlv::find(&signer.data, 0x53).unwrap();
        let cert = piv_applet::tlv::find(object, 0x70).unwrap();
        cvc.verify(&SignerPublicKey::from_certificate(cert).unwrap())
            .unwrap();
        assert_eq!(cvc.subject_id, h.card().state().identity.guid);

        // GET DATA under SM answers what the clear one does.
        let clear = h.plain(0xCB, 0x3F, 0xFF, &get_data(&CHUID)).data.to_vec();
        let (data, sw) = h
            .secure(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256))
            .unwrap();
        assert_eq!((data, sw), (clear, 0x9000));
        // A wrong PIN's 63Cx travels inside the protection.
        let (_, sw) = h
            .secure(0x20, 0x00, 0x80, &pin_block(b"000000"), None)
            .unwrap();
        assert_eq!(sw, 0x63C2);
        let (_, sw) = h
            .secure(0x20, 0x00, 0x80, &pin_block(b"123456"), None)
            .unwrap();
        assert_eq!(sw, 0x9000);
        let (sig, sw) = h
            .secure(0x87, 0x11, 0x9A, &sign_request(), Some(256))
            .unwrap();
        assert_eq!(sw, 0x9000);
        assert_eq!(sig[0], 0x7C);
        // A long command (chained) and a long answer (GET RESPONSE),
        // after the management key's challenge-response under SM.
        h.authenticate_management();
        let mut put = vec![0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x53, 0x82, 0x07, 0xD0];
        put.extend(std::iter::repeat_n(0xA5, 2000));
        assert_eq!(h.secure_sw(0xDB, 0x3F, 0xFF, &put, None), 0x9000);
        let (object, sw) = h
            .secure(0xCB, 0x3F, 0xFF, &get_data(&PIV_AUTH_CERT), Some(256))
            .unwrap();
        assert_eq!(sw, 0x9000);
        assert_eq!(object, put[5..]);
    }
}

impl Host {
    /// Mutual authentication with the default management key, under SM.
    fn authenticate_management(&mut self) {
        use piv_applet::mgmt::ManagementKey;
        use piv_applet::tlv;
        let alg = h_alg(self.c.transport());
        let key = ManagementKey::default_for(alg);
        let (r, sw) = self
            .secure(0x87, alg.into(), 0x9B, &[0x7C, 0x02, 0x80, 0x00], Some(256))
            .unwrap();
        assert_eq!(sw, 0x9000);
        let witness = key
            .decrypt_block(tlv::find(tlv::find(&r, 0x7C).unwrap(), 0x80).unwrap())
            .unwrap();
        let challenge = vec![0x3C; key.block_size()];
        let mut inner = tlv::encode(0x80, &witness);
        tlv::write(&mut inner, 0x81, &challenge);
        let (r, sw) = self
            .secure(
                0x87,
                alg.into(),
                0x9B,
                &tlv::encode(0x7C, &inner),
                Some(256),
            )
            .unwrap();
        assert_eq!(sw, 0x9000);
        let answer = tlv::find(tlv::find(&r, 0x7C).unwrap(), 0x82).unwrap();
        assert_eq!(answer, &key.encrypt_block(&challenge).unwrap()[..]);
    }
}

fn h_alg(card: &Card) -> AlgorithmId {
    card.state().mgmt.algorithm()
}

#[test]
fn a_bad_mac_ends_the_session_and_so_does_select() {
    let mut h = card(Some(CipherSuite::Cs2), false, None);
    let mut channel = h.raw_session(CipherSuite::Cs2);
    let mut body = channel.protect_command(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256));
    let n = body.len();
    body[n - 1] ^= 1;
    let r = h.collect(&build_command(0x0C, 0xCB, 0x3F, 0xFF, &body, Some(256)));
    assert_eq!(r.sw, StatusWord::SmObjectIncorrect);
    // No session any more: a protected command is refused as unauthorised.
    let r = h.collect(&build_command(
        0x0C,
        0xCB,
        0x3F,
        0xFF,
        &[0x8E, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
        Some(256),
    ));
    assert_eq!(r.sw, StatusWord::SecurityStatusNotSatisfied);
    // Without the MAC object: 6987.
    let mut channel = h.raw_session(CipherSuite::Cs2);
    let body = channel.protect_command(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256));
    let r = h.collect(&build_command(
        0x0C,
        0xCB,
        0x3F,
        0xFF,
        &body[..body.len() - 10],
        Some(256),
    ));
    assert_eq!(r.sw, StatusWord::SmObjectMissing);
    // SELECT in the clear ends a session too.
    h.establish(CipherSuite::Cs2);
    assert!(h
        .secure(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256))
        .is_ok());
    h.plain(0xA4, 0x04, 0x00, &piv_applet::enums::PIV_AID);
    assert_eq!(
        h.secure(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256))
            .err(),
        Some(StatusWord::SecurityStatusNotSatisfied)
    );
    // The other suite's establishment is refused.
    let other = Initiator::new(CipherSuite::Cs7, [0; 8]);
    assert_eq!(
        h.plain(0x87, 0x2E, 0x04, &other.request()).sw,
        StatusWord::IncorrectData
    );
}

#[test]
fn the_contactless_profile_needs_the_vci_for_contact_only_commands() {
    let mut h = card(Some(CipherSuite::Cs2), true, Some(PAIRING));
    // Discovery says: VCI implemented, pairing code needed.
    let discovery = h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x7E]));
    assert_eq!(
        piv_applet::tlv::find(&discovery.data[2..], 0x5F2F).unwrap(),
        [0x48, 0x00]
    );
    // In the clear: the free objects and the card authentication key.
    assert_eq!(
        h.plain(0xCB, 0x3F, 0xFF, &get_data(&CHUID)).sw,
        StatusWord::Success
    );
    assert_eq!(
        h.plain(0x87, 0x11, 0x9E, &sign_request()).sw,
        StatusWord::Success
    );
    // ... but no PIN, no other key, no other object, no management key.
    assert_eq!(
        h.plain(0x20, 0x00, 0x80, &pin_block(b"123456")).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(
        h.plain(0x87, 0x11, 0x9A, &sign_request()).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(
        h.plain(0xCB, 0x3F, 0xFF, &get_data(&PIV_AUTH_CERT)).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(
        h.plain(0x87, 0x0A, 0x9B, &[0x7C, 0x02, 0x80, 0x00]).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    // The pairing code only counts within secure messaging.
    assert_eq!(
        h.plain(0x20, 0x00, 0x98, PAIRING.as_bytes()).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    // Secure messaging without the pairing code is not the VCI yet.
    h.establish(CipherSuite::Cs2);
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x80, &pin_block(b"123456"), None),
        0x6982
    );
    // A wrong pairing code: refused, and the session ends.
    assert_eq!(h.secure_sw(0x20, 0x00, 0x98, b"87654321", None), 0x6982);
    assert_eq!(
        h.secure(0xCB, 0x3F, 0xFF, &get_data(&CHUID), Some(256))
            .err(),
        Some(StatusWord::SecurityStatusNotSatisfied)
    );
    // The right one opens the VCI: PIN and keys work, protected.
    h.establish(CipherSuite::Cs2);
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x98, PAIRING.as_bytes(), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x80, &pin_block(b"123456"), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x87, 0x11, 0x9A, &sign_request(), Some(256)),
        0x9000
    );
    // The cardholder reads the pairing code behind the PIN, through the
    // VCI only.
    let (container, sw) = h
        .secure(0xCB, 0x3F, 0xFF, &get_data(&[0x5F, 0xC1, 0x23]), Some(256))
        .unwrap();
    assert_eq!(sw, 0x9000);
    assert_eq!(
        piv_applet::tlv::find(piv_applet::tlv::find(&container, 0x53).unwrap(), 0x99).unwrap(),
        PAIRING.as_bytes()
    );
    assert_eq!(
        h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x5F, 0xC1, 0x23])).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    // ... but the same commands in the clear are still refused.
    assert_eq!(
        h.plain(0x87, 0x11, 0x9A, &sign_request()).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    // A new session starts without the VCI, and without the PIN proved in
    // the old one: the pairing code opens the VCI again, the PIN must be
    // presented again.
    h.establish(CipherSuite::Cs2);
    assert_eq!(
        h.secure_sw(0x87, 0x11, 0x9A, &sign_request(), Some(256)),
        0x6982
    );
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x98, PAIRING.as_bytes(), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x87, 0x11, 0x9A, &sign_request(), Some(256)),
        0x6982
    );
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x80, &pin_block(b"123456"), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x87, 0x11, 0x9A, &sign_request(), Some(256)),
        0x9000
    );
    // SELECT ends the session, and the PIN with it.
    h.plain(0xA4, 0x04, 0x00, &piv_applet::enums::PIV_AID);
    h.establish(CipherSuite::Cs2);
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x98, PAIRING.as_bytes(), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x87, 0x11, 0x9A, &sign_request(), Some(256)),
        0x6982
    );
}

#[test]
fn without_a_pairing_code_secure_messaging_alone_opens_the_vci() {
    let mut h = card(Some(CipherSuite::Cs7), true, None);
    let discovery = h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x7E]));
    assert_eq!(
        piv_applet::tlv::find(&discovery.data[2..], 0x5F2F).unwrap(),
        [0x4C, 0x00]
    );
    assert_eq!(
        h.plain(0x20, 0x00, 0x80, &pin_block(b"123456")).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    h.establish(CipherSuite::Cs7);
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x80, &pin_block(b"123456"), None),
        0x9000
    );
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x98, PAIRING.as_bytes(), None),
        0x6A88,
        "no pairing code to verify"
    );
}

#[test]
fn secure_messaging_survives_the_card_file_and_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let (key, cert) = signer(CipherSuite::Cs2);
    {
        let mut card = Card::create(&path, &CardOptions::default()).unwrap();
        card.enable_secure_messaging(CipherSuite::Cs2, &key, &cert, true, Some(PAIRING))
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"cipher_suite\": \"CS2\""));
    let mut h = Host {
        c: Client::new(Card::open(&path).unwrap()),
    };
    let cvc = h.establish(CipherSuite::Cs2);
    assert_eq!(
        h.secure_sw(0x20, 0x00, 0x98, PAIRING.as_bytes(), None),
        0x9000
    );
    // A YubiKey RESET (PIN and PUK blocked first) keeps secure messaging,
    // its signer's certificate and the Discovery object that says so.
    for _ in 0..3 {
        h.secure(0x20, 0x00, 0x80, &pin_block(b"000000"), None)
            .unwrap();
        h.secure(
            0x2C,
            0x00,
            0x80,
            &[pin_block(b"00000000"), pin_block(b"654321")].concat(),
            None,
        )
        .unwrap();
    }
    assert_eq!(h.secure_sw(0xFB, 0x00, 0x00, &[], None), 0x9000);
    assert_eq!(h.establish(CipherSuite::Cs2), cvc);
    let discovery = h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x7E]));
    assert_eq!(
        piv_applet::tlv::find(&discovery.data[2..], 0x5F2F).unwrap(),
        [0x48, 0x00]
    );
    assert_eq!(
        h.plain(0xCB, 0x3F, 0xFF, &get_data(&[0x5F, 0xC1, 0x22])).sw,
        StatusWord::Success
    );
    // Taking it away leaves a card that answers as one without it.
    h.card().disable_secure_messaging().unwrap();
    let host = Initiator::new(CipherSuite::Cs2, [0; 8]);
    assert_eq!(
        h.plain(0x87, 0x27, 0x04, &host.request()).sw,
        StatusWord::IncorrectP1P2
    );
    assert_eq!(
        h.plain(0x20, 0x00, 0x80, &pin_block(b"123456")).sw,
        StatusWord::Success
    );
}

#[test]
fn the_card_refuses_a_signer_certificate_for_another_key() {
    let mut card = Card::ephemeral(&CardOptions::default()).unwrap();
    let (key, _) = signer(CipherSuite::Cs2);
    let (_, other_cert) = signer(CipherSuite::Cs2);
    assert!(card
        .enable_secure_messaging(CipherSuite::Cs2, &key, &other_cert, false, None)
        .is_err());
    let (key384, cert384) = signer(CipherSuite::Cs7);
    assert!(
        card.enable_secure_messaging(CipherSuite::Cs2, &key384, &cert384, false, None)
            .is_err(),
        "suite and signer curve differ"
    );
    assert!(
        card.enable_secure_messaging(CipherSuite::Cs7, &key384, &cert384, false, Some("1234"))
            .is_err(),
        "short pairing code"
    );
    assert!(card.state().secure_messaging.is_none());
}
