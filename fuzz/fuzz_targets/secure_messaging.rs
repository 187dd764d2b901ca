//! Secure messaging on hostile bytes, at both ends: the card's side of the
//! key establishment and of a session, the host's side (what a client
//! meets from a hostile card), and the CVC decoder. The first byte picks
//! the suite and the step; the rest is the input. Nothing may panic, and
//! nothing the fuzzer sends may pass for the peer: it knows no session
//! key, so a protected command or response, or the card's key
//! confirmation, is always refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::keys::KeyMaterial;
use piv_applet::sm::{cvc, CipherSuite, Cvc, Initiator, Responder, SmKey};
use piv_applet::AlgorithmId;
use std::sync::OnceLock;

/// A card's SM key and CVC per suite, made once.
struct Fixture {
    key: SmKey,
    cvc: Vec<u8>,
}

fn fixture(suite: CipherSuite) -> &'static Fixture {
    static CS2: OnceLock<Fixture> = OnceLock::new();
    static CS7: OnceLock<Fixture> = OnceLock::new();
    let cell = match suite {
        CipherSuite::Cs2 => &CS2,
        CipherSuite::Cs7 => &CS7,
    };
    cell.get_or_init(|| {
        let key = SmKey::generate(suite).unwrap();
        let signer = KeyMaterial::generate(suite.key_algorithm()).unwrap();
        let cvc = cvc::issue(
            suite,
            [7; 8],
            &[0x11; 16],
            &key.public_point(),
            cvc::ROLE_CARD,
            &signer,
        )
        .unwrap();
        Fixture { key, cvc }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&select, input)) = data.split_first() else {
        return;
    };
    let suite = if select & 1 == 0 {
        CipherSuite::Cs2
    } else {
        CipherSuite::Cs7
    };
    let f = fixture(suite);
    let card = Responder {
        key: &f.key,
        cvc: &f.cvc,
    };
    match (select >> 1) % 4 {
        // The card answers a key establishment request.
        0 => {
            let _ = card.respond(input);
        }
        // The host checks a card's answer it did not get from the card.
        1 => {
            let host = Initiator::new(suite, [1; 8]);
            assert!(
                host.finish(input).is_err(),
                "a forged key confirmation passed"
            );
        }
        // Within a real session, neither end takes what the fuzzer made.
        2 => {
            let host = Initiator::new(suite, [1; 8]);
            let (answer, mut card_side) = card.respond(&host.request()).unwrap();
            let (mut host_side, _) = host.finish(&answer).unwrap();
            let (header, body) = input.split_at(input.len().min(3));
            let h = |i: usize| header.get(i).copied().unwrap_or(0);
            assert!(
                card_side.open_command(h(0), h(1), h(2), body).is_err(),
                "a forged protected command passed"
            );
            assert!(
                host_side.open_response(input).is_err(),
                "a forged protected response passed"
            );
        }
        // The CVC decoder (and, when it decodes, re-encoding is not
        // needed: the signature check sees the bytes as they came).
        _ => {
            if let Ok(c) = Cvc::decode(input) {
                let _ = c.as_signer();
            }
        }
    }
});
