//! The card verifiable certificate (SP 800-73-4 Part 2 §4.1.5, Table 15):
//! the card's secure messaging public key, signed by the content signer
//! whose X.509 certificate is in the Secure Messaging Certificate Signer
//! object.
//!
//! ```text
//! 7F21 {
//!   5F29 80                      certificate profile identifier
//!   42   issuer ID (8 bytes)
//!   5F20 subject ID (the GUID, 16 bytes, or 8)
//!   7F49 { 06 curve OID, 86 04||x||y }
//!   5F4C role (00 card key, 12 intermediate CVC)
//!   5F37 { 30 { 30 { 06 signature algorithm } 03 00||signature } }
//! }
//! ```
//! The signature covers the encoded 5F29 through 5F4C, hashed with the
//! cipher suite's hash (what OpenSC verifies with).

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use sha2::Digest;

use crate::keys::KeyMaterial;
use crate::oid;

use super::{CipherSuite, SmError};
use crate::codec::Reader;
use crate::tlv;

const TAG_CVC: u32 = 0x7F21;
const TAG_PROFILE: u32 = 0x5F29;
const TAG_ISSUER: u32 = 0x42;
const TAG_SUBJECT: u32 = 0x5F20;
const TAG_KEY: u32 = 0x7F49;
const TAG_KEY_OID: u32 = 0x06;
const TAG_KEY_POINT: u32 = 0x86;
const TAG_ROLE: u32 = 0x5F4C;
const TAG_SIGNATURE: u32 = 0x5F37;
const PROFILE: u8 = 0x80;

/// The role of the card's own key.
pub const ROLE_CARD: u8 = 0x00;
/// The role of an intermediate CVC's key.
pub const ROLE_INTERMEDIATE: u8 = 0x12;

/// A decoded CVC; `der` is what was decoded, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cvc {
    pub der: Vec<u8>,
    pub issuer_id: Vec<u8>,
    pub subject_id: Vec<u8>,
    pub suite: CipherSuite,
    /// `04 || x || y`.
    pub public_point: Vec<u8>,
    pub role: u8,
    signed: core::ops::Range<usize>,
    signature_algorithm: ObjectIdentifier,
    /// The DER ECDSA-Sig-Value.
    signature: Vec<u8>,
}

/// The curve OID that names a suite's key in 7F49.
fn curve_oid(suite: CipherSuite) -> ObjectIdentifier {
    match suite {
        CipherSuite::Cs2 => oid::P256,
        CipherSuite::Cs7 => oid::P384,
    }
}

/// A content signer's public key, from its certificate's
/// SubjectPublicKeyInfo.
pub enum SignerPublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl SignerPublicKey {
    /// The key of a content signer's X.509 certificate (DER), as a host
    /// reads it from the card's 5FC122 object.
    pub fn from_certificate(der: &[u8]) -> Result<SignerPublicKey, SmError> {
        let bad = |e: der::Error| SmError::Certificate(format!("the signer's certificate: {e}"));
        let cert = x509_cert::Certificate::from_der(der).map_err(bad)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(bad)?;
        SignerPublicKey::from_spki_der(&spki)
    }

    pub fn from_spki_der(spki: &[u8]) -> Result<SignerPublicKey, SmError> {
        use pkcs8::DecodePublicKey;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
            return Ok(SignerPublicKey::P256(k));
        }
        p384::ecdsa::VerifyingKey::from_public_key_der(spki)
            .map(SignerPublicKey::P384)
            .map_err(|_| SmError::Certificate("the signer's key is neither P-256 nor P-384".into()))
    }
}

/// Encodes and signs a CVC for `public_point` (`04 || x || y` on the
/// suite's curve).
pub fn issue(
    suite: CipherSuite,
    issuer_id: [u8; 8],
    subject_id: &[u8],
    public_point: &[u8],
    role: u8,
    signer: &KeyMaterial,
) -> Result<Vec<u8>, SmError> {
    // The host verifies with the suite's hash (OpenSC: `cs->kdf_md`), so
    // the signer's curve is the suite's.
    if signer.algorithm() != suite.key_algorithm() {
        return Err(SmError::Certificate(format!(
            "a {} CVC needs a signer key of {:?}",
            suite.name(),
            suite.key_algorithm()
        )));
    }
    let algorithm = match suite {
        CipherSuite::Cs2 => oid::ECDSA_WITH_SHA256,
        CipherSuite::Cs7 => oid::ECDSA_WITH_SHA384,
    };
    let mut body = Vec::new();
    tlv::write(&mut body, TAG_PROFILE, &[PROFILE]);
    tlv::write(&mut body, TAG_ISSUER, &issuer_id);
    tlv::write(&mut body, TAG_SUBJECT, subject_id);
    let mut key = tlv::encode(TAG_KEY_OID, curve_oid(suite).as_bytes());
    tlv::write(&mut key, TAG_KEY_POINT, public_point);
    tlv::write(&mut body, TAG_KEY, &key);
    tlv::write(&mut body, TAG_ROLE, &[role]);
    let digest = match suite {
        CipherSuite::Cs2 => sha2::Sha256::digest(&body).to_vec(),
        CipherSuite::Cs7 => sha2::Sha384::digest(&body).to_vec(),
    };
    let sig = signer
        .sign_or_decrypt(&digest)
        .map_err(|e| SmError::Certificate(format!("signing: {e}")))?;
    let digital_signature = DigitalSignature {
        algorithm: AlgorithmIdentifier { oid: algorithm },
        value: der::asn1::BitString::from_bytes(&sig)
            .map_err(|e| SmError::Certificate(e.to_string()))?,
    }
    .to_der()
    .map_err(|e| SmError::Certificate(e.to_string()))?;
    tlv::write(&mut body, TAG_SIGNATURE, &digital_signature);
    Ok(tlv::encode(TAG_CVC, &body))
}

