//! What a card remembers across power cycles: identity, PINs, keys, objects.
//!
//! This is the persistent half of the card; the session half (who is logged
//! in, pending challenges, chaining buffers) lives in [`crate::card`] and is
//! lost on reset, as on a real card.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::enums::{AlgorithmId, KeyOrigin, KeyRef, ObjectId, PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::tlv;

/// YubiKey default PIN "123456".
pub const DEFAULT_PIN: &[u8] = b"123456";
/// YubiKey default PUK "12345678".
pub const DEFAULT_PUK: &[u8] = b"12345678";
/// YubiKey default retry count for PIN and PUK.
pub const DEFAULT_TRIES: u8 = 3;
/// PIN/PUK reference data is always 8 bytes on the wire, padded with FF.
pub const PIN_BLOCK_LEN: usize = 8;
/// How many bytes a PIN or PUK has (SP 800-73-4 part 2, 2.4.3): hosts
/// check a PIN against this before they pad it, the card when it is set.
pub const PIN_LENGTHS: core::ops::RangeInclusive<usize> = 6..=PIN_BLOCK_LEN;

/// ATR of a YubiKey 5 NFC on its USB (CCID) interface. Cards made before
/// the Management application was added presented this one; a card file
/// that holds it gets [`YUBIKEY5_NFC_ATR`] when loaded (see `store.rs`).
pub const YUBIKEY5_USB_ATR: [u8; 23] = [
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

/// ATR of a YubiKey 5 NFC held to an NFC reader (Yubico .NET SDK,
/// `Yubico.YubiKit.Core.ProductAtrs.YubiKey5Nfc`): the same historical
/// bytes as on USB ("YubiKey", which OpenSC keys its YubiKey quirks off),
/// behind a contactless header. The card's default, because vpcd readers
/// are not named "Yubico YubiKey": yubikit takes a USB ATR (TA1 present,
/// `atr[1] & 0xF0 == 0xF0`) in such a reader for a USB key whose product
/// id it cannot know and gives up, while an NFC ATR needs no product id
/// (ykman `pcsc/__init__.py`, yubikit `support.read_info`).
pub const YUBIKEY5_NFC_ATR: [u8; 18] = [
    0x3B, 0x8D, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65,
    0x79, 0xF9,
];

/// Largest value (the contents of tag 53) of one data object: a YubiKey's
/// 3072-byte object buffer less 9 bytes of tags and lengths (`CB_OBJ_MAX`
/// in yubico-piv-tool's ykpiv.h and in yubikey.rs `consts.rs`); a 3052-byte
/// certificate is the largest that fits with its 70/71/FE wrapping.
/// Software tested against this card must not count on more room than a
/// real key has.
pub const MAX_OBJECT_SIZE: usize = 3063;
/// Largest total of all data objects: a YubiKey 5's PIV object storage
/// (about 51,000 bytes: Yubico SDK documentation, "PIV data objects",
/// table 1C; certificates share it, so 24 certificates of the maximum size
/// do not fit, as Yubico's "certificate size" page says).
pub const MAX_TOTAL_OBJECTS: usize = 51_000;

/// An object that does not fit where a YubiKey would refuse it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    #[error("object {id} would be {len} bytes; a YubiKey holds at most {MAX_OBJECT_SIZE} bytes in one object")]
    ObjectTooLarge { id: ObjectId, len: usize },
    #[error("object {id} ({len} bytes) would bring the card's objects to {total} bytes; a YubiKey holds at most {MAX_TOTAL_OBJECTS}")]
    CardFull {
        id: ObjectId,
        len: usize,
        total: usize,
    },
}

/// A PIN or PUK with its retry counter.
#[derive(Clone)]
pub struct PinState {
    /// Padded 8-byte reference value.
    pub value: Zeroizing<[u8; PIN_BLOCK_LEN]>,
    pub max_tries: u8,
    pub tries_left: u8,
}

impl core::fmt::Debug for PinState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PinState")
            .field("value", &"<redacted>")
            .field("max_tries", &self.max_tries)
            .field("tries_left", &self.tries_left)
            .finish()
    }
}

