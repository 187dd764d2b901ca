//! Every wire constant of the card, defined once.
//!
//! Each enum converts from and to its wire value losslessly: values we do not
//! know land in `Unknown(x)` so that parsing never fails and a response can
//! still name what the host sent (the rustls `enum_builder!` idea).

/// Defines a wire enum with an `Unknown` fallback and lossless `From`
/// conversions in both directions.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this implementation does not know.
            Unknown($repr),
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                match v {
                    $( $name::$variant => $value, )*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

wire_enum! {
    /// Instruction bytes: SP 800-73-4 part 2 plus the YubiKey extensions.
    pub enum Ins: u8 {
        Verify = 0x20,
        ChangeReferenceData = 0x24,
        ResetRetryCounter = 0x2C,
        GenerateAsymmetricKeyPair = 0x47,
        GeneralAuthenticate = 0x87,
        Select = 0xA4,
        GetResponse = 0xC0,
        GetData = 0xCB,
        PutData = 0xDB,
        /// YubiKey: move or delete a key.
        MoveKey = 0xF6,
        /// YubiKey: read metadata of a key, PIN or PUK.
        GetMetadata = 0xF7,
        /// YubiKey: serial number.
        GetSerial = 0xF8,
        /// YubiKey: attestation certificate for a generated key.
        Attest = 0xF9,
        /// YubiKey: set PIN and PUK retry counts.
        SetPinRetries = 0xFA,
        /// YubiKey: reset the application (PIN and PUK blocked first).
        Reset = 0xFB,
        /// YubiKey: firmware version.
        GetVersion = 0xFD,
        /// YubiKey: import a private key.
        ImportKey = 0xFE,
        /// YubiKey: set the management key.
        SetManagementKey = 0xFF,
    }
}

wire_enum! {
    /// Algorithm identifiers (SP 800-78-4 table 6-2, YubiKey additions).
    pub enum AlgorithmId: u8 {
        TripleDes = 0x03,
        Rsa3072 = 0x05,
        Rsa1024 = 0x06,
        Rsa2048 = 0x07,
        Aes128 = 0x08,
        Aes192 = 0x0A,
        Aes256 = 0x0C,
        EccP256 = 0x11,
        EccP384 = 0x14,
        Rsa4096 = 0x16,
        Ed25519 = 0xE0,
        X25519 = 0xE1,
        /// GET METADATA's algorithm for the PIN and PUK.
        PinPuk = 0xFF,
    }
}

impl AlgorithmId {
    /// RSA modulus size in bits, or `None` for non-RSA algorithms.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            AlgorithmId::Rsa1024 => Some(1024),
            AlgorithmId::Rsa2048 => Some(2048),
            AlgorithmId::Rsa3072 => Some(3072),
            AlgorithmId::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The RSA algorithm id for a modulus size.
    pub fn rsa_from_bits(bits: usize) -> Option<AlgorithmId> {
        match bits {
            1024 => Some(AlgorithmId::Rsa1024),
            2048 => Some(AlgorithmId::Rsa2048),
            3072 => Some(AlgorithmId::Rsa3072),
            4096 => Some(AlgorithmId::Rsa4096),
            _ => None,
        }
    }

    /// Algorithms an asymmetric slot can hold.
    pub fn is_asymmetric(self) -> bool {
        self.rsa_bits().is_some()
            || matches!(
                self,
                AlgorithmId::EccP256
                    | AlgorithmId::EccP384
                    | AlgorithmId::Ed25519
                    | AlgorithmId::X25519
            )
    }

    /// Algorithms the management key can use.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            AlgorithmId::TripleDes
                | AlgorithmId::Aes128
                | AlgorithmId::Aes192
                | AlgorithmId::Aes256
        )
    }

    /// Key length in bytes of a symmetric (management key) algorithm.
    pub fn symmetric_key_len(self) -> Option<usize> {
        match self {
            AlgorithmId::TripleDes | AlgorithmId::Aes192 => Some(24),
            AlgorithmId::Aes128 => Some(16),
            AlgorithmId::Aes256 => Some(32),
            _ => None,
        }
    }

    /// The name used in card files and on the command line.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            AlgorithmId::TripleDes => "TDES",
            AlgorithmId::Aes128 => "AES128",
            AlgorithmId::Aes192 => "AES192",
            AlgorithmId::Aes256 => "AES256",
            AlgorithmId::Rsa1024 => "RSA1024",
            AlgorithmId::Rsa2048 => "RSA2048",
            AlgorithmId::Rsa3072 => "RSA3072",
            AlgorithmId::Rsa4096 => "RSA4096",
            AlgorithmId::EccP256 => "ECCP256",
            AlgorithmId::EccP384 => "ECCP384",
            AlgorithmId::Ed25519 => "ED25519",
            AlgorithmId::X25519 => "X25519",
            AlgorithmId::PinPuk | AlgorithmId::Unknown(_) => return None,
        })
    }

    /// Inverse of [`AlgorithmId::name`], case-insensitive.
    pub fn from_name(name: &str) -> Option<AlgorithmId> {
        AlgorithmId::ASYMMETRIC
            .into_iter()
            .chain(AlgorithmId::SYMMETRIC)
            .find(|a| a.name().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// Every asymmetric algorithm the card supports, as advertised in SELECT.
    pub const ASYMMETRIC: [AlgorithmId; 8] = [
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::Rsa3072,
        AlgorithmId::Rsa4096,
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
        AlgorithmId::X25519,
    ];

    /// Every management key algorithm the card supports.
    pub const SYMMETRIC: [AlgorithmId; 4] = [
        AlgorithmId::TripleDes,
        AlgorithmId::Aes128,
        AlgorithmId::Aes192,
        AlgorithmId::Aes256,
    ];
}

wire_enum! {
    /// Key references that are not key slots: the PIN, the PUK and the
    /// management key (P2 of VERIFY, CHANGE REFERENCE DATA, GENERAL
    /// AUTHENTICATE, GET METADATA). Asymmetric keys are named by [`Slot`],
    /// which only valid slots can construct; every other value is
    /// `Unknown` and refused by the command that meets it.
    pub enum KeyRef: u8 {
        /// PIV application PIN.
        Pin = 0x80,
        /// PIN unblocking key.
        Puk = 0x81,
        ManagementKey = 0x9B,
    }
}

/// An asymmetric key slot: one of the 24 PIV key slots or the YubiKey
/// attestation slot. Only valid slots can be constructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    pub const AUTHENTICATION: Slot = Slot(0x9A);
    pub const SIGNATURE: Slot = Slot(0x9C);
    pub const KEY_MANAGEMENT: Slot = Slot(0x9D);
    pub const CARD_AUTHENTICATION: Slot = Slot(0x9E);
    pub const ATTESTATION: Slot = Slot(0xF9);

    /// A slot from its key reference, if it names an asymmetric key slot.
    pub fn new(key_ref: u8) -> Option<Slot> {
        match key_ref {
            0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95 | 0xF9 => Some(Slot(key_ref)),
            _ => None,
        }
    }

    /// One of the 24 PIV slots (not the attestation slot): what every
    /// command but IMPORT, GET METADATA and MOVE KEY's delete accepts as a
    /// key.
    pub fn new_piv(key_ref: u8) -> Option<Slot> {
        Slot::new(key_ref).filter(|s| s.is_piv())
    }

    /// Whether this is one of the 24 PIV slots: F9 holds the attestation
    /// key, which signs attestations and nothing else.
    pub fn is_piv(self) -> bool {
        self != Slot::ATTESTATION
    }

    /// The key reference byte.
    pub fn key_ref(self) -> u8 {
        self.0
    }

    /// The 24 PIV slots followed by the attestation slot.
    pub fn all() -> impl Iterator<Item = Slot> {
        [0x9A, 0x9C, 0x9D, 0x9E]
            .into_iter()
            .chain(0x82..=0x95)
            .chain([0xF9])
            .map(Slot)
    }

    /// The 24 PIV slots (without the attestation slot).
    pub fn piv() -> impl Iterator<Item = Slot> {
        Slot::all().filter(|s| s.is_piv())
    }

    /// Retired key number 1..=20, if this is a retired key slot.
    pub fn retired_index(self) -> Option<u8> {
        (0x82..=0x95).contains(&self.0).then(|| self.0 - 0x81)
    }

    /// The data object that holds this slot's certificate.
    pub fn certificate_object(self) -> ObjectId {
        ObjectId(match self.0 {
            0x9A => 0x5FC105,
            0x9C => 0x5FC10A,
            0x9D => 0x5FC10B,
            0x9E => 0x5FC101,
            0xF9 => 0x5FFF01,
            r => 0x5FC10D + u32::from(r - 0x82),
        })
    }

    /// The slot whose certificate a data object holds.
    pub fn from_certificate_object(obj: ObjectId) -> Option<Slot> {
        Slot::all().find(|s| s.certificate_object() == obj)
    }

    /// PIN policy the slot has when the key does not set its own.
    pub fn default_pin_policy(self) -> PinPolicy {
        match self.0 {
            0x9C => PinPolicy::Always,
            0x9E | 0xF9 => PinPolicy::Never,
            _ => PinPolicy::Once,
        }
    }
}

