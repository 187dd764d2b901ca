//! Property tests: no input makes the card panic or answer without a
//! status word, and the card file round-trips whatever state commands
//! leave behind.

mod common;
use common::Host;
use piv_applet::store;
use proptest::prelude::*;

/// Commands that look like what hosts send: real INS bytes, plausible
/// P1/P2, short or extended framing, chaining and GET RESPONSE.
fn plausible_apdu() -> impl Strategy<Value = Vec<u8>> {
    let ins = prop::sample::select(vec![
        0x20u8, 0x24, 0x2C, 0x47, 0x87, 0xA4, 0xC0, 0xCB, 0xDB, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB,
        0xFD, 0xFE, 0xFF, 0x00,
    ]);
    let p = prop::sample::select(vec![
        0x00u8, 0x01, 0x03, 0x04, 0x07, 0x0A, 0x11, 0x3F, 0x80, 0x81, 0x82, 0x9A, 0x9B, 0x9C, 0x9D,
        0x9E, 0xF9, 0xFE, 0xFF,
    ]);
    let cla = prop::sample::select(vec![0x00u8, 0x10, 0x0C, 0x01, 0x80]);
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(vec![0x5C, 0x03, 0x5F, 0xC1, 0x02]),
        Just(vec![0x7C, 0x02, 0x80, 0x00]),
        Just(vec![0x7C, 0x02, 0x81, 0x00]),
        Just(vec![0xAC, 0x03, 0x80, 0x01, 0x11]),
        Just(b"123456\xFF\xFF".to_vec()),
        Just(vec![0xFF; 8]),
        Just(vec![0x5C, 0x03, 0x5F, 0xC1, 0x09, 0x53, 0x02, 0xAA, 0xBB]),
    ];
    (
        cla,
        ins,
        p.clone(),
        p,
        data,
        any::<bool>(),
        prop::option::of(any::<u8>()),
    )
        .prop_map(|(cla, ins, p1, p2, data, ext, le)| {
            if ext {
                piv_applet::apdu::build_command(
                    cla,
                    ins,
                    p1,
                    p2,
                    &data,
                    le.map(|l| usize::from(l) + 257),
                )
            } else {
                piv_applet::apdu::build_command(cla, ins, p1, p2, &data, le.map(usize::from))
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_always_get_a_status_word(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut host = Host::new();
        let out = host.card.process(&bytes);
        prop_assert!(out.len() >= 2);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn command_sequences_never_panic_and_state_round_trips(
        cmds in prop::collection::vec(plausible_apdu(), 1..40),
        authenticate in any::<bool>(),
    ) {
        let mut host = Host::new();
        if authenticate {
            host.auth_default();
        }
        for c in &cmds {
            let out = host.card.process(c);
            prop_assert!(out.len() >= 2);
        }
        let bytes = store::to_bytes(host.card.state());
        let loaded = store::from_bytes(&bytes, std::path::Path::new("prop.json")).expect("saved state loads");
        prop_assert_eq!(&store::to_bytes(&loaded)[..], &bytes[..]);
    }
}
