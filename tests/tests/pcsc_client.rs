//! The `pcsc` crate as a client of vreader's card through pcscd.

use e2e::{connect, make_card, select_by_rid as select, transmit, Rig, READER0};
use piv_applet::AlgorithmId;

const GET_SERIAL: [u8; 5] = [0x00, 0xF8, 0x00, 0x00, 0x00];

#[test]
fn pcsc_crate_thousand_apdus() {
    let mut rig = Rig::new();
    let card_file = rig.path("card.json");
    make_card(&card_file, AlgorithmId::Aes192, &[]);
    let serial = piv_applet::store::load(&card_file).unwrap().identity.serial;
    rig.insert(&card_file);
    let card = connect(READER0);
    let (_, _, atr) = {
        let mut names = [0u8; 128];
        let mut atr = [0u8; 64];
        let s = card.status2(&mut names, &mut atr).expect("status");
        (s.protocol2(), s.status(), s.atr().to_vec())
    };
    assert_eq!(atr, piv_applet::state::YUBIKEY5_NFC_ATR.to_vec());
    assert_eq!(
        &transmit(&card, &select())[..][transmit(&card, &select()).len() - 2..],
        &[0x90, 0x00]
    );
    for i in 0..1000 {
        let r = transmit(&card, &GET_SERIAL);
        assert_eq!(
            r,
            [&serial.to_be_bytes()[..], &[0x90, 0x00]].concat(),
            "APDU {i}"
        );
    }
    // At debug level vreader logs every APDU, but never the PIN.
    let r = transmit(
        &card,
        &[
            0x00, 0x20, 0x00, 0x80, 0x08, b'1', b'2', b'3', b'4', b'5', b'6', 0xFF, 0xFF,
        ],
    );
    assert_eq!(r, [0x90, 0x00]);
    // An extended-length GET DATA of the attestation certificate comes
    // back whole through pcscd.
    let r = transmit(
        &card,
        &[
            0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x05, 0x5C, 0x03, 0x5F, 0xFF, 0x01, 0x00, 0x00,
        ],
    );
    assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
    assert_eq!(r[0], 0x53);
    drop(card);
    rig.stop(0);
    let log = rig.log(0);
    assert!(
        log.matches("APDU 00F80000").count() >= 1000,
        "each APDU is logged at debug level"
    );
    assert!(log.contains("micros="), "the duration is logged");
    assert!(log.contains("APDU 00200080"), "the VERIFY is logged");
    for secret in ["313233343536FFFF", "313233343536ffff", "123456"] {
        assert!(
            !log.contains(secret),
            "the PIN leaked into the log: {secret}"
        );
    }
}
