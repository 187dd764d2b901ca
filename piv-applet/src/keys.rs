//! Private keys held in the card's slots and the operations GENERAL
//! AUTHENTICATE performs with them.
//!
//! All arithmetic comes from the RustCrypto crates; this module only maps
//! PIV's wire formats (IMPORT TLVs, the 7F49 public key template, raw RSA
//! blocks, ECDSA over a host-computed hash) onto them.
//!
//! Secrets: every key type zeroizes itself on drop (the crates do it), and
//! every intermediate buffer or big number holding secret material here is
//! wrapped in [`Zeroizing`] or wiped explicitly.

use der::{Decode, Encode};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::OsRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use zeroize::{Zeroize, Zeroizing};

use crate::ec_key::P256Key;
use crate::enums::AlgorithmId;
use crate::rsa_key::RsaKey;
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

use crate::oid;

/// Key generation under `cargo fuzz` only: one key per algorithm for the
/// whole process, handed out as copies. An RSA-4096 generation per input
/// would hold the fuzzer to a few executions a second; what is fuzzed is
/// the card's logic around keys, not the randomness of new ones.
#[cfg(fuzzing)]
mod fuzzing {
    use super::{AlgorithmId, KeyError, KeyMaterial};
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use zeroize::Zeroizing;

    static KEYS: Mutex<BTreeMap<u8, Zeroizing<Vec<u8>>>> = Mutex::new(BTreeMap::new());

    pub fn generate(alg: AlgorithmId) -> Result<KeyMaterial, KeyError> {
        let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let stored = match keys.get(&u8::from(alg)) {
            Some(k) => k,
            None => {
                let fresh = KeyMaterial::generate_fresh(alg)?.to_storage();
                keys.entry(alg.into()).or_insert(fresh)
            }
        };
        KeyMaterial::from_storage(alg, stored)
    }
}

/// The only RSA public exponent the card uses (YubiKey IMPORT assumes it).
const RSA_EXPONENT: u32 = 65537;

/// A private key in a slot. Each variant's crate zeroizes it on drop;
/// Debug shows only the algorithm.
pub enum KeyMaterial {
    Rsa(Box<RsaKey>),
    P256(P256Key),
    P384(p384::SecretKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    X25519(Box<x25519_dalek::StaticSecret>),
}

/// A copy of the key (the fuzz target's template card, snapshots). The
/// elliptic-curve keys copy their secret scalar; an RSA key goes through
/// its PKCS#8 form, since its libcrypto half cannot be shared.
impl Clone for KeyMaterial {
    fn clone(&self) -> Self {
        match self {
            KeyMaterial::Rsa(_) => KeyMaterial::from_storage(self.algorithm(), &self.to_storage())
                .expect("a key's own storage form loads"),
            KeyMaterial::P256(k) => KeyMaterial::P256(k.clone()),
            KeyMaterial::P384(k) => KeyMaterial::P384(k.clone()),
            KeyMaterial::Ed25519(k) => KeyMaterial::Ed25519(k.clone()),
            KeyMaterial::X25519(k) => KeyMaterial::X25519(k.clone()),
        }
    }
}

impl From<p256::SecretKey> for KeyMaterial {
    fn from(k: p256::SecretKey) -> Self {
        KeyMaterial::P256(P256Key::new(k))
    }
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyMaterial({:?})", self.algorithm())
    }
}

/// Left-pads a big-endian number to `len` bytes.
fn pad_be(bytes: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(len.max(bytes.len())));
    v.resize(len.saturating_sub(bytes.len()), 0);
    v.extend_from_slice(bytes);
    v
}

/// A hash fitted to the curve's size: left-padded with zeros when short,
/// truncated to the leftmost bytes when long (FIPS 186-4, 6.4). The curve
/// sizes are whole bytes, so truncating bits is truncating bytes.
fn fit_hash(input: &[u8], len: usize) -> Vec<u8> {
    if input.len() >= len {
        input[..len].to_vec()
    } else {
        pad_be(input, len).to_vec()
    }
}

/// A key size check for RSA: the modulus must have exactly the bits of one
/// of the card's RSA algorithms.
fn rsa_algorithm(key: &RsaPrivateKey) -> Option<AlgorithmId> {
    AlgorithmId::rsa_from_bits(key.n().bits())
}

/// PKCS#8 v1 of an RFC 8410 key (Ed25519, X25519): `PrivateKeyInfo {
/// oid, OCTET STRING { OCTET STRING (32 bytes) } }`.
fn rfc8410_pkcs8(oid: der::asn1::ObjectIdentifier, raw: &[u8]) -> Zeroizing<Vec<u8>> {
    let inner = Zeroizing::new(
        der::asn1::OctetStringRef::new(raw)
            .expect("32 bytes")
            .to_der()
            .expect("encoding to memory"),
    );
    let info = pkcs8::PrivateKeyInfo {
        algorithm: spki::AlgorithmIdentifierRef {
            oid,
            parameters: None,
        },
        private_key: &inner,
        public_key: None,
    };
    Zeroizing::new(info.to_der().expect("encoding to memory"))
}

impl KeyMaterial {
    /// A fresh key from the OS random generator (RSA with e = 65537).
    pub fn generate(alg: AlgorithmId) -> Result<KeyMaterial, KeyError> {
        #[cfg(fuzzing)]
        return fuzzing::generate(alg);
        #[cfg(not(fuzzing))]
        KeyMaterial::generate_fresh(alg)
    }

