//! The card: session state, lifecycle and the command dispatcher.
//!
//! A command goes through three steps, each in its own module: `transport`
//! undoes chaining and GET RESPONSE, `command` parses it into a typed
//! command (every malformed command is refused there), and a handler
//! executes it (`select`, `objects`, `pins`, `authenticate`, `yubikey`).
//! The card's owner uses `provision` instead, without APDUs.

use std::path::Path;

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::access::{self, CommandRule};
use crate::apdu::Response;
use crate::enums::{AlgorithmId, Ins, KeyOrigin, ObjectId, PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::refusal::Refusal;
use crate::sealed::{KdfParams, Passphrase, SealingKey};
use crate::state::{
    CardState, Identity, KeySlot, PinState, DEFAULT_PIN, DEFAULT_PUK, DEFAULT_TRIES,
    YUBIKEY5_NFC_ATR,
};
use crate::store::{FileStore, MemoryStore, PlainFile, Store, StoreError};
use crate::{device, x509};

mod authenticate;
mod command;
mod objects;
mod pins;
mod provision;
mod select;
mod transport;
mod yubikey;

use authenticate::Challenge;
use command::{Applet, ManagementCommand, PivCommand};
use transport::{Chain, Req};

pub use crate::state::{NoRoom, MAX_OBJECT_SIZE, MAX_TOTAL_OBJECTS};
pub use select::application_property_template;
pub use transport::MAX_CHAINED_COMMAND;

/// What the card does when a key's touch policy asks for a touch: the
/// user cannot touch a virtual card, so the host configures an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TouchMode {
    /// Every touch request is confirmed at once.
    #[default]
    AutoConfirm,
    /// Every touch request times out (6985), as if nobody touched.
    Deny,
}

/// How to make a new card.
#[derive(Clone, Debug)]
pub struct CardOptions {
    /// Serial number; a random 8-digit one when `None`.
    pub serial: Option<u32>,
    /// Firmware version reported by GET VERSION and attestation.
    pub firmware: [u8; 3],
    /// ATR; the YubiKey 5 NFC's over NFC when `None`.
    pub atr: Option<Vec<u8>>,
    /// CHUID GUID; random when `None`.
    pub guid: Option<[u8; 16]>,
    /// Management key algorithm of the default key (YubiKey 5.7: AES-192).
    pub mgmt_key_alg: AlgorithmId,
    /// Algorithm of the attestation key (F9).
    pub attestation_alg: AlgorithmId,
}

impl Default for CardOptions {
    fn default() -> Self {
        CardOptions {
            serial: None,
            firmware: [5, 7, 1],
            atr: None,
            guid: None,
            mgmt_key_alg: AlgorithmId::Aes192,
            attestation_alg: AlgorithmId::EccP256,
        }
    }
}

/// Errors of the direct (non-APDU) provisioning API.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("key error: {0}")]
    Key(#[from] crate::keys::KeyError),
    #[error("certificate error: {0}")]
    Cert(#[from] x509::CertError),
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    #[error("{0}")]
    Invalid(String),
}

/// Per-session state, lost at reset or power off.
#[derive(Default)]
struct Session {
    selected: Option<Applet>,
    pin_verified: bool,
    /// Set by a successful VERIFY; every later command takes it away (a
    /// command chain carries it to its last chunk), so a PIN-always key
    /// can only be used by the command right after VERIFY.
    pin_fresh: bool,
    mgmt_authenticated: bool,
    challenge: Option<Challenge>,
    chain: Option<Chain>,
    /// Response bytes still to be fetched with GET RESPONSE.
    pending: Option<Zeroizing<Vec<u8>>>,
    /// The secure messaging session, if one was established (its keys are
    /// wiped when it drops: reset, SELECT, a failed check).
    sm: Option<crate::sm::Channel>,
    /// The virtual contact interface is open: the pairing code was
    /// presented within the current secure messaging session.
    vci: bool,
    /// The command running under secure messaging ends the session once
    /// its answer is protected (a wrong pairing code).
    sm_ends: bool,
}

impl Session {
    /// The session after a reset: PIV selected (like a YubiKey, whose PIV
    /// applet is the default one), nothing proved.
    fn new() -> Session {
        Session {
            selected: Some(Applet::Piv),
            ..Session::default()
        }
    }
}

/// What the session has proved so far: read-only, for hosts that show
/// the card's state and for the access-rule tests and fuzz oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityStatus {
    pub pin_verified: bool,
    /// The last command was a successful VERIFY (PIN-always keys).
    pub pin_just_verified: bool,
    pub mgmt_authenticated: bool,
}

