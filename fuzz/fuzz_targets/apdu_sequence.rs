//! Arbitrary command sequences against one card: the input is split into
//! APDUs by a length byte each. The card must answer every one with at
//! least a status word and never panic; after the sequence its state must
//! survive a save/load round trip.
//!
//! The oracle is the card's access-rule table (`piv_applet::access`),
//! checked from outside the card against what the sequence itself did:
//! - GENERAL AUTHENTICATE never succeeds with the attestation key (F9);
//! - no key whose PIN policy asks for the PIN signs, decrypts or agrees
//!   unless the sequence verified the PIN before (and, for PIN-always
//!   keys, unless the APDUs since the last successful VERIFY were only the
//!   chain of that same command);
//! - keys, objects, the management key and the retry limits change only
//!   after the sequence authenticated with the management key (or by a
//!   YubiKey RESET with PIN and PUK blocked);
//! - the PIN or PUK changes only by a successful command that proved the
//!   old PIN or the PUK (or by RESET, SET PIN RETRIES);
//! - a retry counter never rises without a successful command.
//!
//! Inputs of odd length run on a card with secure messaging and the
//! contactless profile (a pairing code set). A fuzzer cannot open the
//! virtual contact interface (that takes an ECDH key establishment and
//! MACs under its keys), so there the oracle is the contactless rule: no
//! contact-only command succeeds (no PIN, no key but 9E, no change, no
//! object but the four free ones), whatever CLA 0C, chaining or garbage
//! the sequence sends.
//!
//! Under `cargo fuzz` (cfg `fuzzing`) generated keys are reused and the
//! store writes nothing, so a run is cheap (RELIABILITY.md has the rates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::access::{self, KeyUseRule};
use piv_applet::apdu::Command;
use piv_applet::enums::Ins;
use piv_applet::state::CardState;
use piv_applet::store::{self, Store, StoreError};
use piv_applet::{tlv, Card, CardOptions, Slot};
use std::path::Path;
use std::sync::OnceLock;

/// Making a card generates an attestation key: do it once and clone the
/// state for every run (loading it from its saved form would derive the
/// public keys again, the most costly part of a run).
fn template() -> &'static CardState {
    static T: OnceLock<CardState> = OnceLock::new();
    T.get_or_init(|| {
        let card = Card::ephemeral(&CardOptions {
            serial: Some(1),
            ..CardOptions::default()
        })
        .unwrap();
        card.state().clone()
    })
}

/// The template with secure messaging, the contactless profile and a
/// pairing code, and keys in 9A and 9E to try.
fn contactless_template() -> &'static CardState {
    static T: OnceLock<CardState> = OnceLock::new();
    T.get_or_init(|| {
        use piv_applet::{AlgorithmId, PinPolicy, TouchPolicy};
        let mut card = Card::with_store(template().clone(), Box::new(Discard));
        let signer = piv_applet::keys::KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let cert = piv_applet::x509::self_signed(
            &signer,
            &piv_applet::x509::CertRequest {
                subject: "CN=fuzz signer",
                serial: &[1],
                not_before: piv_applet::x509::valid_from_now(),
                days: 1,
                extensions: vec![],
            },
        )
        .unwrap();
        card.enable_secure_messaging(
            piv_applet::sm::CipherSuite::Cs2,
            &signer,
            &cert,
            true,
            Some("12345678"),
        )
        .unwrap();
        for slot in [Slot::AUTHENTICATION, Slot::CARD_AUTHENTICATION] {
            card.generate_key(
                slot,
                AlgorithmId::EccP256,
                PinPolicy::Default,
                TouchPolicy::Never,
            )
            .unwrap();
        }
        card.state().clone()
    })
}

/// What a card with the contactless profile may answer with success
/// outside the virtual contact interface.
fn contactless_allows(ins: Ins, p2: u8, whole: &[u8]) -> bool {
    use piv_applet::ObjectId;
    match ins {
        Ins::Select | Ins::GetResponse | Ins::GetVersion | Ins::GetSerial => true,
        Ins::GeneralAuthenticate => p2 == 0x9E || p2 == piv_applet::sm::KEY_REFERENCE,
        Ins::GetData => tlv::parse_one(whole)
            .ok()
            .and_then(|t| ObjectId::from_bytes(t.value))
            .is_some_and(|id| {
                [
                    ObjectId::CHUID,
                    ObjectId::CERT_CARD_AUTH,
                    ObjectId::DISCOVERY,
                    ObjectId::SM_CERT_SIGNER,
                ]
                .contains(&id)
            }),
        // The Management application's GET DEVICE INFO (after SELECT of
        // its AID) shares no INS with a PIV command that needs the VCI.
        Ins::Unknown(_) => true,
        _ => false,
    }
}

