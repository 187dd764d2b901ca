//! Table of APDU exchanges: every command's success path and each error
//! status word it can return, run in order against one card.
//!
//! Row format: `label | command hex | expectation`, where the expectation
//! is a status word alone (no data), `* SW` (any data), `^HEX SW` (data
//! starting with HEX) or `=HEX SW` (exactly HEX).

mod common;
use common::{hex, Host};
use piv_applet::{AlgorithmId, StatusWord};

fn run_table(host: &mut Host, table: &str) {
    for (n, line) in table
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(parts.len(), 3, "row {n}: {line}");
        let (label, cmd, want) = (parts[0], hex(parts[1]), parts[2]);
        let out = host.card.process(&cmd);
        let (data, sw) = out.split_at(out.len() - 2);
        let sw = hex::encode_upper(sw);
        let (data_rule, want_sw) = match want.rsplit_once(' ') {
            Some((d, s)) => (Some(d), s),
            None => (None, want),
        };
        assert_eq!(
            sw,
            want_sw.replace(' ', ""),
            "{label}: status word (data {})",
            hex::encode_upper(data)
        );
        match data_rule {
            None => assert!(
                data.is_empty(),
                "{label}: expected no data, got {}",
                hex::encode_upper(data)
            ),
            Some("*") => assert!(!data.is_empty(), "{label}: expected data"),
            Some(rule) if rule.starts_with('^') => {
                let prefix = hex(&rule[1..]);
                assert!(
                    data.starts_with(&prefix),
                    "{label}: {} does not start with {}",
                    hex::encode_upper(data),
                    &rule[1..]
                );
            }
            Some(rule) if rule.starts_with('=') => {
                assert_eq!(
                    hex::encode_upper(data),
                    rule[1..].replace(' ', ""),
                    "{label}: data"
                );
            }
            Some(rule) => panic!("{label}: bad rule {rule}"),
        }
    }
}

