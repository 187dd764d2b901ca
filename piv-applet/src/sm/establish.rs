//! The one-pass key establishment of SP 800-73-4 Part 2 §4.1 (GENERAL
//! AUTHENTICATE, P1 = the cipher suite, P2 = 04, the secure messaging key).
//!
//! The host sends `7C { 81 CB_H || ID_sH || Q_eH, 82 (empty) }` with a fresh
//! ephemeral key; the card answers `7C { 82 CB_ICC || N_ICC ||
//! AuthCryptogram || CVC }`. Both compute Z = ECDH(card key, host's
//! ephemeral key), derive the session keys, and the card proves it holds
//! its key with the cryptogram; the host checks the CVC with the content
//! signer's certificate.

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::channel::Channel;
use super::cvc::Cvc;
use super::kdf::{self, OtherInfo};
use super::{CipherSuite, SmError};
use crate::enums::AlgorithmId;
use crate::keys::{KeyError, KeyMaterial};
use crate::tlv;

const TAG_TEMPLATE: u32 = 0x7C;
const TAG_HOST: u32 = 0x81;
const TAG_CARD: u32 = 0x82;
/// Neither side asks for persistent binding (SP 800-73-4's CB = 00 is
/// what OpenSC sends and checks).
const NO_BINDING: u8 = 0x00;

/// The card's secure messaging key (key reference 04): a P-256 or P-384
/// key as a slot holds, so it uses the card's own EC code (libcrypto on
/// Unix) and is stored as slot keys are.
#[derive(Clone)]
pub struct SmKey(KeyMaterial);

impl SmKey {
    pub fn generate(suite: CipherSuite) -> Result<SmKey, KeyError> {
        KeyMaterial::generate(suite.key_algorithm()).map(SmKey)
    }

    pub fn suite(&self) -> CipherSuite {
        match self.0.algorithm() {
            AlgorithmId::EccP384 => CipherSuite::Cs7,
            _ => CipherSuite::Cs2,
        }
    }

    /// PKCS#8 DER, as the card file stores every key.
    pub fn to_storage(&self) -> Zeroizing<Vec<u8>> {
        self.0.to_storage()
    }

    /// The key back from [`Self::to_storage`]; it must be on the suite's
    /// curve.
    pub fn from_storage(suite: CipherSuite, pkcs8_der: &[u8]) -> Result<SmKey, KeyError> {
        KeyMaterial::from_storage(suite.key_algorithm(), pkcs8_der).map(SmKey)
    }

    /// `04 || x || y`, what the CVC carries.
    pub fn public_point(&self) -> Vec<u8> {
        tlv::find(&self.0.public_key_tlvs(), 0x86)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Z: the x coordinate of d · Q for the host's point Q, which must be
    /// an uncompressed point on the key's curve (not the identity).
    fn agree(&self, point: &[u8]) -> Result<Zeroizing<Vec<u8>>, SmError> {
        self.0.ecdh(point).map_err(|_| {
            SmError::Establishment("the host's key is not a point on the suite's curve")
        })
    }
}

/// The card's side of the exchange.
pub struct Responder<'a> {
    pub key: &'a SmKey,
    /// The card's CVC, as sent.
    pub cvc: &'a [u8],
}

impl Responder<'_> {
    /// Answers the host's GENERAL AUTHENTICATE data field: the response
    /// data and the session it opens.
    pub fn respond(&self, request: &[u8]) -> Result<(Vec<u8>, Channel), SmError> {
        let suite = self.key.suite();
        let bad = SmError::Establishment;
        let template = tlv::parse_one(request).map_err(|_| bad("request is not one TLV"))?;
        if template.tag != TAG_TEMPLATE {
            return Err(bad("request is not a 7C template"));
        }
        let items = tlv::parse_all(template.value).map_err(|_| bad("request template encoding"))?;
        let host = match items.as_slice() {
            [h, c] if h.tag == TAG_HOST && c.tag == TAG_CARD && c.value.is_empty() => h.value,
            _ => return Err(bad("request is not 81 then an empty 82")),
        };
        if host.len() != 1 + 8 + suite.point_len() {
            return Err(bad("81 has the wrong length for the suite"));
        }
        let host_control = host[0];
        let mut host_id = [0u8; 8];
        host_id.copy_from_slice(&host[1..9]);
        let point = &host[9..];
        let z = self.key.agree(point)?;

        let mut nonce = vec![0u8; suite.nonce_len()];
        OsRng.fill_bytes(&mut nonce);
        let card_id = kdf::card_id(self.cvc);
        let other_info = OtherInfo {
            host_id,
            host_control,
            host_point: &point[1..],
            card_id,
            nonce: &nonce,
            card_control: NO_BINDING,
        }
        .encode(suite);
        let keys = kdf::derive(suite, &z, &other_info);
        let cryptogram = kdf::auth_cryptogram(&keys.confirm, &card_id, &host_id, &point[1..]);

        let mut answer = vec![NO_BINDING];
        answer.extend_from_slice(&nonce);
        answer.extend_from_slice(&cryptogram);
        answer.extend_from_slice(self.cvc);
        let response = tlv::encode(TAG_TEMPLATE, &tlv::encode(TAG_CARD, &answer));
        Ok((response, Channel::new(suite, keys)))
    }
}

