//! The access rules of `piv_applet::access`, each checked both ways:
//! allowed with the right credential, refused without. Several of these
//! are regression tests for holes the security audit found.

mod common;

use common::{hex, Host};
use piv_applet::access::{self, CommandRule, ReadRule};
use piv_applet::card::{MAX_OBJECT_SIZE, MAX_TOTAL_OBJECTS};
use piv_applet::enums::Ins;
use piv_applet::{AlgorithmId, ObjectId, StatusWord};

const DIGEST: [u8; 32] = [0x5A; 32];

/// Audit item 1: F9 signed anything for anyone, so an attestation could be
/// forged. GENERAL AUTHENTICATE must refuse it whatever the session holds.
#[test]
fn the_attestation_key_answers_no_general_authenticate() {
    let mut host = Host::new();
    let refused = |host: &mut Host| host.sign(0xF9, AlgorithmId::EccP256, &DIGEST);
    assert_eq!(refused(&mut host), Err(StatusWord::IncorrectP1P2));
    host.auth_default();
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert_eq!(refused(&mut host), Err(StatusWord::IncorrectP1P2));
    // The raw APDU of the audit report, with a P-256 digest.
    let mut apdu = hex("00 87 11 F9 26 7C 24 82 00 81 20");
    apdu.extend_from_slice(&DIGEST);
    assert_eq!(host.raw(&apdu).sw, StatusWord::IncorrectP1P2);
    // F9 still signs what it exists for.
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    let attestation = host.send(0xF9, 0x9A, 0x00, &[]);
    assert_eq!(attestation.sw, StatusWord::Success);
    assert!(!attestation.data.is_empty());
}

fn card_with_pin_once_and_always_keys() -> Host {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]); // default: once
    host.generate(0x9C, AlgorithmId::EccP256, &[]); // default: always
    host.generate(0x9D, AlgorithmId::Rsa2048, &[0xAA, 0x01, 0x03]); // always
    host
}

/// Audit item 4: a PIN-always key needs VERIFY immediately before its use;
/// any command in between takes that away.
#[test]
fn pin_always_keys_need_verify_immediately_before() {
    let mut host = card_with_pin_once_and_always_keys();
    let sig = |host: &mut Host, slot| host.sign(slot, AlgorithmId::EccP256, &DIGEST);
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert!(sig(&mut host, 0x9A).is_ok());
    assert_eq!(host.get_data(&[0x5F, 0xC1, 0x02]).sw, StatusWord::Success);
    assert_eq!(
        host.raw(&hex("00 A4 04 00 05 A000000308")).sw,
        StatusWord::Success
    );
    assert_eq!(host.raw(&hex("00 20 00 80")).sw, StatusWord::Success);
    assert_eq!(
        sig(&mut host, 0x9C),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );

    // Allowed right after VERIFY, once.
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert!(sig(&mut host, 0x9C).is_ok());
    assert_eq!(
        sig(&mut host, 0x9C),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );

    // Each kind of command in between ends the permission.
    let between: [&[u8]; 4] = [
        &hex("00 FD 00 00"),                 // GET VERSION
        &hex("00 CB 3F FF 05 5C 03 5FC102"), // GET DATA
        &hex("00 C0 00 00"),                 // GET RESPONSE with nothing pending
        &hex("00 20 00 80"),                 // VERIFY status
    ];
    for apdu in between {
        assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
        host.raw(apdu);
        assert_eq!(
            sig(&mut host, 0x9C),
            Err(StatusWord::SecurityStatusNotSatisfied),
            "after {apdu:02X?}"
        );
    }
}