const TRANSPORT: &str = "
# SELECT: yubico-piv-tool's 5-byte AID without Le gets the whole template
select rid no Le         | 00A4040005A000000308                    | ^61 9000
select opensc 9 bytes    | 00A4040009A00000030800001000            | ^6139 4F06000010000100 79074F05A000000308 9000
select full AID Le       | 00A404000BA000000308000010000100 00     | ^61 9000
select other AID         | 00A4040007A0000001510000                | 6A82
deselected: GET VERSION  | 00FD0000                                | 6D00
select GIDS              | 00A4040009A00000039742544659            | 6A82
# The YubiKey Management application (ykman reads the device here), and
# the applications a YubiKey has but this card keeps switched off.
select management        | 00A4040008A000000527471117              | =5669727475616C206D6772202D204657207665727369 6F6E20352E372E31 9000
management: GET VERSION  | 00FD0000                                | 6D00
device info bad P2       | 001D000100                              | 6A86
device info page 1       | 001D010000                              | ^17 9000
device info page 0       | 001D000000                              | ^3B0102033F 9000
select OTP               | 00A4040007A0000005272001                | 6A82
select OATH              | 00A4040007A0000005272101                | 6A82
select OpenPGP           | 00A4040006D27600012401                  | 6A82
select FIDO              | 00A4040008A0000006472F0001              | 6A82
select PIV again         | 00A4040005A000000308                    | ^61 9000
select bad P1            | 00A4000002 3F00                         | 6A86
select too short AID     | 00A4040004A0000003                      | 6A82
windows probe            | 00CA7F6800                              | 6D00
select PIV once more     | 00A4040005A000000308                    | ^61 9000
# CLA rules
secure messaging         | 0CFD0000                                | 6882
logical channel          | 01FD0000                                | 6881
proprietary class        | 80FD0000                                | 6E00
bad class                | A0FD0000                                | 6E00
# lengths
too short                | 00CB                                    | 6700
Lc larger than data      | 00CB3FFF055C03                          | 6700
Lc smaller than data     | 00CB3FFF015C0304                        | 6700
extended Lc zero         | 00CB3FFF000000AA                        | 6700
unknown INS              | 00120000                                | 6D00
# YubiKey identity
get version              | 00FD000000                              | =050701 9000
get version bad P1       | 00FD0100                                | 6A86
get serial               | 00F8000000                              | =00BC614E 9000
get serial bad P2        | 00F80001                                | 6A86
# GET DATA
chuid                    | 00CB3FFF055C035FC10200                  | ^533B3019D4E739DA 9000
chuid extended           | 00CB3FFF0000055C035FC1020000            | ^533B3019 9000
ccc                      | 00CB3FFF055C035FC10700                  | ^5333 F015A0000001 9000
discovery                | 00CB3FFF035C017E00                      | =7E124F0BA0000003080000100001005F2F024000 9000
attestation cert         | 00CB3FFF0000055C035FFF010000            | ^5382 9000
absent certificate       | 00CB3FFF055C035FC10500                  | 6A82
pivman absent            | 00CB3FFF055C035FFF0000                  | 6A82
key history absent       | 00CB3FFF055C035FC10C00                  | 6A82
printed info needs PIN   | 00CB3FFF055C035FC10900                  | 6982
facial image needs PIN   | 00CB3FFF055C035FC10800                  | 6982
partial tag              | 00CB3FFF045C025FC100                    | 6A80
unknown tag              | 00CB3FFF055C035FC1FF00                  | 6A82
not 5C                   | 00CB3FFF055D035FC10200                  | 6A80
garbage TLV              | 00CB3FFF025C0500                        | 6A80
bad P1P2                 | 00CB3FFE055C035FC10200                  | 6A86
# GET RESPONSE with nothing pending
get response idle        | 00C0000000                              | 6985
# VERIFY
pin status               | 0020008000                              | 63C3
wrong pin                | 0020008008313131313131FFFF              | 63C2
all FF counts as wrong   | 0020008008FFFFFFFFFFFFFFFF              | 63C1
right pin                | 0020008008313233343536FFFF              | 9000
status after verify      | 00200080                                | 9000
printed info absent      | 00CB3FFF055C035FC10900                  | 6A82
log out                  | 0020FF80                                | 9000
status after log out     | 00200080                                | 63C3
short pin                | 002000800431323334                      | 6A80
puk not verifiable       | 0020008108313233343536FFFF              | 6A88
global pin absent        | 0020000008313233343536FFFF              | 6A88
bad P1                   | 0020018008313233343536FFFF              | 6A86
# CHANGE REFERENCE DATA
change wrong old         | 0024008010313131313131FFFF363534333231FFFF | 63C2
change new too short     | 0024008010313233343536FFFF3635343332FFFFFF | 6985
change short data        | 002400800F313233343536FFFF363534333231FF   | 6A80
change bad P2            | 0024008210313233343536FFFF363534333231FFFF | 6A88
change bad P1            | 0024018010313233343536FFFF363534333231FFFF | 6A88
change pin               | 0024008010313233343536FFFF363534333231FFFF | 9000
old pin fails            | 0020008008313233343536FFFF              | 63C2
new pin works            | 0020008008363534333231FFFF              | 9000
change back              | 0024008010363534333231FFFF313233343536FFFF | 9000
change puk               | 00240081103132333435363738 3837363534333231 | 9000
change puk back          | 00240081103837363534333231 3132333435363738 | 9000
# PIN blocked, then unblocked with the PUK
wrong 1                  | 0020008008303030303030FFFF              | 63C2
wrong 2                  | 0020008008303030303030FFFF              | 63C1
wrong 3                  | 0020008008303030303030FFFF              | 63C0
blocked                  | 0020008008313233343536FFFF              | 6983
blocked status           | 00200080                                | 6983
change when blocked      | 0024008010313233343536FFFF363534333231FFFF | 6983
unblock wrong puk        | 002C0080103030303030303030 313233343536FFFF | 63C2
unblock bad new pin      | 002C0080103132333435363738 FFFFFFFFFFFFFFFF | 6985
unblock bad P2           | 002C0081103132333435363738 313233343536FFFF | 6A88
unblock                  | 002C0080103132333435363738 313233343536FFFF | 9000
pin works again          | 0020008008313233343536FFFF              | 9000
# GET METADATA
pin metadata             | 00F7008000                              | =0101FF 050101 06020303 9000
puk metadata             | 00F7008100                              | =0101FF 050101 06020303 9000
mgmt metadata            | 00F7009B00                              | =01010A 02020001 050101 9000
empty slot metadata      | 00F7009A00                              | 6A88
unknown ref metadata     | 00F7001000                              | 6A88
metadata bad P1          | 00F7019A00                              | 6A86
# Without the management key
put data unauthorised    | 00DB3FFF095C035FC1095302AABB            | 6982
generate unauthorised    | 004700 9A 05 AC03800111                 | 6982
import unauthorised      | 00FE119A2206203333333333333333333333333333333333333333333333333333333333333333 | 6982
set mgmt unauthorised    | 00FFFFFF1B0A9B18010203040506070801020304050607080102030405060708 | 6982
move unauthorised        | 00F6829A                                | 6982
set retries unauthorised | 00FA0505                                | 6982
set retries zero         | 00FA0005                                | 6A86
reset while unblocked    | 00FB0000                                | 6985
attest empty slot        | 00F99A0000                              | 6A80
attest bad P2            | 00F99A0100                              | 6A86
attest attestation slot  | 00F9F90000                              | 6B00
# Management key authentication errors
mgmt wrong algorithm     | 0087039B047C028000                      | 6A80
external challenge       | 00870A9B047C028100                      | ^7C128110 9000
external wrong answer    | 00870A9B147C12821000000000000000000000000000000000 | 6982
mutual step 2 alone      | 00870A9B267C24801000000000000000000000000000000000811000000000000000000000000000000000 | 6985
mgmt garbage             | 00870A9B047C028300                      | 6A80
random for OpenSC        | 0087009B047C028100                      | ^7C128110 9000
# GENERAL AUTHENTICATE on keys
sign empty slot          | 0087079A0A7C08820081040102030400        | 6A80
not a 7C template        | 0087079A047D028200                      | 6A80
sign bad key ref         | 00870710047C028200                      | 6A86
";

