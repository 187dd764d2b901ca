//! The typed command step: each assembled APDU becomes a [`PivCommand`] or
//! a [`ManagementCommand`] with validated fields (slot, algorithm, key
//! reference, object, PIN reference) before any handler runs, so every
//! refusal of a malformed command is decided here, once, and a handler
//! only executes.
//!
//! A YubiKey checks some parts of the data field only after the session
//! (GENERATE's template after the management key, GENERAL AUTHENTICATE's
//! operation after the slot's key): those parts are parsed here as well,
//! but carried as a [`Deferred`] that the handler opens after its session
//! check, so the order of the answers stays a YubiKey's.

use crate::access;
use crate::enums::{
    AlgorithmId, Ins, KeyRef, MgmtIns, ObjectId, PinPolicy, Slot, TouchPolicy, MANAGEMENT_AID,
    PIV_AID, PIV_RID_LEN,
};
use crate::mgmt::ManagementKey;
use crate::refusal::Refusal;
use crate::sm;
use crate::state::PIN_BLOCK_LEN;
use crate::tlv;

/// A part of a command that was parsed with the rest but whose refusal
/// comes after a check of the card's state.
pub(super) type Deferred<T> = Result<T, Refusal>;

/// The key references that have reference data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PinRef {
    Pin,
    Puk,
}

impl PinRef {
    fn new(key_ref: u8) -> Option<PinRef> {
        match KeyRef::from(key_ref) {
            KeyRef::Pin => Some(PinRef::Pin),
            KeyRef::Puk => Some(PinRef::Puk),
            _ => None,
        }
    }
}

impl From<PinRef> for KeyRef {
    fn from(r: PinRef) -> KeyRef {
        match r {
            PinRef::Pin => KeyRef::Pin,
            PinRef::Puk => KeyRef::Puk,
        }
    }
}

/// The application a SELECT chose; commands go to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Applet {
    Piv,
    /// The YubiKey Management application ([`crate::device`]).
    Management,
}

/// The application a SELECT names: `None` for one the card does not have,
/// which the handler answers after ending the session.
pub(super) fn parse_select(p1: u8, aid: &[u8]) -> Result<Option<Applet>, Refusal> {
    if p1 != 0x04 {
        return Err(Refusal::BadP1P2);
    }
    Ok(if aid.len() >= PIV_RID_LEN && PIV_AID.starts_with(aid) {
        Some(Applet::Piv)
    } else if aid == MANAGEMENT_AID {
        Some(Applet::Management)
    } else {
        None
    })
}

/// CLA rules of SP 800-73-4 part 2, 3.2: the basic channel, optionally
/// with the chaining bit; secure messaging (0C) only on a card that offers
/// it. Checked on every APDU of a chain, before the chain is assembled.
/// `Ok(true)`: the command is secure-messaging protected.
pub(super) fn check_cla(cla: u8, sm_offered: bool) -> Result<bool, Refusal> {
    if cla & 0xE0 != 0 {
        Err(Refusal::BadCla)
    } else if cla & 0x0C == 0x0C && sm_offered && cla & 0x03 == 0 {
        Ok(true)
    } else if cla & 0x0C != 0 {
        Err(Refusal::SecureMessaging)
    } else if cla & 0x03 != 0 {
        Err(Refusal::LogicalChannel)
    } else {
        Ok(false)
    }
}

