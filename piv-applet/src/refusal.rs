//! Why the card refuses a command, and the status word each reason gets:
//! the one table of the card's error answers.
//!
//! Every word is the one a YubiKey 5.7 gives where that is known, since
//! software tested against this card must not meet different errors on a
//! real key. Each row names its source and how sure it is:
//! **D** documented (Yubico's documentation, a transcript from a real key,
//! or a test Yubico runs on real keys), **M** Yubico's client code or a
//! Yubico maintainer names the word for the case, **I** inferred (no
//! source for the exact case; the reason is given). Sources, abbreviated:
//! NET = Yubico.NET.SDK `docs/users-manual/application-piv/apdu/*.md`;
//! YKM = yubikey-manager 5.9.2 (`yubikit/piv.py`, `ykman/_cli/piv.py`,
//! `tests/device/test_piv.py`); YPT = yubico-piv-tool `lib/ykpiv.h`,
//! `lib/ykpiv.c`; SP = NIST SP 800-73-4 part 2.

use crate::enums::StatusWord;

/// A reason to refuse a command. Handlers name the reason; the status
/// word comes from [`Refusal::status`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The PIN or PUK did not match; the tries left.
    WrongReference(u8),
    /// The PIN or PUK is blocked.
    Blocked,
    /// The PIN, a fresh PIN or the management key is needed and missing,
    /// or the management key's proof was wrong.
    SecurityStatus,
    /// The new PIN or PUK breaks the length or character rules.
    BadNewReference,
    /// RESET while the PIN and PUK are not both blocked.
    NotBlocked,
    /// The key's touch policy asks for a touch that did not come.
    NoTouch,
    /// The data field is malformed (bad TLV, wrong length of a fixed
    /// field, unknown tag, key data that does not parse).
    BadData,
    /// P1 names another algorithm than the key's (slot or management key).
    AlgorithmMismatch,
    /// An algorithm the card does not support for this command.
    BadAlgorithm,
    /// The key slot is empty (signing, decrypting, attesting).
    EmptySlot,
    /// ATTEST of a key that was imported, not generated on the card.
    NotGenerated,
    /// MOVE KEY to a slot that holds a key.
    DestinationOccupied,
    /// The key reference names nothing (GET METADATA, MOVE KEY source,
    /// VERIFY of a reference other than the PIN).
    NoReference,
    /// A key reference that the command does not take.
    BadSlot,
    /// A data object that is not on the card.
    NoObject,
    /// An object ID the card does not store.
    BadObjectId,
    /// One object larger than a YubiKey holds.
    ObjectTooLarge,
    /// All objects together would exceed the card's storage.
    CardFull,
    /// A command chain longer than the card assembles.
    ChainTooLong,
    /// P1 or P2 wrong for the command.
    BadP1P2,
    /// GET RESPONSE with nothing to send, or a step of a protocol out of
    /// order.
    OutOfOrder,
    /// SELECT of an application the card does not have (or has off).
    NoApplication,
    /// An instruction the selected application does not have.
    UnknownIns,
    /// A class byte the card does not take.
    BadCla,
    /// Secure messaging requested in CLA.
    SecureMessaging,
    /// A secure messaging data object (the MAC) is missing; the session
    /// ends.
    SmObjectMissing,
    /// A secure messaging data object is wrong (MAC, padding, encoding);
    /// the session ends.
    SmObjectIncorrect,
    /// A logical channel other than the basic one requested in CLA.
    LogicalChannel,
    /// The APDU itself is malformed (lengths disagree).
    BadLength,
    /// The card state could not be saved; nothing changed.
    NotSaved,
    /// An internal failure the card cannot describe better.
    Internal,
}

