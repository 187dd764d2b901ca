//! Every PC/SC status code, named once, with the value each ABI uses.
//!
//! The core returns these; each ABI layer turns them into its own integer
//! type. The values agree between Windows and pcsc-lite except for
//! `SCARD_E_UNSUPPORTED_FEATURE`, which pcsc-lite defines as 0x8010001F
//! (the same value as `SCARD_E_UNEXPECTED`).

macro_rules! scard_errors {
    ($($variant:ident = $code:literal, $name:literal, $text:literal;)*) => {
        /// A PC/SC failure (`SCARD_E_*`, `SCARD_F_*`, `SCARD_W_*`, `SCARD_P_*`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ScardError {
            $($variant,)*
        }

        impl ScardError {
            /// The Windows value (`winerror.h`).
            pub const fn windows_code(self) -> u32 {
                match self { $(ScardError::$variant => $code,)* }
            }

            /// The C macro name, for logs.
            pub const fn name(self) -> &'static str {
                match self { $(ScardError::$variant => $name,)* }
            }

            /// Human text, NUL-terminated so `pcsc_stringify_error` can hand
            /// out a pointer to it.
            pub const fn text_nul(self) -> &'static str {
                match self { $(ScardError::$variant => concat!($text, "\0"),)* }
            }

            /// Every code, for exhaustive tests.
            pub const ALL: &'static [ScardError] = &[$(ScardError::$variant,)*];
        }
    };
}

