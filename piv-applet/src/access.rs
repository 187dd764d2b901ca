//! Who may do what on the card: every access rule, written down once.
//!
//! The handlers enforce these rules through [`Card`](crate::Card), the
//! tests check each one both ways (allowed with the credential, refused
//! without), and the APDU-sequence fuzz target uses the same tables as its
//! oracle. A rule that is not here is not a rule of the card.
//!
//! Sources: SP 800-73-4 Part 1 table 3 (data model containers and their
//! access rules), Part 2 section 3 (command rules), and Yubico's PIV
//! documentation for the YubiKey extensions ("PIV data objects", table 1A,
//! "PIN required for read"; the YubiKey commands' "requires management
//! key" notes).

use crate::enums::{Ins, ObjectId, PinPolicy, Slot, TouchPolicy};

/// What reading a data object needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRule {
    /// Anyone may read it ("Always").
    Always,
    /// Only after the PIN was verified in this session ("PIN", or "PIN or
    /// OCC": the card has no on-card biometric comparison).
    Pin,
}

/// A data object the card knows by name, with its read rule. Writing any
/// object needs the management key ("PIV Card Application Administrator"
/// in table 3; a YubiKey's PUT DATA needs the management key).
#[derive(Clone, Copy, Debug)]
pub struct ObjectRule {
    pub id: ObjectId,
    pub name: &'static str,
    pub read: ReadRule,
}

const fn rule(id: ObjectId, name: &'static str, read: ReadRule) -> ObjectRule {
    ObjectRule { id, name, read }
}

/// SP 800-73-4 Part 1 table 3 and the Yubico objects. The retired
/// certificates (5FC10D..5FC120) are all "Always" and are left out of the
/// table; see [`object_read_rule`].
pub const OBJECTS: [ObjectRule; 18] = [
    rule(ObjectId::CCC, "Card Capability Container", ReadRule::Always),
    rule(ObjectId::CHUID, "CHUID", ReadRule::Always),
    rule(
        ObjectId::CERT_PIV_AUTH,
        "X.509 Certificate for PIV Authentication",
        ReadRule::Always,
    ),
    rule(
        ObjectId::FINGERPRINTS,
        "Cardholder Fingerprints",
        ReadRule::Pin,
    ),
    rule(
        ObjectId::SECURITY_OBJECT,
        "Security Object",
        ReadRule::Always,
    ),
    rule(
        ObjectId::FACIAL_IMAGE,
        "Cardholder Facial Image",
        ReadRule::Pin,
    ),
    rule(
        ObjectId::CERT_CARD_AUTH,
        "X.509 Certificate for Card Authentication",
        ReadRule::Always,
    ),
    rule(
        ObjectId::CERT_SIGNATURE,
        "X.509 Certificate for Digital Signature",
        ReadRule::Always,
    ),
    rule(
        ObjectId::CERT_KEY_MANAGEMENT,
        "X.509 Certificate for Key Management",
        ReadRule::Always,
    ),
    // "PIN or OCC"; also where ykman keeps a PIN-protected management key.
    rule(
        ObjectId::PRINTED_INFORMATION,
        "Printed Information",
        ReadRule::Pin,
    ),
    rule(ObjectId::DISCOVERY, "Discovery Object", ReadRule::Always),
    rule(
        ObjectId::KEY_HISTORY,
        "Key History Object",
        ReadRule::Always,
    ),
    rule(ObjectId::IRIS, "Cardholder Iris Images", ReadRule::Pin),
    rule(
        ObjectId::BITGT,
        "Biometric Information Templates Group Template",
        ReadRule::Always,
    ),
    rule(
        ObjectId::SM_CERT_SIGNER,
        "Secure Messaging Certificate Signer",
        ReadRule::Always,
    ),
    // "PIN or OCC" (table 3): the pairing code must not be readable by
    // whoever can reach the card.
    rule(
        ObjectId::PAIRING_CODE_REF,
        "Pairing Code Reference Data",
        ReadRule::Pin,
    ),
    rule(
        ObjectId::YUBICO_PIVMAN,
        "Yubico PIV Manager data",
        ReadRule::Always,
    ),
    rule(
        ObjectId::YUBICO_ATTESTATION,
        "Yubico attestation certificate",
        ReadRule::Always,
    ),
];

/// The read rule of any object the card stores. Objects outside the table
/// (retired certificates, the rest of the Yubico range) are "Always", as on
/// a YubiKey, whose table 1A marks only the four objects above as PIN-read.
pub fn object_read_rule(id: ObjectId) -> ReadRule {
    OBJECTS
        .iter()
        .find(|r| r.id == id)
        .map_or(ReadRule::Always, |r| r.read)
}

/// The objects a card with the contactless profile lets anyone read
/// outside the virtual contact interface (SP 800-73-4 part 1, table 1:
/// "contact and contactless"; the signer's certificate because a host
/// checks the CVC with it before secure messaging starts). Every other
/// object, key and command is contact-only there.
pub const CONTACTLESS_OBJECTS: [ObjectId; 4] = [
    ObjectId::CHUID,
    ObjectId::CERT_CARD_AUTH,
    ObjectId::DISCOVERY,
    ObjectId::SM_CERT_SIGNER,
];

