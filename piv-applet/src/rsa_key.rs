//! An RSA private key and the engine behind its private operation.
//!
//! The card's RSA keys live as `rsa::RsaPrivateKey` (RustCrypto), which
//! does everything but run fast: its portable bignum code needs about 4x
//! OpenSSL's time for an RSA-2048 signature, and a host that signs in a
//! loop (TLS client auth, ssh-agent, a Windows logon) feels it. On Unix,
//! with the `openssl` feature (on by default), the private operation runs
//! in the system's libcrypto instead, whose assembly Montgomery code is as
//! fast as a host's own OpenSSL. Both engines blind the input and check the
//! result with the public key before it leaves (fault-attack protection);
//! the Windows build, where there is no system OpenSSL to lean on, keeps
//! the RustCrypto engine.

use core::ops::Deref;

use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};
use zeroize::Zeroizing;

/// Why a private operation did not run. Carries no key data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaOpFailed;

/// A validated RSA private key (CRT values precomputed where it was made).
/// Read access goes through `Deref`; there is no mutable access, so the
/// engine's copy can never drift from the key.
pub struct RsaKey {
    key: RsaPrivateKey,
    /// The same key inside libcrypto, built on first use (loading it costs
    /// more than a signature) and freed by `RSA_free`, which clears the
    /// private components. `None` when the key cannot be loaded there.
    #[cfg(all(unix, feature = "openssl"))]
    engine: std::sync::OnceLock<Option<openssl::rsa::Rsa<openssl::pkey::Private>>>,
}

impl RsaKey {
    pub fn new(key: RsaPrivateKey) -> RsaKey {
        RsaKey {
            key,
            #[cfg(all(unix, feature = "openssl"))]
            engine: std::sync::OnceLock::new(),
        }
    }

    /// A new key of `bits` with e = 65537. On Unix with the `openssl`
    /// feature, libcrypto finds the primes (`RSA_generate_key_ex`, FIPS
    /// 186-4 style probable primes: several times faster than the `rsa`
    /// crate, BENCHMARKS.md) and its key becomes the engine at once; the
    /// RustCrypto half is rebuilt from the components, which validates the
    /// key and precomputes the CRT values.
    pub fn generate(bits: usize, exponent: u32) -> Result<RsaKey, RsaOpFailed> {
        #[cfg(all(unix, feature = "openssl"))]
        if let Some(key) = generate_in_openssl(bits, exponent) {
            return Ok(key);
        }
        RsaKey::generate_rustcrypto(bits, exponent)
    }

    /// Key generation on the portable engine (Windows; benchmarks).
    pub fn generate_rustcrypto(bits: usize, exponent: u32) -> Result<RsaKey, RsaOpFailed> {
        let mut key = RsaPrivateKey::new_with_exp(&mut OsRng, bits, &BigUint::from(exponent))
            .map_err(|_| RsaOpFailed)?;
        key.precompute().map_err(|_| RsaOpFailed)?;
        Ok(RsaKey::new(key))
    }

    /// The key itself, for callers that rebuild it (tests).
    pub fn into_inner(self) -> RsaPrivateKey {
        self.key
    }

