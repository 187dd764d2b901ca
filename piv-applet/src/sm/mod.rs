//! PIV secure messaging (SP 800-73-4 Part 2, §4): the one-pass key
//! establishment, the session keys it derives, and the protection of each
//! command and response with AES-CBC and AES-CMAC.
//!
//! These are the cryptographic steps only, for both ends: the card uses the
//! responder side, the project's own tests and tools the initiator side.
//! Neither end keeps state beyond one [`Channel`]; what a card does with a
//! failed session (end it, wipe the keys) is the caller's rule.
//!
//! Where SP 800-73-4 leaves a byte layout open, OpenSC's client
//! (`card-piv.c`, built with `--enable-piv-sm`) is followed, since it is
//! the one client that exists; each such place says so.

/// The key reference of the secure messaging key (GENERAL AUTHENTICATE P2).
pub const KEY_REFERENCE: u8 = 0x04;
/// The key reference of the VCI pairing code (VERIFY P2).
pub const PAIRING_CODE_REFERENCE: u8 = 0x98;
/// A pairing code is eight decimal digits.
pub const PAIRING_CODE_LEN: usize = 8;

pub mod channel;
mod cipher;
pub mod cvc;
pub mod establish;
pub mod kdf;

pub use channel::{Channel, OpenedCommand};
pub use cvc::Cvc;
pub use establish::{Initiator, Responder, SmKey};

/// A pairing code as the card keeps it: exactly eight ASCII digits.
pub fn parse_pairing_code(text: &str) -> Result<[u8; PAIRING_CODE_LEN], &'static str> {
    let bytes = text.as_bytes();
    if bytes.len() != PAIRING_CODE_LEN || !bytes.iter().all(u8::is_ascii_digit) {
        return Err("a pairing code is exactly 8 decimal digits");
    }
    let mut code = [0u8; PAIRING_CODE_LEN];
    code.copy_from_slice(bytes);
    Ok(code)
}

/// The two cipher suites of SP 800-73-4 Table 14 that a PIV card may offer
/// for secure messaging, named by their GENERAL AUTHENTICATE algorithm byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// ECDH P-256, SHA-256 KDF, AES-128 (algorithm 27).
    Cs2,
    /// ECDH P-384, SHA-384 KDF, AES-256 (algorithm 2E).
    Cs7,
}

impl CipherSuite {
    /// The algorithm byte (GENERAL AUTHENTICATE P1 and the application
    /// property template's cipher suite entry).
    pub const fn algorithm(self) -> u8 {
        match self {
            CipherSuite::Cs2 => 0x27,
            CipherSuite::Cs7 => 0x2E,
        }
    }

    /// The name `vreader` and the card file use.
    pub const fn name(self) -> &'static str {
        match self {
            CipherSuite::Cs2 => "CS2",
            CipherSuite::Cs7 => "CS7",
        }
    }

    pub fn from_name(name: &str) -> Option<CipherSuite> {
        [CipherSuite::Cs2, CipherSuite::Cs7]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    pub const fn from_algorithm(byte: u8) -> Option<CipherSuite> {
        match byte {
            0x27 => Some(CipherSuite::Cs2),
            0x2E => Some(CipherSuite::Cs7),
            _ => None,
        }
    }

    /// The algorithm of the card's key for this suite (and of its CVC's
    /// signer, whose hash is the suite's).
    pub const fn key_algorithm(self) -> crate::enums::AlgorithmId {
        match self {
            CipherSuite::Cs2 => crate::enums::AlgorithmId::EccP256,
            CipherSuite::Cs7 => crate::enums::AlgorithmId::EccP384,
        }
    }

    /// Bytes of one field element (the shared secret Z, one coordinate).
    pub const fn field_len(self) -> usize {
        match self {
            CipherSuite::Cs2 => 32,
            CipherSuite::Cs7 => 48,
        }
    }

    /// Bytes of an uncompressed public point `04 || x || y`.
    pub const fn point_len(self) -> usize {
        1 + 2 * self.field_len()
    }

    /// Bytes of each AES session key.
    pub const fn key_len(self) -> usize {
        match self {
            CipherSuite::Cs2 => 16,
            CipherSuite::Cs7 => 32,
        }
    }

    /// Bytes of the card's nonce N_ICC.
    pub const fn nonce_len(self) -> usize {
        match self {
            CipherSuite::Cs2 => 16,
            CipherSuite::Cs7 => 24,
        }
    }

    /// The byte repeated four times as the KDF's algorithm identifier in
    /// OtherInfo.
    pub(crate) const fn kdf_algorithm_byte(self) -> u8 {
        match self {
            CipherSuite::Cs2 => 0x09,
            CipherSuite::Cs7 => 0x0D,
        }
    }
}