impl Refusal {
    /// The table.
    pub const fn status(self) -> StatusWord {
        use StatusWord as S;
        match self {
            // D: NET verify.md, change-ref.md, reset-retry.md.
            Refusal::WrongReference(n) => S::VerifyFail(n),
            // D: NET verify.md ("blocked").
            Refusal::Blocked => S::AuthMethodBlocked,
            // D: NET auth-sign.md, put-data.md, generate-pair.md,
            // set-mgmt-key.md, auth-mgmt.md (wrong witness: transcripts
            // end in 6982).
            Refusal::SecurityStatus => S::SecurityStatusNotSatisfied,
            // D: NET change-ref.md ("does not meet the requirements").
            Refusal::BadNewReference => S::ConditionsNotSatisfied,
            // D: NET reset-piv.md.
            Refusal::NotBlocked => S::ConditionsNotSatisfied,
            // D: NET auth-sign.md: "wrong or no PIN, or no touch" is
            // 6982 for the PIN; a touch timeout is 6985 in yubico-piv-tool
            // (`SW_ERR_CONDITIONS_OF_USE`, YPT ykpiv.c) (M).
            Refusal::NoTouch => S::ConditionsNotSatisfied,
            // I: 6A80 is a YubiKey's answer to a bad data field wherever
            // one is documented (NET change-ref.md: length; SP 3.x).
            Refusal::BadData => S::IncorrectData,
            // D: YKM `check_key` relies on it; the 2018 on-device test of
            // commit 09d6553d asserts 6A80 for a cross-type key; for 9B,
            // 5.7 keys answer 6A80 to a 3DES request (cosign#3742).
            Refusal::AlgorithmMismatch => S::IncorrectData,
            // D: RSA4096 on 5.2.7 answers 6A80 (sbctl#471); YPT maps 6A80
            // on GENERATE to "algorithm not supported".
            Refusal::BadAlgorithm => S::IncorrectData,
            // M: YKM piv.py `sign` ("TODO: No key?") and ATTEST of an empty
            // slot (D: go-piv key_test.go, YPT#510 log on 5.7).
            Refusal::EmptySlot => S::IncorrectData,
            // M: Yubico maintainer on Yubico.NET.SDK#9: imported keys
            // cannot be attested, 6A80.
            Refusal::NotGenerated => S::IncorrectData,
            // M: YKM `_cli/piv.py` move: INCORRECT_PARAMETERS means "DEST
            // slot is not empty".
            Refusal::DestinationOccupied => S::IncorrectData,
            // D: GET METADATA of an empty slot, YPT#510 log on 5.7; M: YKM
            // move ("No key in SOURCE slot"), VERIFY P2=96 on a key
            // without biometrics.
            Refusal::NoReference => S::ReferenceNotFound,
            // M: YPT ykpiv.h `SW_ERR_INCORRECT_SLOT 0x6b00`, "a custom sw
            // for yubikey", used for GENERATE and IMPORT.
            Refusal::BadSlot => S::WrongP1P2,
            // D: NET get-data.md "data object not found".
            Refusal::NoObject => S::FileNotFound,
            // M: YKM `_cli/piv.py` write-object: INCORRECT_PARAMETERS
            // means "is the object id valid?".
            Refusal::BadObjectId => S::IncorrectData,
            // D: NET PutDataCommandTests (FW5): a 10,000-byte object gets
            // 6700.
            Refusal::ObjectTooLarge => S::WrongLength,
            // I: no transcript of a full key; YPT maps 6A84 to
            // `YKPIV_SIZE_ERROR`, ISO 7816-4 "not enough memory space".
            Refusal::CardFull => S::NotEnoughMemory,
            // I: as a full card: the chain does not fit in memory.
            Refusal::ChainTooLong => S::NotEnoughMemory,
            // I: ISO 7816-4 "incorrect parameters P1-P2"; no YubiKey
            // transcript for the exact cases.
            Refusal::BadP1P2 => S::IncorrectP1P2,
            // I: ISO 7816-4 "conditions of use not satisfied".
            Refusal::OutOfOrder => S::ConditionsNotSatisfied,
            // M: yubikit `select` takes 6A82 for "application not
            // available" (support.py: "OTP turned off, this must be YK5").
            Refusal::NoApplication => S::FileNotFound,
            // D: go-piv#55 (F9 on old firmware answers 6D00); YKM maps
            // INVALID_INSTRUCTION to "not supported".
            Refusal::UnknownIns => S::InsNotSupported,
            // M: YKM smartcard `CLASS_NOT_SUPPORTED` from a key without
            // SCP; I for other class bytes.
            Refusal::BadCla => S::ClaNotSupported,
            // I: ISO 7816-4; SP 3.2 (no secure messaging on this card).
            Refusal::SecureMessaging => S::SecureMessagingNotSupported,
            // D: SP 4.4 and ISO 7816-4 ("expected SM data objects
            // missing", "SM data objects incorrect"); M: OpenSC card-piv.c
            // `piv_sm_errors` maps both. YubiKeys have no PIV SM.
            Refusal::SmObjectMissing => S::SmObjectMissing,
            Refusal::SmObjectIncorrect => S::SmObjectIncorrect,
            // I: ISO 7816-4; SP 3.2 (basic channel only).
            Refusal::LogicalChannel => S::LogicalChannelNotSupported,
            // I: ISO 7816-4 "wrong length".
            Refusal::BadLength => S::WrongLength,
            // I: ISO 7816-4 "memory failure": a save that did not happen.
            Refusal::NotSaved => S::MemoryFailure,
            // I: ISO 7816-4 "no precise diagnosis".
            Refusal::Internal => S::NoPreciseDiagnosis,
        }
    }
}

impl From<Refusal> for StatusWord {
    fn from(r: Refusal) -> StatusWord {
        r.status()
    }
}

impl From<Refusal> for crate::apdu::Response {
    fn from(r: Refusal) -> Self {
        r.status().into()
    }
}