    /// Which engine runs [`Self::private_op`], for benchmarks and logs.
    pub fn engine_name(&self) -> &'static str {
        #[cfg(all(unix, feature = "openssl"))]
        if self.openssl().is_some() {
            return "openssl";
        }
        "rustcrypto"
    }

    /// The raw private operation `input^d mod n` (the host did the
    /// padding), as many bytes as the modulus. The caller has checked that
    /// `input` is exactly that long and below the modulus.
    pub fn private_op(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, RsaOpFailed> {
        #[cfg(all(unix, feature = "openssl"))]
        if let Some(engine) = self.openssl() {
            let mut out = Zeroizing::new(vec![0u8; engine.size() as usize]);
            // RSA_NO_PADDING: libcrypto's RSA method blinds, uses CRT and
            // re-checks the result with e (redoing it without CRT on a
            // mismatch), the same protections as the RustCrypto path.
            if let Ok(n) = engine.private_decrypt(input, &mut out, openssl::rsa::Padding::NONE) {
                if n == out.len() {
                    return Ok(out);
                }
            }
            // Not expected for a key that loaded; the portable engine
            // still answers rather than failing the card's operation.
            tracing::warn!("libcrypto RSA operation failed; using the RustCrypto engine");
        }
        self.private_op_rustcrypto(input)
    }

    /// The portable engine: CRT with blinding, the result checked with the
    /// public key (`rsa::hazmat::rsa_decrypt_and_check`).
    pub fn private_op_rustcrypto(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, RsaOpFailed> {
        let c = BigUint::from_bytes_be(input);
        let m = Zeroizing::new(
            rsa::hazmat::rsa_decrypt_and_check(&self.key, Some(&mut OsRng), &c)
                .map_err(|_| RsaOpFailed)?,
        );
        let bytes = Zeroizing::new(m.to_bytes_be());
        let size = self.key.size();
        let mut out = Zeroizing::new(vec![0u8; size.saturating_sub(bytes.len())]);
        out.extend_from_slice(&bytes);
        Ok(out)
    }

    #[cfg(all(unix, feature = "openssl"))]
    fn openssl(&self) -> Option<&openssl::rsa::Rsa<openssl::pkey::Private>> {
        self.engine
            .get_or_init(|| load_into_openssl(&self.key))
            .as_ref()
    }
}

/// Builds libcrypto's copy of a two-prime key with its CRT values; `None`
/// for a key without them (they are precomputed wherever the card makes a
/// key, so this is only a guard).
#[cfg(all(unix, feature = "openssl"))]
fn load_into_openssl(key: &RsaPrivateKey) -> Option<openssl::rsa::Rsa<openssl::pkey::Private>> {
    use openssl::bn::BigNum;
    use rsa::traits::PrivateKeyParts;
    let [p, q] = key.primes() else {
        return None;
    };
    let crt = Zeroizing::new(key.crt_coefficient()?);
    // Secret inputs are copied into zeroized buffers on their way in;
    // libcrypto clears its own copies when the key is freed.
    let bn = |v: &BigUint| {
        let bytes = Zeroizing::new(v.to_bytes_be());
        BigNum::from_slice(&bytes).ok()
    };
    openssl::rsa::Rsa::from_private_components(
        bn(key.n())?,
        bn(key.e())?,
        bn(key.d())?,
        bn(p)?,
        bn(q)?,
        bn(key.dp()?)?,
        bn(key.dq()?)?,
        bn(&crt)?,
    )
    .ok()
}

/// A key made by libcrypto, with its RustCrypto twin; `None` if either
/// side refuses it (then the portable engine makes the key).
#[cfg(all(unix, feature = "openssl"))]
fn generate_in_openssl(bits: usize, exponent: u32) -> Option<RsaKey> {
    let e = openssl::bn::BigNum::from_u32(exponent).ok()?;
    let made = openssl::rsa::Rsa::generate_with_e(u32::try_from(bits).ok()?, &e).ok()?;
    // Secret components pass through wiped buffers on their way over.
    let big = |n: &openssl::bn::BigNumRef| {
        let bytes = Zeroizing::new(n.to_vec());
        BigUint::from_bytes_be(&bytes)
    };
    let (p, q) = (made.p()?, made.q()?);
    let mut key = RsaPrivateKey::from_components(
        big(made.n()),
        big(made.e()),
        big(made.d()),
        vec![big(p), big(q)],
    )
    .ok()?;
    key.precompute().ok()?;
    if key.size() * 8 != bits {
        return None;
    }
    let engine = std::sync::OnceLock::new();
    let _ = engine.set(Some(made));
    Some(RsaKey { key, engine })
}

impl Deref for RsaKey {
    type Target = RsaPrivateKey;
    fn deref(&self) -> &RsaPrivateKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both engines compute the same deterministic function, so their
    /// outputs must be identical byte for byte, for every key size.
    #[test]
    fn engines_agree() {
        for bits in [1024, 2048] {
            let key = RsaKey::new(RsaPrivateKey::new(&mut OsRng, bits).unwrap());
            for seed in 0u8..8 {
                let mut input = vec![seed; key.size()];
                input[0] = 0x00;
                input[1] = seed.wrapping_mul(37);
                let a = key.private_op(&input).unwrap();
                let b = key.private_op_rustcrypto(&input).unwrap();
                assert_eq!(*a, *b, "{bits}-bit key, input {seed}");
                assert_eq!(a.len(), key.size());
            }
        }
    }

    #[cfg(all(unix, feature = "openssl"))]
    #[test]
    fn unix_builds_use_libcrypto() {
        let key = RsaKey::new(RsaPrivateKey::new(&mut OsRng, 1024).unwrap());
        assert_eq!(key.engine_name(), "openssl");
    }

    /// A key from either generator signs, and its libcrypto half (where
    /// libcrypto made it) agrees with the RustCrypto half byte for byte.
    #[test]
    fn generated_keys_work_on_both_engines() {
        for key in [
            RsaKey::generate(1024, 65537).unwrap(),
            RsaKey::generate_rustcrypto(1024, 65537).unwrap(),
        ] {
            assert_eq!(key.size(), 128);
            assert_eq!(key.e(), &BigUint::from(65537u32));
            let mut input = vec![0x42; 128];
            input[0] = 0;
            let a = key.private_op(&input).unwrap();
            let b = key.private_op_rustcrypto(&input).unwrap();
            assert_eq!(*a, *b);
        }
    }

    #[test]
    fn key_without_crt_values_still_signs() {
        let mut raw = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        raw.clear_precomputed();
        let key = RsaKey::new(raw);
        assert_eq!(key.engine_name(), "rustcrypto");
        let out = key.private_op(&[0x01; 128]).unwrap();
        assert_eq!(out.len(), 128);
    }
}