/// The command right after VERIFY may come as a chain (an RSA-2048 block
/// does not fit one short APDU), and its response may need GET RESPONSE;
/// but a chain of another command started after VERIFY is a command in
/// between.
#[test]
fn pin_always_survives_its_own_chain_only() {
    let mut host = card_with_pin_once_and_always_keys();
    let block = {
        let mut b = vec![0x00, 0x01];
        b.resize(256 - 20, 0xFF);
        b.push(0);
        b.resize(256, 0x42);
        b
    };
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    let signature = host
        .sign(0x9D, AlgorithmId::Rsa2048, &block)
        .expect("chained sign");
    assert_eq!(signature.len(), 256);

    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    // First chunk of a PUT DATA chain, then the signature.
    assert_eq!(
        host.raw(&hex("10 DB 3F FF 05 5C 03 5FC105")).sw,
        StatusWord::Success
    );
    assert_eq!(
        host.sign(0x9D, AlgorithmId::Rsa2048, &block),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );
}

fn object_value(id: ObjectId) -> Vec<u8> {
    match id {
        ObjectId::DISCOVERY => hex("7E 12 4F 0B A0000003080000100001 00 5F2F 02 4000"),
        ObjectId::BITGT => hex("7F61 03 02 01 00"),
        _ => hex("BA 04 00112233"),
    }
}

fn put_object(host: &mut Host, id: ObjectId) -> StatusWord {
    let value = object_value(id);
    match id {
        ObjectId::DISCOVERY | ObjectId::BITGT => host.send(0xDB, 0x3F, 0xFF, &value).sw,
        _ => host.put_data(&id.to_bytes(), &value),
    }
}

/// Audit item 9: every object of the table, both ways. Writing needs the
/// management key; reading needs the PIN exactly where the table says so
/// (the Pairing Code Reference Data 5FC123 was readable by anyone).
#[test]
fn every_object_follows_its_read_and_write_rule() {
    for rule in access::OBJECTS {
        let id = rule.id;
        let mut host = Host::new();
        assert_eq!(
            put_object(&mut host, id),
            StatusWord::SecurityStatusNotSatisfied,
            "{} written without the management key",
            rule.name
        );
        host.auth_default();
        if id == ObjectId::KEY_HISTORY {
            // Derived from the retired certificates; checked in apdu_table.
            continue;
        }
        assert_eq!(
            put_object(&mut host, id),
            StatusWord::Success,
            "{}",
            rule.name
        );
        host.card.reset();
        let read = host.get_data(&id.to_bytes());
        match rule.read {
            ReadRule::Always => assert_eq!(read.sw, StatusWord::Success, "{}", rule.name),
            ReadRule::Pin => {
                assert_eq!(
                    read.sw,
                    StatusWord::SecurityStatusNotSatisfied,
                    "{} read without the PIN",
                    rule.name
                );
                assert!(read.data.is_empty());
                assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
                assert_eq!(
                    host.get_data(&id.to_bytes()).sw,
                    StatusWord::Success,
                    "{}",
                    rule.name
                );
            }
        }
    }
}

/// One well-formed APDU for each command that the management key guards.
fn management_commands() -> Vec<(Ins, Vec<u8>)> {
    vec![
        (
            Ins::PutData,
            hex("00 DB 3F FF 0B 5C 03 5FFF05 53 04 01020304"),
        ),
        (
            Ins::GenerateAsymmetricKeyPair,
            hex("00 47 00 9A 05 AC 03 80 01 11"),
        ),
        (Ins::ImportKey, {
            let mut a = hex("00 FE 11 9A 22 06 20");
            a.extend_from_slice(&[0x33; 32]);
            a
        }),
        (Ins::MoveKey, hex("00 F6 FF 9E")),
        (Ins::SetManagementKey, {
            let mut a = hex("00 FF FF FF 1B 0A 9B 18");
            a.extend_from_slice(&common::DEFAULT_MGMT);
            a
        }),
    ]
}

