//! Private keys held in the card's slots and the operations GENERAL
//! AUTHENTICATE performs with them.
//!
//! All arithmetic comes from the RustCrypto crates; this module only maps
//! PIV's wire formats (IMPORT TLVs, the 7F49 public key template, raw RSA
//! blocks, ECDSA over a host-computed hash) onto them.

use der::{Decode, Encode};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::OsRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use zeroize::Zeroizing;

use crate::enums::AlgorithmId;
use crate::tlv;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("invalid key data: {0}")]
    InvalidKey(&'static str),
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("operation not supported by this key type")]
    WrongKeyType,
}

/// OIDs of the key types (RFC 8410 for the 25519 curves).
const OID_RSA: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_X25519: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.101.110");

/// A private key in a slot. Each variant's crate zeroizes it on drop;
/// Debug shows only the algorithm.
pub enum KeyMaterial {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    X25519(Box<x25519_dalek::StaticSecret>),
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyMaterial({:?})", self.algorithm())
    }
}

/// Left-pads a big-endian number to `len` bytes.
fn pad_be(bytes: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(vec![0u8; len.saturating_sub(bytes.len())]);
    v.extend_from_slice(bytes);
    v
}

/// A hash fitted to the curve's size: left-padded with zeros when short,
/// truncated to the leftmost bytes when long (FIPS 186-4, 6.4).
fn fit_hash(input: &[u8], len: usize) -> Vec<u8> {
    if input.len() >= len {
        input[..len].to_vec()
    } else {
        pad_be(input, len).to_vec()
    }
}

impl KeyMaterial {
    pub fn generate(alg: AlgorithmId) -> Result<KeyMaterial, KeyError> {
        Ok(match alg {
            _ if alg.rsa_bits().is_some() => {
                let bits = alg.rsa_bits().expect("checked");
                let key = RsaPrivateKey::new_with_exp(&mut OsRng, bits, &BigUint::from(65537u32))
                    .map_err(|_| KeyError::InvalidKey("RSA generation failed"))?;
                KeyMaterial::Rsa(Box::new(key))
            }
            AlgorithmId::EccP256 => KeyMaterial::P256(p256::SecretKey::random(&mut OsRng)),
            AlgorithmId::EccP384 => KeyMaterial::P384(p384::SecretKey::random(&mut OsRng)),
            AlgorithmId::Ed25519 => {
                KeyMaterial::Ed25519(Box::new(ed25519_dalek::SigningKey::generate(&mut OsRng)))
            }
            AlgorithmId::X25519 => {
                KeyMaterial::X25519(Box::new(x25519_dalek::StaticSecret::random_from_rng(OsRng)))
            }
            _ => return Err(KeyError::UnsupportedAlgorithm),
        })
    }

    pub fn algorithm(&self) -> AlgorithmId {
        match self {
            KeyMaterial::Rsa(k) => {
                AlgorithmId::rsa_from_bits(k.size() * 8).unwrap_or(AlgorithmId::Unknown(0))
            }
            KeyMaterial::P256(_) => AlgorithmId::EccP256,
            KeyMaterial::P384(_) => AlgorithmId::EccP384,
            KeyMaterial::Ed25519(_) => AlgorithmId::Ed25519,
            KeyMaterial::X25519(_) => AlgorithmId::X25519,
        }
    }

