//! Card speed: APDU dispatch, private-key operations and key generation.
//! Results and the OpenSSL comparison go to BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use piv_applet::apdu::build_command;
use piv_applet::keys::KeyMaterial;
use piv_applet::{tlv, AlgorithmId, Card, CardOptions};
use std::time::Duration;

fn card() -> Card {
    Card::ephemeral(&CardOptions::default()).unwrap()
}

fn dispatch(c: &mut Criterion) {
    let mut card = card();
    let get_chuid = build_command(
        0,
        0xCB,
        0x3F,
        0xFF,
        &[0x5C, 0x03, 0x5F, 0xC1, 0x02],
        Some(256),
    );
    c.bench_function("dispatch GET DATA CHUID", |b| {
        b.iter(|| card.process(std::hint::black_box(&get_chuid)))
    });
    let get_version = [0u8, 0xFD, 0, 0, 0];
    c.bench_function("dispatch GET VERSION", |b| {
        b.iter(|| card.process(std::hint::black_box(&get_version)))
    });
}

fn signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign");
    for alg in [
        AlgorithmId::Rsa2048,
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
    ] {
        let key = KeyMaterial::generate(alg).unwrap();
        let input: Vec<u8> = match alg {
            AlgorithmId::Rsa2048 => {
                let mut v = vec![0x00, 0x01];
                v.resize(256 - 20, 0xFF);
                v.push(0);
                v.resize(256, 0x5A);
                v
            }
            AlgorithmId::EccP384 => vec![0x5A; 48],
            _ => vec![0x5A; 32],
        };
        g.bench_with_input(
            BenchmarkId::new("raw", format!("{alg:?}")),
            &input,
            |b, input| b.iter(|| key.sign_or_decrypt(input).unwrap()),
        );
        // The portable engine beside the default one, for BENCHMARKS.md.
        if let KeyMaterial::P256(k) = &key {
            println!("P-256 engine in use: {}", k.engine_name());
            let z = [0x5A; 32];
            g.bench_function(BenchmarkId::new("raw RustCrypto engine", "EccP256"), |b| {
                b.iter(|| k.sign_prehashed_rustcrypto(&z).unwrap())
            });
        }
        if let KeyMaterial::Rsa(k) = &key {
            println!("RSA engine in use: {}", k.engine_name());
            g.bench_with_input(
                BenchmarkId::new("raw RustCrypto engine", format!("{alg:?}")),
                &input,
                |b, input| b.iter(|| k.private_op_rustcrypto(input).unwrap()),
            );
        }
    }
    // The whole card path for RSA-2048: VERIFY state + GENERAL AUTHENTICATE
    // through APDU parsing, TLV and response chaining.
    let mut card = card();
    card.generate_key(
        piv_applet::Slot::SIGNATURE,
        AlgorithmId::Rsa2048,
        piv_applet::PinPolicy::Never,
        piv_applet::TouchPolicy::Never,
    )
    .unwrap();
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 20, 0xFF);
    block.push(0);
    block.resize(256, 0x5A);
    let mut inner = tlv::encode(0x82, &[]);
    tlv::write(&mut inner, 0x81, &block);
    let apdu = build_command(0, 0x87, 0x07, 0x9C, &tlv::encode(0x7C, &inner), Some(65536));
    g.bench_function("GENERAL AUTHENTICATE RSA2048 (APDU)", |b| {
        b.iter(|| card.process(&apdu))
    });
    g.finish();
}

/// ECDH with a fixed peer point, both engines for P-256.
fn key_agreement(c: &mut Criterion) {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let mut g = c.benchmark_group("ecdh");
    let peer256 = p256::SecretKey::random(&mut rand_core::OsRng)
        .public_key()
        .to_encoded_point(false);
    let peer384 = p384::SecretKey::random(&mut rand_core::OsRng)
        .public_key()
        .to_encoded_point(false);
    let k256 = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
    let k384 = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
    g.bench_function("EccP256", |b| {
        b.iter(|| k256.ecdh(peer256.as_bytes()).unwrap())
    });
    if let KeyMaterial::P256(k) = &k256 {
        g.bench_function("EccP256 RustCrypto engine", |b| {
            b.iter(|| k.ecdh_rustcrypto(peer256.as_bytes()).unwrap())
        });
    }
    g.bench_function("EccP384", |b| {
        b.iter(|| k384.ecdh(peer384.as_bytes()).unwrap())
    });
    g.finish();
}

fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for alg in [
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
        AlgorithmId::X25519,
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::Rsa3072,
        AlgorithmId::Rsa4096,
    ] {
        g.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| KeyMaterial::generate(alg).unwrap())
        });
    }
    // The portable generator beside the default one (libcrypto on Unix).
    for bits in [2048, 3072] {
        g.bench_function(format!("Rsa{bits} RustCrypto engine"), |b| {
            b.iter(|| piv_applet::rsa_key::RsaKey::generate_rustcrypto(bits, 65537).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, dispatch, signing, key_agreement, keygen);
criterion_main!(benches);
