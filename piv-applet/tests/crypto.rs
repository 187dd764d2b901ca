//! Every private-key operation the card performs through its APDUs
//! (GENERAL AUTHENTICATE, IMPORT, ATTEST), checked by an independent
//! implementation: each answer is the slot's key's work, once per
//! algorithm, and bad input gets a status word. The algorithms themselves
//! (padding, hash lengths, encodings, agreement with the `openssl` command
//! line) are checked once, on the keys, in `keys.rs`'s unit tests; the
//! attestation chain, a card feature, is checked here with openssl.

mod common;
use common::Host;
use piv_applet::{tlv, AlgorithmId, StatusWord};
use sha2::{Digest, Sha256, Sha384};

fn rsa_public(template: &[u8]) -> rsa::RsaPublicKey {
    let n = rsa::BigUint::from_bytes_be(tlv::find(template, 0x81).unwrap());
    let e = rsa::BigUint::from_bytes_be(tlv::find(template, 0x82).unwrap());
    rsa::RsaPublicKey::new(n, e).unwrap()
}

/// PKCS#1 v1.5 type 1 padding of a SHA-256 DigestInfo, as msclmd and
/// OpenSC send it for a raw RSA signature (the DigestInfo prefix from the
/// `rsa` crate, not written out here).
fn pkcs1_sha256_block(msg: &[u8], len: usize) -> Vec<u8> {
    let prefix = rsa::Pkcs1v15Sign::new::<Sha256>().prefix;
    let digest = Sha256::digest(msg);
    let padding = len - 3 - prefix.len() - digest.len();
    [
        &[0x00, 0x01][..],
        &vec![0xFF; padding],
        &[0x00],
        &prefix,
        &digest,
    ]
    .concat()
}

fn ready(alg: AlgorithmId, slot: u8) -> (Host, Vec<u8>) {
    let mut host = Host::new();
    host.auth_default();
    let template = host.generate(slot, alg, &[]);
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    (host, template)
}

#[test]
fn rsa_sign_and_decrypt_all_sizes() {
    use rsa::traits::PublicKeyParts;
    for alg in [
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::Rsa3072,
    ] {
        let (mut host, template) = ready(alg, 0x9A);
        let public = rsa_public(&template);
        let k = public.size();
        assert_eq!(k * 8, alg.rsa_bits().unwrap());
        let msg = b"signed by a virtual card";
        let sig = host.sign(0x9A, alg, &pkcs1_sha256_block(msg, k)).unwrap();
        let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public.clone());
        use signature::Verifier;
        verifier
            .verify(msg, &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
            .expect("RSA signature verifies");
        // Decryption: the card returns the padded block; strip it here.
        let secret = b"session key 1234";
        let ct = public
            .encrypt(&mut rand_core::OsRng, rsa::Pkcs1v15Encrypt, secret)
            .unwrap();
        let block = host.sign(0x9A, alg, &ct).unwrap();
        assert_eq!(block.len(), k);
        assert_eq!((block[0], block[1]), (0, 2));
        let sep = block[2..].iter().position(|b| *b == 0).unwrap() + 2;
        assert_eq!(&block[sep + 1..], secret);
        // Input of the wrong length or not below the modulus is refused.
        assert_eq!(
            host.sign(0x9A, alg, &vec![1; k - 1]),
            Err(StatusWord::IncorrectData)
        );
        assert_eq!(
            host.sign(0x9A, alg, &vec![0xFF; k]),
            Err(StatusWord::IncorrectData)
        );
    }
}

#[test]
fn ecdsa_p256_and_p384() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let (mut host, template) = ready(AlgorithmId::EccP256, 0x9A);
    let point = tlv::find(&template, 0x86).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
    let digest = Sha256::digest(b"hello");
    let sig = host.sign(0x9A, AlgorithmId::EccP256, &digest).unwrap();
    let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
    vk.verify_prehash(&digest, &sig)
        .expect("P-256 signature verifies");
    // The card takes a short hash (SHA-1) too; the key left-pads it.
    let sig = host.sign(0x9A, AlgorithmId::EccP256, &[0xAB; 20]).unwrap();
    let mut padded = [0u8; 32];
    padded[12..].copy_from_slice(&[0xAB; 20]);
    vk.verify_prehash(&padded, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();

    let (mut host, template) = ready(AlgorithmId::EccP384, 0x9D);
    let vk =
        p384::ecdsa::VerifyingKey::from_sec1_bytes(tlv::find(&template, 0x86).unwrap()).unwrap();
    let digest = Sha384::digest(b"hello");
    let sig = host.sign(0x9D, AlgorithmId::EccP384, &digest).unwrap();
    vk.verify_prehash(&digest, &p384::ecdsa::Signature::from_der(&sig).unwrap())
        .expect("P-384 signature verifies");
}

#[test]
fn ed25519_signs_whole_message() {
    use ed25519_dalek::Verifier;
    let (mut host, template) = ready(AlgorithmId::Ed25519, 0x9A);
    let pk: [u8; 32] = tlv::find(&template, 0x86).unwrap().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let msg = vec![0x33u8; 700];
    let sig = host.sign(0x9A, AlgorithmId::Ed25519, &msg).unwrap();
    vk.verify(&msg, &ed25519_dalek::Signature::from_slice(&sig).unwrap())
        .expect("Ed25519 verifies");
}