    fn generate_fresh(alg: AlgorithmId) -> Result<KeyMaterial, KeyError> {
        Ok(match alg {
            _ if alg.rsa_bits().is_some() => {
                let bits = alg.rsa_bits().expect("checked");
                let key = RsaKey::generate(bits, RSA_EXPONENT)
                    .map_err(|_| KeyError::InvalidKey("RSA generation failed"))?;
                KeyMaterial::Rsa(Box::new(key))
            }
            AlgorithmId::EccP256 => KeyMaterial::from(p256::SecretKey::random(&mut OsRng)),
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
            KeyMaterial::Rsa(k) => rsa_algorithm(k).unwrap_or(AlgorithmId::Unknown(0)),
            KeyMaterial::P256(_) => AlgorithmId::EccP256,
            KeyMaterial::P384(_) => AlgorithmId::EccP384,
            KeyMaterial::Ed25519(_) => AlgorithmId::Ed25519,
            KeyMaterial::X25519(_) => AlgorithmId::X25519,
        }
    }

    /// Builds a key from the YubiKey IMPORT KEY data field. Policy tags
    /// (AA, AB) and any other unknown tags are the caller's business and
    /// ignored here; of a repeated tag the first counts.
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
                Self::import_rsa(bits, &get).map(|k| KeyMaterial::Rsa(Box::new(RsaKey::new(k))))
            }
            AlgorithmId::EccP256 => p256::SecretKey::from_slice(exact(0x06, 32)?)
                .map(KeyMaterial::from)
                .map_err(|_| KeyError::InvalidKey("scalar out of range")),
            AlgorithmId::EccP384 => p384::SecretKey::from_slice(exact(0x06, 48)?)
                .map(KeyMaterial::P384)
                .map_err(|_| KeyError::InvalidKey("scalar out of range")),
            AlgorithmId::Ed25519 => {
                let mut seed: [u8; 32] = exact(0x07, 32)?.try_into().expect("length checked");
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                seed.zeroize();
                Ok(KeyMaterial::Ed25519(Box::new(key)))
            }
            AlgorithmId::X25519 => {
                let mut raw: [u8; 32] = exact(0x08, 32)?.try_into().expect("length checked");
                let key = x25519_dalek::StaticSecret::from(raw);
                raw.zeroize();
                Ok(KeyMaterial::X25519(Box::new(key)))
            }
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }

    /// RSA from p, q, dP, dQ, qInv (tags 01..05) with e = 65537: the key is
    /// rebuilt from p and q, and the host's CRT values must agree with it.
    fn import_rsa<'a>(
        bits: usize,
        get: &dyn Fn(u32) -> Result<&'a [u8], KeyError>,
    ) -> Result<RsaPrivateKey, KeyError> {
        let half = bits / 16;
        // Each component is at most half the modulus long once leading
        // zero bytes (which hosts may add as padding) are skipped.
        let num = |tag: u32| -> Result<Zeroizing<BigUint>, KeyError> {
            let v = get(tag)?;
            let significant = &v[v.iter().take_while(|b| **b == 0).count()..];
            if significant.is_empty() || significant.len() > half {
                return Err(KeyError::InvalidKey(
                    "RSA key component is zero or longer than half the modulus",
                ));
            }
            Ok(Zeroizing::new(BigUint::from_bytes_be(significant)))
        };
        let (p, q) = (num(0x01)?, num(0x02)?);
        let (dp, dq, qinv) = (num(0x03)?, num(0x04)?, num(0x05)?);
        // With both primes at most `bits / 2` bits long, this also means
        // both are exactly `bits / 2` bits (so neither is 0 or 1).
        if (&*p * &*q).bits() != bits {
            return Err(KeyError::InvalidKey(
                "p * q does not have the algorithm's modulus size",
            ));
        }
        // `from_p_q` refuses p == q, derives d, validates (d * e = 1 mod
        // p - 1 and q - 1) and precomputes the CRT values.
        let mut key =
            RsaPrivateKey::from_p_q((*p).clone(), (*q).clone(), BigUint::from(RSA_EXPONENT))
                .map_err(|_| {
                    KeyError::InvalidKey("p and q do not form an RSA key with e = 65537")
                })?;
        key.precompute()
            .map_err(|_| KeyError::InvalidKey("CRT precomputation failed"))?;
        let crt = Zeroizing::new(key.crt_coefficient().unwrap_or_default());
        let consistent = key.dp() == Some(&*dp) && key.dq() == Some(&*dq) && *crt == *qinv;
        if !consistent {
            return Err(KeyError::InvalidKey("CRT values do not match p and q"));
        }
        // Composite "primes" can pass the checks above; one checked private
        // operation catches them.
        rsa::hazmat::rsa_decrypt_and_check(&key, Some(&mut OsRng), &BigUint::from(2u8))
            .map_err(|_| KeyError::InvalidKey("RSA key fails a test operation"))?;
        Ok(key)
    }

    /// The IMPORT KEY data field for this key (inverse of [`Self::import`]).
    pub fn to_import_tlvs(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        match self {
            KeyMaterial::Rsa(k) => {
                let half = k.size() / 2;
                let primes = k.primes();
                let one = BigUint::from(1u8);
                // Keys are precomputed wherever they are made; the fallback
                // only keeps this total.
                let crt_exponent = |i: usize, pre: Option<&BigUint>| {
                    Zeroizing::new(pre.cloned().unwrap_or_else(|| k.d() % (&primes[i] - &one)))
                };
                let (dp, dq) = (crt_exponent(0, k.dp()), crt_exponent(1, k.dq()));
                let crt = Zeroizing::new(k.crt_coefficient().unwrap_or_default());
                let parts: [(u32, &BigUint); 5] = [
                    (0x01, &primes[0]),
                    (0x02, &primes[1]),
                    (0x03, &dp),
                    (0x04, &dq),
                    (0x05, &crt),
                ];
                for (tag, n) in parts {
                    let bytes = Zeroizing::new(n.to_bytes_be());
                    tlv::write(&mut out, tag, &pad_be(&bytes, half));
                }
            }
            KeyMaterial::P256(k) => {
                let mut bytes = k.to_bytes();
                tlv::write(&mut out, 0x06, &bytes);
                bytes.as_mut_slice().zeroize();
            }
            KeyMaterial::P384(k) => {
                let mut bytes = k.to_bytes();
                tlv::write(&mut out, 0x06, &bytes);
                bytes.as_mut_slice().zeroize();
            }
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
                        oid: oid::X25519,
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
        use ecdsa::hazmat::SignPrimitive;
        match self {
            KeyMaterial::Rsa(k) => {
                let size = k.size();
                if input.len() != size {
                    return Err(KeyError::InvalidInput(
                        "RSA input must be as long as the modulus",
                    ));
                }
                if &BigUint::from_bytes_be(input) >= k.n() {
                    return Err(KeyError::InvalidInput("RSA input is not below the modulus"));
                }
                k.private_op(input)
                    .map_err(|_| KeyError::InvalidInput("RSA operation failed"))
            }
            // The scalar signs directly (RFC 6979 nonces, as `SigningKey`
            // does): building a `SigningKey` would also compute the public
            // key, which doubled the time of every signature.
            // libcrypto on Unix, RFC 6979 on RustCrypto (ec_key.rs).
            KeyMaterial::P256(k) => {
                let z: [u8; 32] = fit_hash(input, 32).try_into().expect("fitted to 32");
                k.sign_prehashed(&z)
                    .map_err(|_| KeyError::InvalidInput("ECDSA signing failed"))
            }
            KeyMaterial::P384(k) => {
                let d = Zeroizing::new(k.to_nonzero_scalar());
                let z = p384::FieldBytes::clone_from_slice(&fit_hash(input, 48));
                let (sig, _) = d
                    .try_sign_prehashed_rfc6979::<sha2::Sha384>(&z, &[])
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
    /// the NIST curves (peer = uncompressed point), the X25519 output
    /// otherwise (peer = 32 bytes; an all-zero result is refused).
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let uncompressed = |len: usize| peer.len() == len && peer[0] == 0x04;
        match self {
            KeyMaterial::P256(k) => {
                if !uncompressed(65) {
                    return Err(KeyError::InvalidInput(
                        "peer key must be an uncompressed P-256 point",
                    ));
                }
                k.ecdh(peer)
                    .map_err(|_| KeyError::InvalidInput("peer point not on the curve"))
            }
            KeyMaterial::P384(k) => {
                if !uncompressed(97) {
                    return Err(KeyError::InvalidInput(
                        "peer key must be an uncompressed P-384 point",
                    ));
                }
                let pk = p384::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| KeyError::InvalidInput("peer point not on the curve"))?;
                let mut scalar = k.to_nonzero_scalar();
                let shared = p384::ecdh::diffie_hellman(&scalar, pk.as_affine());
                scalar.zeroize();
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

    /// PKCS#8 DER (version 1, without the optional public key), as the
    /// card file stores keys. Ed25519 and X25519 follow RFC 8410: the
    /// private key field holds an OCTET STRING of the 32 key bytes.
    pub fn to_storage(&self) -> Zeroizing<Vec<u8>> {
        let doc = match self {
            KeyMaterial::Rsa(k) => k.to_pkcs8_der(),
            KeyMaterial::P256(k) => k.to_pkcs8_der(),
            KeyMaterial::P384(k) => k.to_pkcs8_der(),
            // Not ed25519-dalek's own encoding: that is a version 2
            // OneAsymmetricKey with the public key, which OpenSSL 3.0
            // cannot read.
            KeyMaterial::Ed25519(k) => return rfc8410_pkcs8(oid::ED25519, k.as_bytes()),
            KeyMaterial::X25519(k) => {
                return rfc8410_pkcs8(oid::X25519, &Zeroizing::new(k.to_bytes())[..])
            }
        };
        // `SecretDocument` zeroizes its own copy on drop.
        Zeroizing::new(doc.expect("encoding a valid key").as_bytes().to_vec())
    }

    /// Inverse of [`Self::to_storage`]; the key must be of `alg` (for RSA,
    /// of that modulus size).
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

    /// Any supported PKCS#8 private key, its type read from the OID: RSA
    /// 1024/2048/3072/4096 with e = 65537, P-256, P-384, Ed25519, X25519.
    pub fn from_pkcs8_der(der_bytes: &[u8]) -> Result<KeyMaterial, KeyError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der_bytes)
            .map_err(|_| KeyError::InvalidKey("not PKCS#8"))?;
        let oid = info.algorithm.oid;
        if oid == oid::RSA {
            // rsa 0.9 validates the decoded key and precomputes CRT values.
            let mut key = RsaPrivateKey::from_pkcs8_der(der_bytes)
                .map_err(|_| KeyError::InvalidKey("bad RSA key"))?;
            key.precompute()
                .map_err(|_| KeyError::InvalidKey("bad RSA key"))?;
            if rsa_algorithm(&key).is_none() || key.e() != &BigUint::from(RSA_EXPONENT) {
                return Err(KeyError::InvalidKey(
                    "RSA keys must be 1024, 2048, 3072 or 4096 bits with e = 65537",
                ));
            }
            Ok(KeyMaterial::Rsa(Box::new(RsaKey::new(key))))
        } else if oid == oid::EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| KeyError::InvalidKey("EC key without a named curve"))?;
            if curve == oid::P256 {
                p256::SecretKey::from_pkcs8_der(der_bytes)
                    .map(KeyMaterial::from)
                    .map_err(|_| KeyError::InvalidKey("bad P-256 key"))
            } else if curve == oid::P384 {
                p384::SecretKey::from_pkcs8_der(der_bytes)
                    .map(KeyMaterial::P384)
                    .map_err(|_| KeyError::InvalidKey("bad P-384 key"))
            } else {
                Err(KeyError::UnsupportedAlgorithm)
            }
        } else if oid == oid::ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(der_bytes)
                .map(|k| KeyMaterial::Ed25519(Box::new(k)))
                .map_err(|_| KeyError::InvalidKey("bad Ed25519 key"))
        } else if oid == oid::X25519 {
            let inner = der::asn1::OctetStringRef::from_der(info.private_key)
                .map_err(|_| KeyError::InvalidKey("bad X25519 key"))?;
            let mut raw: [u8; 32] = inner
                .as_bytes()
                .try_into()
                .map_err(|_| KeyError::InvalidKey("bad X25519 key"))?;
            let key = x25519_dalek::StaticSecret::from(raw);
            raw.zeroize();
            Ok(KeyMaterial::X25519(Box::new(key)))
        } else {
            Err(KeyError::UnsupportedAlgorithm)
        }
    }
}

