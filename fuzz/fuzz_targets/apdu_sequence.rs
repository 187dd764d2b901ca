//! Arbitrary command sequences against one card: the input is split into
//! APDUs by a length byte each. The card must answer every one with at
//! least a status word and never panic; after the sequence its state must
//! survive a save/load round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::{store, Card, CardOptions};
use std::sync::OnceLock;

/// Making a card generates an attestation key: do it once and clone the
/// saved state for every run.
fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let card = Card::ephemeral(&CardOptions { serial: Some(1), ..CardOptions::default() }).unwrap();
        store::to_bytes(card.state()).to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let state = store::from_bytes(template(), std::path::Path::new("template")).unwrap();
    let mut card = Card::with_store(state, Box::<store::MemoryStore>::default());
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (apdu, next) = tail.split_at(n);
        let out = card.process(apdu);
        assert!(out.len() >= 2);
        rest = next;
    }
    let bytes = store::to_bytes(card.state());
    let again = store::from_bytes(&bytes, std::path::Path::new("fuzz")).expect("state round trips");
    assert_eq!(&store::to_bytes(&again)[..], &bytes[..]);
});