type Res = Result<Response, Refusal>;

/// A PIV card with its store.
pub struct Card {
    state: CardState,
    store: Box<dyn Store>,
    session: Session,
    touch: TouchMode,
}

impl core::fmt::Debug for Card {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Card")
            .field("serial", &self.state.identity.serial)
            .field("store", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl Card {
    /// Makes a new card state with YubiKey factory defaults and an
    /// attestation key and certificate.
    pub fn new_state(opts: &CardOptions) -> Result<CardState, CardError> {
        let mut rng = OsRng;
        let serial = opts
            .serial
            .unwrap_or_else(|| 10_000_000 + rng.next_u32() % 90_000_000);
        let guid = opts.guid.unwrap_or_else(|| {
            let mut g = [0u8; 16];
            rng.fill_bytes(&mut g);
            g
        });
        let mut card_id = [0u8; 21];
        // GSC-RID, manufacturer id, card type (SP 800-73-4 part 1 table 8),
        // then 14 random bytes.
        card_id[..7].copy_from_slice(&[0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02]);
        rng.fill_bytes(&mut card_id[7..]);
        let identity = Identity {
            serial,
            firmware: opts.firmware,
            atr: opts
                .atr
                .clone()
                .unwrap_or_else(|| YUBIKEY5_NFC_ATR.to_vec()),
            guid,
            fascn: default_fascn(),
            card_id,
            expiry: *b"20991231",
        };
        if !opts.mgmt_key_alg.is_symmetric() {
            return Err(CardError::Invalid(format!(
                "{:?} is not a management key algorithm",
                opts.mgmt_key_alg
            )));
        }
        let f9 = KeyMaterial::generate(opts.attestation_alg)?;
        let f9_cert = x509::attestation_ca(&f9, serial)?;
        let mut objects = CardState::factory_objects(&identity);
        objects.insert(
            ObjectId::YUBICO_ATTESTATION,
            CardState::certificate_object_value(&f9_cert),
        );
        let mut keys = std::collections::BTreeMap::new();
        keys.insert(
            Slot::ATTESTATION,
            KeySlot::new(
                Slot::ATTESTATION,
                f9,
                PinPolicy::Never,
                TouchPolicy::Never,
                KeyOrigin::Generated,
            ),
        );
        Ok(CardState {
            identity,
            pin: PinState::new(DEFAULT_PIN, DEFAULT_TRIES),
            puk: PinState::new(DEFAULT_PUK, DEFAULT_TRIES),
            mgmt: ManagementKey::default_for(opts.mgmt_key_alg),
            mgmt_touch: TouchPolicy::Never,
            keys,
            objects,
            secure_messaging: None,
        })
    }

    /// Creates a new card file; fails if the file exists.
    pub fn create(path: impl AsRef<Path>, opts: &CardOptions) -> Result<Card, CardError> {
        Card::create_with(path, opts, None)
    }

    /// As [`Self::create`]; with a passphrase the file is sealed
    /// (Argon2id + XChaCha20-Poly1305, see [`crate::sealed`]).
    pub fn create_with(
        path: impl AsRef<Path>,
        opts: &CardOptions,
        passphrase: Option<&Passphrase>,
    ) -> Result<Card, CardError> {
        let state = Card::new_state(opts)?;
        let sealing = passphrase
            .map(|p| SealingKey::new(p, KdfParams::default()))
            .transpose()?;
        let mut store = FileStore::create_with(path.as_ref(), sealing)?;
        store.save(&state)?;
        Ok(Card::with_store(state, Box::new(store)))
    }

    /// Opens an existing plain card file, holding its lock until dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Card, StoreError> {
        Card::open_with(path, None)
    }

    /// Opens an existing card file, plain or sealed (a sealed one needs its
    /// passphrase; a plain one is refused when a passphrase is given,
    /// [`StoreError::NotSealed`]).
    pub fn open_with(
        path: impl AsRef<Path>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Card, StoreError> {
        Card::open_with_policy(path, passphrase, PlainFile::Refuse)
    }

    /// As [`Self::open_with`], with a choice for a plain file.
    pub fn open_with_policy(
        path: impl AsRef<Path>,
        passphrase: Option<&Passphrase>,
        plain: PlainFile,
    ) -> Result<Card, StoreError> {
        let (store, state) = FileStore::open_with_policy(path.as_ref(), passphrase, plain)?;
        Ok(Card::with_store(state, Box::new(store)))
    }

    /// Whether the card file is sealed with a passphrase.
    pub fn is_sealed(&self) -> bool {
        self.store.is_sealed()
    }

    /// Seals the card file with a new passphrase (also to change it), or
    /// with `None` writes it in clear again. The file is rewritten at once;
    /// on failure it keeps its old protection.
    pub fn set_passphrase(
        &mut self,
        passphrase: Option<&Passphrase>,
        params: KdfParams,
    ) -> Result<(), StoreError> {
        let sealing = passphrase.map(|p| SealingKey::new(p, params)).transpose()?;
        self.store.reseal(&self.state, sealing)
    }

    /// A card that lives in memory only.
    pub fn ephemeral(opts: &CardOptions) -> Result<Card, CardError> {
        Ok(Card::with_store(
            Card::new_state(opts)?,
            Box::new(MemoryStore::default()),
        ))
    }

    /// A card over any store (the state must already be saved there).
    pub fn with_store(state: CardState, store: Box<dyn Store>) -> Card {
        Card {
            state,
            store,
            session: Session::new(),
            touch: TouchMode::default(),
        }
    }

    pub fn set_touch_mode(&mut self, mode: TouchMode) {
        self.touch = mode;
    }

    /// The card file, if the card has one.
    pub fn path(&self) -> Option<&Path> {
        self.store.path()
    }

    /// Read-only view of the persistent state (never log it whole: it
    /// redacts secrets in Debug, but callers should print a summary).
    pub fn state(&self) -> &CardState {
        &self.state
    }

    pub fn atr(&self) -> Vec<u8> {
        self.state.identity.atr.clone()
    }

    /// Cold or warm reset: the session is lost, PIV stays selected (like
    /// a YubiKey, whose PIV applet is the default one).
    pub fn reset(&mut self) {
        self.session = Session::new();
    }

    pub fn power_on(&mut self) {
        self.reset();
    }

    pub fn power_off(&mut self) {
        self.reset();
    }

    /// Processes one command APDU and returns the response APDU, in a
    /// buffer that is wiped when dropped (it may hold decrypted data, a
    /// shared secret or a PIN-protected object).
    pub fn transmit(&mut self, apdu: &[u8]) -> Zeroizing<Vec<u8>> {
        self.transport(apdu).to_bytes()
    }

    /// [`Self::transmit`] into a plain vector, for tests and tools whose
    /// answers hold nothing secret.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.transmit(apdu).to_vec()
    }

    /// What this session has proved (PIN, management key).
    pub fn security_status(&self) -> SecurityStatus {
        SecurityStatus {
            pin_verified: self.session.pin_verified,
            pin_just_verified: self.session.pin_fresh,
            mgmt_authenticated: self.session.mgmt_authenticated,
        }
    }

    fn dispatch(&mut self, req: &Req<'_>) -> Res {
        if req.ins == Ins::Select {
            return self.select(req.p1, req.data);
        }
        match self.session.selected {
            Some(Applet::Piv) => {
                let cmd = PivCommand::parse(req.ins, req.p1, req.p2, req.data)?;
                if !self.interface_allows(&cmd, req.secure) {
                    return Err(Refusal::SecurityStatus);
                }
                self.execute(cmd, req.pin_just_verified, req.secure)
            }
            Some(Applet::Management) => match ManagementCommand::parse(req.ins, req.p1, req.p2)? {
                ManagementCommand::ReadConfig { page } => {
                    device::device_info(&self.state.identity, page).map(Response::ok)
                }
            },
            None => Err(Refusal::UnknownIns),
        }
    }

    /// Runs a parsed PIV command. `pin_just_verified`: the command before
    /// it was a successful VERIFY.
    fn execute(&mut self, cmd: PivCommand<'_>, pin_just_verified: bool, secure: bool) -> Res {
        match cmd {
            PivCommand::GetData(id) => self.get_data(id),
            PivCommand::PutData(object) => self.put_data(object),
            PivCommand::Verify(v) => self.verify(v, secure),
            PivCommand::ChangeReference {
                reference,
                old,
                new,
            } => self.change_reference_data(reference, old, new),
            PivCommand::ResetRetryCounter { puk, new } => self.reset_retry_counter(puk, new),
            PivCommand::GeneralAuthenticate(a) => {
                self.general_authenticate(a, pin_just_verified, secure)
            }
            PivCommand::Generate { slot, spec } => self.generate(slot, spec),
            PivCommand::GetVersion => Ok(Response::ok(self.state.identity.firmware.to_vec())),
            PivCommand::GetSerial => Ok(Response::ok(
                self.state.identity.serial.to_be_bytes().to_vec(),
            )),
            PivCommand::GetMetadata(what) => self.get_metadata(what),
            PivCommand::SetManagementKey { touch, key } => self.change_management_key(touch, key),
            PivCommand::Import {
                slot,
                alg,
                policies,
                key,
            } => self.import(slot, alg, policies, key),
            PivCommand::Attest(slot) => self.attest(slot),
            PivCommand::Reset => self.yubikey_reset(),
            PivCommand::SetPinRetries {
                pin_tries,
                puk_tries,
            } => self.set_pin_retries(pin_tries, puk_tries),
            PivCommand::MoveKey(m) => self.move_key(m),
        }
    }

    /// Ends the secure messaging session (its keys are wiped as the channel
    /// drops). On a card with the contactless profile, what was proved
    /// within the session (PIN, management key) ends with it: it was
    /// proved through the virtual contact interface, and a later session,
    /// perhaps another host's, must prove it again.
    fn end_secure_session(&mut self) {
        self.session.sm = None;
        self.session.vci = false;
        if self
            .state
            .secure_messaging
            .as_ref()
            .is_some_and(|sm| sm.contactless)
        {
            self.session.pin_verified = false;
            self.session.pin_fresh = false;
            self.session.mgmt_authenticated = false;
            self.session.challenge = None;
        }
    }

    /// The virtual contact interface rule (SP 800-73-4 part 1, 2.1 and
    /// part 2, 4): on a card with the contactless profile, a command that
    /// is contact-only needs the VCI, that is secure messaging and, if the
    /// card has a pairing code, the pairing code presented in this session.
    /// Other cards take every command in the clear, as always.
    fn interface_allows(&self, cmd: &PivCommand<'_>, secure: bool) -> bool {
        let Some(sm) = self
            .state
            .secure_messaging
            .as_ref()
            .filter(|sm| sm.contactless)
        else {
            return true;
        };
        let vci = secure && (self.session.vci || sm.pairing_code.is_none());
        vci || !cmd.is_contact_only()
    }

    /// Applies `change` to the state and saves it; when the save fails,
    /// `undo` gets what `change` returned (the values it replaced) and puts
    /// them back. Every change to the state goes through here, so memory
    /// never holds a change that the card file does not.
    fn save_or_undo<U>(
        &mut self,
        change: impl FnOnce(&mut CardState) -> U,
        undo: impl FnOnce(&mut CardState, U),
    ) -> Result<(), StoreError> {
        let replaced = change(&mut self.state);
        self.store
            .save(&self.state)
            .inspect_err(|_| undo(&mut self.state, replaced))
    }

    /// [`Self::save_or_undo`] for APDU handlers: a failed save answers
    /// 6581 (memory failure).
    fn persist_or_undo<U>(
        &mut self,
        change: impl FnOnce(&mut CardState) -> U,
        undo: impl FnOnce(&mut CardState, U),
    ) -> Result<(), Refusal> {
        self.save_or_undo(change, undo).map_err(|e| {
            tracing::error!("card state not saved: {e}");
            Refusal::NotSaved
        })
    }

    /// Enforces the part of a command's [`access::command_rule`] that the
    /// session alone decides; the handlers check the rest (the object, the
    /// key, the reference data), which needs the command's data.
    fn authorize(&self, ins: Ins) -> Result<(), Refusal> {
        let s = &self.session;
        let allowed = match access::command_rule(ins) {
            Some(CommandRule::ManagementKey) => s.mgmt_authenticated,
            Some(CommandRule::ManagementKeyAndPin) => s.mgmt_authenticated && s.pin_verified,
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::SecurityStatus)
        }
    }

    fn touch(&self, policy: TouchPolicy) -> Result<(), Refusal> {
        match (policy, self.touch) {
            (TouchPolicy::Always | TouchPolicy::Cached, TouchMode::Deny) => Err(Refusal::NoTouch),
            _ => Ok(()),
        }
    }
}

/// Restores a map entry to what it was: `previous` back in, or the key
/// removed when there was nothing.
fn put_back<K: Ord, V>(map: &mut std::collections::BTreeMap<K, V>, key: K, previous: Option<V>) {
    match previous {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

/// A FASC-N for a non-federal card: agency code 9999, system 9999,
/// credential 999999, in the 25-byte BCD-with-parity encoding
/// (SP 800-73-4 part 1, 3.1.2; the value Yubico tools write).
fn default_fascn() -> [u8; 25] {
    [
        0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21,
        0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
    ]
}