impl core::fmt::Display for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02X}", self.0)
    }
}

wire_enum! {
    /// When a key needs the PIN (YubiKey tag AA; stored per key).
    pub enum PinPolicy: u8 {
        /// The slot's default applies.
        Default = 0x00,
        Never = 0x01,
        Once = 0x02,
        Always = 0x03,
        /// Bio match once (YubiKey Bio); treated as Once here.
        MatchOnce = 0x04,
        /// Bio match always (YubiKey Bio); treated as Always here.
        MatchAlways = 0x05,
    }
}

impl PinPolicy {
    pub const NAMES: [(PinPolicy, &'static str); 6] = [
        (PinPolicy::Default, "default"),
        (PinPolicy::Never, "never"),
        (PinPolicy::Once, "once"),
        (PinPolicy::Always, "always"),
        (PinPolicy::MatchOnce, "match-once"),
        (PinPolicy::MatchAlways, "match-always"),
    ];
}

wire_enum! {
    /// When a key needs a touch (YubiKey tag AB; stored per key).
    pub enum TouchPolicy: u8 {
        Default = 0x00,
        Never = 0x01,
        Always = 0x02,
        /// A touch is remembered for 15 seconds.
        Cached = 0x03,
    }
}

impl TouchPolicy {
    pub const NAMES: [(TouchPolicy, &'static str); 4] = [
        (TouchPolicy::Default, "default"),
        (TouchPolicy::Never, "never"),
        (TouchPolicy::Always, "always"),
        (TouchPolicy::Cached, "cached"),
    ];
}

wire_enum! {
    /// Where a key came from (GET METADATA tag 03).
    pub enum KeyOrigin: u8 {
        Generated = 0x01,
        Imported = 0x02,
    }
}

/// A data object identifier (the value of tag 5C in GET/PUT DATA), 1 to 3
/// bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

impl ObjectId {
    pub const CCC: ObjectId = ObjectId(0x5FC107);
    pub const CHUID: ObjectId = ObjectId(0x5FC102);
    pub const CERT_PIV_AUTH: ObjectId = ObjectId(0x5FC105);
    pub const CERT_SIGNATURE: ObjectId = ObjectId(0x5FC10A);
    pub const CERT_KEY_MANAGEMENT: ObjectId = ObjectId(0x5FC10B);
    pub const CERT_CARD_AUTH: ObjectId = ObjectId(0x5FC101);
    pub const FINGERPRINTS: ObjectId = ObjectId(0x5FC103);
    pub const SECURITY_OBJECT: ObjectId = ObjectId(0x5FC106);
    pub const FACIAL_IMAGE: ObjectId = ObjectId(0x5FC108);
    pub const PRINTED_INFORMATION: ObjectId = ObjectId(0x5FC109);
    pub const KEY_HISTORY: ObjectId = ObjectId(0x5FC10C);
    pub const IRIS: ObjectId = ObjectId(0x5FC121);
    pub const BITGT: ObjectId = ObjectId(0x7F61);
    pub const SM_CERT_SIGNER: ObjectId = ObjectId(0x5FC122);
    pub const PAIRING_CODE_REF: ObjectId = ObjectId(0x5FC123);
    pub const DISCOVERY: ObjectId = ObjectId(0x7E);
    pub const YUBICO_PIVMAN: ObjectId = ObjectId(0x5FFF00);
    pub const YUBICO_ATTESTATION: ObjectId = ObjectId(0x5FFF01);
    pub const YUBICO_PIVMAN_PROTECTED: ObjectId = ObjectId(0x5FC109);