#[test]
fn transport_pins_and_errors() {
    let mut host = Host::new();
    run_table(&mut host, TRANSPORT);
}

const AUTHENTICATED: &str = "
# After mutual authentication with the default key
put printed info         | 00DB3FFF095C035FC1095302AABB            | 9000
printed needs pin        | 00CB3FFF055C035FC10900                  | 6982
pin                      | 0020008008313233343536FFFF              | 9000
printed with pin         | 00CB3FFF055C035FC10900                  | =5302AABB 9000
delete printed info      | 00DB3FFF075C035FC1095300                | 9000
printed deleted          | 00CB3FFF055C035FC10900                  | 6A82
put pivman               | 00DB3FFF0D5C035FFF0053068004810100     | 6700
put pivman               | 00DB3FFF0C5C035FFF00530580038101 00     | 9000
get pivman               | 00CB3FFF055C035FFF0000                  | =530580038101 00 9000
put discovery bare       | 00DB3FFF147E124F0BA0000003080000100001005F2F024010 | 9000
get discovery            | 00CB3FFF035C017E00                      | =7E124F0BA0000003080000100001005F2F024010 9000
put unknown object       | 00DB3FFF075C035EC1FF5300                | 6A80
put yubikey-range object | 00DB3FFF095C035F0001530201 02           | 9000
get yubikey-range object | 00CB3FFF055C035F000100                  | =53020102 9000
put without 53           | 00DB3FFF055C035FC109                    | 6A80
put garbage              | 00DB3FFF035C055F                        | 6A80
put bad P1P2             | 00DB3FFE095C035FC1095302AABB            | 6A86
# key generation errors
generate bad alg         | 0047009A05AC03800199                    | 6A80
generate no template     | 0047009A05AD03800107                    | 6A80
generate mgmt slot       | 0047009B05AC03800111                    | 6B00
generate attestation     | 004700F905AC03800111                    | 6B00
generate bad P1          | 0047019A05AC03800111                    | 6A86
generate bad policy      | 0047009A08AC06800111AA0109              | 6A80
generate P-256           | 0047009A05AC03800111                    | ^7F4943864104 9000
metadata generated       | 00F7009A00                              | ^01011102020201 030101 04438641 9000
sign alg mismatch        | 0087079A0A7C08820081040102030400        | 6A80
attest generated         | 00F99A00000000                          | ^3082 9000
import bad data          | 00FE119A03060102                        | 6A80
import bad alg           | 00FE039A2206203333333333333333333333333333333333333333333333333333333333333333 | 6A80
import P-256 scalar      | 00FE119D2206203333333333333333333333333333333333333333333333333333333333333333 | 9000
metadata imported        | 00F7009D00                              | ^01011102020201 030102 9000
attest imported          | 00F99D0000                              | 6A80
move empty slot          | 00F6829E                                | 6A88
move to F9               | 00F6F99A                                | 6B00
move 9D to 82            | 00F6829D                                | 9000
9D now empty             | 00F7009D00                              | 6A88
82 holds the key         | 00F7008200                              | ^010111 9000
delete 82                | 00F6FF82                                | 9000
82 now empty             | 00F7008200                              | 6A88
set mgmt bad length      | 00FFFFFF1B0A9B1701020304050607080102030405060708010203040506070800 | 6A80
set mgmt bad ref         | 00FFFFFF1B0A9A18010203040506070801020304050607080102030405060708 | 6A80
set mgmt bad P2          | 00FFFF001B0A9B18010203040506070801020304050607080102030405060708 | 6A86
set mgmt bad alg         | 00FFFFFF1B079B18010203040506070801020304050607080102030405060708 | 6A80
set retries              | 00FA0505                                | 9000
pin metadata 5 tries     | 00F7008000                              | =0101FF 050101 06020505 9000
";

