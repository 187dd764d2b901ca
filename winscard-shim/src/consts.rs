//! PC/SC constants whose values both ABIs share (the ones that differ —
//! protocol RAW, card state in `SCardStatus`, control codes — are mapped in
//! each ABI layer).

/// `dwCurrentState` / `dwEventState` bits.
pub mod state {
    pub const UNAWARE: u32 = 0x0000;
    pub const IGNORE: u32 = 0x0001;
    pub const CHANGED: u32 = 0x0002;
    pub const UNKNOWN: u32 = 0x0004;
    pub const UNAVAILABLE: u32 = 0x0008;
    pub const EMPTY: u32 = 0x0010;
    pub const PRESENT: u32 = 0x0020;
    pub const ATRMATCH: u32 = 0x0040;
    pub const EXCLUSIVE: u32 = 0x0080;
    pub const INUSE: u32 = 0x0100;
    pub const MUTE: u32 = 0x0200;
    pub const UNPOWERED: u32 = 0x0400;
}

/// `SCARD_ATTR_*` ids (same on Windows and pcsc-lite; note that the
/// "system" class is 0x7FFF, which pcsc-sys 1.3 gets wrong as 0).
pub mod attr {
    pub const VENDOR_NAME: u32 = 0x0001_0100;
    pub const VENDOR_IFD_TYPE: u32 = 0x0001_0101;
    pub const VENDOR_IFD_VERSION: u32 = 0x0001_0102;
    pub const VENDOR_IFD_SERIAL_NO: u32 = 0x0001_0103;
    pub const CHANNEL_ID: u32 = 0x0002_0110;
    pub const ASYNC_PROTOCOL_TYPES: u32 = 0x0003_0120;
    pub const MAX_IFSD: u32 = 0x0003_0125;
    pub const CHARACTERISTICS: u32 = 0x0006_0150;
    pub const CURRENT_PROTOCOL_TYPE: u32 = 0x0008_0201;
    pub const ICC_PRESENCE: u32 = 0x0009_0300;
    pub const ICC_INTERFACE_STATUS: u32 = 0x0009_0301;
    pub const ATR_STRING: u32 = 0x0009_0303;
    pub const ICC_TYPE_PER_ATR: u32 = 0x0009_0304;
    pub const MAXINPUT: u32 = 0x0007_A007;
    pub const DEVICE_UNIT: u32 = 0x7FFF_0001;
    pub const DEVICE_IN_USE: u32 = 0x7FFF_0002;
    pub const DEVICE_FRIENDLY_NAME_A: u32 = 0x7FFF_0003;
    pub const DEVICE_SYSTEM_NAME_A: u32 = 0x7FFF_0004;
    pub const DEVICE_FRIENDLY_NAME_W: u32 = 0x7FFF_0005;
    pub const DEVICE_SYSTEM_NAME_W: u32 = 0x7FFF_0006;
}

/// `SCardGetCardTypeProviderName` provider ids.
pub mod provider {
    pub const PRIMARY: u32 = 1;
    pub const CSP: u32 = 2;
    pub const KSP: u32 = 3;
    pub const CARD_MODULE: u32 = 0x8000_0001;
}

/// The card name Windows registers for PIV cards; basecsp finds msclmd.dll
/// through it.
pub const PIV_CARD_NAME: &str = "Identity Device (NIST SP 800-73 [PIV])";
/// Provider names Windows returns for that card.
pub const CSP_NAME: &str = "Microsoft Base Smart Card Crypto Provider";
pub const KSP_NAME: &str = "Microsoft Smart Card Key Storage Provider";
pub const CARD_MODULE_NAME: &str = "msclmd.dll";

/// The pseudo-reader that reports reader arrivals and departures.
pub const PNP_NOTIFICATION: &str = "\\\\?PnP?\\Notification";

/// `SCARD_READER_TYPE_USB` (winsmcrd.h; 0x04 is SCARD_READER_TYPE_KEYBOARD):
/// the virtual reader presents itself as an ordinary USB reader.
pub const READER_TYPE_USB: u32 = 0x20;

/// Largest command we accept (extended APDU with 64 KiB data).
pub const MAX_APDU: usize = 4 + 3 + 65536 + 3;
/// Vendor strings in GetAttrib.
pub const VENDOR_NAME: &str = "Virtual PIV";
pub const IFD_TYPE: &str = "Virtual PIV Reader";