#[test]
fn ecdh_matches_the_peer() {
    let (mut host, template) = ready(AlgorithmId::EccP256, 0x9D);
    let card_pub = p256::PublicKey::from_sec1_bytes(tlv::find(&template, 0x86).unwrap()).unwrap();
    let eph = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
    let eph_pub = p256::EncodedPoint::from(eph.public_key());
    let card_secret = host
        .ecdh(0x9D, AlgorithmId::EccP256, eph_pub.as_bytes())
        .unwrap();
    assert_eq!(
        card_secret,
        eph.diffie_hellman(&card_pub).raw_secret_bytes().to_vec()
    );
    assert_eq!(
        host.ecdh(0x9D, AlgorithmId::EccP256, &[4; 65]),
        Err(StatusWord::IncorrectData)
    );

    let (mut host, template) = ready(AlgorithmId::EccP384, 0x9D);
    let card_pub = p384::PublicKey::from_sec1_bytes(tlv::find(&template, 0x86).unwrap()).unwrap();
    let eph = p384::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
    let card_secret = host
        .ecdh(
            0x9D,
            AlgorithmId::EccP384,
            p384::EncodedPoint::from(eph.public_key()).as_bytes(),
        )
        .unwrap();
    assert_eq!(
        card_secret,
        eph.diffie_hellman(&card_pub).raw_secret_bytes().to_vec()
    );

    let (mut host, template) = ready(AlgorithmId::X25519, 0x9D);
    let card_pub: [u8; 32] = tlv::find(&template, 0x86).unwrap().try_into().unwrap();
    let eph = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    let eph_pub = x25519_dalek::PublicKey::from(&eph);
    let card_secret = host
        .ecdh(0x9D, AlgorithmId::X25519, eph_pub.as_bytes())
        .unwrap();
    assert_eq!(
        card_secret,
        eph.diffie_hellman(&x25519_dalek::PublicKey::from(card_pub))
            .as_bytes()
            .to_vec()
    );
    // Signing with an X25519 key and ECDH with a signing-only key fail cleanly.
    assert_eq!(
        host.sign(0x9D, AlgorithmId::X25519, &[1; 32]),
        Err(StatusWord::IncorrectData)
    );
}

#[test]
fn imported_rsa_key_signs_like_the_original() {
    use rsa::traits::PublicKeyParts;
    let mut host = Host::new();
    host.auth_default();
    let original = piv_applet::keys::KeyMaterial::generate(AlgorithmId::Rsa2048).unwrap();
    let data = original.to_import_tlvs();
    let mut with_policy = data.to_vec();
    with_policy.extend_from_slice(&[0xAA, 1, 1]);
    assert_eq!(
        host.send_chained(0xFE, 0x07, 0x9E, &with_policy).sw,
        StatusWord::Success
    );
    let meta = host.ok(0xF7, 0, 0x9E, &[]);
    assert_eq!(tlv::find(&meta, 0x03), Some(&[2u8][..]), "origin imported");
    let public = rsa_public(tlv::find(&meta, 0x04).unwrap());
    assert_eq!(public.size(), 256);
    let msg = b"imported";
    let sig = host
        .sign(0x9E, AlgorithmId::Rsa2048, &pkcs1_sha256_block(msg, 256))
        .unwrap();
    use signature::Verifier;
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
        .verify(msg, &rsa::pkcs1v15::Signature::try_from(&sig[..]).unwrap())
        .unwrap();
}

/// Runs openssl; a missing binary is a test failure, not a skip.
fn openssl(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line is required for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The attestation of each slot's key (YubiKey ATTEST) chains to the F9
/// certificate, attests that key, and carries the YubiKey extensions.
#[test]
fn openssl_verifies_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    for (alg, slot) in [
        (AlgorithmId::Rsa2048, 0x9A),
        (AlgorithmId::EccP256, 0x9C),
        (AlgorithmId::EccP384, 0x9D),
        (AlgorithmId::Ed25519, 0x9E),
    ] {
        let mut host = Host::new();
        host.auth_default();
        host.generate(slot, alg, &[]);
        assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
        let name = format!("{alg:?}");
        let spki = host
            .card
            .public_key(piv_applet::Slot::new(slot).unwrap())
            .unwrap();
        let pubf = path(&format!("{name}.pub.der"));
        std::fs::write(&pubf, &spki).unwrap();
        // Attestation: the slot's certificate chains to the F9 certificate.
        let attest = host.ok(0xF9, slot, 0, &[]);
        let f9 = host
            .card
            .certificate(piv_applet::Slot::ATTESTATION)
            .unwrap();
        std::fs::write(path("attest.der"), &attest).unwrap();
        std::fs::write(path("f9.der"), &f9).unwrap();
        for (der, pem) in [("attest.der", "attest.pem"), ("f9.der", "f9.pem")] {
            openssl(&[
                "x509",
                "-inform",
                "DER",
                "-in",
                &path(der),
                "-out",
                &path(pem),
            ]);
        }
        let out = openssl(&["verify", "-CAfile", &path("f9.pem"), &path("attest.pem")]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
        // The attested public key is the slot's key.
        let out = openssl(&["x509", "-in", &path("attest.pem"), "-noout", "-pubkey"]);
        openssl(&[
            "pkey",
            "-pubin",
            "-in",
            &pubf,
            "-inform",
            "DER",
            "-out",
            &path("slot.pem"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(path("slot.pem")).unwrap()
        );
        let text = String::from_utf8_lossy(
            &openssl(&["x509", "-in", &path("attest.pem"), "-noout", "-text"]).stdout,
        )
        .into_owned();
        assert!(
            text.contains("1.3.6.1.4.1.41482.3.3"),
            "firmware extension: {text}"
        );
        assert!(text.contains("1.3.6.1.4.1.41482.3.7"), "serial extension");
        assert!(text.contains("1.3.6.1.4.1.41482.3.8"), "policy extension");
    }
}