scard_errors! {
    InternalError = 0x8010_0001, "SCARD_F_INTERNAL_ERROR", "Internal error.";
    Cancelled = 0x8010_0002, "SCARD_E_CANCELLED", "Command cancelled.";
    InvalidHandle = 0x8010_0003, "SCARD_E_INVALID_HANDLE", "Invalid handle.";
    InvalidParameter = 0x8010_0004, "SCARD_E_INVALID_PARAMETER", "Invalid parameter given.";
    InvalidTarget = 0x8010_0005, "SCARD_E_INVALID_TARGET", "Invalid target given.";
    NoMemory = 0x8010_0006, "SCARD_E_NO_MEMORY", "Not enough memory.";
    WaitedTooLong = 0x8010_0007, "SCARD_F_WAITED_TOO_LONG", "Waited too long.";
    InsufficientBuffer = 0x8010_0008, "SCARD_E_INSUFFICIENT_BUFFER", "Insufficient buffer.";
    UnknownReader = 0x8010_0009, "SCARD_E_UNKNOWN_READER", "Unknown reader specified.";
    Timeout = 0x8010_000A, "SCARD_E_TIMEOUT", "Command timeout.";
    SharingViolation = 0x8010_000B, "SCARD_E_SHARING_VIOLATION", "Sharing violation.";
    NoSmartcard = 0x8010_000C, "SCARD_E_NO_SMARTCARD", "No smart card inserted.";
    UnknownCard = 0x8010_000D, "SCARD_E_UNKNOWN_CARD", "Unknown card.";
    CantDispose = 0x8010_000E, "SCARD_E_CANT_DISPOSE", "Cannot dispose handle.";
    ProtoMismatch = 0x8010_000F, "SCARD_E_PROTO_MISMATCH", "Card protocol mismatch.";
    NotReady = 0x8010_0010, "SCARD_E_NOT_READY", "Subsystem not ready.";
    InvalidValue = 0x8010_0011, "SCARD_E_INVALID_VALUE", "Invalid value given.";
    SystemCancelled = 0x8010_0012, "SCARD_E_SYSTEM_CANCELLED", "System cancelled.";
    CommError = 0x8010_0013, "SCARD_F_COMM_ERROR", "RPC transport error.";
    UnknownError = 0x8010_0014, "SCARD_F_UNKNOWN_ERROR", "Unknown error.";
    InvalidAtr = 0x8010_0015, "SCARD_E_INVALID_ATR", "Invalid ATR.";
    NotTransacted = 0x8010_0016, "SCARD_E_NOT_TRANSACTED", "Transaction failed.";
    ReaderUnavailable = 0x8010_0017, "SCARD_E_READER_UNAVAILABLE", "Reader is unavailable.";
    Shutdown = 0x8010_0018, "SCARD_P_SHUTDOWN", "Operation aborted.";
    PciTooSmall = 0x8010_0019, "SCARD_E_PCI_TOO_SMALL", "PCI struct too small.";
    ReaderUnsupported = 0x8010_001A, "SCARD_E_READER_UNSUPPORTED", "Reader is unsupported.";
    DuplicateReader = 0x8010_001B, "SCARD_E_DUPLICATE_READER", "Reader already exists.";
    CardUnsupported = 0x8010_001C, "SCARD_E_CARD_UNSUPPORTED", "Card is unsupported.";
    NoService = 0x8010_001D, "SCARD_E_NO_SERVICE", "Service not available.";
    ServiceStopped = 0x8010_001E, "SCARD_E_SERVICE_STOPPED", "Service was stopped.";
    Unexpected = 0x8010_001F, "SCARD_E_UNEXPECTED", "Unexpected card error.";
    IccInstallation = 0x8010_0020, "SCARD_E_ICC_INSTALLATION", "Cannot find a smart card reader.";
    IccCreateorder = 0x8010_0021, "SCARD_E_ICC_CREATEORDER", "Requested card creation order unknown.";
    UnsupportedFeature = 0x8010_0022, "SCARD_E_UNSUPPORTED_FEATURE", "Feature not supported.";
    DirNotFound = 0x8010_0023, "SCARD_E_DIR_NOT_FOUND", "Directory not found.";
    FileNotFound = 0x8010_0024, "SCARD_E_FILE_NOT_FOUND", "File not found.";
    NoDir = 0x8010_0025, "SCARD_E_NO_DIR", "The supplied path does not represent a directory.";
    NoFile = 0x8010_0026, "SCARD_E_NO_FILE", "The supplied path does not represent a file.";
    NoAccess = 0x8010_0027, "SCARD_E_NO_ACCESS", "Access denied.";
    WriteTooMany = 0x8010_0028, "SCARD_E_WRITE_TOO_MANY", "The smart card does not have enough memory.";
    BadSeek = 0x8010_0029, "SCARD_E_BAD_SEEK", "Error setting the file pointer.";
    InvalidChv = 0x8010_002A, "SCARD_E_INVALID_CHV", "The PIN is incorrect.";
    UnknownResMng = 0x8010_002B, "SCARD_E_UNKNOWN_RES_MNG", "Unrecognized error code from a layered component.";
    NoSuchCertificate = 0x8010_002C, "SCARD_E_NO_SUCH_CERTIFICATE", "The requested certificate does not exist.";
    CertificateUnavailable = 0x8010_002D, "SCARD_E_CERTIFICATE_UNAVAILABLE", "The requested certificate could not be obtained.";
    NoReadersAvailable = 0x8010_002E, "SCARD_E_NO_READERS_AVAILABLE", "Cannot find a smart card reader.";
    CommDataLost = 0x8010_002F, "SCARD_E_COMM_DATA_LOST", "A communications error with the smart card has been detected.";
    NoKeyContainer = 0x8010_0030, "SCARD_E_NO_KEY_CONTAINER", "The requested key container does not exist.";
    ServerTooBusy = 0x8010_0031, "SCARD_E_SERVER_TOO_BUSY", "The smart card resource manager is too busy.";
    PinCacheExpired = 0x8010_0032, "SCARD_E_PIN_CACHE_EXPIRED", "The PIN cache has expired.";
    NoPinCache = 0x8010_0033, "SCARD_E_NO_PIN_CACHE", "The PIN cannot be cached.";
    ReadOnlyCard = 0x8010_0034, "SCARD_E_READ_ONLY_CARD", "The smart card is read-only.";
    UnsupportedCard = 0x8010_0065, "SCARD_W_UNSUPPORTED_CARD", "Card is not supported.";
    UnresponsiveCard = 0x8010_0066, "SCARD_W_UNRESPONSIVE_CARD", "Card is unresponsive.";
    UnpoweredCard = 0x8010_0067, "SCARD_W_UNPOWERED_CARD", "Card is unpowered.";
    ResetCard = 0x8010_0068, "SCARD_W_RESET_CARD", "Card was reset.";
    RemovedCard = 0x8010_0069, "SCARD_W_REMOVED_CARD", "Card was removed.";
    SecurityViolation = 0x8010_006A, "SCARD_W_SECURITY_VIOLATION", "Access denied.";
    WrongChv = 0x8010_006B, "SCARD_W_WRONG_CHV", "The card cannot be accessed because the wrong PIN was presented.";
    ChvBlocked = 0x8010_006C, "SCARD_W_CHV_BLOCKED", "The card cannot be accessed because the maximum number of PIN entry attempts has been reached.";
    Eof = 0x8010_006D, "SCARD_W_EOF", "The end of the smart card file has been reached.";
    CancelledByUser = 0x8010_006E, "SCARD_W_CANCELLED_BY_USER", "The user pressed \"Cancel\" on a Smart Card Selection Dialog.";
    CardNotAuthenticated = 0x8010_006F, "SCARD_W_CARD_NOT_AUTHENTICATED", "No PIN was presented to the smart card.";
    CacheItemNotFound = 0x8010_0070, "SCARD_W_CACHE_ITEM_NOT_FOUND", "Cache item not found.";
    CacheItemStale = 0x8010_0071, "SCARD_W_CACHE_ITEM_STALE", "Cache item too old.";
    CacheItemTooBig = 0x8010_0072, "SCARD_W_CACHE_ITEM_TOO_BIG", "Cache item too big.";
}