enum Ephemeral {
    P256(p256::ecdh::EphemeralSecret),
    P384(p384::ecdh::EphemeralSecret),
}

/// The host's side of the exchange (this project's tests and tools; OpenSC
/// is the other host).
pub struct Initiator {
    suite: CipherSuite,
    host_id: [u8; 8],
    secret: Ephemeral,
    /// `04 || x || y` of the ephemeral key.
    point: Vec<u8>,
}

impl Initiator {
    pub fn new(suite: CipherSuite, host_id: [u8; 8]) -> Initiator {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let (secret, point) = match suite {
            CipherSuite::Cs2 => {
                let s = p256::ecdh::EphemeralSecret::random(&mut OsRng);
                let p = s.public_key().to_encoded_point(false).as_bytes().to_vec();
                (Ephemeral::P256(s), p)
            }
            CipherSuite::Cs7 => {
                let s = p384::ecdh::EphemeralSecret::random(&mut OsRng);
                let p = s.public_key().to_encoded_point(false).as_bytes().to_vec();
                (Ephemeral::P384(s), p)
            }
        };
        Initiator {
            suite,
            host_id,
            secret,
            point,
        }
    }

    /// The GENERAL AUTHENTICATE data field (sent in the clear, CLA 00,
    /// P1 = the suite, P2 = 04).
    pub fn request(&self) -> Vec<u8> {
        let mut host = vec![NO_BINDING];
        host.extend_from_slice(&self.host_id);
        host.extend_from_slice(&self.point);
        let mut inner = tlv::encode(TAG_HOST, &host);
        tlv::write(&mut inner, TAG_CARD, &[]);
        tlv::encode(TAG_TEMPLATE, &inner)
    }

    /// Checks the card's answer and opens the session. The CVC is returned
    /// decoded but NOT verified: the caller checks it with the content
    /// signer's certificate (from the card's 5FC122 object or its own
    /// trust store).
    pub fn finish(self, response: &[u8]) -> Result<(Channel, Cvc), SmError> {
        let suite = self.suite;
        let bad = SmError::Establishment;
        let template = tlv::parse_one(response).map_err(|_| bad("response is not one TLV"))?;
        let card = match tlv::parse_all(template.value).as_deref() {
            Ok([c]) if template.tag == TAG_TEMPLATE && c.tag == TAG_CARD => c.value,
            _ => return Err(bad("response is not 7C { 82 }")),
        };
        let fixed = 1 + suite.nonce_len() + 16;
        if card.len() <= fixed {
            return Err(bad("response is too short"));
        }
        if card[0] != NO_BINDING {
            return Err(bad("the card asked for persistent binding"));
        }
        let nonce = &card[1..1 + suite.nonce_len()];
        let cryptogram = &card[1 + suite.nonce_len()..fixed];
        let cvc = Cvc::decode(&card[fixed..])?;
        if cvc.suite != suite {
            return Err(bad("the card's CVC is for another suite"));
        }
        let z = match (&self.secret, suite) {
            (Ephemeral::P256(s), _) => {
                let peer = p256::PublicKey::from_sec1_bytes(&cvc.public_point)
                    .map_err(|_| bad("the CVC's point does not decode"))?;
                Zeroizing::new(s.diffie_hellman(&peer).raw_secret_bytes().to_vec())
            }
            (Ephemeral::P384(s), _) => {
                let peer = p384::PublicKey::from_sec1_bytes(&cvc.public_point)
                    .map_err(|_| bad("the CVC's point does not decode"))?;
                Zeroizing::new(s.diffie_hellman(&peer).raw_secret_bytes().to_vec())
            }
        };
        let card_id = kdf::card_id(&cvc.der);
        let other_info = OtherInfo {
            host_id: self.host_id,
            host_control: NO_BINDING,
            host_point: &self.point[1..],
            card_id,
            nonce,
            card_control: card[0],
        }
        .encode(suite);
        let keys = kdf::derive(suite, &z, &other_info);
        let expected =
            kdf::auth_cryptogram(&keys.confirm, &card_id, &self.host_id, &self.point[1..]);
        if !bool::from(expected.ct_eq(cryptogram)) {
            return Err(bad("the card's key confirmation does not match"));
        }
        Ok((Channel::new(suite, keys), cvc))
    }
}
