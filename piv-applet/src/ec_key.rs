//! A P-256 private key and the engine behind its private operations.
//!
//! As for RSA (`rsa_key.rs`): the key lives as a RustCrypto
//! `p256::SecretKey`, and on Unix, with the `openssl` feature (on by
//! default), ECDSA and ECDH run in the system's libcrypto, whose P-256 code
//! (constant-time, assembly on x86-64 and ARM) is several times faster than
//! the portable field arithmetic. The Windows build keeps the RustCrypto
//! engine.
//!
//! Nonces differ between the engines, and both are safe: RustCrypto signs
//! with RFC 6979 deterministic nonces; libcrypto's `ECDSA_do_sign` draws
//! each nonce with `BN_generate_dsa_nonce`, a hash of the private key, the
//! message digest and fresh random bytes, so a weak random generator alone
//! cannot reveal the key, and two signatures of one digest differ. Tests
//! check every signature with an independent verifier, not by comparing
//! bytes. P-384 stays on RustCrypto: libcrypto has no faster P-384 path on
//! these machines (BENCHMARKS.md).

use core::ops::Deref;

use ecdsa::hazmat::SignPrimitive;
use zeroize::{Zeroize, Zeroizing};

/// Why a private operation did not run. Carries no key data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcOpFailed;

/// A P-256 private key. Read access goes through `Deref`; there is no
/// mutable access, so the engine's copy can never drift from the key.
pub struct P256Key {
    key: p256::SecretKey,
    /// The same key inside libcrypto, built on first use and freed by
    /// `EC_KEY_free`, which clears the private scalar. `None` when it
    /// cannot be loaded there.
    #[cfg(all(unix, feature = "openssl"))]
    engine: std::sync::OnceLock<Option<engine::Engine>>,
}

impl P256Key {
    pub fn new(key: p256::SecretKey) -> P256Key {
        P256Key {
            key,
            #[cfg(all(unix, feature = "openssl"))]
            engine: std::sync::OnceLock::new(),
        }
    }

