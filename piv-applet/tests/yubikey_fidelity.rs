//! Where the card answered otherwise than a YubiKey 5.7, as yubikey-manager's
//! own device tests found: each test fails on the card as it was.

mod common;

use common::{hex, Host};
use piv_applet::{tlv, AlgorithmId, StatusWord};

/// GET METADATA's policy byte for a slot (tag 02: PIN policy, touch).
fn pin_policy(host: &mut Host, slot: u8) -> u8 {
    let r = host.send(0xF7, 0, slot, &[]);
    assert_eq!(r.sw, StatusWord::Success);
    tlv::find(&r.data, 0x02).expect("policy")[0]
}

#[test]
fn a_moved_key_keeps_the_pin_policy_it_was_made_with() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    // 9A's default is "once" (02); 9C's would be "always" (03).
    assert_eq!(pin_policy(&mut host, 0x9A), 0x02);
    assert_eq!(host.send(0xF6, 0x9C, 0x9A, &[]).sw, StatusWord::Success);
    assert_eq!(pin_policy(&mut host, 0x9C), 0x02);
    // Used as a "once" key: one VERIFY, then two signatures.
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    for _ in 0..2 {
        assert!(host.sign(0x9C, AlgorithmId::EccP256, &[7; 32]).is_ok());
    }
}

#[test]
fn a_move_onto_a_key_is_refused_and_both_keys_stay() {
    let mut host = Host::new();
    host.auth_default();
    let a = host.generate(0x9A, AlgorithmId::EccP256, &[]);
    let c = host.generate(0x9C, AlgorithmId::EccP256, &[]);
    assert_eq!(
        host.send(0xF6, 0x9C, 0x9A, &[]).sw,
        StatusWord::IncorrectData
    );
    let public = |host: &mut Host, slot| {
        let r = host.send(0xF7, 0, slot, &[]);
        tlv::find(&r.data, 0x04).unwrap().to_vec()
    };
    assert_eq!(public(&mut host, 0x9A), a);
    assert_eq!(public(&mut host, 0x9C), c);
    // Moving from an empty slot names no key: 6A88.
    assert_eq!(
        host.send(0xF6, 0x9D, 0x9E, &[]).sw,
        StatusWord::ReferenceNotFound
    );
}

#[test]
fn the_wrong_algorithm_in_general_authenticate_is_incorrect_data() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[0xAA, 1, 1]);
    // ykman's check_key asks with the certificate's algorithm and takes
    // 6A80 for "another key".
    assert_eq!(
        host.sign(0x9A, AlgorithmId::EccP384, &[7; 48]),
        Err(StatusWord::IncorrectData)
    );
    assert_eq!(
        host.sign(0x9A, AlgorithmId::Rsa2048, &[7; 256]),
        Err(StatusWord::IncorrectData)
    );
    // A 3DES witness request against the AES-192 management key.
    let r = host.send(0x87, 0x03, 0x9B, &hex("7C 02 80 00"));
    assert_eq!(r.sw, StatusWord::IncorrectData);
}

#[test]
fn yubikey_range_objects_are_stored_and_read_back() {
    let mut host = Host::new();
    host.auth_default();
    for id in [[0x5F, 0x00, 0x01], [0x5F, 0xFF, 0x20], [0x5F, 0x12, 0x34]] {
        assert_eq!(host.put_data(&id, b"hello"), StatusWord::Success);
        let r = host.get_data(&id);
        assert_eq!(r.sw, StatusWord::Success);
        assert_eq!(r.data.to_vec(), tlv::encode(0x53, b"hello"));
    }
    // Outside 5F0000-5FFFFF, 7E and 7F61 the card stores nothing.
    assert_eq!(
        host.put_data(&[0x5E, 0x00, 0x01], b"x"),
        StatusWord::IncorrectData
    );
}

#[test]
fn the_management_application_names_the_card_as_piv_does() {
    let mut host = Host::new();
    let serial = host.send(0xF8, 0, 0, &[]).data.to_vec();
    let version = host.send(0xFD, 0, 0, &[]).data.to_vec();
    let r = host.send(0xA4, 0x04, 0x00, &hex("A000000527471117"));
    assert_eq!(r.sw, StatusWord::Success);
    let text = String::from_utf8(r.data.to_vec()).unwrap();
    let dotted = format!("{}.{}.{}", version[0], version[1], version[2]);
    assert!(text.ends_with(&dotted), "{text}");
    let mut tlvs = Vec::new();
    for page in 0..2 {
        let r = host.send(0x1D, page, 0, &[]);
        assert_eq!(r.sw, StatusWord::Success);
        assert_eq!(usize::from(r.data[0]), r.data.len() - 1);
        tlvs.extend_from_slice(&r.data[1..]);
    }
    assert_eq!(tlv::find(&tlvs, 0x02).unwrap(), &serial[..]);
    assert_eq!(tlv::find(&tlvs, 0x05).unwrap(), &version[..]);
    // PIV (0x10) is the only application switched on, on USB and NFC.
    assert_eq!(tlv::find(&tlvs, 0x03).unwrap(), [0x00, 0x10]);
    assert_eq!(tlv::find(&tlvs, 0x0E).unwrap(), [0x00, 0x10]);
    // Selecting another application ends the PIV session.
    assert_eq!(
        host.send(0xA4, 0x04, 0x00, &hex("A000000308")).sw,
        StatusWord::Success
    );
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    host.send(0xA4, 0x04, 0x00, &hex("A000000527471117"));
    host.send(0xA4, 0x04, 0x00, &hex("A000000308"));
    assert_eq!(
        host.send(0x20, 0x00, 0x80, &[]).sw,
        StatusWord::VerifyFail(3),
        "the PIN is no longer verified"
    );
}