/// Value of `SCARD_S_SUCCESS`.
pub const SUCCESS: u32 = 0;

impl ScardError {
    /// The pcsc-lite value (`pcsclite.h`).
    pub const fn pcsclite_code(self) -> u32 {
        match self {
            ScardError::UnsupportedFeature => 0x8010_001F,
            other => other.windows_code(),
        }
    }

    /// The error with a given pcsc-lite value; 0x8010001F reads as
    /// "unsupported feature", as pcsc-lite's own `pcsc_stringify_error` does.
    pub fn from_pcsclite_code(code: u32) -> Option<ScardError> {
        if code == 0x8010_001F {
            return Some(ScardError::UnsupportedFeature);
        }
        ScardError::ALL
            .iter()
            .copied()
            .find(|e| e.pcsclite_code() == code)
    }

    /// The error with a given Windows value.
    pub fn from_windows_code(code: u32) -> Option<ScardError> {
        ScardError::ALL
            .iter()
            .copied()
            .find(|e| e.windows_code() == code)
    }
}

impl core::fmt::Display for ScardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:08X})", self.name(), self.windows_code())
    }
}

impl std::error::Error for ScardError {}

/// The core's result type.
pub type ScardResult<T> = Result<T, ScardError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for e in ScardError::ALL {
            assert!(seen.insert(e.windows_code()), "{e:?} duplicated");
            assert_eq!(ScardError::from_windows_code(e.windows_code()), Some(*e));
            assert!(e.text_nul().ends_with('\0'));
        }
        assert_eq!(ScardError::UnsupportedFeature.pcsclite_code(), 0x8010_001F);
        assert_eq!(
            ScardError::from_pcsclite_code(0x8010_001F),
            Some(ScardError::UnsupportedFeature)
        );
        assert_eq!(ScardError::CacheItemStale.windows_code(), 0x8010_0071);
    }
}