#[test]
fn authenticated_commands() {
    let mut host = Host::new();
    host.auth_default();
    run_table(&mut host, AUTHENTICATED);
}

#[test]
fn wrong_management_key_is_refused() {
    let mut host = Host::new();
    let mut wrong = common::DEFAULT_MGMT;
    wrong[0] ^= 1;
    assert_eq!(
        host.auth(AlgorithmId::Aes192, &wrong),
        StatusWord::SecurityStatusNotSatisfied
    );
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x09], &[1]),
        StatusWord::SecurityStatusNotSatisfied
    );
    // A challenge is single use: a replay of step 2 after a failure fails.
    assert_eq!(host.send(0x87, 0x0A, 0x9B, &hex("7C 24 80 10 00000000000000000000000000000000 81 10 00000000000000000000000000000000")).sw, StatusWord::ConditionsNotSatisfied);
    host.auth_default();
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x09], &[1]),
        StatusWord::Success
    );
}

#[test]
fn external_authentication() {
    use piv_applet::mgmt::ManagementKey;
    let mut host = Host::new();
    let k = ManagementKey::new(AlgorithmId::Aes192, &common::DEFAULT_MGMT).unwrap();
    let r = host.send(0x87, 0x0A, 0x9B, &hex("7C 02 81 00"));
    let challenge = piv_applet::tlv::find(piv_applet::tlv::find(&r.data, 0x7C).unwrap(), 0x81)
        .unwrap()
        .to_vec();
    let answer = k.encrypt_block(&challenge).unwrap();
    let mut inner = Vec::new();
    piv_applet::tlv::write(&mut inner, 0x82, &answer);
    assert_eq!(
        host.send(0x87, 0x0A, 0x9B, &piv_applet::tlv::encode(0x7C, &inner))
            .sw,
        StatusWord::Success
    );
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x09], &[1]),
        StatusWord::Success
    );
    // The same answer again is refused: the challenge was used up.
    assert_eq!(
        host.send(0x87, 0x0A, 0x9B, &piv_applet::tlv::encode(0x7C, &inner))
            .sw,
        StatusWord::ConditionsNotSatisfied
    );
}