/// What VERIFY asks.
#[derive(Debug)]
pub(super) enum Verify<'a> {
    /// P1 = FF: forget that the PIN was verified.
    Forget,
    /// No data: whether the PIN is verified (or the tries left).
    Status,
    /// Check this padded PIN.
    Check(&'a [u8]),
    /// Check the VCI pairing code (key reference 98).
    PairingCode(&'a [u8]),
}

/// The algorithm and policies of a key to make (GENERATE's template AC).
#[derive(Clone, Copy, Debug)]
pub(super) struct KeySpec {
    pub alg: AlgorithmId,
    pub pin_policy: PinPolicy,
    pub touch_policy: TouchPolicy,
}

/// The input of a private-key operation.
#[derive(Debug)]
pub(super) enum Operation<'a> {
    Sign(&'a [u8]),
    Ecdh(&'a [u8]),
}

/// A step of the management key's challenge-response.
#[derive(Debug)]
pub(super) enum MgmtStep<'a> {
    /// Mutual, step 1: the host asks for an encrypted witness.
    RequestWitness,
    /// Mutual, step 2: the decrypted witness and the host's challenge.
    AnswerWitness {
        decrypted: &'a [u8],
        challenge: &'a [u8],
    },
    /// External, step 1: the host asks for a plain challenge.
    RequestChallenge,
    /// External, step 2: the encrypted challenge.
    AnswerChallenge(&'a [u8]),
}

/// What GENERAL AUTHENTICATE asks.
#[derive(Debug)]
pub(super) enum Authenticate<'a> {
    /// A challenge from the management key reference with P1 = 00: random
    /// bytes (OpenSC's C_GenerateRandom asks so).
    Random,
    /// A step of the management key's authentication with the algorithm
    /// P1 names.
    Management {
        alg: AlgorithmId,
        step: Deferred<MgmtStep<'a>>,
    },
    /// An operation of a slot's private key with the algorithm P1 names.
    Key {
        slot: Slot,
        alg: AlgorithmId,
        operation: Deferred<Operation<'a>>,
    },
    /// Secure messaging key establishment with the cipher suite P1 names
    /// (key reference 04); `request` is the whole data field.
    SecureMessaging { algorithm: u8, request: &'a [u8] },
}

impl PivCommand<'_> {
    /// Whether the command is for the contact interface only (SP 800-73-4
    /// part 1, table 1 and 2.1): everything but reading the objects that
    /// are free on the contactless interface
    /// ([`access::CONTACTLESS_OBJECTS`]), the
    /// Card Authentication key, secure messaging key establishment and the
    /// pairing code (which its handler takes only within secure
    /// messaging), and the YubiKey version and serial that ykman reads
    /// before anything else.
    pub(super) fn is_contact_only(&self) -> bool {
        match self {
            PivCommand::GetData(id) => !access::CONTACTLESS_OBJECTS.contains(id),
            PivCommand::GeneralAuthenticate(Authenticate::Key { slot, .. }) => {
                *slot != Slot::CARD_AUTHENTICATION
            }
            PivCommand::GeneralAuthenticate(Authenticate::SecureMessaging { .. })
            | PivCommand::Verify(Verify::PairingCode(_))
            | PivCommand::GetVersion
            | PivCommand::GetSerial => false,
            _ => true,
        }
    }
}

/// What GET METADATA describes.
#[derive(Clone, Copy, Debug)]
pub(super) enum MetadataRef {
    Reference(PinRef),
    ManagementKey,
    Key(Slot),
}

/// MOVE KEY's two forms.
#[derive(Clone, Copy, Debug)]
pub(super) enum KeyMove {
    /// P1 = FF: delete the key in any slot, F9's included.
    Delete(Slot),
    /// Move between two different PIV slots.
    Move { from: Slot, to: Slot },
}

/// A PIV command, parsed.
#[derive(Debug)]
pub(super) enum PivCommand<'a> {
    GetData(ObjectId),
    /// The object and its value (empty: delete it).
    PutData(Deferred<(ObjectId, Vec<u8>)>),
    Verify(Verify<'a>),
    ChangeReference {
        reference: PinRef,
        old: &'a [u8],
        new: &'a [u8],
    },
    ResetRetryCounter {
        puk: &'a [u8],
        new: &'a [u8],
    },
    GeneralAuthenticate(Authenticate<'a>),
    Generate {
        slot: Slot,
        spec: Deferred<KeySpec>,
    },
    GetVersion,
    GetSerial,
    GetMetadata(MetadataRef),
    SetManagementKey {
        touch: TouchPolicy,
        key: Deferred<ManagementKey>,
    },
    /// The key data is decoded by the handler, after the access check:
    /// decoding an RSA key is work that nobody unauthenticated may ask for.
    Import {
        slot: Slot,
        alg: AlgorithmId,
        policies: Deferred<(PinPolicy, TouchPolicy)>,
        key: &'a [u8],
    },
    Attest(Slot),
    Reset,
    SetPinRetries {
        pin_tries: u8,
        puk_tries: u8,
    },
    MoveKey(KeyMove),
}

impl<'a> PivCommand<'a> {
    /// Parses an assembled command (chaining undone, CLA checked); every
    /// instruction the PIV application does not have is 6D00.
    pub(super) fn parse(ins: Ins, p1: u8, p2: u8, data: &'a [u8]) -> Result<Self, Refusal> {
        Ok(match ins {
            Ins::GetData => {
                expect_p1p2(p1, p2, 0x3F, 0xFF)?;
                PivCommand::GetData(get_data_object(data)?)
            }
            Ins::PutData => {
                expect_p1p2(p1, p2, 0x3F, 0xFF)?;
                PivCommand::PutData(put_data_object(data))
            }
            Ins::Verify => PivCommand::Verify(verify(p1, p2, data)?),
            Ins::ChangeReferenceData => {
                if p1 != 0 {
                    return Err(Refusal::NoReference);
                }
                let reference = PinRef::new(p2).ok_or(Refusal::NoReference)?;
                let (old, new) = two_pin_blocks(data)?;
                PivCommand::ChangeReference {
                    reference,
                    old,
                    new,
                }
            }
            Ins::ResetRetryCounter => {
                if p1 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                if PinRef::new(p2) != Some(PinRef::Pin) {
                    return Err(Refusal::NoReference);
                }
                let (puk, new) = two_pin_blocks(data)?;
                PivCommand::ResetRetryCounter { puk, new }
            }
            Ins::GeneralAuthenticate => {
                PivCommand::GeneralAuthenticate(general_authenticate(p1, p2, data)?)
            }
            Ins::GenerateAsymmetricKeyPair => {
                if p1 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                let slot = Slot::new_piv(p2).ok_or(Refusal::BadSlot)?;
                PivCommand::Generate {
                    slot,
                    spec: key_spec(data),
                }
            }
            Ins::GetVersion => {
                expect_p1p2(p1, p2, 0, 0)?;
                PivCommand::GetVersion
            }
            Ins::GetSerial => {
                expect_p1p2(p1, p2, 0, 0)?;
                PivCommand::GetSerial
            }
            Ins::GetMetadata => {
                if p1 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                PivCommand::GetMetadata(match KeyRef::from(p2) {
                    KeyRef::ManagementKey => MetadataRef::ManagementKey,
                    _ => match PinRef::new(p2) {
                        Some(r) => MetadataRef::Reference(r),
                        None => MetadataRef::Key(Slot::new(p2).ok_or(Refusal::NoReference)?),
                    },
                })
            }
            Ins::SetManagementKey => {
                let touch = match (p1, p2) {
                    (0xFF, 0xFF) => TouchPolicy::Never,
                    (0xFF, 0xFE) => TouchPolicy::Always,
                    // Yubico.NET.SDK set-mgmt-key.md: FD asks for a cached
                    // touch.
                    (0xFF, 0xFD) => TouchPolicy::Cached,
                    _ => return Err(Refusal::BadP1P2),
                };
                PivCommand::SetManagementKey {
                    touch,
                    key: management_key(data),
                }
            }
            Ins::ImportKey => {
                let alg = AlgorithmId::from(p1);
                let slot = Slot::new(p2).ok_or(Refusal::BadSlot)?;
                if !alg.is_asymmetric() {
                    return Err(Refusal::BadAlgorithm);
                }
                let policies = tlv::parse_all(data)
                    .map_err(|_| Refusal::BadData)
                    .and_then(|tlvs| policies(&tlvs));
                PivCommand::Import {
                    slot,
                    alg,
                    policies,
                    key: data,
                }
            }
            Ins::Attest => {
                if p2 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                PivCommand::Attest(Slot::new_piv(p1).ok_or(Refusal::BadSlot)?)
            }
            Ins::Reset => {
                expect_p1p2(p1, p2, 0, 0)?;
                PivCommand::Reset
            }
            Ins::SetPinRetries => {
                let (pin_tries, puk_tries) = (p1, p2);
                if !(1..=15).contains(&pin_tries) || !(1..=15).contains(&puk_tries) {
                    return Err(Refusal::BadP1P2);
                }
                PivCommand::SetPinRetries {
                    pin_tries,
                    puk_tries,
                }
            }
            Ins::MoveKey => PivCommand::MoveKey(key_move(p1, p2)?),
            _ => return Err(Refusal::UnknownIns),
        })
    }
}

/// A command of the Management application, parsed.
#[derive(Clone, Copy, Debug)]
pub(super) enum ManagementCommand {
    /// GET DEVICE INFO of a page.
    ReadConfig { page: u8 },
}

impl ManagementCommand {
    /// The application answers GET DEVICE INFO only: the card cannot
    /// change its applications or reset other ones, so writing the
    /// configuration is refused as an unknown instruction, as a YubiKey
    /// without the feature does.
    pub(super) fn parse(ins: Ins, p1: u8, p2: u8) -> Result<Self, Refusal> {
        match MgmtIns::from(u8::from(ins)) {
            MgmtIns::ReadConfig => {
                if p2 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                Ok(ManagementCommand::ReadConfig { page: p1 })
            }
            _ => Err(Refusal::UnknownIns),
        }
    }
}

fn expect_p1p2(p1: u8, p2: u8, want_p1: u8, want_p2: u8) -> Result<(), Refusal> {
    if (p1, p2) == (want_p1, want_p2) {
        Ok(())
    } else {
        Err(Refusal::BadP1P2)
    }
}

/// GET DATA's `5C` tag naming an object the card stores.
fn get_data_object(data: &[u8]) -> Result<ObjectId, Refusal> {
    let tag = tlv::parse_one(data).map_err(|_| Refusal::BadData)?;
    if tag.tag != 0x5C {
        return Err(Refusal::BadData);
    }
    ObjectId::from_bytes(tag.value)
        .filter(|id| id.is_known())
        .ok_or(Refusal::BadObjectId)
}

/// PUT DATA's object and value: `5C` and `53`, or a bare Discovery (7E) or
/// BIT group template (7F61), which is stored with its tag.
fn put_data_object(data: &[u8]) -> Deferred<(ObjectId, Vec<u8>)> {
    let tlvs = tlv::parse_all(data).map_err(|_| Refusal::BadData)?;
    let (id, value) = match tlvs.as_slice() {
        [bare] if bare.tag == 0x7E || bare.tag == 0x7F61 => {
            (ObjectId(bare.tag), tlv::encode(bare.tag, bare.value))
        }
        [t, v] if t.tag == 0x5C && v.tag == 0x53 => {
            let id = ObjectId::from_bytes(t.value).ok_or(Refusal::BadObjectId)?;
            (id, v.value.to_vec())
        }
        _ => return Err(Refusal::BadData),
    };
    if !id.is_known() || id == ObjectId::DISCOVERY && tlv::find(&value, 0x7E).is_none() {
        return Err(Refusal::BadObjectId);
    }
    Ok((id, value))
}

fn verify(p1: u8, p2: u8, data: &[u8]) -> Result<Verify<'_>, Refusal> {
    if p2 == sm::PAIRING_CODE_REFERENCE && p1 == 0 {
        return Ok(Verify::PairingCode(data));
    }
    if PinRef::new(p2) != Some(PinRef::Pin) {
        return Err(Refusal::NoReference);
    }
    match (p1, data.len()) {
        (0xFF, 0) => Ok(Verify::Forget),
        (0x00, 0) => Ok(Verify::Status),
        (0x00, PIN_BLOCK_LEN) => Ok(Verify::Check(data)),
        (0x00 | 0xFF, _) => Err(Refusal::BadData),
        _ => Err(Refusal::BadP1P2),
    }
}

/// The old (or PUK) and new padded blocks of CHANGE REFERENCE DATA and
/// RESET RETRY COUNTER.
fn two_pin_blocks(data: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if data.len() != 2 * PIN_BLOCK_LEN {
        return Err(Refusal::BadData);
    }
    Ok(data.split_at(PIN_BLOCK_LEN))
}

fn general_authenticate(p1: u8, p2: u8, data: &[u8]) -> Result<Authenticate<'_>, Refusal> {
    let outer = tlv::parse_one(data).map_err(|_| Refusal::BadData)?;
    if outer.tag != 0x7C {
        return Err(Refusal::BadData);
    }
    let inner = tlv::parse_all(outer.value).map_err(|_| Refusal::BadData)?;
    let get = |tag: u32| inner.iter().find(|t| t.tag == tag).map(|t| t.value);
    let (witness, challenge, response, exponentiation) =
        (get(0x80), get(0x81), get(0x82), get(0x85));
    let alg = AlgorithmId::from(p1);
    if KeyRef::from(p2) == KeyRef::ManagementKey {
        let step = match (witness, challenge, response) {
            (Some([]), None, None) => Ok(MgmtStep::RequestWitness),
            (Some(decrypted), Some(challenge), None) => Ok(MgmtStep::AnswerWitness {
                decrypted,
                challenge,
            }),
            (None, Some([]), None) if p1 == 0 => return Ok(Authenticate::Random),
            (None, Some([]), None) => Ok(MgmtStep::RequestChallenge),
            (None, None, Some(answer)) if !answer.is_empty() => {
                Ok(MgmtStep::AnswerChallenge(answer))
            }
            _ => Err(Refusal::BadData),
        };
        return Ok(Authenticate::Management { alg, step });
    }
    if p2 == sm::KEY_REFERENCE {
        return Ok(Authenticate::SecureMessaging {
            algorithm: p1,
            request: data,
        });
    }
    // F9 is answered as any key reference GENERAL AUTHENTICATE does not
    // take (6A86, incorrect P1-P2). Yubico documents F9 only for ATTEST,
    // IMPORT and its certificate object, and its SDKs refuse to send a
    // signature request to it; the exact word a YubiKey 5.7 answers was
    // not measured here.
    let slot = access::general_authenticate_slot(p2).ok_or(Refusal::BadP1P2)?;
    let operation = match (challenge, response, exponentiation) {
        (Some(c), Some([]), None) if !c.is_empty() => Ok(Operation::Sign(c)),
        (None, Some([]), Some(p)) if !p.is_empty() => Ok(Operation::Ecdh(p)),
        _ => Err(Refusal::BadData),
    };
    Ok(Authenticate::Key {
        slot,
        alg,
        operation,
    })
}