    /// Objects that may only be read after PIN verification (the rule
    /// lives in [`crate::access`]).
    pub fn pin_protected(self) -> bool {
        crate::access::object_read_rule(self) == crate::access::ReadRule::Pin
    }

    /// Whether the card accepts this object in GET/PUT DATA at all: the
    /// PIV objects (5FC1xx), Yubico's and the user's (any 5Fxxxx: "Yubico
    /// writable PIV objects are available in the range 5f0000 - 5fffff",
    /// ykman `piv objects import` help; Yubico.NET.SDK piv-objects.md
    /// tables 1A-1C), Discovery (7E) and the BIT group template (7F61).
    pub fn is_known(self) -> bool {
        matches!(self.0, 0x5F0000..=0x5FFFFF | 0x7E | 0x7F61)
    }

    /// Bytes on the wire (1 to 3, big-endian, no leading zeros).
    pub fn to_bytes(self) -> Vec<u8> {
        let b = self.0.to_be_bytes();
        let skip = b.iter().take(3).take_while(|x| **x == 0).count();
        b[skip..].to_vec()
    }

    pub fn from_bytes(b: &[u8]) -> Option<ObjectId> {
        if b.is_empty() || b.len() > 3 {
            return None;
        }
        Some(ObjectId(
            b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)),
        ))
    }
}