#[derive(der::Sequence)]
struct AlgorithmIdentifier {
    oid: ObjectIdentifier,
}

#[derive(der::Sequence)]
struct DigitalSignature {
    algorithm: AlgorithmIdentifier,
    value: der::asn1::BitString,
}

impl Cvc {
    /// Decodes a CVC; trailing bytes after it are refused.
    pub fn decode(der: &[u8]) -> Result<Cvc, SmError> {
        let bad = |what: &str| SmError::Certificate(format!("malformed: {what}"));
        let mut outer = Reader::new(der);
        let cvc = tlv::read_tlv(&mut outer).map_err(|_| bad("outer TLV"))?;
        if cvc.tag != TAG_CVC || !outer.is_empty() {
            return Err(bad("not one 7F21 object"));
        }
        let body_start = der.len() - cvc.value.len();
        let mut r = Reader::new(cvc.value);
        fn next<'a>(r: &mut Reader<'a>, tag: u32, what: &str) -> Result<&'a [u8], SmError> {
            match tlv::read_tlv(r) {
                Ok(t) if t.tag == tag => Ok(t.value),
                _ => Err(SmError::Certificate(format!("malformed: {what}"))),
            }
        }
        if next(&mut r, TAG_PROFILE, "profile identifier")? != [PROFILE] {
            return Err(bad("profile identifier is not 80"));
        }
        let issuer_id = next(&mut r, TAG_ISSUER, "issuer ID")?.to_vec();
        let subject_id = next(&mut r, TAG_SUBJECT, "subject ID")?.to_vec();
        let key = next(&mut r, TAG_KEY, "public key")?;
        let role = match next(&mut r, TAG_ROLE, "role")? {
            [r] => *r,
            _ => return Err(bad("role is not one byte")),
        };
        let signed_end = body_start + (cvc.value.len() - r.left());
        let sig_object = next(&mut r, TAG_SIGNATURE, "signature")?;
        if !r.is_empty() {
            return Err(bad("data after the signature"));
        }
        let mut k = Reader::new(key);
        let oid = tlv::read_tlv(&mut k).map_err(|_| bad("key OID"))?;
        let point = tlv::read_tlv(&mut k).map_err(|_| bad("key point"))?;
        if oid.tag != TAG_KEY_OID || point.tag != TAG_KEY_POINT || !k.is_empty() {
            return Err(bad("public key template"));
        }
        let suite = [CipherSuite::Cs2, CipherSuite::Cs7]
            .into_iter()
            .find(|s| curve_oid(*s).as_bytes() == oid.value)
            .ok_or_else(|| bad("the key is on neither P-256 nor P-384"))?;
        if point.value.len() != suite.point_len() || point.value[0] != 0x04 {
            return Err(bad("public point is not uncompressed on its curve"));
        }
        let ds = DigitalSignature::from_der(sig_object).map_err(|_| bad("signature object"))?;
        let signature = ds
            .value
            .as_bytes()
            .ok_or_else(|| bad("signature bit string"))?
            .to_vec();
        Ok(Cvc {
            der: der.to_vec(),
            issuer_id,
            subject_id,
            suite,
            public_point: point.value.to_vec(),
            role,
            signed: body_start..signed_end,
            signature_algorithm: ds.algorithm.oid,
            signature,
        })
    }

    /// Checks the signature with the content signer's (or intermediate
    /// CVC's) key.
    pub fn verify(&self, signer: &SignerPublicKey) -> Result<(), SmError> {
        use signature::Verifier;
        let body = &self.der[self.signed.clone()];
        let fail = |_| SmError::Certificate("signature does not verify".into());
        match (signer, self.signature_algorithm) {
            (SignerPublicKey::P256(k), oid::ECDSA_WITH_SHA256) => {
                let s = p256::ecdsa::Signature::from_der(&self.signature).map_err(fail)?;
                k.verify(body, &s).map_err(fail)
            }
            (SignerPublicKey::P384(k), oid::ECDSA_WITH_SHA384) => {
                let s = p384::ecdsa::Signature::from_der(&self.signature).map_err(fail)?;
                k.verify(body, &s).map_err(fail)
            }
            _ => Err(SmError::Certificate(
                "signature algorithm does not match the signer's key".into(),
            )),
        }
    }

    /// The key of an intermediate CVC, to verify the card's CVC with.
    pub fn as_signer(&self) -> Result<SignerPublicKey, SmError> {
        let bad = |_| SmError::Certificate("public point does not decode".into());
        Ok(match self.suite {
            CipherSuite::Cs2 => SignerPublicKey::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.public_point).map_err(bad)?,
            ),
            CipherSuite::Cs7 => SignerPublicKey::P384(
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&self.public_point).map_err(bad)?,
            ),
        })
    }
}