/// GENERATE's template: `AC` with the algorithm (80) and the policies.
fn key_spec(data: &[u8]) -> Deferred<KeySpec> {
    let template = tlv::parse_one(data).map_err(|_| Refusal::BadData)?;
    if template.tag != 0xAC {
        return Err(Refusal::BadData);
    }
    let inner = tlv::parse_all(template.value).map_err(|_| Refusal::BadData)?;
    let alg = match inner.iter().find(|t| t.tag == 0x80).map(|t| t.value) {
        Some([a]) => AlgorithmId::from(*a),
        _ => return Err(Refusal::BadData),
    };
    if !alg.is_asymmetric() {
        return Err(Refusal::BadAlgorithm);
    }
    let (pin_policy, touch_policy) = policies(&inner)?;
    Ok(KeySpec {
        alg,
        pin_policy,
        touch_policy,
    })
}

/// Parses `AA` / `AB` policy TLVs (YubiKey) from a list.
fn policies(tlvs: &[tlv::Tlv<'_>]) -> Result<(PinPolicy, TouchPolicy), Refusal> {
    let mut pin = PinPolicy::Default;
    let mut touch = TouchPolicy::Default;
    for t in tlvs {
        match (t.tag, t.value) {
            (0xAA, [v]) => {
                pin = PinPolicy::from(*v);
                if matches!(pin, PinPolicy::Unknown(_)) {
                    return Err(Refusal::BadData);
                }
            }
            (0xAB, [v]) => {
                touch = TouchPolicy::from(*v);
                if matches!(touch, TouchPolicy::Unknown(_)) {
                    return Err(Refusal::BadData);
                }
            }
            (0xAA | 0xAB, _) => return Err(Refusal::BadData),
            _ => {}
        }
    }
    Ok((pin, touch))
}

/// SET MANAGEMENT KEY's data: algorithm, key reference 9B, length, key.
fn management_key(data: &[u8]) -> Deferred<ManagementKey> {
    let [alg, key_ref, len, key @ ..] = data else {
        return Err(Refusal::BadData);
    };
    if KeyRef::from(*key_ref) != KeyRef::ManagementKey || usize::from(*len) != key.len() {
        return Err(Refusal::BadData);
    }
    ManagementKey::new(AlgorithmId::from(*alg), key).map_err(|_| Refusal::BadData)
}

/// MOVE KEY (P1 = destination, P2 = source) or, with P1 = FF, DELETE KEY.
/// Yubico's "PIV extensions" page: a key moves from and to any slot but
/// F9, and any key may be deleted, F9's included.
fn key_move(p1: u8, p2: u8) -> Result<KeyMove, Refusal> {
    if p1 == 0xFF {
        return Slot::new(p2).map(KeyMove::Delete).ok_or(Refusal::BadSlot);
    }
    let to = Slot::new_piv(p1).ok_or(Refusal::BadSlot)?;
    let from = Slot::new_piv(p2)
        .filter(|s| *s != to)
        .ok_or(Refusal::BadSlot)?;
    Ok(KeyMove::Move { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ins: Ins, p1: u8, p2: u8, data: &[u8]) -> Result<PivCommand<'_>, Refusal> {
        PivCommand::parse(ins, p1, p2, data)
    }

    #[test]
    fn header_refusals_come_before_the_data() {
        let gen = Ins::GenerateAsymmetricKeyPair;
        assert_eq!(parse(gen, 1, 0xF9, &[]).unwrap_err(), Refusal::BadP1P2);
        assert_eq!(parse(gen, 0, 0xF9, &[]).unwrap_err(), Refusal::BadSlot);
        // A malformed template is refused only after the access check.
        let Ok(PivCommand::Generate { slot, spec }) = parse(gen, 0, 0x9A, &[0x01]) else {
            panic!("GENERATE of 9A parses");
        };
        assert_eq!(
            (slot, spec.unwrap_err()),
            (Slot::AUTHENTICATION, Refusal::BadData)
        );
        let Ok(PivCommand::Generate { spec, .. }) = parse(gen, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x03])
        else {
            panic!("GENERATE of 9A parses");
        };
        assert_eq!(spec.unwrap_err(), Refusal::BadAlgorithm);
    }

    #[test]
    fn import_names_the_slot_before_the_algorithm() {
        let imp = Ins::ImportKey;
        assert_eq!(parse(imp, 0x03, 0x9B, &[]).unwrap_err(), Refusal::BadSlot);
        assert_eq!(
            parse(imp, 0x03, 0xF9, &[]).unwrap_err(),
            Refusal::BadAlgorithm
        );
        assert!(matches!(
            parse(imp, 0x11, 0xF9, &[]),
            Ok(PivCommand::Import {
                slot: Slot::ATTESTATION,
                ..
            })
        ));
    }

    #[test]
    fn move_key_takes_two_piv_slots_and_deletes_any() {
        let mv = Ins::MoveKey;
        assert_eq!(parse(mv, 0x9A, 0x9A, &[]).unwrap_err(), Refusal::BadSlot);
        assert_eq!(parse(mv, 0x9A, 0xF9, &[]).unwrap_err(), Refusal::BadSlot);
        assert_eq!(parse(mv, 0xF9, 0x9A, &[]).unwrap_err(), Refusal::BadSlot);
        assert!(matches!(
            parse(mv, 0xFF, 0xF9, &[]),
            Ok(PivCommand::MoveKey(KeyMove::Delete(Slot::ATTESTATION)))
        ));
        assert!(matches!(
            parse(mv, 0x9C, 0x9A, &[]),
            Ok(PivCommand::MoveKey(KeyMove::Move {
                from: Slot::AUTHENTICATION,
                to: Slot::SIGNATURE
            }))
        ));
    }

    #[test]
    fn a_management_challenge_with_p1_zero_is_random_bytes() {
        let ga = Ins::GeneralAuthenticate;
        let ask = [0x7C, 2, 0x81, 0];
        assert!(matches!(
            parse(ga, 0, 0x9B, &ask),
            Ok(PivCommand::GeneralAuthenticate(Authenticate::Random))
        ));
        assert!(matches!(
            parse(ga, 0x0A, 0x9B, &ask),
            Ok(PivCommand::GeneralAuthenticate(Authenticate::Management {
                step: Ok(MgmtStep::RequestChallenge),
                ..
            }))
        ));
        // A malformed step still reaches the handler, which ends the
        // pending challenge before refusing it.
        assert!(matches!(
            parse(ga, 0x0A, 0x9B, &[0x7C, 0]),
            Ok(PivCommand::GeneralAuthenticate(Authenticate::Management {
                step: Err(Refusal::BadData),
                ..
            }))
        ));
        assert_eq!(
            parse(ga, 0x11, 0xF9, &[0x7C, 0]).unwrap_err(),
            Refusal::BadP1P2
        );
        assert_eq!(
            parse(ga, 0x11, 0xF9, &[0x7D, 0]).unwrap_err(),
            Refusal::BadData
        );
    }

    #[test]
    fn pin_references() {
        assert_eq!(
            parse(Ins::Verify, 0x00, 0x81, &[]).unwrap_err(),
            Refusal::NoReference
        );
        assert_eq!(
            parse(Ins::Verify, 0x01, 0x80, &[]).unwrap_err(),
            Refusal::BadP1P2
        );
        assert_eq!(
            parse(Ins::Verify, 0xFF, 0x80, &[1]).unwrap_err(),
            Refusal::BadData
        );
        assert!(matches!(
            parse(Ins::ChangeReferenceData, 0, 0x81, &[0; 16]),
            Ok(PivCommand::ChangeReference {
                reference: PinRef::Puk,
                ..
            })
        ));
        assert_eq!(
            parse(Ins::ChangeReferenceData, 0, 0x9B, &[0; 16]).unwrap_err(),
            Refusal::NoReference
        );
        assert_eq!(
            parse(Ins::ResetRetryCounter, 0, 0x81, &[0; 16]).unwrap_err(),
            Refusal::NoReference
        );
    }

    #[test]
    fn instructions_outside_piv_are_unknown() {
        for ins in [Ins::Select, Ins::GetResponse, Ins::Unknown(0x00)] {
            assert_eq!(parse(ins, 0, 0, &[]).unwrap_err(), Refusal::UnknownIns);
        }
        assert_eq!(
            ManagementCommand::parse(Ins::from(0x1C), 0, 0).unwrap_err(),
            Refusal::UnknownIns
        );
        assert_eq!(
            ManagementCommand::parse(Ins::from(0x1D), 0, 1).unwrap_err(),
            Refusal::BadP1P2
        );
    }
}