impl core::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

/// ISO 7816-4 status words used by the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusWord {
    Success,
    /// 61xx: more response bytes wait for GET RESPONSE (xx = 0 means ≥ 256).
    MoreData(u8),
    /// 63Cx: verification failed, x tries left.
    VerifyFail(u8),
    /// 6581: the card could not persist its state.
    MemoryFailure,
    WrongLength,
    LogicalChannelNotSupported,
    SecureMessagingNotSupported,
    /// 6987: a secure messaging data object the command needs is missing.
    SmObjectMissing,
    /// 6988: a secure messaging data object is wrong (MAC, padding).
    SmObjectIncorrect,
    SecurityStatusNotSatisfied,
    AuthMethodBlocked,
    DataInvalid,
    ConditionsNotSatisfied,
    CommandNotAllowed,
    IncorrectData,
    FunctionNotSupported,
    FileNotFound,
    NotEnoughMemory,
    IncorrectP1P2,
    ReferenceNotFound,
    WrongP1P2,
    InsNotSupported,
    ClaNotSupported,
    /// 6F00: an internal error that the card cannot describe better.
    NoPreciseDiagnosis,
    Unknown(u16),
}

impl StatusWord {
    pub fn is_success(self) -> bool {
        matches!(self, StatusWord::Success)
    }
}

impl From<u16> for StatusWord {
    fn from(v: u16) -> Self {
        match v {
            0x9000 => StatusWord::Success,
            0x6100..=0x61FF => StatusWord::MoreData(v as u8),
            0x63C0..=0x63CF => StatusWord::VerifyFail((v & 0x0F) as u8),
            0x6581 => StatusWord::MemoryFailure,
            0x6700 => StatusWord::WrongLength,
            0x6881 => StatusWord::LogicalChannelNotSupported,
            0x6882 => StatusWord::SecureMessagingNotSupported,
            0x6987 => StatusWord::SmObjectMissing,
            0x6988 => StatusWord::SmObjectIncorrect,
            0x6982 => StatusWord::SecurityStatusNotSatisfied,
            0x6983 => StatusWord::AuthMethodBlocked,
            0x6984 => StatusWord::DataInvalid,
            0x6985 => StatusWord::ConditionsNotSatisfied,
            0x6986 => StatusWord::CommandNotAllowed,
            0x6A80 => StatusWord::IncorrectData,
            0x6A81 => StatusWord::FunctionNotSupported,
            0x6A82 => StatusWord::FileNotFound,
            0x6A84 => StatusWord::NotEnoughMemory,
            0x6A86 => StatusWord::IncorrectP1P2,
            0x6A88 => StatusWord::ReferenceNotFound,
            0x6B00 => StatusWord::WrongP1P2,
            0x6D00 => StatusWord::InsNotSupported,
            0x6E00 => StatusWord::ClaNotSupported,
            0x6F00 => StatusWord::NoPreciseDiagnosis,
            other => StatusWord::Unknown(other),
        }
    }
}