    /// Builds a key from the YubiKey IMPORT KEY data field. Policy tags
    /// (AA, AB) are the caller's business and ignored here.
    pub fn import(alg: AlgorithmId, data: &[u8]) -> Result<KeyMaterial, KeyError> {
        let tlvs = tlv::parse_all(data).map_err(|_| KeyError::InvalidKey("malformed TLV"))?;
        let get = |tag: u32| {
            tlvs.iter()
                .find(|t| t.tag == tag)
                .map(|t| t.value)
                .ok_or(KeyError::InvalidKey("missing key component"))
        };
        let exact = |tag: u32, len: usize| -> Result<&[u8], KeyError> {
            let v = get(tag)?;
            if v.len() == len {
                Ok(v)
            } else {
                Err(KeyError::InvalidKey("key component has the wrong length"))
            }
        };
        match alg {
            _ if alg.rsa_bits().is_some() => {
                let bits = alg.rsa_bits().expect("checked");
                let half = bits / 16;
                let num = |tag: u32| -> Result<BigUint, KeyError> {
                    let v = get(tag)?;
                    if v.is_empty() || v.len() > half + 1 {
                        return Err(KeyError::InvalidKey("key component has the wrong length"));
                    }
                    Ok(BigUint::from_bytes_be(v))
                };
                let (p, q) = (num(0x01)?, num(0x02)?);
                let (dp, dq, qinv) = (num(0x03)?, num(0x04)?, num(0x05)?);
                if p.bits() != bits / 2 || q.bits() != bits / 2 {
                    return Err(KeyError::InvalidKey("primes do not match the key size"));
                }
                let mut key = RsaPrivateKey::from_p_q(p, q, BigUint::from(65537u32))
                    .map_err(|_| KeyError::InvalidKey("p and q do not form an RSA key"))?;
                key.precompute()
                    .map_err(|_| KeyError::InvalidKey("CRT precomputation failed"))?;
                if key.size() * 8 != bits {
                    return Err(KeyError::InvalidKey("modulus does not match the key size"));
                }
                let consistent = key.dp() == Some(&dp)
                    && key.dq() == Some(&dq)
                    && key.crt_coefficient().as_ref() == Some(&qinv);
                if !consistent {
                    return Err(KeyError::InvalidKey("CRT values do not match p and q"));
                }
                key.validate()
                    .map_err(|_| KeyError::InvalidKey("RSA key fails validation"))?;
                Ok(KeyMaterial::Rsa(Box::new(key)))
            }
            AlgorithmId::EccP256 => p256::SecretKey::from_slice(exact(0x06, 32)?)
                .map(KeyMaterial::P256)
                .map_err(|_| KeyError::InvalidKey("scalar out of range")),
            AlgorithmId::EccP384 => p384::SecretKey::from_slice(exact(0x06, 48)?)
                .map(KeyMaterial::P384)
                .map_err(|_| KeyError::InvalidKey("scalar out of range")),
            AlgorithmId::Ed25519 => {
                let seed: [u8; 32] = exact(0x07, 32)?.try_into().expect("length checked");
                Ok(KeyMaterial::Ed25519(Box::new(
                    ed25519_dalek::SigningKey::from_bytes(&seed),
                )))
            }
            AlgorithmId::X25519 => {
                let raw: [u8; 32] = exact(0x08, 32)?.try_into().expect("length checked");
                Ok(KeyMaterial::X25519(Box::new(
                    x25519_dalek::StaticSecret::from(raw),
                )))
            }
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }

    /// The IMPORT KEY data field for this key (inverse of [`Self::import`]).
    pub fn to_import_tlvs(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        match self {
            KeyMaterial::Rsa(k) => {
                let half = k.size() / 2;
                let primes = k.primes();
                let crt = k.crt_coefficient().unwrap_or_default();
                let parts: [(u32, &BigUint); 5] = [
                    (0x01, &primes[0]),
                    (0x02, &primes[1]),
                    (0x03, k.dp().expect("precomputed")),
                    (0x04, k.dq().expect("precomputed")),
                    (0x05, &crt),
                ];
                for (tag, n) in parts {
                    tlv::write(&mut out, tag, &pad_be(&n.to_bytes_be(), half));
                }
            }
            KeyMaterial::P256(k) => tlv::write(&mut out, 0x06, &k.to_bytes()),
            KeyMaterial::P384(k) => tlv::write(&mut out, 0x06, &k.to_bytes()),
            KeyMaterial::Ed25519(k) => tlv::write(&mut out, 0x07, k.as_bytes()),
            KeyMaterial::X25519(k) => tlv::write(&mut out, 0x08, &Zeroizing::new(k.to_bytes())[..]),
        }
        out
    }

    /// Inner TLVs of the 7F49 template that GENERATE returns.
    pub fn public_key_tlvs(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KeyMaterial::Rsa(k) => {
                tlv::write(&mut out, 0x81, &k.n().to_bytes_be());
                tlv::write(&mut out, 0x82, &k.e().to_bytes_be());
            }
            KeyMaterial::P256(k) => tlv::write(
                &mut out,
                0x86,
                k.public_key().to_encoded_point(false).as_bytes(),
            ),
            KeyMaterial::P384(k) => tlv::write(
                &mut out,
                0x86,
                k.public_key().to_encoded_point(false).as_bytes(),
            ),
            KeyMaterial::Ed25519(k) => tlv::write(&mut out, 0x86, k.verifying_key().as_bytes()),
            KeyMaterial::X25519(k) => tlv::write(
                &mut out,
                0x86,
                x25519_dalek::PublicKey::from(k.as_ref()).as_bytes(),
            ),
        }
        out
    }