impl PinState {
    pub fn new(plain: &[u8], tries: u8) -> PinState {
        PinState {
            value: Zeroizing::new(pad_pin(plain)),
            max_tries: tries,
            tries_left: tries,
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.tries_left == 0
    }

    /// Constant-time comparison with a padded 8-byte block.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        candidate.len() == PIN_BLOCK_LEN && bool::from(self.value.ct_eq(candidate))
    }

    pub fn is_default(&self, default: &[u8]) -> bool {
        self.matches(&pad_pin(default))
    }
}

/// Pads a PIN to the 8-byte reference data block with FF.
pub fn pad_pin(plain: &[u8]) -> [u8; PIN_BLOCK_LEN] {
    let mut block = [0xFF; PIN_BLOCK_LEN];
    let n = plain.len().min(PIN_BLOCK_LEN);
    block[..n].copy_from_slice(&plain[..n]);
    block
}

/// Whether an 8-byte block is a well-formed new PIN or PUK: 6 to 8 bytes
/// other than FF, then FF padding (SP 800-73-4 part 2, 2.4.3).
pub fn is_valid_new_pin(block: &[u8]) -> bool {
    if block.len() != PIN_BLOCK_LEN {
        return false;
    }
    let len = block
        .iter()
        .position(|b| *b == 0xFF)
        .unwrap_or(PIN_BLOCK_LEN);
    PIN_LENGTHS.contains(&len) && block[len..].iter().all(|b| *b == 0xFF)
}

/// Largest certificate read out of a gzip-compressed certificate object:
/// the inflated bytes are cut here, so a hostile object (on a card file or
/// from a remote card) cannot make its reader inflate a bomb.
pub const MAX_CERTIFICATE_BYTES: usize = 1 << 20;

/// Why a certificate object's certificate could not be read: its gzip
/// stream does not inflate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertObjectError(#[source] std::io::Error);

/// The certificate DER held in a certificate object's value (the contents
/// of tag 53): tag 70, inflated when CertInfo (tag 71) says gzip (01), at
/// most [`MAX_CERTIFICATE_BYTES`]. `None` when the value holds no tag 70.
/// The card and every host read certificate objects through this one
/// function, so they agree on what a slot holds.
pub fn decode_certificate_object(value: &[u8]) -> Result<Option<Vec<u8>>, CertObjectError> {
    let Some(der) = tlv::find(value, 0x70) else {
        return Ok(None);
    };
    match tlv::find(value, 0x71) {
        Some([0x01]) => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(der)
                .take(MAX_CERTIFICATE_BYTES as u64)
                .read_to_end(&mut out)
                .map_err(CertObjectError)?;
            Ok(Some(out))
        }
        _ => Ok(Some(der.to_vec())),
    }
}

/// A private key in a slot with its policies.
#[derive(Clone)]
pub struct KeySlot {
    pub key: KeyMaterial,
    pub pin_policy: PinPolicy,
    pub touch_policy: TouchPolicy,
    pub origin: KeyOrigin,
}

impl KeySlot {
    /// A key made (generated, imported or loaded) for `slot`, with its
    /// policies fixed: "default" becomes the slot's default now, and the
    /// key keeps that policy wherever MOVE KEY takes it. A YubiKey 5.7
    /// does the same: after a move from 9A to 9C, GET METADATA still says
    /// "once" (yubikey-manager's tests/device/test_piv.py, `test_move_key`).
    pub fn new(
        slot: Slot,
        key: KeyMaterial,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
        origin: KeyOrigin,
    ) -> KeySlot {
        let (pin_policy, touch_policy) =
            crate::access::resolve_policies(slot, pin_policy, touch_policy);
        KeySlot {
            key,
            pin_policy,
            touch_policy,
            origin,
        }
    }
}

impl core::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeySlot")
            .field("algorithm", &self.key.algorithm())
            .field("pin_policy", &self.pin_policy)
            .field("touch_policy", &self.touch_policy)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Facts fixed when the card is made; they survive a YubiKey RESET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub serial: u32,
    pub firmware: [u8; 3],
    pub atr: Vec<u8>,
    /// CHUID GUID (tag 34). OpenSC shows it as the token serial and Windows
    /// derives container names from it, so it never changes.
    pub guid: [u8; 16],
    /// CHUID FASC-N (tag 30).
    pub fascn: [u8; 25],
    /// CCC card identifier (tag F0), 21 bytes.
    pub card_id: [u8; 21],
    /// CHUID expiration date "YYYYMMDD" (tag 35).
    pub expiry: [u8; 8],
}

