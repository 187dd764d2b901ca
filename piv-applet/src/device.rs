//! The YubiKey Management application: what the card says about the device
//! it stands for.
//!
//! yubikey-manager (`ykman`, yubikit) reads the serial, the firmware
//! version and the enabled applications here before it opens any other
//! application; without it ykman refuses the card ("Failed to connect to
//! YubiKey"). The card answers as a YubiKey 5 NFC, firmware as in its
//! identity, with only PIV enabled: every other application is supported
//! by that model but switched off, which is why SELECT of OTP, OATH,
//! OpenPGP, FIDO or YubiHSM Auth answers "not found" (6A82), as a YubiKey
//! whose applications were disabled with `ykman config` does.
//!
//! Sources for the layout: yubikit `management.py` (`DeviceInfo.parse_tlvs`,
//! the `TAG_*` values, `_ManagementSmartCardBackend`: the SELECT answer is
//! the version as text, GET DEVICE INFO is INS 1D with the page in P1 and
//! answers a length byte followed by TLVs).

use crate::refusal::Refusal;
use crate::state::Identity;
use crate::tlv;

/// Capability bits of the device information (yubikit `CAPABILITY`).
pub mod capability {
    pub const PIV: u16 = 0x0010;
}

/// Device information tags (yubikit `management.py`, `TAG_*`).
mod tag {
    pub const USB_SUPPORTED: u32 = 0x01;
    pub const SERIAL: u32 = 0x02;
    pub const USB_ENABLED: u32 = 0x03;
    pub const FORM_FACTOR: u32 = 0x04;
    pub const VERSION: u32 = 0x05;
    pub const AUTO_EJECT_TIMEOUT: u32 = 0x06;
    pub const CHALRESP_TIMEOUT: u32 = 0x07;
    pub const DEVICE_FLAGS: u32 = 0x08;
    pub const CONFIG_LOCK: u32 = 0x0A;
    pub const NFC_SUPPORTED: u32 = 0x0D;
    pub const NFC_ENABLED: u32 = 0x0E;
    pub const IAP_DETECTION: u32 = 0x0F;
    pub const MORE_DATA: u32 = 0x10;
    pub const FREE_FORM: u32 = 0x11;
    pub const HID_INIT_DELAY: u32 = 0x12;
    pub const FIPS_CAPABLE: u32 = 0x14;
    pub const FIPS_APPROVED: u32 = 0x15;
    pub const PIN_COMPLEXITY: u32 = 0x16;
    pub const NFC_RESTRICTED: u32 = 0x17;
    pub const FPS_VERSION: u32 = 0x20;
    pub const STM_VERSION: u32 = 0x21;
}

/// What a YubiKey 5 with NFC, firmware 5.7, reports as supported on USB
/// and on NFC: 033F (OTP, U2F, the CCID bit, OpenPGP, PIV, OATH, YubiHSM
/// Auth, FIDO2), in every 5.7 dump of yubikey-manager's
/// `tests/test_device.py` and in yubikey-manager issue 625.
pub const SUPPORTED: u16 = 0x033F;

/// What this card has switched on: PIV, and nothing it does not have.
pub const ENABLED: u16 = capability::PIV;

/// Form factor "Keychain (USB-A)", the YubiKey 5 NFC's.
const FORM_FACTOR_USB_A_KEYCHAIN: u8 = 0x01;

/// The challenge-response timeout a YubiKey ships with, in seconds.
const DEFAULT_CHALRESP_TIMEOUT: u8 = 15;

/// The SELECT answer of a YubiKey 5.7 ("Virtual mgr - FW version 5.7.2"
/// in a transcript of Yubico.NET.SDK's `bio-mpe.md`); yubikit finds the
/// version in it with `Version.from_string`.
pub fn select_answer(identity: &Identity) -> Vec<u8> {
    let [major, minor, patch] = identity.firmware;
    format!("Virtual mgr - FW version {major}.{minor}.{patch}").into_bytes()
}