#[test]
fn pin_always_slot_needs_verify_before_each_use() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9C, AlgorithmId::EccP256, &[]);
    let digest = [7u8; 32];
    assert_eq!(
        host.sign(0x9C, AlgorithmId::EccP256, &digest),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert!(host.sign(0x9C, AlgorithmId::EccP256, &digest).is_ok());
    assert_eq!(
        host.sign(0x9C, AlgorithmId::EccP256, &digest),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert!(host.sign(0x9C, AlgorithmId::EccP256, &digest).is_ok());
    // A slot with PIN policy "once" keeps working after one VERIFY.
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    assert!(host.sign(0x9A, AlgorithmId::EccP256, &digest).is_ok());
    assert!(host.sign(0x9A, AlgorithmId::EccP256, &digest).is_ok());
    // Policy "never" in 9D needs no PIN at all, even after a reset.
    host.generate(0x9D, AlgorithmId::EccP256, &[0xAA, 1, 1]);
    host.card.reset();
    assert!(host.sign(0x9D, AlgorithmId::EccP256, &digest).is_ok());
    assert_eq!(
        host.sign(0x9A, AlgorithmId::EccP256, &digest),
        Err(StatusWord::SecurityStatusNotSatisfied)
    );
    // 9E (card authentication) defaults to no PIN.
    host.auth_default();
    host.generate(0x9E, AlgorithmId::EccP256, &[]);
    host.card.reset();
    assert!(host.sign(0x9E, AlgorithmId::EccP256, &digest).is_ok());
}

#[test]
fn touch_policy_is_simulated() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9E, AlgorithmId::EccP256, &[0xAB, 1, 2]);
    let meta = host.ok(0xF7, 0, 0x9E, &[]);
    assert_eq!(piv_applet::tlv::find(&meta, 0x02), Some(&[1u8, 2][..]));
    assert!(host.sign(0x9E, AlgorithmId::EccP256, &[1; 32]).is_ok());
    host.card.set_touch_mode(piv_applet::TouchMode::Deny);
    assert_eq!(
        host.sign(0x9E, AlgorithmId::EccP256, &[1; 32]),
        Err(StatusWord::ConditionsNotSatisfied)
    );
}

#[test]
fn response_chaining_honours_le() {
    let mut host = Host::new();
    // The attestation certificate is several hundred bytes: with Le=0x10
    // the card returns 16 bytes and 61xx, and GET RESPONSE continues.
    let whole = host.get_data(&[0x5F, 0xFF, 0x01]).data;
    assert!(whole.len() > 300);
    let r = host.raw(&hex("00CB3FFF055C035FFF0110"));
    assert_eq!(r.data.len(), 16);
    let mut got = r.data.clone();
    let mut sw = r.sw;
    while let StatusWord::MoreData(n) = sw {
        let le = if n == 0 { 0x20 } else { n.min(0x20) };
        let r = host.raw(&[0, 0xC0, 0, 0, le]);
        assert!(r.data.len() <= 0x20, "never more than Le");
        got.extend_from_slice(&r.data);
        sw = r.sw;
    }
    assert_eq!(sw, StatusWord::Success);
    assert_eq!(got, whole);
    // Any other command drops the pending response.
    let r = host.raw(&hex("00CB3FFF055C035FFF0110"));
    assert!(matches!(r.sw, StatusWord::MoreData(_)));
    host.raw(&hex("00FD0000"));
    assert_eq!(
        host.raw(&hex("00C0000000")).sw,
        StatusWord::ConditionsNotSatisfied
    );
    // GET RESPONSE with P1/P2 set is refused.
    host.raw(&hex("00CB3FFF055C035FFF0110"));
    assert_eq!(host.raw(&hex("00C0010000")).sw, StatusWord::IncorrectP1P2);
    // A short APDU with Le=00 gets 256 bytes and 61 00 when more than 256 remain.
    let r = host.raw(&hex("00CB3FFF055C035FFF0100"));
    assert_eq!(r.data.len(), 256);
    assert!(matches!(r.sw, StatusWord::MoreData(_)));
    // An extended APDU gets everything at once.
    let r = host.raw(&hex("00CB3FFF0000055C035FFF010000"));
    assert_eq!((r.data, r.sw), (whole, StatusWord::Success));
}