impl Identity {
    /// The CHUID object value (contents of tag 53), as a YubiKey writes it:
    /// FASC-N, GUID, expiry, an empty signature and an empty LRC.
    pub fn chuid(&self) -> Vec<u8> {
        let mut v = Vec::new();
        tlv::write(&mut v, 0x30, &self.fascn);
        tlv::write(&mut v, 0x34, &self.guid);
        tlv::write(&mut v, 0x35, &self.expiry);
        tlv::write(&mut v, 0x3E, &[]);
        tlv::write(&mut v, 0xFE, &[]);
        v
    }

    /// The Card Capability Container value (SP 800-73-4 part 1, table 8).
    pub fn ccc(&self) -> Vec<u8> {
        let mut v = Vec::new();
        tlv::write(&mut v, 0xF0, &self.card_id);
        tlv::write(&mut v, 0xF1, &[0x21]);
        tlv::write(&mut v, 0xF2, &[0x21]);
        tlv::write(&mut v, 0xF3, &[]);
        tlv::write(&mut v, 0xF4, &[0x00]);
        tlv::write(&mut v, 0xF5, &[0x10]);
        tlv::write(&mut v, 0xF6, &[]);
        tlv::write(&mut v, 0xF7, &[]);
        tlv::write(&mut v, 0xFA, &[]);
        tlv::write(&mut v, 0xFB, &[]);
        tlv::write(&mut v, 0xFC, &[]);
        tlv::write(&mut v, 0xFD, &[]);
        tlv::write(&mut v, 0xFE, &[]);
        v
    }
}

/// The Discovery object (tag 7E, stored as a bare TLV): PIV AID and a PIN
/// usage policy of "PIV PIN only, PIV PIN primary".
pub fn default_discovery() -> Vec<u8> {
    discovery(None)
}

/// The Discovery object for a card's secure messaging set-up: with secure
/// messaging the PIN usage policy also says that the virtual contact
/// interface is implemented (08) and, without a pairing code, that it
/// opens without one (04) (SP 800-73-4 part 1, 3.3.2). The card presents
/// a contactless ATR (a YubiKey 5 NFC's), and OpenSC uses secure messaging
/// on a contactless card only when Discovery names the VCI; whether the
/// card also refuses contact-only commands outside the VCI is the
/// contactless profile's choice, not Discovery's.
pub fn discovery(sm: Option<&SecureMessaging>) -> Vec<u8> {
    let mut policy = 0x40;
    if let Some(sm) = sm {
        policy |= 0x08;
        if sm.pairing_code.is_none() {
            policy |= 0x04;
        }
    }
    let mut inner = Vec::new();
    tlv::write(&mut inner, 0x4F, &crate::enums::PIV_AID);
    tlv::write(&mut inner, 0x5F2F, &[policy, 0x00]);
    tlv::encode(0x7E, &inner)
}

/// What a factory reset replaced (secrets included: never logged).
pub struct ResetUndo {
    pin: PinState,
    puk: PinState,
    mgmt: ManagementKey,
    mgmt_touch: TouchPolicy,
    /// Every key but the attestation key.
    keys: BTreeMap<Slot, KeySlot>,
    objects: BTreeMap<ObjectId, Vec<u8>>,
}

/// Everything the card keeps. Debug shows object ids and sizes only:
/// PIN-protected objects are secrets.
#[derive(Clone)]
pub struct CardState {
    pub identity: Identity,
    pub pin: PinState,
    pub puk: PinState,
    pub mgmt: ManagementKey,
    pub mgmt_touch: TouchPolicy,
    pub keys: BTreeMap<Slot, KeySlot>,
    /// Data objects by id. Values are what GET DATA wraps in tag 53, except
    /// Discovery (7E) and BIT group template (7F61), stored as bare TLVs.
    pub objects: BTreeMap<ObjectId, Vec<u8>>,
    /// Secure messaging, when the card offers it.
    pub secure_messaging: Option<SecureMessaging>,
}