/// GET DEVICE INFO for `page`: a length byte, then the TLVs, split over
/// two pages as a 5.7.1 key splits them (page 0 ends with "more data";
/// yubikey-manager issue 625 shows a 5C NFC's pages). Later pages are
/// empty.
pub fn device_info(identity: &Identity, page: u8) -> Result<Vec<u8>, Refusal> {
    let mut tlvs = Vec::new();
    match page {
        0 => {
            let t = &mut tlvs;
            tlv::write(t, tag::USB_SUPPORTED, &SUPPORTED.to_be_bytes());
            tlv::write(t, tag::USB_ENABLED, &ENABLED.to_be_bytes());
            tlv::write(t, tag::SERIAL, &identity.serial.to_be_bytes());
            tlv::write(t, tag::FORM_FACTOR, &[FORM_FACTOR_USB_A_KEYCHAIN]);
            tlv::write(t, tag::VERSION, &identity.firmware);
            tlv::write(t, tag::AUTO_EJECT_TIMEOUT, &[0, 0]);
            tlv::write(t, tag::CHALRESP_TIMEOUT, &[DEFAULT_CHALRESP_TIMEOUT]);
            tlv::write(t, tag::DEVICE_FLAGS, &[0]);
            tlv::write(t, tag::NFC_SUPPORTED, &SUPPORTED.to_be_bytes());
            tlv::write(t, tag::NFC_ENABLED, &ENABLED.to_be_bytes());
            tlv::write(t, tag::CONFIG_LOCK, &[0]);
            tlv::write(t, tag::IAP_DETECTION, &[0]);
            tlv::write(t, tag::FPS_VERSION, &[0, 0, 0]);
            tlv::write(t, tag::STM_VERSION, &[0, 0, 0]);
            tlv::write(t, tag::MORE_DATA, &[1]);
        }
        1 => {
            // No part number (tag 13): this card is no Yubico product.
            let t = &mut tlvs;
            tlv::write(t, tag::FREE_FORM, &[0, 0, 0, 0]);
            tlv::write(t, tag::HID_INIT_DELAY, &[0]);
            tlv::write(t, tag::FIPS_CAPABLE, &[0, 0]);
            tlv::write(t, tag::FIPS_APPROVED, &[0, 0]);
            tlv::write(t, tag::PIN_COMPLEXITY, &[0]);
            tlv::write(t, tag::NFC_RESTRICTED, &[0]);
        }
        _ => {}
    }
    // One length byte: a page stays under 256 bytes.
    let len = u8::try_from(tlvs.len()).map_err(|_| Refusal::Internal)?;
    let mut out = Vec::with_capacity(tlvs.len() + 1);
    out.push(len);
    out.extend_from_slice(&tlvs);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            serial: 12_345_678,
            firmware: [5, 7, 1],
            atr: crate::state::YUBIKEY5_NFC_ATR.to_vec(),
            guid: [0; 16],
            fascn: [0; 25],
            card_id: [0; 21],
            expiry: *b"20991231",
        }
    }

    #[test]
    fn device_info_is_a_length_byte_and_tlvs_that_name_the_card() {
        let page0 = device_info(&identity(), 0).unwrap();
        let page1 = device_info(&identity(), 1).unwrap();
        for page in [&page0, &page1] {
            assert_eq!(usize::from(page[0]), page.len() - 1);
        }
        let tlvs = tlv::parse_all(&page0[1..]).unwrap();
        let get = |t: u32| tlvs.iter().find(|x| x.tag == t).unwrap().value;
        assert_eq!(get(tag::SERIAL), 12_345_678u32.to_be_bytes());
        assert_eq!(get(tag::VERSION), [5, 7, 1]);
        assert_eq!(get(tag::USB_ENABLED), [0x00, 0x10]);
        assert_eq!(get(tag::NFC_ENABLED), [0x00, 0x10]);
        assert_eq!(get(tag::MORE_DATA), [1]);
        assert!(tlv::parse_all(&page1[1..]).unwrap().len() > 3);
        assert_eq!(device_info(&identity(), 2).unwrap(), vec![0]);
    }

    #[test]
    fn select_answer_is_the_version_as_text() {
        assert_eq!(
            select_answer(&identity()),
            b"Virtual mgr - FW version 5.7.1"
        );
    }
}