/// What a command needs before it may change or reveal anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandRule {
    /// Nothing (SELECT, GET VERSION, GET SERIAL, GET METADATA, GET
    /// RESPONSE): it reveals only public facts.
    Open,
    /// The object's [`ReadRule`] (GET DATA).
    ObjectRead,
    /// The reference data it names: VERIFY checks the PIN, CHANGE
    /// REFERENCE DATA the old PIN or PUK, RESET RETRY COUNTER the PUK; each
    /// try is counted before the comparison.
    ReferenceData,
    /// The key's PIN policy ([`key_use_rule`]) for the 24 slots; the
    /// management key's own challenge-response for 9B. The attestation key
    /// (F9) is refused: it signs only attestations.
    KeyUse,
    /// The management key authenticated in this session.
    ManagementKey,
    /// The management key and the PIN (YubiKey SET PIN RETRIES).
    ManagementKeyAndPin,
    /// PIN and PUK both blocked (YubiKey RESET): the owner gave up the card.
    PinAndPukBlocked,
    /// The key to attest must be generated on the card; nothing else is
    /// needed (YubiKey ATTEST reveals only public facts signed by F9).
    Attest,
}

/// The rule of each instruction the card implements; `None` for the ones
/// it does not (answered 6D00).
pub fn command_rule(ins: Ins) -> Option<CommandRule> {
    Some(match ins {
        Ins::Select | Ins::GetResponse | Ins::GetVersion | Ins::GetSerial | Ins::GetMetadata => {
            CommandRule::Open
        }
        Ins::GetData => CommandRule::ObjectRead,
        Ins::Verify | Ins::ChangeReferenceData | Ins::ResetRetryCounter => {
            CommandRule::ReferenceData
        }
        Ins::GeneralAuthenticate => CommandRule::KeyUse,
        Ins::PutData
        | Ins::GenerateAsymmetricKeyPair
        | Ins::ImportKey
        | Ins::MoveKey
        | Ins::SetManagementKey => CommandRule::ManagementKey,
        Ins::SetPinRetries => CommandRule::ManagementKeyAndPin,
        Ins::Reset => CommandRule::PinAndPukBlocked,
        Ins::Attest => CommandRule::Attest,
        Ins::Unknown(_) => return None,
    })
}

/// What using a private key needs, after the slot default is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUseRule {
    /// No PIN (policy "never").
    Free,
    /// The PIN verified at some time in this session ("once").
    PinVerified,
    /// The PIN verified by the command immediately before, with no other
    /// command in between ("always"; SP 800-73-4 Part 1, 3.3.2: the PIN
    /// "must be verified immediately before" each use).
    PinJustVerified,
}

/// The policies a key really has: "default" replaced by the slot's PIN
/// policy (Yubico's default of each slot) and by "never" for touch. A
/// YubiKey fixes them when the key is made ([`KeySlot::new`]); the
/// attestation's policy extension and the key-use rule apply the same
/// resolution to policies that may come unresolved.
///
/// [`KeySlot::new`]: crate::state::KeySlot::new
pub fn resolve_policies(
    slot: Slot,
    pin: PinPolicy,
    touch: TouchPolicy,
) -> (PinPolicy, TouchPolicy) {
    let pin = match pin {
        PinPolicy::Default => slot.default_pin_policy(),
        p => p,
    };
    let touch = match touch {
        TouchPolicy::Default => TouchPolicy::Never,
        t => t,
    };
    (pin, touch)
}

/// The rule for using a key with this (resolved or not) policy in `slot`.
pub fn key_use_rule(slot: Slot, policy: PinPolicy) -> KeyUseRule {
    let (pin, _) = resolve_policies(slot, policy, TouchPolicy::Default);
    match pin {
        PinPolicy::Never => KeyUseRule::Free,
        PinPolicy::Always | PinPolicy::MatchAlways => KeyUseRule::PinJustVerified,
        // Once and MatchOnce (the card has no biometrics, so a match is
        // a PIN); policies are checked when a key is made, so nothing else
        // gets here.
        _ => KeyUseRule::PinVerified,
    }
}

/// Whether GENERAL AUTHENTICATE may use the key in this key reference at
/// all: the 24 PIV slots only. F9 signs attestations through ATTEST and
/// nothing else, or anyone could re-sign a doctored attestation.
pub fn general_authenticate_slot(key_ref: u8) -> Option<Slot> {
    Slot::new_piv(key_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_object_once() {
        for (i, a) in OBJECTS.iter().enumerate() {
            assert!(a.id.is_known(), "{}", a.name);
            assert!(
                OBJECTS[i + 1..].iter().all(|b| b.id != a.id),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn pin_read_objects_are_the_spec_ones() {
        let pin: Vec<_> = OBJECTS
            .iter()
            .filter(|r| r.read == ReadRule::Pin)
            .map(|r| r.id)
            .collect();
        assert_eq!(
            pin,
            [
                ObjectId::FINGERPRINTS,
                ObjectId::FACIAL_IMAGE,
                ObjectId::PRINTED_INFORMATION,
                ObjectId::IRIS,
                ObjectId::PAIRING_CODE_REF
            ]
        );
        assert_eq!(object_read_rule(ObjectId(0x5FC10D)), ReadRule::Always);
    }

    #[test]
    fn attestation_key_is_no_general_authenticate_key() {
        assert_eq!(general_authenticate_slot(0xF9), None);
        assert_eq!(general_authenticate_slot(0x9A), Some(Slot::AUTHENTICATION));
        assert_eq!(
            key_use_rule(Slot::SIGNATURE, PinPolicy::Default),
            KeyUseRule::PinJustVerified
        );
        assert_eq!(
            key_use_rule(Slot::CARD_AUTHENTICATION, PinPolicy::Default),
            KeyUseRule::Free
        );
    }
}