    /// Which engine runs the private operations, for benchmarks and logs.
    pub fn engine_name(&self) -> &'static str {
        #[cfg(all(unix, feature = "openssl"))]
        if self.openssl().is_some() {
            return "openssl";
        }
        "rustcrypto"
    }

    /// ECDSA over a digest already fitted to 32 bytes; DER `SEQUENCE {r,
    /// s}`.
    pub fn sign_prehashed(&self, z: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, EcOpFailed> {
        #[cfg(all(unix, feature = "openssl"))]
        if let Some(e) = self.openssl() {
            if let Ok(sig) = openssl::ecdsa::EcdsaSig::sign(z, &e.ec).and_then(|s| s.to_der()) {
                return Ok(Zeroizing::new(sig));
            }
            tracing::warn!("libcrypto ECDSA failed; using the RustCrypto engine");
        }
        self.sign_prehashed_rustcrypto(z)
    }

    /// The portable engine: the scalar signs directly with an RFC 6979
    /// nonce (building a `SigningKey` would also compute the public key,
    /// which doubled the time of every signature).
    pub fn sign_prehashed_rustcrypto(
        &self,
        z: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, EcOpFailed> {
        let d = Zeroizing::new(self.key.to_nonzero_scalar());
        let z = p256::FieldBytes::clone_from_slice(z);
        let (sig, _) = d
            .try_sign_prehashed_rfc6979::<sha2::Sha256>(&z, &[])
            .map_err(|_| EcOpFailed)?;
        Ok(Zeroizing::new(sig.to_der().as_bytes().to_vec()))
    }

    /// ECDH with a peer point, already checked to be an uncompressed
    /// SEC1 point: the shared X coordinate. A point off the curve fails.
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EcOpFailed> {
        #[cfg(all(unix, feature = "openssl"))]
        if let Some(e) = self.openssl() {
            // The RustCrypto parse runs first so that both engines refuse
            // exactly the same points.
            p256::PublicKey::from_sec1_bytes(peer).map_err(|_| EcOpFailed)?;
            if let Ok(z) = e.ecdh(peer) {
                return Ok(z);
            }
            tracing::warn!("libcrypto ECDH failed; using the RustCrypto engine");
        }
        self.ecdh_rustcrypto(peer)
    }

    /// ECDH on the portable engine only (tests, benchmarks).
    pub fn ecdh_rustcrypto(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EcOpFailed> {
        let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| EcOpFailed)?;
        let mut scalar = self.key.to_nonzero_scalar();
        let shared = p256::ecdh::diffie_hellman(&scalar, pk.as_affine());
        scalar.zeroize();
        Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
    }

    #[cfg(all(unix, feature = "openssl"))]
    fn openssl(&self) -> Option<&engine::Engine> {
        self.engine
            .get_or_init(|| engine::Engine::load(&self.key))
            .as_ref()
    }
}

#[cfg(all(unix, feature = "openssl"))]
mod engine {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    use openssl::nid::Nid;
    use openssl::pkey::Private;
    use zeroize::Zeroizing;

    /// libcrypto's copy of the key, with what every operation needs.
    pub(super) struct Engine {
        pub(super) ec: EcKey<Private>,
        group: EcGroup,
        /// The generator's affine coordinates, to overwrite a shared
        /// point with.
        generator: (BigNum, BigNum),
    }

    impl Engine {
        pub(super) fn load(key: &p256::SecretKey) -> Option<Engine> {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
            let scalar = Zeroizing::new(key.to_bytes());
            let d = BigNum::from_slice(scalar.as_slice()).ok()?;
            let mut ctx = BigNumContext::new().ok()?;
            let mut public = EcPoint::new(&group).ok()?;
            public.mul_generator2(&group, &d, &mut ctx).ok()?;
            let ec = EcKey::from_private_components(&group, &d, &public).ok()?;
            ec.check_key().ok()?;
            let (mut gx, mut gy) = (BigNum::new().ok()?, BigNum::new().ok()?);
            group
                .generator_opt()?
                .affine_coordinates(&group, &mut gx, &mut gy, &mut ctx)
                .ok()?;
            Some(Engine {
                ec,
                group,
                generator: (gx, gy),
            })
        }

        pub(super) fn ecdh(
            &self,
            peer: &[u8],
        ) -> Result<Zeroizing<Vec<u8>>, openssl::error::ErrorStack> {
            // Secure context and bignums: wiped when freed, as in
            // libcrypto's own ECDH (the temporaries hold the shared point).
            let mut ctx = BigNumContext::new_secure()?;
            // oct2point checks that the point is on the curve; P-256 has
            // cofactor 1, so that is the whole of SP 800-56A's public key
            // validation.
            let point = EcPoint::from_bytes(&self.group, peer, &mut ctx)?;
            // The multiplication libcrypto's own ECDH does
            // (ossl_ecdh_simple_compute_key: EC_POINT_mul with the key's
            // private scalar, which EC_KEY marks constant-time), without
            // the EVP_PKEY and derive context OpenSSL 3 builds for every
            // call, which cost as much as the multiplication itself.
            let mut shared = EcPoint::new(&self.group)?;
            let result = shared
                .mul2(&self.group, &point, self.ec.private_key(), &mut ctx)
                .and_then(|()| {
                    let mut x = BigNum::new_secure()?;
                    let mut y = BigNum::new_secure()?;
                    shared.affine_coordinates(&self.group, &mut x, &mut y, &mut ctx)?;
                    Ok(Zeroizing::new(x.to_vec_padded(32)?))
                });
            // EC_POINT_free does not wipe, and the crate has no
            // EC_POINT_clear_free: overwrite the shared point's coordinates
            // in place with the generator's before it is freed.
            let (gx, gy) = &self.generator;
            shared.set_affine_coordinates(&self.group, gx, gy, &mut ctx)?;
            result
        }
    }
}

impl Clone for P256Key {
    /// A copy of the scalar; the copy builds its own libcrypto key.
    fn clone(&self) -> Self {
        P256Key::new(self.key.clone())
    }
}

impl Deref for P256Key {
    type Target = p256::SecretKey;
    fn deref(&self) -> &p256::SecretKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use rand_core::OsRng;

    /// Every signature of either engine verifies with RustCrypto's
    /// verifier (independent of libcrypto), for many digests.
    #[test]
    fn both_engines_sign_what_an_independent_verifier_accepts() {
        let key = P256Key::new(p256::SecretKey::random(&mut OsRng));
        let vk = p256::ecdsa::VerifyingKey::from(key.public_key());
        for seed in 0u8..16 {
            let z = [seed.wrapping_mul(41); 32];
            for sig in [
                key.sign_prehashed(&z).unwrap(),
                key.sign_prehashed_rustcrypto(&z).unwrap(),
            ] {
                let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
                vk.verify_prehash(&z, &sig).expect("signature verifies");
            }
        }
    }

    #[test]
    fn both_engines_agree_on_ecdh_and_refuse_points_off_the_curve() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let key = P256Key::new(p256::SecretKey::random(&mut OsRng));
        // Enough peers that some shared X values start with a zero byte
        // (1 in 256), which must still come out as 32 bytes.
        let mut point = None;
        for _ in 0..1000 {
            let peer = p256::SecretKey::random(&mut OsRng);
            let encoded = peer.public_key().to_encoded_point(false);
            let a = key.ecdh(encoded.as_bytes()).unwrap();
            let b = key.ecdh_rustcrypto(encoded.as_bytes()).unwrap();
            assert_eq!(*a, *b);
            let theirs =
                p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), key.public_key().as_affine());
            assert_eq!(&a[..], theirs.raw_secret_bytes().as_slice());
            point = Some(encoded);
        }
        let point = point.unwrap();
        let mut bad = point.as_bytes().to_vec();
        bad[40] ^= 1;
        assert_eq!(key.ecdh(&bad), Err(EcOpFailed));
    }

    #[cfg(all(unix, feature = "openssl"))]
    #[test]
    fn unix_builds_use_libcrypto() {
        let key = P256Key::new(p256::SecretKey::random(&mut OsRng));
        assert_eq!(key.engine_name(), "openssl");
    }
}