/// Running the `openssl` command line from tests. A missing binary is a
/// test failure with a clear message, never a skip.
#[cfg(test)]
pub(crate) mod openssl_cli {
    use std::path::PathBuf;

    /// Runs `openssl` and requires success.
    pub(crate) fn openssl(args: &[&str]) -> std::process::Output {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs the `openssl` command line, which could not be run ({e}); \
                     install it (apt-get install -y openssl)"
                )
            });
        assert!(
            out.status.success(),
            "openssl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub(crate) fn pem(label: &str, der: &[u8]) -> String {
        der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM")
    }

    /// A temporary directory whose files are named by plain strings.
    pub(crate) struct Dir(tempfile::TempDir);

    impl Dir {
        pub(crate) fn new() -> Dir {
            Dir(tempfile::tempdir().expect("temporary directory"))
        }

        pub(crate) fn path(&self, name: &str) -> String {
            let p: PathBuf = self.0.path().join(name);
            p.to_string_lossy().into_owned()
        }

        /// Writes a file and returns its path.
        pub(crate) fn write(&self, name: &str, data: impl AsRef<[u8]>) -> String {
            let p = self.path(name);
            std::fs::write(&p, data).expect("writing a test file");
            p
        }

        pub(crate) fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.path(name)).expect("reading a test file")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::openssl_cli::{openssl, pem, Dir};
    use super::*;
    use pkcs8::DecodePublicKey;
    use sha2::{Digest, Sha256, Sha384};
    use signature::hazmat::PrehashVerifier;
    use signature::Verifier;

    const ALL_FAST: [AlgorithmId; 6] = [
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
        AlgorithmId::X25519,
    ];

    /// EMSA-PKCS1-v1_5 of a SHA-256 DigestInfo (RFC 8017, 9.2), as a host
    /// builds it before a raw RSA signature.
    fn pkcs1_sha256_block(msg: &[u8], k: usize) -> Vec<u8> {
        let mut t = hex::decode("3031300d060960864801650304020105000420").unwrap();
        t.extend_from_slice(&Sha256::digest(msg));
        let mut block = vec![0x00, 0x01];
        block.resize(k - t.len() - 1, 0xFF);
        block.push(0x00);
        block.extend_from_slice(&t);
        block
    }

    fn tag86(key: &KeyMaterial) -> Vec<u8> {
        tlv::find(&key.public_key_tlvs(), 0x86)
            .expect("tag 86")
            .to_vec()
    }

    fn rsa_public(key: &KeyMaterial) -> rsa::RsaPublicKey {
        rsa::RsaPublicKey::from_public_key_der(&key.public_key_spki_der()).unwrap()
    }

    fn rsa_inner(key: &KeyMaterial) -> &RsaPrivateKey {
        match key {
            KeyMaterial::Rsa(k) => k,
            _ => panic!("not RSA"),
        }
    }

    #[test]
    fn generate_gives_the_requested_algorithm() {
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            assert_eq!(k.algorithm(), alg);
            assert_eq!(format!("{k:?}"), format!("KeyMaterial({alg:?})"));
        }
        for alg in [
            AlgorithmId::TripleDes,
            AlgorithmId::Aes192,
            AlgorithmId::PinPuk,
            AlgorithmId::Unknown(0x42),
        ] {
            assert_eq!(
                KeyMaterial::generate(alg).unwrap_err(),
                KeyError::UnsupportedAlgorithm
            );
        }
        let k = KeyMaterial::generate(AlgorithmId::Rsa1024).unwrap();
        let r = rsa_inner(&k);
        assert_eq!(r.e(), &BigUint::from(65537u32));
        assert!(
            r.dp().is_some() && r.dq().is_some(),
            "CRT values precomputed"
        );
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = KeyMaterial::import(AlgorithmId::EccP256, &tlv::encode(0x06, &[0x11; 32])).unwrap();
        let shown = format!("{k:?} {k:#?}");
        assert_eq!(shown, "KeyMaterial(EccP256) KeyMaterial(EccP256)");
        assert!(!shown.contains("11"));
    }

    #[test]
    fn public_key_template_matches_the_spki() {
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            let tlvs = k.public_key_tlvs();
            let spki_der = k.public_key_spki_der();
            let spki = spki::SubjectPublicKeyInfoRef::from_der(&spki_der).unwrap();
            let raw = spki.subject_public_key.raw_bytes();
            match alg {
                AlgorithmId::Rsa1024 | AlgorithmId::Rsa2048 => {
                    assert_eq!(spki.algorithm.oid, oid::RSA);
                    let parsed = tlv::parse_all(&tlvs).unwrap();
                    assert_eq!(parsed.len(), 2);
                    let n = tlv::find(&tlvs, 0x81).unwrap();
                    assert_eq!(n.len() * 8, alg.rsa_bits().unwrap(), "no sign byte");
                    assert!(n[0] & 0x80 != 0);
                    assert_eq!(tlv::find(&tlvs, 0x82).unwrap(), [1, 0, 1]);
                    let public = rsa_public(&k);
                    assert_eq!(public.n().to_bytes_be(), n);
                }
                AlgorithmId::EccP256 | AlgorithmId::EccP384 => {
                    let len = if alg == AlgorithmId::EccP256 { 65 } else { 97 };
                    let curve = if alg == AlgorithmId::EccP256 {
                        oid::P256
                    } else {
                        oid::P384
                    };
                    assert_eq!(spki.algorithm.oid, oid::EC);
                    assert_eq!(spki.algorithm.parameters_oid().unwrap(), curve);
                    let point = tag86(&k);
                    assert_eq!((point.len(), point[0]), (len, 0x04));
                    assert_eq!(point, raw);
                }
                AlgorithmId::Ed25519 => {
                    assert_eq!(spki.algorithm.oid, oid::ED25519);
                    assert!(spki.algorithm.parameters.is_none());
                    assert_eq!(tag86(&k), raw);
                    assert_eq!(raw.len(), 32);
                }
                AlgorithmId::X25519 => {
                    assert_eq!(spki.algorithm.oid, oid::X25519);
                    assert!(spki.algorithm.parameters.is_none());
                    assert_eq!(tag86(&k), raw);
                    let KeyMaterial::X25519(s) = &k else {
                        unreachable!()
                    };
                    assert_eq!(raw, x25519_dalek::PublicKey::from(s.as_ref()).as_bytes());
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn rsa_signatures_verify_with_pkcs1_v15() {
        for alg in [AlgorithmId::Rsa1024, AlgorithmId::Rsa2048] {
            let k = KeyMaterial::generate(alg).unwrap();
            let size = alg.rsa_bits().unwrap() / 8;
            let msg = b"signed by a virtual PIV card";
            let sig = k.sign_or_decrypt(&pkcs1_sha256_block(msg, size)).unwrap();
            assert_eq!(sig.len(), size);
            let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_public(&k));
            verifier
                .verify(msg, &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
                .expect("signature verifies");
            // Not the modulus length, or not below the modulus.
            for bad in [
                vec![1; size - 1],
                vec![1; size + 1],
                vec![],
                vec![0xFF; size],
            ] {
                assert!(matches!(
                    k.sign_or_decrypt(&bad),
                    Err(KeyError::InvalidInput(_))
                ));
            }
            let n = rsa_public(&k).n().to_bytes_be();
            assert!(matches!(
                k.sign_or_decrypt(&n),
                Err(KeyError::InvalidInput(_))
            ));
            // Zero and one are their own results: output keeps its length.
            let mut one = vec![0; size];
            assert_eq!(k.sign_or_decrypt(&one).unwrap().to_vec(), one);
            one[size - 1] = 1;
            assert_eq!(k.sign_or_decrypt(&one).unwrap().to_vec(), one);
        }
    }

    #[test]
    fn rsa_decrypts_a_pkcs1_v15_ciphertext_to_the_padded_block() {
        let k = KeyMaterial::generate(AlgorithmId::Rsa2048).unwrap();
        let secret = b"a 16 byte secret";
        for _ in 0..4 {
            let ct = rsa_public(&k)
                .encrypt(&mut OsRng, rsa::Pkcs1v15Encrypt, secret)
                .unwrap();
            let block = k.sign_or_decrypt(&ct).unwrap();
            assert_eq!(block.len(), 256, "left-padded to the modulus length");
            assert_eq!((block[0], block[1]), (0x00, 0x02));
            let sep = 2 + block[2..].iter().position(|b| *b == 0).unwrap();
            assert!(sep >= 10, "at least 8 padding bytes");
            assert_eq!(&block[sep + 1..], secret);
        }
    }

    #[test]
    fn ecdsa_signatures_verify_for_every_hash_length() {
        let msg = b"ECDSA over a host hash";
        // P-256 with SHA-256, with a longer hash (truncated) and shorter ones.
        let k = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&k.public_key_spki_der()).unwrap();
        let sig = k.sign_or_decrypt(&Sha256::digest(msg)).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&sig).expect("DER SEQUENCE{r,s}");
        vk.verify(msg, &sig).expect("P-256 over SHA-256");
        let h384 = Sha384::digest(msg);
        let sig = p256::ecdsa::Signature::from_der(&k.sign_or_decrypt(&h384).unwrap()).unwrap();
        vk.verify_prehash(&h384[..32], &sig)
            .expect("leftmost 32 bytes");
        let sha1 = sha1::Sha1::digest(msg);
        let sig = p256::ecdsa::Signature::from_der(&k.sign_or_decrypt(&sha1).unwrap()).unwrap();
        let mut padded = vec![0u8; 12];
        padded.extend_from_slice(&sha1);
        vk.verify_prehash(&padded, &sig).expect("left-padded SHA-1");
        vk.verify_prehash(&sha1, &sig)
            .expect("same as FIPS 186-4 bits2int");
        let sig = p256::ecdsa::Signature::from_der(&k.sign_or_decrypt(&[7]).unwrap()).unwrap();
        let mut seven = [0u8; 32];
        seven[31] = 7;
        vk.verify_prehash(&seven, &sig).expect("one-byte input");
        let sig = p256::ecdsa::Signature::from_der(&k.sign_or_decrypt(&[]).unwrap()).unwrap();
        vk.verify_prehash(&[0; 32], &sig).expect("empty input");

        // P-384 with SHA-384 and with SHA-256 (left-padded).
        let k = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        let vk = p384::ecdsa::VerifyingKey::from_public_key_der(&k.public_key_spki_der()).unwrap();
        let sig = p384::ecdsa::Signature::from_der(&k.sign_or_decrypt(&h384).unwrap()).unwrap();
        vk.verify(msg, &sig).expect("P-384 over SHA-384");
        let h256 = Sha256::digest(msg);
        let sig = p384::ecdsa::Signature::from_der(&k.sign_or_decrypt(&h256).unwrap()).unwrap();
        vk.verify_prehash(&h256, &sig).expect("P-384 over SHA-256");
        let h512 = sha2::Sha512::digest(msg);
        let sig = p384::ecdsa::Signature::from_der(&k.sign_or_decrypt(&h512).unwrap()).unwrap();
        vk.verify_prehash(&h512[..48], &sig)
            .expect("SHA-512 truncated");
    }

    #[test]
    fn ed25519_signs_the_whole_message() {
        let k = KeyMaterial::generate(AlgorithmId::Ed25519).unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&tag86(&k).try_into().unwrap()).unwrap();
        for msg in [&b""[..], b"x", &[0xA5; 5000]] {
            let sig = k.sign_or_decrypt(msg).unwrap();
            assert_eq!(sig.len(), 64);
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            vk.verify_strict(msg, &sig).expect("Ed25519 verifies");
        }
        // RFC 8032 test 1: the empty message under a known seed.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let k = KeyMaterial::import(AlgorithmId::Ed25519, &tlv::encode(0x07, &seed)).unwrap();
        assert_eq!(
            hex::encode(tag86(&k)),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(&*k.sign_or_decrypt(b"").unwrap()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn ecdh_agrees_with_an_independent_peer() {
        // P-256
        let k = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let peer = p256::ecdh::EphemeralSecret::random(&mut OsRng);
        let peer_point = peer.public_key().to_encoded_point(false);
        let ours = k.ecdh(peer_point.as_bytes()).unwrap();
        let theirs = peer.diffie_hellman(&p256::PublicKey::from_sec1_bytes(&tag86(&k)).unwrap());
        assert_eq!(ours.as_slice(), theirs.raw_secret_bytes().as_slice());
        assert_eq!(ours.len(), 32);
        // P-384
        let k = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        let peer = p384::ecdh::EphemeralSecret::random(&mut OsRng);
        let peer_point = peer.public_key().to_encoded_point(false);
        let ours = k.ecdh(peer_point.as_bytes()).unwrap();
        let theirs = peer.diffie_hellman(&p384::PublicKey::from_sec1_bytes(&tag86(&k)).unwrap());
        assert_eq!(ours.as_slice(), theirs.raw_secret_bytes().as_slice());
        assert_eq!(ours.len(), 48);
        // X25519
        let k = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        let peer = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
        let peer_public = x25519_dalek::PublicKey::from(&peer);
        let ours = k.ecdh(peer_public.as_bytes()).unwrap();
        let card_public: [u8; 32] = tag86(&k).try_into().unwrap();
        let theirs = peer.diffie_hellman(&x25519_dalek::PublicKey::from(card_public));
        assert_eq!(ours.as_slice(), theirs.as_bytes());
    }

    #[test]
    fn ecdh_refuses_bad_peer_keys() {
        let k = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let good = p256::SecretKey::random(&mut OsRng)
            .public_key()
            .to_encoded_point(false);
        let good = good.as_bytes();
        let compressed = p256::SecretKey::random(&mut OsRng)
            .public_key()
            .to_encoded_point(true);
        let mut off_curve = good.to_vec();
        off_curve[64] ^= 1;
        let mut bad_prefix = good.to_vec();
        bad_prefix[0] = 0x06;
        for bad in [
            &[][..],
            &[0x00][..],
            compressed.as_bytes(),
            &off_curve,
            &bad_prefix,
            &good[..64],
            &[0x04; 65],
        ] {
            assert!(
                matches!(k.ecdh(bad), Err(KeyError::InvalidInput(_))),
                "{}",
                hex::encode(bad)
            );
        }
        let p384 = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        assert!(matches!(p384.ecdh(good), Err(KeyError::InvalidInput(_))));

        let x = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [&[0u8; 32][..], &one, &[9u8; 31], &[9u8; 33]] {
            assert!(
                matches!(x.ecdh(bad), Err(KeyError::InvalidInput(_))),
                "{}",
                hex::encode(bad)
            );
        }
        assert_eq!(x.sign_or_decrypt(&[1; 32]), Err(KeyError::WrongKeyType));
        for alg in [AlgorithmId::Rsa1024, AlgorithmId::Ed25519] {
            let k = KeyMaterial::generate(alg).unwrap();
            assert_eq!(k.ecdh(good), Err(KeyError::WrongKeyType));
            assert_eq!(k.ecdh(&[9; 32]), Err(KeyError::WrongKeyType));
        }
    }

    #[test]
    fn import_round_trip_keeps_the_key() {
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            let data = k.to_import_tlvs();
            let imported = KeyMaterial::import(alg, &data).unwrap();
            assert_eq!(imported.algorithm(), alg);
            assert_eq!(
                imported.public_key_spki_der(),
                k.public_key_spki_der(),
                "{alg:?}"
            );
            assert_eq!(*imported.to_import_tlvs(), *data, "{alg:?}");
            // Policy tags and unknown tags are ignored.
            let mut with_policy = data.to_vec();
            with_policy.extend_from_slice(&[0xAA, 0x01, 0x03, 0xAB, 0x01, 0x02, 0x5C, 0x00]);
            let imported = KeyMaterial::import(alg, &with_policy).unwrap();
            assert_eq!(imported.public_key_spki_der(), k.public_key_spki_der());
        }
    }

    #[test]
    fn import_takes_an_rsa_key_made_elsewhere() {
        // A key from the rsa crate itself, encoded the way ykman does it
        // (every value padded to half the modulus), then as a host that
        // sends minimal values and one that adds an extra zero byte.
        let theirs = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let p = &theirs.primes()[0];
        let q = &theirs.primes()[1];
        let one = BigUint::from(1u8);
        let dp = theirs.d() % (p - &one);
        let dq = theirs.d() % (q - &one);
        let qinv = theirs.crt_coefficient().unwrap();
        let values = [p.clone(), q.clone(), dp, dq, qinv];
        let encode = |f: &dyn Fn(&[u8]) -> Vec<u8>| {
            let mut out = Vec::new();
            for (i, v) in values.iter().enumerate() {
                tlv::write(&mut out, i as u32 + 1, &f(&v.to_bytes_be()));
            }
            out
        };
        let padded = encode(&|b| pad_be(b, 64).to_vec());
        let minimal = encode(&|b| b.to_vec());
        let extra_zero = encode(&|b| pad_be(b, 65).to_vec());
        let spki = theirs.to_public_key().to_public_key_der().unwrap();
        for data in [padded, minimal, extra_zero] {
            let k = KeyMaterial::import(AlgorithmId::Rsa1024, &data).unwrap();
            assert_eq!(k.public_key_spki_der(), spki.as_bytes());
            let block = pkcs1_sha256_block(b"m", 128);
            let sig = k.sign_or_decrypt(&block).unwrap();
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(theirs.to_public_key())
                .verify(b"m", &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
                .unwrap();
        }
        // EC: the scalar bytes of an independently made key.
        let sk = p256::SecretKey::random(&mut OsRng);
        let k =
            KeyMaterial::import(AlgorithmId::EccP256, &tlv::encode(0x06, &sk.to_bytes())).unwrap();
        assert_eq!(
            k.public_key_spki_der(),
            sk.public_key().to_public_key_der().unwrap().as_bytes()
        );
    }

    /// The direct scalar signature is RustCrypto's `SigningKey` signature,
    /// byte for byte (both use RFC 6979 nonces with the curve's hash), for
    /// hashes shorter, equal to and longer than the curve.
    #[test]
    fn ecdsa_matches_signing_key_exactly() {
        use signature::hazmat::PrehashSigner;
        let p256 = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let p384 = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        for len in [20, 32, 48, 64] {
            let hash: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(29)).collect();
            let (KeyMaterial::P256(a), KeyMaterial::P384(b)) = (&p256, &p384) else {
                unreachable!()
            };
            // P-256 signs in libcrypto on Unix (random-hedged nonces): the
            // RustCrypto engine's bytes are compared, the card's answer is
            // verified.
            let want: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&**a)
                .sign_prehash(&fit_hash(&hash, 32))
                .unwrap();
            let z: [u8; 32] = fit_hash(&hash, 32).try_into().unwrap();
            assert_eq!(
                *a.sign_prehashed_rustcrypto(&z).unwrap(),
                want.to_der().as_bytes()
            );
            {
                use signature::hazmat::PrehashVerifier;
                let vk = p256::ecdsa::VerifyingKey::from(a.public_key());
                let got = p256::ecdsa::Signature::from_der(&p256.sign_or_decrypt(&hash).unwrap())
                    .unwrap();
                vk.verify_prehash(&z, &got).unwrap();
            }
            let want: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(b)
                .sign_prehash(&fit_hash(&hash, 48))
                .unwrap();
            assert_eq!(
                *p384.sign_or_decrypt(&hash).unwrap(),
                want.to_der().as_bytes()
            );
        }
    }

    #[test]
    fn rsa_without_precomputed_values_still_works() {
        let k = KeyMaterial::generate(AlgorithmId::Rsa1024).unwrap();
        let tlvs = k.to_import_tlvs();
        let KeyMaterial::Rsa(inner) = k else {
            unreachable!()
        };
        let mut raw = inner.into_inner();
        raw.clear_precomputed();
        let bare = KeyMaterial::Rsa(Box::new(RsaKey::new(raw)));
        assert_eq!(*bare.to_import_tlvs(), *tlvs);
        let sig = bare
            .sign_or_decrypt(&pkcs1_sha256_block(b"m", 128))
            .unwrap();
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_public(&bare))
            .verify(b"m", &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
            .unwrap();
    }

    /// Replaces the value of `tag` in an IMPORT data field.
    fn replace(data: &[u8], tag: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in tlv::parse_all(data).unwrap() {
            tlv::write(&mut out, t.tag, if t.tag == tag { value } else { t.value });
        }
        out
    }

    fn without(data: &[u8], tag: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for t in tlv::parse_all(data)
            .unwrap()
            .into_iter()
            .filter(|t| t.tag != tag)
        {
            tlv::write(&mut out, t.tag, t.value);
        }
        out
    }

    fn invalid_key(r: Result<KeyMaterial, KeyError>) -> bool {
        matches!(r, Err(KeyError::InvalidKey(_)))
    }

    #[test]
    fn malformed_rsa_imports_are_refused() {
        let alg = AlgorithmId::Rsa1024;
        let k = KeyMaterial::generate(alg).unwrap();
        let good = k.to_import_tlvs();
        // Truncated anywhere.
        for n in 0..good.len() {
            assert!(invalid_key(KeyMaterial::import(alg, &good[..n])), "{n}");
        }
        // Each component missing, empty, zero, too long.
        for tag in 1..=5 {
            assert!(invalid_key(KeyMaterial::import(alg, &without(&good, tag))));
            assert!(invalid_key(KeyMaterial::import(
                alg,
                &replace(&good, tag, &[])
            )));
            assert!(invalid_key(KeyMaterial::import(
                alg,
                &replace(&good, tag, &[0; 64])
            )));
            assert!(invalid_key(KeyMaterial::import(
                alg,
                &replace(&good, tag, &[0x55; 65])
            )));
        }
        // Inconsistent CRT values: each of dP, dQ, qInv off by one.
        for tag in 3..=5 {
            let mut v = tlv::find(&good, tag).unwrap().to_vec();
            *v.last_mut().unwrap() ^= 1;
            assert_eq!(
                KeyMaterial::import(alg, &replace(&good, tag, &v)).unwrap_err(),
                KeyError::InvalidKey("CRT values do not match p and q"),
                "tag {tag}"
            );
        }
        // p and q swapped: qInv no longer matches.
        let p = tlv::find(&good, 1).unwrap().to_vec();
        let q = tlv::find(&good, 2).unwrap().to_vec();
        let swapped = replace(&replace(&good, 1, &q), 2, &p);
        assert!(invalid_key(KeyMaterial::import(alg, &swapped)));
        // p = q.
        assert!(invalid_key(KeyMaterial::import(
            alg,
            &replace(&good, 2, &p)
        )));
        // p * q of the wrong size: for the algorithm, and a short prime.
        assert!(invalid_key(KeyMaterial::import(
            AlgorithmId::Rsa2048,
            &good
        )));
        assert!(invalid_key(KeyMaterial::import(AlgorithmId::Rsa2048, &{
            // 1024-bit key components zero-padded to 2048-bit lengths.
            let mut out = Vec::new();
            for t in tlv::parse_all(&good).unwrap() {
                tlv::write(&mut out, t.tag, &pad_be(t.value, 128));
            }
            out
        })));
        assert!(invalid_key(KeyMaterial::import(
            alg,
            &replace(&good, 1, &p[1..])
        )));
        let mut small_p = p.clone();
        small_p[0] = 0x01;
        assert!(invalid_key(KeyMaterial::import(
            alg,
            &replace(&good, 1, &small_p)
        )));
        // A composite "prime" with the right size.
        let mut composite = p.clone();
        *composite.last_mut().unwrap() ^= 0x02;
        assert!(invalid_key(KeyMaterial::import(
            alg,
            &replace(&good, 1, &composite)
        )));
        // Even "primes".
        let mut even = p.clone();
        *even.last_mut().unwrap() &= 0xFE;
        assert!(invalid_key(KeyMaterial::import(
            alg,
            &replace(&good, 1, &even)
        )));
    }

    #[test]
    fn malformed_other_imports_are_refused() {
        use AlgorithmId::*;
        let p256_order =
            hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                .unwrap();
        let cases: Vec<(AlgorithmId, Vec<u8>)> = vec![
            (EccP256, vec![]),
            (EccP256, tlv::encode(0x06, &[1; 31])),
            (EccP256, tlv::encode(0x06, &[1; 33])),
            (EccP256, tlv::encode(0x06, &[0; 32])),
            (EccP256, tlv::encode(0x06, &p256_order)),
            (EccP256, tlv::encode(0x06, &[0xFF; 32])),
            (EccP256, tlv::encode(0x07, &[1; 32])),
            (EccP384, tlv::encode(0x06, &[1; 32])),
            (EccP384, tlv::encode(0x06, &[0; 48])),
            (EccP384, tlv::encode(0x06, &[0xFF; 48])),
            (Ed25519, tlv::encode(0x07, &[1; 31])),
            (Ed25519, tlv::encode(0x07, &[1; 33])),
            (Ed25519, tlv::encode(0x08, &[1; 32])),
            (X25519, tlv::encode(0x08, &[1; 31])),
            (X25519, tlv::encode(0x07, &[1; 32])),
            (X25519, vec![0x08]),
            (X25519, vec![0x08, 0x21, 0x00]),
            (X25519, vec![0x08, 0x84, 0, 0, 0, 32]),
        ];
        for (alg, data) in cases {
            assert!(
                invalid_key(KeyMaterial::import(alg, &data)),
                "{alg:?} {}",
                hex::encode(&data)
            );
        }
        let mut order_minus_one = p256_order.clone();
        *order_minus_one.last_mut().unwrap() -= 1;
        assert!(KeyMaterial::import(EccP256, &tlv::encode(0x06, &order_minus_one)).is_ok());
        for alg in [TripleDes, Aes128, PinPuk, Unknown(0x42)] {
            assert_eq!(
                KeyMaterial::import(alg, &tlv::encode(0x07, &[1; 32])).unwrap_err(),
                KeyError::UnsupportedAlgorithm
            );
        }
    }

    /// Random mutations of valid IMPORT data and random TLV soups: an error
    /// or a key, never a panic.
    #[test]
    fn mutated_imports_never_panic() {
        use rand_core::RngCore;
        for alg in ALL_FAST {
            let good = KeyMaterial::generate(alg).unwrap().to_import_tlvs();
            for _ in 0..150 {
                let mut data = good.to_vec();
                let i = OsRng.next_u32() as usize % data.len();
                match OsRng.next_u32() % 3 {
                    0 => data[i] ^= 1 << (OsRng.next_u32() % 8),
                    1 => data.truncate(i),
                    _ => data.insert(i, OsRng.next_u32() as u8),
                }
                if let Ok(k) = KeyMaterial::import(alg, &data) {
                    assert_eq!(k.algorithm(), alg);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_import_data_never_panics(
            alg in proptest::sample::select(AlgorithmId::ASYMMETRIC.to_vec()),
            tlvs in proptest::collection::vec(
                (proptest::sample::select(vec![1u32, 2, 3, 4, 5, 6, 7, 8, 0xAA, 0xAB, 0x7F49]),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                0..7),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
        ) {
            let mut data = Vec::new();
            for (tag, value) in &tlvs {
                tlv::write(&mut data, *tag, value);
            }
            data.extend_from_slice(&tail);
            let _ = KeyMaterial::import(alg, &data);
            let _ = KeyMaterial::from_pkcs8_der(&data);
        }
    }

    #[test]
    fn storage_round_trip_is_standard_pkcs8() {
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            let stored = k.to_storage();
            let back = KeyMaterial::from_storage(alg, &stored).unwrap();
            assert_eq!(
                back.public_key_spki_der(),
                k.public_key_spki_der(),
                "{alg:?}"
            );
            assert_eq!(*back.to_import_tlvs(), *k.to_import_tlvs());
            let again = KeyMaterial::from_pkcs8_der(&stored).unwrap();
            assert_eq!(again.algorithm(), alg);
            // The crates' own PKCS#8 decoders read it.
            let spki = match alg {
                AlgorithmId::Rsa1024 | AlgorithmId::Rsa2048 => {
                    RsaPrivateKey::from_pkcs8_der(&stored)
                        .unwrap()
                        .to_public_key()
                        .to_public_key_der()
                        .unwrap()
                }
                AlgorithmId::EccP256 => p256::SecretKey::from_pkcs8_der(&stored)
                    .unwrap()
                    .public_key()
                    .to_public_key_der()
                    .unwrap(),
                AlgorithmId::EccP384 => p384::SecretKey::from_pkcs8_der(&stored)
                    .unwrap()
                    .public_key()
                    .to_public_key_der()
                    .unwrap(),
                AlgorithmId::Ed25519 => ed25519_dalek::SigningKey::from_pkcs8_der(&stored)
                    .unwrap()
                    .verifying_key()
                    .to_public_key_der()
                    .unwrap(),
                AlgorithmId::X25519 => {
                    // RFC 8410: PrivateKeyInfo { id-X25519, OCTET STRING {
                    // OCTET STRING (32) } }.
                    let info = pkcs8::PrivateKeyInfo::from_der(&stored).unwrap();
                    assert_eq!(info.algorithm.oid, oid::X25519);
                    assert!(info.algorithm.parameters.is_none());
                    assert_eq!(info.private_key.len(), 34);
                    assert_eq!(info.private_key[..2], [0x04, 0x20]);
                    continue;
                }
                _ => unreachable!(),
            };
            assert_eq!(spki.as_bytes(), k.public_key_spki_der());
        }
    }

    #[test]
    fn storage_refuses_mismatches_and_garbage() {
        let p256 = KeyMaterial::generate(AlgorithmId::EccP256)
            .unwrap()
            .to_storage();
        let rsa1024 = KeyMaterial::generate(AlgorithmId::Rsa1024)
            .unwrap()
            .to_storage();
        let ed = KeyMaterial::generate(AlgorithmId::Ed25519)
            .unwrap()
            .to_storage();
        for (alg, der) in [
            (AlgorithmId::EccP384, &p256),
            (AlgorithmId::Rsa2048, &rsa1024),
            (AlgorithmId::X25519, &ed),
            (AlgorithmId::Ed25519, &p256),
        ] {
            assert!(invalid_key(KeyMaterial::from_storage(alg, der)), "{alg:?}");
        }
        for der in [&p256, &rsa1024, &ed] {
            for n in 0..der.len() {
                assert!(KeyMaterial::from_pkcs8_der(&der[..n]).is_err(), "{n}");
            }
        }
        assert!(KeyMaterial::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        // RSA that the card cannot hold: e = 3, and a 1536-bit modulus.
        let e3 = RsaPrivateKey::new_with_exp(&mut OsRng, 1024, &BigUint::from(3u8)).unwrap();
        let odd = RsaPrivateKey::new(&mut OsRng, 1536).unwrap();
        for k in [e3, odd] {
            assert!(invalid_key(KeyMaterial::from_pkcs8_der(
                k.to_pkcs8_der().unwrap().as_bytes()
            )));
        }
        // A curve the card does not support.
        let p384_as_other = {
            let der = KeyMaterial::generate(AlgorithmId::EccP384)
                .unwrap()
                .to_storage();
            let curve = oid::P384.to_der().unwrap();
            let other = oid::P521.to_der().unwrap();
            let at = der.windows(curve.len()).position(|w| w == curve).unwrap();
            let mut v = der.to_vec();
            v[at..at + curve.len()].copy_from_slice(&other);
            v
        };
        assert_eq!(
            KeyMaterial::from_pkcs8_der(&p384_as_other).unwrap_err(),
            KeyError::UnsupportedAlgorithm
        );
    }

    #[test]
    fn rsa_4096_generates_and_signs() {
        // The only RSA-4096 generation in the unit tests: it is slow.
        let k = KeyMaterial::generate(AlgorithmId::Rsa4096).unwrap();
        assert_eq!(k.algorithm(), AlgorithmId::Rsa4096);
        let msg = b"four thousand ninety-six";
        let sig = k.sign_or_decrypt(&pkcs1_sha256_block(msg, 512)).unwrap();
        assert_eq!(sig.len(), 512);
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_public(&k))
            .verify(msg, &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
            .unwrap();
        let back = KeyMaterial::import(AlgorithmId::Rsa4096, &k.to_import_tlvs()).unwrap();
        assert_eq!(back.public_key_spki_der(), k.public_key_spki_der());
        let stored = KeyMaterial::from_storage(AlgorithmId::Rsa4096, &k.to_storage()).unwrap();
        assert_eq!(stored.public_key_spki_der(), k.public_key_spki_der());
    }

    // ---- the same checks by the openssl command line ----

    #[test]
    fn openssl_verifies_signatures_of_every_family() {
        let dir = Dir::new();
        let msg = b"checked by openssl";
        let msg_path = dir.write("msg.bin", msg);
        for alg in [
            AlgorithmId::Rsa2048,
            AlgorithmId::EccP256,
            AlgorithmId::EccP384,
            AlgorithmId::Ed25519,
        ] {
            let k = KeyMaterial::generate(alg).unwrap();
            let public = dir.write("pub.pem", pem("PUBLIC KEY", &k.public_key_spki_der()));
            let (sig, digest) = match alg {
                AlgorithmId::Rsa2048 => (
                    k.sign_or_decrypt(&pkcs1_sha256_block(msg, 256)).unwrap(),
                    "-sha256",
                ),
                AlgorithmId::EccP256 => {
                    (k.sign_or_decrypt(&Sha256::digest(msg)).unwrap(), "-sha256")
                }
                AlgorithmId::EccP384 => {
                    (k.sign_or_decrypt(&Sha384::digest(msg)).unwrap(), "-sha384")
                }
                _ => (k.sign_or_decrypt(msg).unwrap(), ""),
            };
            let sig_path = dir.write("sig.bin", &*sig);
            let out = if alg == AlgorithmId::Ed25519 {
                openssl(&[
                    "pkeyutl", "-verify", "-pubin", "-inkey", &public, "-rawin", "-in", &msg_path,
                    "-sigfile", &sig_path,
                ])
            } else {
                openssl(&[
                    "dgst",
                    digest,
                    "-verify",
                    &public,
                    "-signature",
                    &sig_path,
                    &msg_path,
                ])
            };
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains("Verified"), "{alg:?}: {said}");
        }
    }

    #[test]
    fn openssl_reads_our_keys_and_we_read_its_keys() {
        let dir = Dir::new();
        // Ours → openssl: the stored PKCS#8 gives openssl the same public key.
        for alg in ALL_FAST {
            let k = KeyMaterial::generate(alg).unwrap();
            let key = dir.write(&format!("{alg:?}.der"), &*k.to_storage());
            let spki = dir.path("spki.der");
            openssl(&[
                "pkey", "-inform", "DER", "-in", &key, "-pubout", "-outform", "DER", "-out", &spki,
            ]);
            assert_eq!(dir.read("spki.der"), k.public_key_spki_der(), "{alg:?}");
        }
        // openssl → ours: PKCS#8 from `openssl genpkey`, algorithm detected.
        for (alg, args) in [
            (
                AlgorithmId::Rsa2048,
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                AlgorithmId::EccP256,
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            (
                AlgorithmId::EccP384,
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            (AlgorithmId::Ed25519, &["-algorithm", "ED25519"]),
            (AlgorithmId::X25519, &["-algorithm", "X25519"]),
        ] {
            // genpkey's DER is the traditional format for RSA and EC; its
            // PEM is PKCS#8, which `pkcs8 -topk8` turns into DER.
            let key_pem = dir.path("theirs.pem");
            let mut cmd = vec!["genpkey"];
            cmd.extend_from_slice(args);
            cmd.extend_from_slice(&["-out", &key_pem]);
            openssl(&cmd);
            let key = dir.path("theirs.der");
            openssl(&[
                "pkcs8", "-topk8", "-nocrypt", "-in", &key_pem, "-outform", "DER", "-out", &key,
            ]);
            let spki = dir.path("theirs-spki.der");
            openssl(&[
                "pkey", "-inform", "DER", "-in", &key, "-pubout", "-outform", "DER", "-out", &spki,
            ]);
            let k = KeyMaterial::from_pkcs8_der(&dir.read("theirs.der")).unwrap();
            assert_eq!(k.algorithm(), alg);
            assert_eq!(
                k.public_key_spki_der(),
                dir.read("theirs-spki.der"),
                "{alg:?}"
            );
            let k = KeyMaterial::import(alg, &k.to_import_tlvs()).unwrap();
            assert_eq!(
                k.public_key_spki_der(),
                dir.read("theirs-spki.der"),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn openssl_agrees_on_rsa_decryption_and_ecdh() {
        let dir = Dir::new();
        // RSA: openssl encrypts with PKCS#1 v1.5, the card returns the block.
        let k = KeyMaterial::generate(AlgorithmId::Rsa2048).unwrap();
        let public = dir.write("rsa.pem", pem("PUBLIC KEY", &k.public_key_spki_der()));
        let secret = dir.write("secret.bin", b"wrapped key bytes");
        let ct = dir.path("ct.bin");
        openssl(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            &public,
            "-pkeyopt",
            "rsa_padding_mode:pkcs1",
            "-in",
            &secret,
            "-out",
            &ct,
        ]);
        let block = k.sign_or_decrypt(&dir.read("ct.bin")).unwrap();
        assert_eq!((block[0], block[1]), (0, 2));
        assert!(block.ends_with(b"\0wrapped key bytes"));

        // ECDH: openssl's peer key against the card key, both directions.
        for (alg, args) in [
            (
                AlgorithmId::EccP256,
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            (
                AlgorithmId::EccP384,
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            (AlgorithmId::X25519, &["-algorithm", "X25519"]),
        ] {
            let k = KeyMaterial::generate(alg).unwrap();
            let ours = dir.write("ours.pem", pem("PUBLIC KEY", &k.public_key_spki_der()));
            let peer = dir.path("peer.pem");
            let mut cmd = vec!["genpkey"];
            cmd.extend_from_slice(args);
            cmd.extend_from_slice(&["-out", &peer]);
            openssl(&cmd);
            let peer_spki = dir.path("peer.der");
            openssl(&[
                "pkey", "-in", &peer, "-pubout", "-outform", "DER", "-out", &peer_spki,
            ]);
            let peer_spki = dir.read("peer.der");
            let peer_public = spki::SubjectPublicKeyInfoRef::from_der(&peer_spki)
                .unwrap()
                .subject_public_key
                .raw_bytes()
                .to_vec();
            let secret = dir.path("shared.bin");
            openssl(&[
                "pkeyutl", "-derive", "-inkey", &peer, "-peerkey", &ours, "-out", &secret,
            ]);
            assert_eq!(
                k.ecdh(&peer_public).unwrap().to_vec(),
                dir.read("shared.bin"),
                "{alg:?}"
            );
        }
    }
}