    /// SubjectPublicKeyInfo DER of the public key.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        let doc = match self {
            KeyMaterial::Rsa(k) => k.to_public_key().to_public_key_der(),
            KeyMaterial::P256(k) => k.public_key().to_public_key_der(),
            KeyMaterial::P384(k) => k.public_key().to_public_key_der(),
            KeyMaterial::Ed25519(k) => k.verifying_key().to_public_key_der(),
            KeyMaterial::X25519(k) => {
                let public = x25519_dalek::PublicKey::from(k.as_ref());
                let spki = spki::SubjectPublicKeyInfoRef {
                    algorithm: spki::AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    subject_public_key: der::asn1::BitStringRef::from_bytes(public.as_bytes())
                        .expect("32 bytes fit a bit string"),
                };
                return spki.to_der().expect("encoding to memory");
            }
        };
        doc.expect("encoding a valid public key")
            .as_bytes()
            .to_vec()
    }

    /// The private-key operation of GENERAL AUTHENTICATE with a challenge:
    /// raw RSA (the host padded), ECDSA over a hash, or Ed25519 over the
    /// whole message.
    pub fn sign_or_decrypt(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        use signature::hazmat::PrehashSigner;
        match self {
            KeyMaterial::Rsa(k) => {
                let size = k.size();
                if input.len() != size {
                    return Err(KeyError::InvalidInput(
                        "RSA input must be as long as the modulus",
                    ));
                }
                let c = BigUint::from_bytes_be(input);
                if &c >= k.n() {
                    return Err(KeyError::InvalidInput("RSA input is not below the modulus"));
                }
                let m = rsa::hazmat::rsa_decrypt_and_check(k.as_ref(), Some(&mut OsRng), &c)
                    .map_err(|_| KeyError::InvalidInput("RSA operation failed"))?;
                Ok(pad_be(&Zeroizing::new(m.to_bytes_be()), size))
            }
            KeyMaterial::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(&fit_hash(input, 32))
                    .map_err(|_| KeyError::InvalidInput("ECDSA signing failed"))?;
                Ok(Zeroizing::new(sig.to_der().as_bytes().to_vec()))
            }
            KeyMaterial::P384(k) => {
                let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(&fit_hash(input, 48))
                    .map_err(|_| KeyError::InvalidInput("ECDSA signing failed"))?;
                Ok(Zeroizing::new(sig.to_der().as_bytes().to_vec()))
            }
            KeyMaterial::Ed25519(k) => {
                use ed25519_dalek::Signer;
                Ok(Zeroizing::new(k.sign(input).to_bytes().to_vec()))
            }
            KeyMaterial::X25519(_) => Err(KeyError::WrongKeyType),
        }
    }

    /// Key agreement with a peer public key: the shared X coordinate for
    /// the NIST curves, the X25519 output otherwise.
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let uncompressed = |len: usize| peer.len() == len && peer[0] == 0x04;
        match self {
            KeyMaterial::P256(k) => {
                if !uncompressed(65) {
                    return Err(KeyError::InvalidInput(
                        "peer key must be an uncompressed P-256 point",
                    ));
                }
                let pk = p256::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| KeyError::InvalidInput("peer point not on the curve"))?;
                let shared = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            KeyMaterial::P384(k) => {
                if !uncompressed(97) {
                    return Err(KeyError::InvalidInput(
                        "peer key must be an uncompressed P-384 point",
                    ));
                }
                let pk = p384::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| KeyError::InvalidInput("peer point not on the curve"))?;
                let shared = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            KeyMaterial::X25519(k) => {
                let raw: [u8; 32] = peer
                    .try_into()
                    .map_err(|_| KeyError::InvalidInput("X25519 peer key is 32 bytes"))?;
                let shared = k.diffie_hellman(&x25519_dalek::PublicKey::from(raw));
                if !shared.was_contributory() {
                    return Err(KeyError::InvalidInput(
                        "X25519 peer key is a low-order point",
                    ));
                }
                Ok(Zeroizing::new(shared.as_bytes().to_vec()))
            }
            KeyMaterial::Rsa(_) | KeyMaterial::Ed25519(_) => Err(KeyError::WrongKeyType),
        }
    }

    /// PKCS#8 DER, as the card file stores keys.
    pub fn to_storage(&self) -> Zeroizing<Vec<u8>> {
        let doc = match self {
            KeyMaterial::Rsa(k) => k.to_pkcs8_der(),
            KeyMaterial::P256(k) => k.to_pkcs8_der(),
            KeyMaterial::P384(k) => k.to_pkcs8_der(),
            KeyMaterial::Ed25519(k) => k.to_pkcs8_der(),
            KeyMaterial::X25519(k) => {
                let raw = Zeroizing::new(k.to_bytes());
                let inner = Zeroizing::new(
                    der::asn1::OctetStringRef::new(&raw[..])
                        .expect("32 bytes")
                        .to_der()
                        .expect("encoding to memory"),
                );
                let info = pkcs8::PrivateKeyInfo {
                    algorithm: spki::AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    private_key: &inner,
                    public_key: None,
                };
                return Zeroizing::new(info.to_der().expect("encoding to memory"));
            }
        };
        Zeroizing::new(doc.expect("encoding a valid key").as_bytes().to_vec())
    }

    /// Inverse of [`Self::to_storage`]; the key must be of `alg`.
    pub fn from_storage(alg: AlgorithmId, pkcs8_der: &[u8]) -> Result<KeyMaterial, KeyError> {
        let key = KeyMaterial::from_pkcs8_der(pkcs8_der)?;
        if key.algorithm() == alg {
            Ok(key)
        } else {
            Err(KeyError::InvalidKey(
                "stored key does not match its algorithm",
            ))
        }
    }

    /// Any supported PKCS#8 private key, its type read from the OID.
    pub fn from_pkcs8_der(der_bytes: &[u8]) -> Result<KeyMaterial, KeyError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der_bytes)
            .map_err(|_| KeyError::InvalidKey("not PKCS#8"))?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA {
            let mut key = RsaPrivateKey::from_pkcs8_der(der_bytes)
                .map_err(|_| KeyError::InvalidKey("bad RSA key"))?;
            key.precompute()
                .map_err(|_| KeyError::InvalidKey("bad RSA key"))?;
            if AlgorithmId::rsa_from_bits(key.size() * 8).is_none()
                || key.e() != &BigUint::from(65537u32)
            {
                return Err(KeyError::InvalidKey(
                    "RSA keys must be 1024-4096 bits with e = 65537",
                ));
            }
            Ok(KeyMaterial::Rsa(Box::new(key)))
        } else if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| KeyError::InvalidKey("EC key without a named curve"))?;
            if curve == OID_P256 {
                p256::SecretKey::from_pkcs8_der(der_bytes)
                    .map(KeyMaterial::P256)
                    .map_err(|_| KeyError::InvalidKey("bad P-256 key"))
            } else if curve == OID_P384 {
                p384::SecretKey::from_pkcs8_der(der_bytes)
                    .map(KeyMaterial::P384)
                    .map_err(|_| KeyError::InvalidKey("bad P-384 key"))
            } else {
                Err(KeyError::UnsupportedAlgorithm)
            }
        } else if oid == OID_ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(der_bytes)
                .map(|k| KeyMaterial::Ed25519(Box::new(k)))
                .map_err(|_| KeyError::InvalidKey("bad Ed25519 key"))
        } else if oid == OID_X25519 {
            let inner = der::asn1::OctetStringRef::from_der(info.private_key)
                .map_err(|_| KeyError::InvalidKey("bad X25519 key"))?;
            let raw: [u8; 32] = inner
                .as_bytes()
                .try_into()
                .map_err(|_| KeyError::InvalidKey("bad X25519 key"))?;
            Ok(KeyMaterial::X25519(Box::new(
                x25519_dalek::StaticSecret::from(raw),
            )))
        } else {
            Err(KeyError::UnsupportedAlgorithm)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FAST: [AlgorithmId; 6] = [
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
        AlgorithmId::X25519,
    ];

    #[test]
    fn import_and_storage_round_trip() {
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            assert_eq!(k.algorithm(), alg);
            let imported = KeyMaterial::import(alg, &k.to_import_tlvs()).unwrap();
            assert_eq!(
                imported.public_key_spki_der(),
                k.public_key_spki_der(),
                "{alg:?} import"
            );
            let stored = KeyMaterial::from_storage(alg, &k.to_storage()).unwrap();
            assert_eq!(
                stored.public_key_spki_der(),
                k.public_key_spki_der(),
                "{alg:?} storage"
            );
            assert_eq!(
                format!("{k:?}"),
                format!("KeyMaterial({alg:?})"),
                "Debug shows no key bytes"
            );
        }
    }

    #[test]
    fn malformed_imports_are_refused() {
        let k = KeyMaterial::generate(AlgorithmId::Rsa1024).unwrap();
        let good = k.to_import_tlvs();
        // Truncated TLVs.
        for n in [0, 1, 5, good.len() - 1] {
            assert!(
                KeyMaterial::import(AlgorithmId::Rsa1024, &good[..n]).is_err(),
                "{n}"
            );
        }
        // Inconsistent CRT value: flip a bit of dQ (tag 04).
        let mut bad = good.to_vec();
        let tlvs = tlv::parse_all(&good).unwrap();
        let offset = good.len() - tlvs[3].value.len() - tlvs[4].value.len() - 3 - 2;
        bad[offset] ^= 1;
        assert!(KeyMaterial::import(AlgorithmId::Rsa1024, &bad).is_err());
        // Wrong size for the algorithm.
        assert!(KeyMaterial::import(AlgorithmId::Rsa2048, &good).is_err());
        // EC scalar: wrong length, zero, above the order.
        assert!(KeyMaterial::import(AlgorithmId::EccP256, &tlv::encode(0x06, &[1; 31])).is_err());
        assert!(KeyMaterial::import(AlgorithmId::EccP256, &tlv::encode(0x06, &[0; 32])).is_err());
        assert!(
            KeyMaterial::import(AlgorithmId::EccP256, &tlv::encode(0x06, &[0xFF; 32])).is_err()
        );
        assert!(KeyMaterial::import(AlgorithmId::Ed25519, &tlv::encode(0x07, &[1; 31])).is_err());
        assert!(KeyMaterial::import(AlgorithmId::TripleDes, &tlv::encode(0x07, &[1; 32])).is_err());
        assert!(
            KeyMaterial::from_storage(AlgorithmId::EccP256, &[0x30, 0x03, 0x02, 0x01, 0x00])
                .is_err()
        );
    }

    #[test]
    fn rsa_4096_generates_and_signs() {
        let k = KeyMaterial::generate(AlgorithmId::Rsa4096).unwrap();
        assert_eq!(k.algorithm(), AlgorithmId::Rsa4096);
        let mut block = vec![0x00, 0x01];
        block.resize(512 - 33, 0xFF);
        block.push(0);
        block.resize(512, 0x42);
        let out = k.sign_or_decrypt(&block).unwrap();
        let KeyMaterial::Rsa(r) = &k else {
            unreachable!()
        };
        let back =
            rsa::hazmat::rsa_encrypt(&r.to_public_key(), &BigUint::from_bytes_be(&out)).unwrap();
        assert_eq!(pad_be(&back.to_bytes_be(), 512).to_vec(), block);
    }

    #[test]
    fn x25519_rejects_low_order_points() {
        let k = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        assert!(k.ecdh(&[0u8; 32]).is_err());
        assert!(k.ecdh(&[1u8; 31]).is_err());
        assert_eq!(k.sign_or_decrypt(&[1; 32]), Err(KeyError::WrongKeyType));
        let ed = KeyMaterial::generate(AlgorithmId::Ed25519).unwrap();
        assert_eq!(ed.ecdh(&[9; 32]), Err(KeyError::WrongKeyType));
    }
}