/// Why a secure messaging step failed. Every failure ends the session: the
/// caller drops the [`Channel`] (which wipes its keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// A data object the protocol requires (the MAC, the status) is missing.
    #[error("expected secure messaging data object missing: {0}")]
    Missing(&'static str),
    /// A data object is malformed, or the MAC or padding is wrong.
    #[error("secure messaging data object incorrect: {0}")]
    Incorrect(&'static str),
    /// The key establishment request or response cannot be used.
    #[error("secure messaging key establishment failed: {0}")]
    Establishment(&'static str),
    /// A card verifiable certificate does not decode, or its signature does
    /// not verify.
    #[error("card verifiable certificate: {0}")]
    Certificate(String),
}

impl SmError {
    /// Why a card refuses the command: a missing MAC or status object,
    /// a wrong one, or (key establishment) bad data.
    pub const fn refusal(&self) -> crate::refusal::Refusal {
        use crate::refusal::Refusal;
        match self {
            SmError::Missing(_) => Refusal::SmObjectMissing,
            SmError::Incorrect(_) => Refusal::SmObjectIncorrect,
            SmError::Establishment(_) | SmError::Certificate(_) => Refusal::BadData,
        }
    }

    /// The status word of [`Self::refusal`].
    pub fn status_word(&self) -> u16 {
        self.refusal().status().into()
    }
}

#[cfg(test)]
mod tests {
    use super::cvc::{self, SignerPublicKey};
    use super::establish::SmKey;
    use super::*;
    use crate::keys::KeyMaterial;

    const GUID: [u8; 16] = [0x11; 16];

    fn signer(suite: CipherSuite) -> KeyMaterial {
        KeyMaterial::generate(suite.key_algorithm()).unwrap()
    }

    fn signer_public(s: &KeyMaterial) -> SignerPublicKey {
        SignerPublicKey::from_spki_der(&s.public_key_spki_der()).unwrap()
    }

    /// A card key, its CVC, and a session opened by the exchange.
    fn session(suite: CipherSuite) -> (Channel, Channel) {
        let key = SmKey::generate(suite).unwrap();
        let s = signer(suite);
        let der = cvc::issue(
            suite,
            [0x42; 8],
            &GUID,
            &key.public_point(),
            cvc::ROLE_CARD,
            &s,
        )
        .unwrap();
        let host = Initiator::new(suite, *b"host-id1");
        let (answer, card) = Responder {
            key: &key,
            cvc: &der,
        }
        .respond(&host.request())
        .unwrap();
        let (host, cvc) = host.finish(&answer).unwrap();
        cvc.verify(&signer_public(&s)).unwrap();
        assert_eq!(cvc.subject_id, GUID);
        (host, card)
    }

    #[test]
    fn commands_and_responses_round_trip_in_both_suites() {
        for suite in [CipherSuite::Cs2, CipherSuite::Cs7] {
            let (mut host, mut card) = session(suite);
            for (i, len) in [0usize, 1, 15, 16, 17, 255, 300, 2000]
                .into_iter()
                .enumerate()
            {
                let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                let le = (i % 2 == 0).then_some(256);
                let wire = host.protect_command(0xCB, 0x3F, 0xFF, &data, le);
                if data.len() >= 8 {
                    assert!(
                        !wire.windows(8).any(|w| w == &data[..8]),
                        "data travels encrypted"
                    );
                }
                let opened = card.open_command(0xCB, 0x3F, 0xFF, &wire).unwrap();
                assert_eq!(&opened.data[..], &data[..], "{suite:?} {len}");
                assert_eq!(opened.le, le);
                let answer: Vec<u8> = data.iter().rev().copied().collect();
                let resp = card.protect_response(&answer, 0x9000 + i as u16);
                let (plain, sw) = host.open_response(&resp).unwrap();
                assert_eq!(&plain[..], &answer[..]);
                assert_eq!(sw, 0x9000 + i as u16);
            }
        }
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let (mut host, _) = session(CipherSuite::Cs2);
        let wire = host.protect_command(0x20, 0x00, 0x80, b"12345678", None);
        for i in 0..wire.len() {
            let (mut h2, mut card) = session(CipherSuite::Cs2);
            let good = h2.protect_command(0x20, 0x00, 0x80, b"12345678", None);
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(
                card.open_command(0x20, 0x00, 0x80, &bad).is_err(),
                "byte {i}"
            );
        }
        // The header is covered too: the same data under another INS or P2.
        let (mut h, mut card) = session(CipherSuite::Cs2);
        let wire = h.protect_command(0x20, 0x00, 0x80, b"12345678", None);
        assert_eq!(
            card.open_command(0x20, 0x00, 0x81, &wire)
                .err()
                .map(|e| e.status_word()),
            Some(0x6988)
        );
    }

    #[test]
    fn missing_mac_is_6987_and_replay_or_reorder_is_6988() {
        let (mut host, mut card) = session(CipherSuite::Cs7);
        let wire = host.protect_command(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E], Some(256));
        let without_mac = &wire[..wire.len() - 10];
        assert_eq!(
            card.open_command(0xCB, 0x3F, 0xFF, without_mac)
                .err()
                .map(|e| e.status_word()),
            Some(0x6987)
        );

        let (mut host, mut card) = session(CipherSuite::Cs7);
        let first = host.protect_command(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E], None);
        card.open_command(0xCB, 0x3F, 0xFF, &first).unwrap();
        let resp = card.protect_response(&[1, 2, 3], 0x9000);
        host.open_response(&resp).unwrap();
        // The same command again: the MAC chain has moved on.
        assert_eq!(
            card.open_command(0xCB, 0x3F, 0xFF, &first)
                .err()
                .map(|e| e.status_word()),
            Some(0x6988)
        );
        // A response replayed to the host fails the same way.
        assert!(host.open_response(&resp).is_err());
    }

    #[test]
    fn a_changed_response_is_refused_by_the_host() {
        let (mut host, mut card) = session(CipherSuite::Cs2);
        let wire = host.protect_command(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E], None);
        card.open_command(0xCB, 0x3F, 0xFF, &wire).unwrap();
        let resp = card.protect_response(b"discovery object", 0x9000);
        host.open_response(&resp).unwrap();
        for i in 0..resp.len() {
            let (mut h2, mut c2) = session(CipherSuite::Cs2);
            let w2 = h2.protect_command(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E], None);
            c2.open_command(0xCB, 0x3F, 0xFF, &w2).unwrap();
            let r2 = c2.protect_response(b"discovery object", 0x9000);
            let mut bad2 = r2.clone();
            bad2[i] ^= 0x80;
            assert!(h2.open_response(&bad2).is_err(), "byte {i}");
        }
    }

    #[test]
    fn key_establishment_refuses_bad_requests() {
        let key = SmKey::generate(CipherSuite::Cs2).unwrap();
        let s = signer(CipherSuite::Cs2);
        let der = cvc::issue(
            CipherSuite::Cs2,
            [1; 8],
            &GUID,
            &key.public_point(),
            cvc::ROLE_CARD,
            &s,
        )
        .unwrap();
        let card = Responder {
            key: &key,
            cvc: &der,
        };
        let good = Initiator::new(CipherSuite::Cs2, [2; 8]).request();
        assert!(card.respond(&good).is_ok());
        // The P-384 request to a P-256 key, a point off the curve, the
        // identity, a missing 82, another template.
        let p384 = Initiator::new(CipherSuite::Cs7, [2; 8]).request();
        let mut off_curve = good.clone();
        let last = off_curve.len() - 3;
        off_curve[last] ^= 1;
        let mut no_82 = good.clone();
        no_82.truncate(good.len() - 2);
        no_82[1] -= 2;
        let mut not_7c = good.clone();
        not_7c[0] = 0x7D;
        for (what, bad) in [
            ("other suite", p384),
            ("off the curve", off_curve),
            ("no 82", no_82),
            ("not 7C", not_7c),
            ("empty", vec![]),
            ("truncated", good[..good.len() / 2].to_vec()),
        ] {
            assert_eq!(
                card.respond(&bad).err().map(|e| e.status_word()),
                Some(0x6A80),
                "{what}"
            );
        }
    }

    #[test]
    fn the_host_refuses_a_card_that_does_not_hold_the_cvc_key() {
        let key = SmKey::generate(CipherSuite::Cs2).unwrap();
        let other = SmKey::generate(CipherSuite::Cs2).unwrap();
        let s = signer(CipherSuite::Cs2);
        // The CVC names another key than the one the card answers with.
        let der = cvc::issue(
            CipherSuite::Cs2,
            [1; 8],
            &GUID,
            &other.public_point(),
            cvc::ROLE_CARD,
            &s,
        )
        .unwrap();
        let host = Initiator::new(CipherSuite::Cs2, [2; 8]);
        let (answer, _) = Responder {
            key: &key,
            cvc: &der,
        }
        .respond(&host.request())
        .unwrap();
        assert!(matches!(
            host.finish(&answer),
            Err(SmError::Establishment(_))
        ));
    }

    #[test]
    fn cvc_signature_binds_every_field() {
        let key = SmKey::generate(CipherSuite::Cs7).unwrap();
        let s = signer(CipherSuite::Cs7);
        let der = cvc::issue(
            CipherSuite::Cs7,
            [9; 8],
            &GUID,
            &key.public_point(),
            cvc::ROLE_CARD,
            &s,
        )
        .unwrap();
        let cvc = Cvc::decode(&der).unwrap();
        assert_eq!(cvc.public_point, key.public_point());
        assert_eq!(cvc.role, cvc::ROLE_CARD);
        cvc.verify(&signer_public(&s)).unwrap();
        assert!(
            cvc.verify(&signer_public(&signer(CipherSuite::Cs7)))
                .is_err(),
            "other signer"
        );
        // Flip one byte of the subject ID: still decodes, no longer verifies.
        let at = der.windows(16).position(|w| w == GUID).unwrap();
        let mut forged = der.clone();
        forged[at] ^= 1;
        let forged = Cvc::decode(&forged).unwrap();
        assert!(forged.verify(&signer_public(&s)).is_err());
        // A signer on the other suite's curve is refused at issue time.
        assert!(cvc::issue(CipherSuite::Cs2, [9; 8], &GUID, &key.public_point(), 0, &s).is_err());
        for cut in 0..der.len() {
            let _ = Cvc::decode(&der[..cut]);
        }
    }

    /// Known answers from piv-applet/tests/data/sm-kat.py (pyca/cryptography:
    /// ConcatKDFHash, CMAC, AES): the KDF over a fixed Z and OtherInfo, the
    /// key confirmation, and two exchanges protected in each direction.
    #[test]
    fn known_answers_from_an_independent_implementation() {
        struct Kat {
            suite: CipherSuite,
            keys: &'static str,
            cryptogram: &'static str,
            command: &'static str,
            response: &'static str,
            command2: &'static str,
            response2: &'static str,
        }
        let kats = [
            Kat {
                suite: CipherSuite::Cs2,
                keys: "4e52f48f45526f2ad9891e50725fa35e8a7f7d42b5c6f374038e4eda7021a4b4cdfd2ad41d7197e8648ad97475680fcef2b9aa1f17613fdad993609e459cd598",
                cryptogram: "003064b4997270665db0759cf40094d7",
                command: "87110195ad777f4e46c3d8e488f7b308b45e6b9701008e082f4f8697bf5061f0",
                response: "8711015bb3cad116c01e5adbb21dcc5d1cc2fb990290008e0800c3635882fd5638",
                command2: "8711010bd333fb607ee14ba18cf301ce1f62798e086c6de98706716c1a",
                response2: "990263c28e08e98182d08541f8ad",
            },
            Kat {
                suite: CipherSuite::Cs7,
                keys: "69eb30cb67654c8d83091b019e6296a16a777ef0ee823b8e264708081a618aaf31c7a32a1e51492ba03e674a53549ae673115cdff5d9918919ac12875572f064951c86eaa929fae5e7946e15948edef6a9bcf6d52d7f5e2e6dad76fa69fd6e170c8ca5e0c4f682ccd9a808517f0dd9ab2e50e7d4d096806fcf05690d8971fd47",
                cryptogram: "ec51d60b8b9e8d58c88fcef5614367b1",
                command: "871101bee687da3e30aa06eae2ebde8c358b929701008e08d03d009f058f6cac",
                response: "871101292391bcddfeed7ad6560a7ac4dc4691990290008e08046b2cbe477c074f",
                command2: "871101ecc96881e0d545656a55922bc148e7788e08267a238197de9f7b",
                response2: "990263c28e0803df261562d38834",
            },
        ];
        for k in kats {
            let suite = k.suite;
            let f = suite.field_len();
            let z: Vec<u8> = (1..=f as u8).collect();
            let host_point: Vec<u8> = (0..2 * f).map(|i| (0xA0 + i) as u8).collect();
            let nonce: Vec<u8> = (0..suite.nonce_len()).map(|i| 0x30 + i as u8).collect();
            let card_id = [1, 2, 3, 4, 5, 6, 7, 8];
            let other = kdf::OtherInfo {
                host_id: *b"host-id1",
                host_control: 0,
                host_point: &host_point,
                card_id,
                nonce: &nonce,
                card_control: 0,
            }
            .encode(suite);
            let keys = kdf::derive(suite, &z, &other);
            let all = [&keys.confirm[..], &keys.mac, &keys.enc, &keys.rmac].concat();
            assert_eq!(hex::encode(all), k.keys, "{suite:?} KDF");
            let c = kdf::auth_cryptogram(&keys.confirm, &card_id, b"host-id1", &host_point);
            assert_eq!(hex::encode(c), k.cryptogram, "{suite:?} cryptogram");

            let fresh = || {
                let keys = kdf::derive(suite, &z, &other);
                Channel::new(suite, keys)
            };
            let (mut host, mut card) = (fresh(), fresh());
            let wire = host.protect_command(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E], Some(256));
            assert_eq!(hex::encode(&wire), k.command, "{suite:?} command");
            let opened = card.open_command(0xCB, 0x3F, 0xFF, &wire).unwrap();
            assert_eq!(&opened.data[..], [0x5C, 0x01, 0x7E]);
            let resp = card.protect_response(&[0x7E, 0x03, 1, 2, 3], 0x9000);
            assert_eq!(hex::encode(&resp), k.response, "{suite:?} response");
            host.open_response(&resp).unwrap();

            let wire = host.protect_command(0x20, 0x00, 0x80, b"123456\xff\xff", None);
            assert_eq!(hex::encode(&wire), k.command2, "{suite:?} second command");
            assert_eq!(
                &card.open_command(0x20, 0x00, 0x80, &wire).unwrap().data[..],
                b"123456\xff\xff"
            );
            let resp = card.protect_response(&[], 0x63C2);
            assert_eq!(hex::encode(&resp), k.response2, "{suite:?} second response");
            let (data, sw) = host.open_response(&resp).unwrap();
            assert!(data.is_empty());
            assert_eq!(sw, 0x63C2);
        }
    }
}