/// The card's secure messaging set-up (SP 800-73-4 Part 2 §4): its key
/// (reference 04), the CVC that certifies it, and the virtual contact
/// interface.
#[derive(Clone)]
pub struct SecureMessaging {
    pub key: crate::sm::SmKey,
    /// The card verifiable certificate the card sends in key
    /// establishment.
    pub cvc: Vec<u8>,
    /// The card behaves as on the contactless interface: PIN, key and
    /// other contact-only operations need the virtual contact interface
    /// (secure messaging, and the pairing code if there is one).
    pub contactless: bool,
    /// The pairing code (eight ASCII digits) that opens the virtual
    /// contact interface; without one, secure messaging alone does.
    pub pairing_code: Option<Zeroizing<[u8; crate::sm::PAIRING_CODE_LEN]>>,
}

impl SecureMessaging {
    pub fn suite(&self) -> crate::sm::CipherSuite {
        self.key.suite()
    }
}

impl core::fmt::Debug for CardState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let sizes: BTreeMap<String, usize> = self
            .objects
            .iter()
            .map(|(id, v)| (id.to_string(), v.len()))
            .collect();
        f.debug_struct("CardState")
            .field("identity", &self.identity)
            .field("pin", &self.pin)
            .field("puk", &self.puk)
            .field("mgmt", &self.mgmt)
            .field("mgmt_touch", &self.mgmt_touch)
            .field("keys", &self.keys)
            .field("object_sizes", &sizes)
            .field(
                "secure_messaging",
                &self.secure_messaging.as_ref().map(|sm| sm.suite()),
            )
            .finish()
    }
}

impl CardState {
    /// Objects a card holds from the factory and after RESET.
    pub fn factory_objects(identity: &Identity) -> BTreeMap<ObjectId, Vec<u8>> {
        let mut objects = BTreeMap::new();
        objects.insert(ObjectId::CHUID, identity.chuid());
        objects.insert(ObjectId::CCC, identity.ccc());
        objects.insert(ObjectId::DISCOVERY, default_discovery());
        objects
    }

    /// Default PIN, PUK and management key; keeps identity, the attestation
    /// key and its certificate, as a YubiKey RESET does. Returns what it
    /// replaced, for [`Self::undo_reset`] when the reset cannot be saved.
    pub fn reset_to_factory(&mut self, mgmt_alg: AlgorithmId) -> ResetUndo {
        let attestation_key = self.keys.remove(&Slot::ATTESTATION);
        let keys = std::mem::take(&mut self.keys);
        if let Some(k) = attestation_key {
            self.keys.insert(Slot::ATTESTATION, k);
        }
        let mut objects = CardState::factory_objects(&self.identity);
        if let Some(cert) = self.objects.get(&ObjectId::YUBICO_ATTESTATION) {
            objects.insert(ObjectId::YUBICO_ATTESTATION, cert.clone());
        }
        // Secure messaging is the issuer's, as the attestation key is: it
        // stays, and so do its signer's certificate, its pairing code
        // container and the Discovery object that announces it.
        if let Some(sm) = &self.secure_messaging {
            for id in [ObjectId::SM_CERT_SIGNER, ObjectId::PAIRING_CODE_REF] {
                if let Some(v) = self.objects.get(&id) {
                    objects.insert(id, v.clone());
                }
            }
            objects.insert(ObjectId::DISCOVERY, discovery(Some(sm)));
        }
        ResetUndo {
            pin: std::mem::replace(&mut self.pin, PinState::new(DEFAULT_PIN, DEFAULT_TRIES)),
            puk: std::mem::replace(&mut self.puk, PinState::new(DEFAULT_PUK, DEFAULT_TRIES)),
            mgmt: std::mem::replace(&mut self.mgmt, ManagementKey::default_for(mgmt_alg)),
            mgmt_touch: std::mem::replace(&mut self.mgmt_touch, TouchPolicy::Never),
            keys,
            objects: std::mem::replace(&mut self.objects, objects),
        }
    }

    /// The PIN for [`KeyRef::Pin`], else the PUK: callers have already
    /// refused every other reference (only these two have reference data).
    pub fn reference_mut(&mut self, key_ref: KeyRef) -> &mut PinState {
        if key_ref == KeyRef::Pin {
            &mut self.pin
        } else {
            &mut self.puk
        }
    }