#[test]
fn command_chaining() {
    let mut host = Host::new();
    host.auth_default();
    let value = vec![0x42; 1000];
    let mut data = piv_applet::tlv::encode(0x5C, &[0x5F, 0xC1, 0x08]);
    piv_applet::tlv::write(&mut data, 0x53, &value);
    assert_eq!(
        host.send_chained(0xDB, 0x3F, 0xFF, &data).sw,
        StatusWord::Success
    );
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    let got = host.get_data(&[0x5F, 0xC1, 0x08]);
    assert_eq!(*got.data, piv_applet::tlv::encode(0x53, &value));
    // A chain broken by another command is dropped: the final chunk alone
    // is then an incomplete PUT DATA.
    host.raw(&piv_applet::apdu::build_command(
        0x10,
        0xDB,
        0x3F,
        0xFF,
        &data[..200],
        None,
    ));
    host.raw(&hex("00FD0000"));
    let r = host.raw(&piv_applet::apdu::build_command(
        0,
        0xDB,
        0x3F,
        0xFF,
        &data[200..400],
        None,
    ));
    assert_eq!(r.sw, StatusWord::IncorrectData);
    // A chain that grows past the limit is refused.
    let chunk = vec![0u8; 255];
    let mut last = StatusWord::Success;
    for _ in 0..(piv_applet::card::MAX_CHAINED_COMMAND / 255 + 2) {
        last = host
            .raw(&piv_applet::apdu::build_command(
                0x10, 0xDB, 0x3F, 0xFF, &chunk, None,
            ))
            .sw;
        if last != StatusWord::Success {
            break;
        }
    }
    assert_eq!(last, StatusWord::NotEnoughMemory);
}

#[test]
fn object_size_limit() {
    let mut host = Host::new();
    host.auth_default();
    let big = vec![1u8; piv_applet::card::MAX_OBJECT_SIZE + 1];
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x08], &big),
        StatusWord::WrongLength
    );
}

#[test]
fn reset_needs_blocked_pin_and_puk_and_restores_defaults() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    let chuid = host.get_data(&[0x5F, 0xC1, 0x02]).data;
    // ykman's reset: block the PIN and the PUK with wrong values.
    for _ in 0..3 {
        host.send(0x20, 0, 0x80, &[0xFF; 8]);
    }
    assert_eq!(
        host.raw(&hex("00FB0000")).sw,
        StatusWord::ConditionsNotSatisfied
    );
    for _ in 0..3 {
        host.send(0x2C, 0, 0x80, &[0xFF; 16]);
    }
    assert_eq!(host.raw(&hex("00FB0000")).sw, StatusWord::Success);
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    assert_eq!(
        host.raw(&hex("00F7009A00")).sw,
        StatusWord::ReferenceNotFound
    );
    assert_eq!(
        host.get_data(&[0x5F, 0xC1, 0x02]).data,
        chuid,
        "CHUID survives reset"
    );
    assert_eq!(
        host.get_data(&[0x5F, 0xFF, 0x01]).sw,
        StatusWord::Success,
        "attestation cert survives"
    );
    host.auth_default();
}

#[test]
fn key_history_follows_retired_certificates() {
    let mut host = Host::new();
    host.auth_default();
    assert_eq!(
        host.get_data(&[0x5F, 0xC1, 0x0C]).sw,
        StatusWord::FileNotFound
    );
    let cert_obj = piv_applet::state::CardState::certificate_object_value(&[0x30, 0x00]);
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x0D], &cert_obj),
        StatusWord::Success
    );
    assert_eq!(
        host.put_data(&[0x5F, 0xC1, 0x0E], &cert_obj),
        StatusWord::Success
    );
    assert_eq!(
        *host.get_data(&[0x5F, 0xC1, 0x0C]).data,
        hex("53 08 C101 02 C201 00 FE00")
    );
    assert_eq!(host.put_data(&[0x5F, 0xC1, 0x0E], &[]), StatusWord::Success);
    assert_eq!(
        *host.get_data(&[0x5F, 0xC1, 0x0C]).data,
        hex("53 08 C101 01 C201 00 FE00")
    );
}

#[test]
fn store_failure_answers_6581_and_changes_nothing() {
    use piv_applet::store::MemoryStore;
    let state = piv_applet::Card::new_state(&piv_applet::CardOptions::default()).unwrap();
    let store = MemoryStore {
        saved: None,
        fail: true,
    };
    let mut card = piv_applet::Card::with_store(state, Box::new(store));
    let out = card.process(&hex("0020008008313233343536FFFF"));
    assert_eq!(out, hex("6581"));
    assert_eq!(
        card.state().pin.tries_left,
        3,
        "no try consumed when it cannot be recorded"
    );
    // And the PIN was not checked: status still says not verified.
    assert_eq!(card.process(&hex("00200080")), hex("63C3"));
}