/// A store that keeps nothing: the store's own tests and the card_file
/// target cover saving; here it would cost most of each run.
struct Discard;

impl Store for Discard {
    fn save(&mut self, _: &CardState) -> Result<(), StoreError> {
        Ok(())
    }
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// What the management key guards, reduced to comparable bytes: every
/// key's public half and policies, every object, the management key (as
/// its encryption of a fixed block) and the retry limits.
fn guarded(s: &CardState) -> Vec<u8> {
    let mut out = Vec::new();
    for (slot, ks) in &s.keys {
        out.push(slot.key_ref());
        out.push(ks.key.algorithm().into());
        out.push(ks.pin_policy.into());
        out.push(ks.touch_policy.into());
        out.push(ks.origin.into());
        // The private half as IMPORT KEY writes it: no point arithmetic.
        out.extend_from_slice(&ks.key.to_import_tlvs());
    }
    for (id, value) in &s.objects {
        out.extend_from_slice(&id.0.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out.push(s.mgmt.algorithm().into());
    out.extend(
        s.mgmt
            .encrypt_block(&vec![0x5A; s.mgmt.block_size()])
            .unwrap(),
    );
    out.push(s.mgmt_touch.into());
    out.extend_from_slice(&[s.pin.max_tries, s.puk.max_tries]);
    out
}

/// What the sequence has proved so far, as seen from outside the card.
#[derive(Default)]
struct Proofs {
    pin: bool,
    mgmt: bool,
    /// Index of the last successful VERIFY with a PIN.
    last_verify: Option<usize>,
}

fn success(sw: u16) -> bool {
    sw == 0x9000 || sw >> 8 == 0x61
}

fuzz_target!(|data: &[u8]| {
    let contactless = data.len() % 2 == 1;
    let state = if contactless {
        contactless_template()
    } else {
        template()
    };
    let mut card = Card::with_store(state.clone(), Box::new(Discard));
    let mut contents_changed = false;
    let mut chain: Option<([u8; 3], Vec<u8>)> = None;
    let mut proofs = Proofs::default();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (apdu, next) = tail.split_at(n);
        rest = next;
        let before = card.security_status();
        let guarded_before = guarded(card.state());
        let (pin_before, puk_before) = (card.state().pin.clone(), card.state().puk.clone());
        let key_rule = Command::parse(apdu).ok().and_then(|c| {
            let slot = Slot::new(c.p2)?;
            let ks = card.state().keys.get(&slot)?;
            Some(access::key_use_rule(slot, ks.pin_policy))
        });

        let out = card.process(apdu);
        assert!(out.len() >= 2);
        let sw = u16::from_be_bytes([out[out.len() - 2], out[out.len() - 1]]);
        let index = sent.len();
        sent.push(apdu.to_vec());
        let Ok(cmd) = Command::parse(apdu) else {
            chain = None;
            assert_eq!(guarded(card.state()), guarded_before);
            continue;
        };
        // The whole data of a chained command, assembled as SP 800-73-4
        // chaining does (a bad CLA or GET RESPONSE ends a chain).
        let header = [u8::from(cmd.ins), cmd.p1, cmd.p2];
        if cmd.cla & 0xEF != 0 || cmd.ins == Ins::GetResponse {
            chain = None;
        }
        let mut whole = match chain.take() {
            Some((h, so_far)) if h == header => so_far,
            _ => Vec::new(),
        };
        whole.extend_from_slice(cmd.data);
        if cmd.is_chained() && cmd.cla & 0xEF == 0 {
            chain = Some((header, whole.clone()));
        }
        let done = success(sw) && !cmd.is_chained();
        if contactless && done && cmd.cla & 0x0C == 0 {
            assert!(
                contactless_allows(cmd.ins, cmd.p2, &whole),
                "{:?} P2 {:02X} succeeded outside the virtual contact interface",
                cmd.ins,
                cmd.p2
            );
        }
        if contactless {
            assert!(
                !(done && cmd.cla & 0x0C == 0x0C),
                "a secure messaging command succeeded without a session"
            );
        }

        // Key use (GENERAL AUTHENTICATE with a private key).
        if cmd.ins == Ins::GeneralAuthenticate && done && cmd.p2 != 0x9B {
            assert_ne!(cmd.p2, 0xF9, "F9 answered GENERAL AUTHENTICATE");
            match key_rule {
                Some(KeyUseRule::Free) => {}
                Some(KeyUseRule::PinVerified) => {
                    assert!(
                        proofs.pin && before.pin_verified,
                        "PIN-once key used without the PIN"
                    )
                }
                Some(KeyUseRule::PinJustVerified) => {
                    let last = proofs
                        .last_verify
                        .expect("PIN-always key used without VERIFY");
                    let header = &apdu[1..4];
                    assert!(
                        sent[last + 1..index]
                            .iter()
                            .all(|a| a.len() >= 4 && a[0] & 0x10 != 0 && &a[1..4] == header),
                        "PIN-always key used with other commands after VERIFY"
                    );
                }
                None => panic!(
                    "GENERAL AUTHENTICATE succeeded on an empty slot {:02X}",
                    cmd.p2
                ),
            }
        }

        // What only the management key may change.
        if guarded(card.state()) != guarded_before {
            contents_changed = true;
            let reset = cmd.ins == Ins::Reset && pin_before.is_blocked() && puk_before.is_blocked();
            assert!(
                reset || (proofs.mgmt && before.mgmt_authenticated),
                "{:?} changed keys, objects or the management key without the management key",
                cmd.ins
            );
        }

        // The PIN and PUK themselves. `presented` is whether the command
        // carried the right value of this reference: the card compares it
        // first, so a correct old PIN with a malformed new one restores the
        // count and still answers 6A80. Any other rise needs a success.
        let (pin_after, puk_after) = (&card.state().pin, &card.state().puk);
        let refs = [
            (&pin_before, pin_after, 0x80, "PIN"),
            (&puk_before, puk_after, 0x81, "PUK"),
        ];
        for (old, new, key_ref, name) in refs {
            let first_block = whole.get(..8).is_some_and(|d| old.matches(d));
            let presented = match cmd.ins {
                Ins::Verify => cmd.p2 == key_ref && whole.len() == 8 && first_block,
                Ins::ChangeReferenceData => cmd.p2 == key_ref && first_block,
                Ins::ResetRetryCounter => key_ref == 0x81 && first_block,
                _ => false,
            };
            let factory = done && matches!(cmd.ins, Ins::Reset | Ins::SetPinRetries);
            if *old.value != *new.value {
                let by_change = done
                    && matches!(cmd.ins, Ins::ChangeReferenceData | Ins::ResetRetryCounter)
                    && if cmd.ins == Ins::ResetRetryCounter {
                        key_ref == 0x80 && whole.get(..8).is_some_and(|d| puk_before.matches(d))
                    } else {
                        presented
                    };
                assert!(
                    by_change || factory,
                    "{name} changed by {:?} without proof",
                    cmd.ins
                );
            }
            assert!(
                new.tries_left <= old.tries_left || sw == 0x9000 || presented,
                "{name} counter rose on {:?} {sw:04X} without success or the right {name}",
                cmd.ins
            );
        }

        // Update what the sequence has proved.
        match cmd.ins {
            Ins::Verify if sw == 0x9000 && cmd.p1 == 0 && whole.len() == 8 => {
                proofs.pin = true;
                proofs.last_verify = Some(index);
            }
            Ins::ChangeReferenceData if sw == 0x9000 && cmd.p2 == 0x80 => proofs.pin = true,
            Ins::GeneralAuthenticate if sw == 0x9000 && cmd.p2 == 0x9B => {
                // Step 2 of mutual (80 and 81 filled) or external (82 filled)
                // authentication: the host proved it holds the key.
                let inner = tlv::parse_one(&whole)
                    .ok()
                    .and_then(|t| tlv::parse_all(t.value).ok())
                    .unwrap_or_default();
                let filled = |tag| inner.iter().any(|t| t.tag == tag && !t.value.is_empty());
                if (filled(0x80) && filled(0x81)) || filled(0x82) {
                    proofs.mgmt = true;
                }
            }
            _ => {}
        }
    }
    // A card whose keys and objects changed must still save and load (the
    // card_file target fuzzes the format itself; counters and PINs are
    // fixed-size fields).
    if contents_changed {
        let bytes = store::to_bytes(card.state());
        let again = store::from_bytes(&bytes, Path::new("fuzz")).expect("state round trips");
        assert_eq!(&store::to_bytes(&again)[..], &bytes[..]);
    }
});