    /// Sets a PIN or PUK to a padded block with full tries; returns the
    /// old state.
    pub fn replace_reference(&mut self, key_ref: KeyRef, block: &[u8]) -> PinState {
        let pin = self.reference_mut(key_ref);
        let previous = pin.clone();
        pin.value.copy_from_slice(block);
        pin.tries_left = pin.max_tries;
        previous
    }

    /// Puts back what [`Self::reset_to_factory`] replaced.
    pub fn undo_reset(&mut self, undo: ResetUndo) {
        self.pin = undo.pin;
        self.puk = undo.puk;
        self.mgmt = undo.mgmt;
        self.mgmt_touch = undo.mgmt_touch;
        self.keys.extend(undo.keys);
        self.objects = undo.objects;
    }

    /// The certificate DER held in a slot's certificate object, if any.
    pub fn certificate(&self, slot: Slot) -> Option<Vec<u8>> {
        let value = self.objects.get(&slot.certificate_object())?;
        decode_certificate_object(value).ok().flatten()
    }

    /// Whether an object of `len` bytes may replace `id`'s current value
    /// within a YubiKey's limits.
    pub fn check_room(&self, id: ObjectId, len: usize) -> Result<(), NoRoom> {
        if len > MAX_OBJECT_SIZE {
            return Err(NoRoom::ObjectTooLarge { id, len });
        }
        let others: usize = self
            .objects
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(_, v)| v.len())
            .sum();
        if others + len > MAX_TOTAL_OBJECTS {
            return Err(NoRoom::CardFull {
                id,
                len,
                total: others + len,
            });
        }
        Ok(())
    }

    /// Value of a certificate object as YubiKey tools write it.
    pub fn certificate_object_value(der: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(der.len() + 10);
        tlv::write(&mut v, 0x70, der);
        tlv::write(&mut v, 0x71, &[0x00]);
        tlv::write(&mut v, 0xFE, &[]);
        v
    }

    /// Key History object value, derived from the retired-slot certificates
    /// present. OpenSC only looks at retired slots 1..=C1, so C1 is the
    /// highest retired slot holding a certificate (equal to the count when
    /// slots are filled in order, as ykman does). An URL (F3) or off-card
    /// count (C2) the host wrote is kept.
    pub fn key_history(&self) -> Option<Vec<u8>> {
        let on_card = Slot::piv()
            .filter_map(|s| s.retired_index().map(|i| (s, i)))
            .filter(|(s, _)| self.objects.contains_key(&s.certificate_object()))
            .map(|(_, i)| i)
            .max()
            .unwrap_or(0);
        let written = self.objects.get(&ObjectId::KEY_HISTORY);
        let off_card = written
            .and_then(|w| tlv::find(w, 0xC2))
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let url = written.and_then(|w| tlv::find(w, 0xF3));
        if on_card == 0 && written.is_none() {
            return None;
        }
        let mut v = Vec::new();
        tlv::write(&mut v, 0xC1, &[on_card]);
        tlv::write(&mut v, 0xC2, &[off_card]);
        if let Some(url) = url {
            tlv::write(&mut v, 0xF3, url);
        }
        tlv::write(&mut v, 0xFE, &[]);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_checksum_is_valid() {
        // TCK: XOR of T0 .. TCK is zero.
        assert_eq!(YUBIKEY5_USB_ATR[1..].iter().fold(0u8, |a, b| a ^ b), 0);
        assert_eq!(YUBIKEY5_NFC_ATR[1..].iter().fold(0u8, |a, b| a ^ b), 0);
    }

    #[test]
    fn pin_format() {
        assert!(is_valid_new_pin(&pad_pin(b"123456")));
        assert!(is_valid_new_pin(b"12345678"));
        assert!(!is_valid_new_pin(&pad_pin(b"12345")));
        assert!(!is_valid_new_pin(&[0xFF; 8]));
        assert!(!is_valid_new_pin(&[
            b'1', b'2', b'3', 0xFF, b'4', b'5', b'6', 0xFF
        ]));
        let pin = PinState::new(DEFAULT_PIN, 3);
        assert!(pin.matches(&pad_pin(b"123456")));
        assert!(!pin.matches(&pad_pin(b"123457")));
        assert!(!pin.matches(b"123456"));
        assert!(format!("{pin:?}").contains("redacted"));
    }
}