/// Every command the table guards with the management key, both ways; the
/// list above must cover the table.
#[test]
fn management_key_commands_both_ways() {
    let commands = management_commands();
    for ins in (0..=255u8).map(Ins::from) {
        if access::command_rule(ins) == Some(CommandRule::ManagementKey) {
            assert!(
                commands.iter().any(|(i, _)| *i == ins),
                "{ins:?} has no test APDU"
            );
        }
    }
    for (ins, apdu) in commands {
        let mut host = Host::new();
        host.auth_default();
        host.generate(0x9E, AlgorithmId::EccP256, &[]); // for MOVE KEY
        host.card.reset();
        assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
        assert_eq!(
            host.raw(&apdu).sw,
            StatusWord::SecurityStatusNotSatisfied,
            "{ins:?} without the management key"
        );
        host.auth_default();
        assert_eq!(host.raw(&apdu).sw, StatusWord::Success, "{ins:?}");
    }
}

/// SET PIN RETRIES needs the management key and the PIN.
#[test]
fn set_pin_retries_needs_both_credentials() {
    let apdu = hex("00 FA 05 06");
    let mut host = Host::new();
    host.auth_default();
    assert_eq!(host.raw(&apdu).sw, StatusWord::SecurityStatusNotSatisfied);
    host.card.reset();
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert_eq!(host.raw(&apdu).sw, StatusWord::SecurityStatusNotSatisfied);
    host.auth_default();
    assert_eq!(host.raw(&apdu).sw, StatusWord::Success);
}

/// The Pairing Code Reference Data is "PIN or OCC" (SP 800-73-4 Part 1
/// table 3), not readable by whoever reaches the card.
#[test]
fn the_pairing_code_needs_the_pin() {
    let mut host = Host::new();
    host.auth_default();
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x23], &hex("99 08 3132333435363738")),
        StatusWord::Success
    );
    host.card.reset();
    let read = host.get_data(&[0x5F, 0xC1, 0x23]);
    assert_eq!(read.sw, StatusWord::SecurityStatusNotSatisfied);
    assert!(read.data.is_empty());
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert_eq!(host.get_data(&[0x5F, 0xC1, 0x23]).sw, StatusWord::Success);
}

/// Audit item 10: a YubiKey's limits, one object and all of them.
#[test]
fn objects_fit_a_yubikey_or_are_refused() {
    // A YubiKey 5's numbers (see the constants' sources), not ours to move.
    assert_eq!((MAX_OBJECT_SIZE, MAX_TOTAL_OBJECTS), (3063, 51_000));
    let mut host = Host::new();
    host.auth_default();
    let id = [0x5F, 0xC1, 0x08];
    assert_eq!(
        host.put_data(&id, &vec![7; MAX_OBJECT_SIZE]),
        StatusWord::Success
    );
    assert_eq!(
        host.put_data(&id, &vec![7; MAX_OBJECT_SIZE + 1]),
        StatusWord::WrongLength
    );
    // The refused write left the object as it was.
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert_eq!(
        host.get_data(&id).data.len(),
        MAX_OBJECT_SIZE + 4,
        "53 82 LL LL and the value"
    );
    // Fill the retired certificate objects until the card is full.
    let mut stored = None;
    for (n, tag) in (0x0Du8..=0x20).enumerate() {
        match host.put_data(&[0x5F, 0xC1, tag], &vec![n as u8; MAX_OBJECT_SIZE]) {
            StatusWord::Success => continue,
            sw => {
                assert_eq!(sw, StatusWord::NotEnoughMemory);
                stored = Some(n);
                break;
            }
        }
    }
    let stored = stored.expect("20 full objects cannot fit");
    assert!(stored * MAX_OBJECT_SIZE <= MAX_TOTAL_OBJECTS);
    assert!((stored + 2) * MAX_OBJECT_SIZE > MAX_TOTAL_OBJECTS);
    // Replacing an object by a smaller one still works on a full card.
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x0D], &[1, 2, 3]),
        StatusWord::Success
    );
}

/// The provisioning API keeps the same limits, naming the object.
#[test]
fn provisioning_refuses_a_certificate_no_yubikey_holds() {
    let mut host = Host::new();
    let huge = vec![0x30; MAX_OBJECT_SIZE];
    let err = host
        .card
        .put_certificate(piv_applet::Slot::AUTHENTICATION, &huge)
        .unwrap_err();
    assert!(err.to_string().contains("5FC105"), "{err}");
}