impl From<StatusWord> for u16 {
    fn from(sw: StatusWord) -> u16 {
        match sw {
            StatusWord::Success => 0x9000,
            StatusWord::MoreData(n) => 0x6100 | u16::from(n),
            StatusWord::VerifyFail(n) => 0x63C0 | u16::from(n.min(15)),
            StatusWord::MemoryFailure => 0x6581,
            StatusWord::WrongLength => 0x6700,
            StatusWord::LogicalChannelNotSupported => 0x6881,
            StatusWord::SecureMessagingNotSupported => 0x6882,
            StatusWord::SmObjectMissing => 0x6987,
            StatusWord::SmObjectIncorrect => 0x6988,
            StatusWord::SecurityStatusNotSatisfied => 0x6982,
            StatusWord::AuthMethodBlocked => 0x6983,
            StatusWord::DataInvalid => 0x6984,
            StatusWord::ConditionsNotSatisfied => 0x6985,
            StatusWord::CommandNotAllowed => 0x6986,
            StatusWord::IncorrectData => 0x6A80,
            StatusWord::FunctionNotSupported => 0x6A81,
            StatusWord::FileNotFound => 0x6A82,
            StatusWord::NotEnoughMemory => 0x6A84,
            StatusWord::IncorrectP1P2 => 0x6A86,
            StatusWord::ReferenceNotFound => 0x6A88,
            StatusWord::WrongP1P2 => 0x6B00,
            StatusWord::InsNotSupported => 0x6D00,
            StatusWord::ClaNotSupported => 0x6E00,
            StatusWord::NoPreciseDiagnosis => 0x6F00,
            StatusWord::Unknown(v) => v,
        }
    }
}

impl core::fmt::Display for StatusWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04X}", u16::from(*self))
    }
}

/// The PIV application identifier (NIST RID A0 00 00 03 08, PIX 00 00 10 00
/// 01 00). SELECT matches any prefix of at least the RID.
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// The length of the NIST RID: the shortest AID prefix a SELECT may use.
pub const PIV_RID_LEN: usize = 5;

/// The length of the PIV AID without its version (PIX 00 00 10 00): the
/// right-truncated AID hosts select (SP 800-73-4 part 1, 2.2), OpenSC and
/// msclmd among them.
pub const PIV_AID_TRUNCATED_LEN: usize = 9;

/// The YubiKey Management application (Yubico RID A0 00 00 05 27, PIX 47
/// 11 17; yubikit `AID.MANAGEMENT`), where tools read the serial, firmware
/// and enabled applications. SELECT matches the whole AID only.
pub const MANAGEMENT_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];

wire_enum! {
    /// Instructions of the YubiKey Management application (yubikit
    /// `management.py`: `INS_READ_CONFIG` etc.).
    pub enum MgmtIns: u8 {
        /// Set the USB mode (YubiKey 4 style); not supported here.
        SetMode = 0x16,
        /// Write the device configuration; not supported here.
        WriteConfig = 0x1C,
        /// Read the device information ("GET DEVICE INFO"), P1 = page.
        ReadConfig = 0x1D,
        /// Factory reset of every application (YubiKey Bio only).
        DeviceReset = 0x1F,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_enums_round_trip_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(u8::from(Ins::from(b)), b);
            assert_eq!(u8::from(AlgorithmId::from(b)), b);
            assert_eq!(u8::from(KeyRef::from(b)), b);
        }
        for v in 0..=0xFFFFu16 {
            let sw = StatusWord::from(v);
            assert_eq!(u16::from(sw), v, "{v:04X}");
        }
    }

    #[test]
    fn slots_and_certificate_objects() {
        assert_eq!(Slot::all().count(), 25);
        assert_eq!(Slot::piv().count(), 24);
        assert_eq!(
            Slot::new(0x82).unwrap().certificate_object(),
            ObjectId(0x5FC10D)
        );
        assert_eq!(
            Slot::new(0x95).unwrap().certificate_object(),
            ObjectId(0x5FC120)
        );
        for s in Slot::all() {
            assert_eq!(
                Slot::from_certificate_object(s.certificate_object()),
                Some(s)
            );
        }
        assert_eq!(Slot::new(0x9B), None);
        assert_eq!(
            ObjectId::from_bytes(&[0x5F, 0xC1, 0x05]),
            Some(ObjectId::CERT_PIV_AUTH)
        );
        assert_eq!(ObjectId::DISCOVERY.to_bytes(), vec![0x7E]);
        assert_eq!(ObjectId::BITGT.to_bytes(), vec![0x7F, 0x61]);
    }
}
