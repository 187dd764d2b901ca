//! The card: transport (chaining, GET RESPONSE), session state and the
//! command dispatcher.

use std::path::Path;

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::access::{self, CommandRule, KeyUseRule};
use crate::apdu::{Command, Response};
use crate::enums::{
    AlgorithmId, Ins, KeyOrigin, KeyRef, MgmtIns, ObjectId, PinPolicy, Slot, StatusWord,
    TouchPolicy, MANAGEMENT_AID, PIV_AID, PIV_RID_LEN,
};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::refusal::Refusal;
use crate::sealed::{KdfParams, Passphrase, SealingKey};
use crate::state::{
    is_valid_new_pin, CardState, Identity, KeySlot, PinState, DEFAULT_PIN, DEFAULT_PUK,
    DEFAULT_TRIES, PIN_BLOCK_LEN, YUBIKEY5_NFC_ATR,
};
use crate::store::{FileStore, MemoryStore, PlainFile, Store, StoreError};
use crate::{device, tlv, x509};

/// Largest command a chain may assemble; beyond it the chain is refused
/// with 6A84 rather than growing without bound.
pub const MAX_CHAINED_COMMAND: usize = 64 * 1024;
pub use crate::state::{NoRoom, MAX_OBJECT_SIZE, MAX_TOTAL_OBJECTS};

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

/// A management-key challenge waiting for the host's answer.
enum Challenge {
    /// Mutual authentication: the card sent E(K, witness).
    Witness(Zeroizing<Vec<u8>>),
    /// External authentication: the card sent this challenge.
    External(Zeroizing<Vec<u8>>),
}

/// INS, P1 and P2 that every chunk of one command chain repeats.
type ChainHeader = (Ins, u8, u8);

/// A command chain being received: its header, the data so far, and
/// whether the PIN was verified just before the chain began.
struct Chain {
    header: ChainHeader,
    data: Zeroizing<Vec<u8>>,
    pin_just_verified: bool,
}

/// The application a SELECT chose; commands go to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applet {
    Piv,
    /// The YubiKey Management application ([`crate::device`]).
    Management,
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

/// A request after transport processing: chaining undone, CLA checked.
struct Req<'a> {
    ins: Ins,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// The command before this one was a successful VERIFY.
    pin_just_verified: bool,
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
            KeySlot {
                key: f9,
                pin_policy: PinPolicy::Never,
                touch_policy: TouchPolicy::Never,
                origin: KeyOrigin::Generated,
            },
        );
        Ok(CardState {
            identity,
            pin: PinState::new(DEFAULT_PIN, DEFAULT_TRIES),
            puk: PinState::new(DEFAULT_PUK, DEFAULT_TRIES),
            mgmt: ManagementKey::default_for(opts.mgmt_key_alg),
            mgmt_touch: TouchPolicy::Never,
            keys,
            objects,
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
            session: Session {
                selected: Some(Applet::Piv),
                ..Session::default()
            },
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
        self.session = Session {
            selected: Some(Applet::Piv),
            ..Session::default()
        };
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

    // ---------------------------------------------------------------
    // Provisioning: direct access for the card's owner (the CLI works on
    // a card file it holds), bypassing PIN and management key. Every change
    // is saved before returning.

    /// Generates a key in a slot; returns its SubjectPublicKeyInfo DER.
    pub fn generate_key(
        &mut self,
        slot: Slot,
        alg: AlgorithmId,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<Vec<u8>, CardError> {
        if !alg.is_asymmetric() {
            return Err(CardError::Invalid(format!(
                "{alg:?} is not a key algorithm"
            )));
        }
        let key = KeyMaterial::generate(alg)?;
        let spki = key.public_key_spki_der();
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Generated),
        )
        .map_err(|_| CardError::Invalid("the card file could not be written".into()))?;
        Ok(spki)
    }

    /// Puts a private key in a slot.
    pub fn import_key(
        &mut self,
        slot: Slot,
        key: KeyMaterial,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<(), CardError> {
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported),
        )
        .map_err(|_| CardError::Invalid("the card file could not be written".into()))
    }

    /// Puts a private key and, optionally, its certificate in a slot with
    /// one save: either both are on the card afterwards or neither is.
    pub fn import_key_and_certificate(
        &mut self,
        slot: Slot,
        key: KeyMaterial,
        certificate: Option<&[u8]>,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<(), CardError> {
        let id = slot.certificate_object();
        let ks = KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported);
        let cert = certificate.map(CardState::certificate_object_value);
        if let Some(c) = &cert {
            self.state.check_room(id, c.len())?;
        }
        self.save_or_undo(
            |s| {
                let old_key = s.keys.insert(slot, ks);
                let old_cert = cert.map(|c| s.objects.insert(id, c));
                (old_key, old_cert)
            },
            |s, (old_key, old_cert)| {
                put_back(&mut s.keys, slot, old_key);
                if let Some(old) = old_cert {
                    put_back(&mut s.objects, id, old);
                }
            },
        )?;
        Ok(())
    }

    /// Sets the PIN (6 to 8 bytes) and resets its retry counter.
    pub fn set_pin(&mut self, pin: &[u8]) -> Result<(), CardError> {
        self.set_reference(KeyRef::Pin, pin)
    }

    /// Sets the PUK (6 to 8 bytes) and resets its retry counter.
    pub fn set_puk(&mut self, puk: &[u8]) -> Result<(), CardError> {
        self.set_reference(KeyRef::Puk, puk)
    }

    fn set_reference(&mut self, key_ref: KeyRef, value: &[u8]) -> Result<(), CardError> {
        let block = crate::state::pad_pin(value);
        if value.len() > PIN_BLOCK_LEN || !is_valid_new_pin(&block) {
            return Err(CardError::Invalid(
                "a PIN or PUK has 6 to 8 characters".into(),
            ));
        }
        if self.pin_state(key_ref).is_err() {
            return Err(CardError::Invalid("not a PIN reference".into()));
        }
        self.save_or_undo(
            |s| s.replace_reference(key_ref, &block),
            |s, previous| *s.reference_mut(key_ref) = previous,
        )?;
        Ok(())
    }

    /// Replaces the management key.
    pub fn set_management_key(&mut self, key: ManagementKey) -> Result<(), CardError> {
        self.save_or_undo(
            |s| std::mem::replace(&mut s.mgmt, key),
            |s, previous| s.mgmt = previous,
        )?;
        Ok(())
    }

    /// A PKCS#10 certificate request signed by a slot's key.
    pub fn certificate_request(&self, slot: Slot, subject: &str) -> Result<Vec<u8>, CardError> {
        let ks = self
            .state
            .keys
            .get(&slot)
            .ok_or_else(|| CardError::Invalid(format!("slot {slot} holds no key")))?;
        Ok(x509::certificate_request(&ks.key, subject)?)
    }

    /// Stores a certificate (DER) in a slot's certificate object.
    pub fn put_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<(), CardError> {
        let id = slot.certificate_object();
        let value = CardState::certificate_object_value(der);
        self.state.check_room(id, value.len())?;
        self.save_or_undo(
            |s| s.objects.insert(id, value),
            |s, previous| put_back(&mut s.objects, id, previous),
        )?;
        Ok(())
    }

    /// The certificate DER in a slot, if any.
    pub fn certificate(&self, slot: Slot) -> Option<Vec<u8>> {
        self.state.certificate(slot)
    }

    /// The public key (SubjectPublicKeyInfo DER) of a slot's key, if any.
    pub fn public_key(&self, slot: Slot) -> Option<Vec<u8>> {
        self.state
            .keys
            .get(&slot)
            .map(|ks| ks.key.public_key_spki_der())
    }

    /// Makes a self-signed certificate for a slot's key, stores it in the
    /// slot and returns it.
    pub fn self_sign(
        &mut self,
        slot: Slot,
        req: &x509::CertRequest<'_>,
    ) -> Result<Vec<u8>, CardError> {
        let ks = self
            .state
            .keys
            .get(&slot)
            .ok_or_else(|| CardError::Invalid(format!("slot {slot} holds no key")))?;
        let der = x509::self_signed(&ks.key, req)?;
        self.put_certificate(slot, &der)?;
        Ok(der)
    }

    // ---------------------------------------------------------------
    // Transport

    fn transport(&mut self, apdu: &[u8]) -> Response {
        // Whatever this APDU is, it is not VERIFY's successor any more
        // unless it continues the chain that was.
        let pin_just_verified = std::mem::take(&mut self.session.pin_fresh);
        let cmd = match Command::parse(apdu) {
            Ok(c) => c,
            Err(_) => {
                self.session.chain = None;
                self.session.pending = None;
                return Refusal::BadLength.into();
            }
        };
        if let Err(sw) = check_cla(cmd.cla) {
            self.session.chain = None;
            self.session.pending = None;
            return sw.into();
        }
        if cmd.ins == Ins::GetResponse {
            return self.get_response(&cmd);
        }
        self.session.pending = None;
        let header = (cmd.ins, cmd.p1, cmd.p2);
        let continued = match self.session.chain.take() {
            Some(c) if c.header == header => Some(c),
            _ => None,
        };
        if cmd.is_chained() {
            let mut chain = continued.unwrap_or(Chain {
                header,
                data: Zeroizing::new(Vec::new()),
                pin_just_verified,
            });
            if chain.data.len() + cmd.data.len() > MAX_CHAINED_COMMAND {
                return Refusal::ChainTooLong.into();
            }
            extend_wiped(&mut chain.data, cmd.data);
            self.session.chain = Some(chain);
            return Response::ok(Vec::new());
        }
        let joined;
        let (data, pin_just_verified) = match continued {
            Some(mut chain) => {
                if chain.data.len() + cmd.data.len() > MAX_CHAINED_COMMAND {
                    return Refusal::ChainTooLong.into();
                }
                extend_wiped(&mut chain.data, cmd.data);
                joined = chain;
                (&joined.data[..], joined.pin_just_verified)
            }
            None => (cmd.data, pin_just_verified),
        };
        let req = Req {
            ins: cmd.ins,
            p1: cmd.p1,
            p2: cmd.p2,
            data,
            pin_just_verified,
        };
        let resp = self.dispatch(&req).unwrap_or_else(Response::from);
        let limit = cmd.le.unwrap_or(if cmd.extended { 65536 } else { 256 });
        self.limit_response(resp, limit)
    }

    /// Returns at most `limit` bytes and keeps the rest for GET RESPONSE.
    fn limit_response(&mut self, mut resp: Response, limit: usize) -> Response {
        if resp.data.len() <= limit {
            return resp;
        }
        let rest = Zeroizing::new(resp.data.split_off(limit));
        let left = rest.len();
        self.session.pending = Some(rest);
        resp.sw = StatusWord::MoreData(if left >= 256 { 0 } else { left as u8 });
        resp
    }

    fn get_response(&mut self, cmd: &Command<'_>) -> Response {
        self.session.chain = None;
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Refusal::BadP1P2.into();
        }
        let Some(pending) = self.session.pending.take() else {
            return Refusal::OutOfOrder.into();
        };
        let limit = cmd.le.unwrap_or(256);
        self.limit_response(Response::ok(pending.to_vec()), limit)
    }

    // ---------------------------------------------------------------
    // Dispatch

    fn dispatch(&mut self, req: &Req<'_>) -> Res {
        if req.ins == Ins::Select {
            return self.select(req);
        }
        match self.session.selected {
            Some(Applet::Piv) => self.dispatch_piv(req),
            Some(Applet::Management) => self.dispatch_management(req),
            None => Err(Refusal::UnknownIns),
        }
    }

    /// The Management application answers GET DEVICE INFO only: the card
    /// cannot change its applications or reset other ones, so writing the
    /// configuration is refused as an unknown instruction, as a YubiKey
    /// without the feature does.
    fn dispatch_management(&mut self, req: &Req<'_>) -> Res {
        match MgmtIns::from(u8::from(req.ins)) {
            MgmtIns::ReadConfig => {
                if req.p2 != 0 {
                    return Err(Refusal::BadP1P2);
                }
                device::device_info(&self.state.identity, req.p1).map(Response::ok)
            }
            _ => Err(Refusal::UnknownIns),
        }
    }

    fn dispatch_piv(&mut self, req: &Req<'_>) -> Res {
        match req.ins {
            Ins::GetData => self.get_data(req),
            Ins::PutData => self.put_data(req),
            Ins::Verify => self.verify(req),
            Ins::ChangeReferenceData => self.change_reference_data(req),
            Ins::ResetRetryCounter => self.reset_retry_counter(req),
            Ins::GeneralAuthenticate => self.general_authenticate(req),
            Ins::GenerateAsymmetricKeyPair => self.generate(req),
            Ins::GetVersion => {
                expect_p1p2(req, 0, 0)?;
                Ok(Response::ok(self.state.identity.firmware.to_vec()))
            }
            Ins::GetSerial => {
                expect_p1p2(req, 0, 0)?;
                Ok(Response::ok(
                    self.state.identity.serial.to_be_bytes().to_vec(),
                ))
            }
            Ins::GetMetadata => self.get_metadata(req),
            Ins::SetManagementKey => self.cmd_set_management_key(req),
            Ins::ImportKey => self.import(req),
            Ins::Attest => self.attest(req),
            Ins::Reset => self.yubikey_reset(req),
            Ins::SetPinRetries => self.set_pin_retries(req),
            Ins::MoveKey => self.move_key(req),
            _ => Err(Refusal::UnknownIns),
        }
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

    // ---------------------------------------------------------------
    // SELECT

    fn select(&mut self, req: &Req<'_>) -> Res {
        if req.p1 != 0x04 {
            return Err(Refusal::BadP1P2);
        }
        let aid = req.data;
        let applet = if aid.len() >= PIV_RID_LEN && PIV_AID.starts_with(aid) {
            Applet::Piv
        } else if aid == MANAGEMENT_AID {
            Applet::Management
        } else {
            self.session = Session::default();
            return Err(Refusal::NoApplication);
        };
        // Selecting another application ends the PIV session (PIN,
        // management key); selecting PIV again keeps it.
        if self.session.selected != Some(applet) {
            self.session = Session::default();
        }
        self.session.selected = Some(applet);
        Ok(Response::ok(match applet {
            Applet::Piv => application_property_template(),
            Applet::Management => device::select_answer(&self.state.identity),
        }))
    }

    // ---------------------------------------------------------------
    // GET DATA / PUT DATA

    fn get_data(&mut self, req: &Req<'_>) -> Res {
        expect_p1p2(req, 0x3F, 0xFF)?;
        let tag = tlv::parse_one(req.data).map_err(|_| Refusal::BadData)?;
        if tag.tag != 0x5C {
            return Err(Refusal::BadData);
        }
        let id = ObjectId::from_bytes(tag.value)
            .filter(|id| id.is_known())
            .ok_or(Refusal::BadObjectId)?;
        if id.pin_protected() && !self.session.pin_verified {
            return Err(Refusal::SecurityStatus);
        }
        let value = if id == ObjectId::KEY_HISTORY {
            self.state.key_history()
        } else {
            self.state.objects.get(&id).cloned()
        };
        let value = value.ok_or(Refusal::NoObject)?;
        if matches!(id, ObjectId::DISCOVERY | ObjectId::BITGT) {
            Ok(Response::ok(value))
        } else {
            Ok(Response::ok(tlv::encode(0x53, &value)))
        }
    }

    fn put_data(&mut self, req: &Req<'_>) -> Res {
        expect_p1p2(req, 0x3F, 0xFF)?;
        self.authorize(req.ins)?;
        let tlvs = tlv::parse_all(req.data).map_err(|_| Refusal::BadData)?;
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
        self.state
            .check_room(id, value.len())
            .map_err(|e| match e {
                NoRoom::ObjectTooLarge { .. } => Refusal::ObjectTooLarge,
                NoRoom::CardFull { .. } => Refusal::CardFull,
            })?;
        self.persist_or_undo(
            |s| {
                if value.is_empty() {
                    s.objects.remove(&id)
                } else {
                    s.objects.insert(id, value)
                }
            },
            |s, previous| put_back(&mut s.objects, id, previous),
        )?;
        Ok(Response::ok(Vec::new()))
    }

    // ---------------------------------------------------------------
    // PINs

    /// The PIN or PUK a reference names; other references have no
    /// reference data. Checking here is what lets the state-changing
    /// closures use [`CardState::reference_mut`] directly.
    fn pin_state(&mut self, key_ref: KeyRef) -> Result<&mut PinState, Refusal> {
        match key_ref {
            KeyRef::Pin | KeyRef::Puk => Ok(self.state.reference_mut(key_ref)),
            _ => Err(Refusal::NoReference),
        }
    }

    /// Checks `candidate` against a PIN or PUK. The retry counter is
    /// decremented and saved before the comparison, so pulling the power
    /// mid-check cannot grant a free try.
    fn check_reference(&mut self, key_ref: KeyRef, candidate: &[u8]) -> Result<(), Refusal> {
        let pin = self.pin_state(key_ref)?;
        if pin.is_blocked() {
            return Err(Refusal::Blocked);
        }
        // Nothing recorded, nothing compared: a failed save undoes the count.
        self.persist_or_undo(
            |s| s.reference_mut(key_ref).tries_left -= 1,
            |s, ()| s.reference_mut(key_ref).tries_left += 1,
        )?;
        let pin = self.pin_state(key_ref)?;
        if !pin.matches(candidate) {
            return Err(Refusal::WrongReference(pin.tries_left));
        }
        // If the restored count cannot be saved, the try stays counted (in
        // memory as on disk) and the host sees 6581.
        self.persist_or_undo(
            |s| {
                let pin = s.reference_mut(key_ref);
                std::mem::replace(&mut pin.tries_left, pin.max_tries)
            },
            |s, left| s.reference_mut(key_ref).tries_left = left,
        )
    }

    fn verify(&mut self, req: &Req<'_>) -> Res {
        let key_ref = KeyRef::from(req.p2);
        if key_ref != KeyRef::Pin {
            return Err(Refusal::NoReference);
        }
        match (req.p1, req.data.len()) {
            (0xFF, 0) => {
                self.session.pin_verified = false;
                Ok(Response::ok(Vec::new()))
            }
            (0x00, 0) => {
                if self.session.pin_verified {
                    Ok(Response::ok(Vec::new()))
                } else if self.state.pin.is_blocked() {
                    Err(Refusal::Blocked)
                } else {
                    Err(Refusal::WrongReference(self.state.pin.tries_left))
                }
            }
            (0x00, PIN_BLOCK_LEN) => {
                self.session.pin_verified = false;
                self.check_reference(KeyRef::Pin, req.data)?;
                self.session.pin_verified = true;
                self.session.pin_fresh = true;
                Ok(Response::ok(Vec::new()))
            }
            (0x00 | 0xFF, _) => Err(Refusal::BadData),
            _ => Err(Refusal::BadP1P2),
        }
    }

    fn change_reference_data(&mut self, req: &Req<'_>) -> Res {
        if req.p1 != 0 {
            return Err(Refusal::NoReference);
        }
        let key_ref = KeyRef::from(req.p2);
        self.pin_state(key_ref)?;
        if req.data.len() != 2 * PIN_BLOCK_LEN {
            return Err(Refusal::BadData);
        }
        let (old, new) = req.data.split_at(PIN_BLOCK_LEN);
        // The old value is checked (and counted) before the new one's
        // format: a reset tool blocking the PIN with junk must see 63Cx.
        self.check_reference(key_ref, old)?;
        if !is_valid_new_pin(new) {
            return Err(Refusal::BadNewReference);
        }
        self.persist_or_undo(
            |s| s.replace_reference(key_ref, new),
            |s, previous| *s.reference_mut(key_ref) = previous,
        )?;
        if key_ref == KeyRef::Pin {
            self.session.pin_verified = true;
        }
        Ok(Response::ok(Vec::new()))
    }

    fn reset_retry_counter(&mut self, req: &Req<'_>) -> Res {
        if req.p1 != 0 {
            return Err(Refusal::BadP1P2);
        }
        if KeyRef::from(req.p2) != KeyRef::Pin {
            return Err(Refusal::NoReference);
        }
        if req.data.len() != 2 * PIN_BLOCK_LEN {
            return Err(Refusal::BadData);
        }
        let (puk, new) = req.data.split_at(PIN_BLOCK_LEN);
        self.check_reference(KeyRef::Puk, puk)?;
        if !is_valid_new_pin(new) {
            return Err(Refusal::BadNewReference);
        }
        self.persist_or_undo(
            |s| s.replace_reference(KeyRef::Pin, new),
            |s, previous| s.pin = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }

    // ---------------------------------------------------------------
    // GENERAL AUTHENTICATE

    fn general_authenticate(&mut self, req: &Req<'_>) -> Res {
        let outer = tlv::parse_one(req.data).map_err(|_| Refusal::BadData)?;
        if outer.tag != 0x7C {
            return Err(Refusal::BadData);
        }
        let inner = tlv::parse_all(outer.value).map_err(|_| Refusal::BadData)?;
        let get = |tag: u32| inner.iter().find(|t| t.tag == tag).map(|t| t.value);
        let (witness, challenge, response, exponentiation) =
            (get(0x80), get(0x81), get(0x82), get(0x85));
        if KeyRef::from(req.p2) == KeyRef::ManagementKey {
            return self.authenticate_management(req.p1, witness, challenge, response);
        }
        // F9 is answered as any key reference GENERAL AUTHENTICATE does not
        // take (6A86, incorrect P1-P2). Yubico documents F9 only for ATTEST,
        // IMPORT and its certificate object, and its SDKs refuse to send a
        // signature request to it; the exact word a YubiKey 5.7 answers was
        // not measured here.
        let slot = access::general_authenticate_slot(req.p2).ok_or(Refusal::BadP1P2)?;
        let Some(ks) = self.state.keys.get(&slot) else {
            return Err(Refusal::EmptySlot);
        };
        // A YubiKey answers 6A80 when P1 is not the slot key's algorithm;
        // ykman's `check_key` counts on it (yubikit piv.py).
        if AlgorithmId::from(req.p1) != ks.key.algorithm() {
            return Err(Refusal::AlgorithmMismatch);
        }
        let input = match (challenge, response, exponentiation) {
            (Some(c), Some([]), None) if !c.is_empty() => Operation::Sign(c),
            (None, Some([]), Some(p)) if !p.is_empty() => Operation::Ecdh(p),
            _ => return Err(Refusal::BadData),
        };
        let allowed = match access::key_use_rule(slot, ks.pin_policy) {
            KeyUseRule::Free => true,
            KeyUseRule::PinVerified => self.session.pin_verified,
            KeyUseRule::PinJustVerified => self.session.pin_verified && req.pin_just_verified,
        };
        if !allowed {
            return Err(Refusal::SecurityStatus);
        }
        self.touch(ks.touch_policy)?;
        let result = match input {
            Operation::Sign(c) => ks.key.sign_or_decrypt(c),
            Operation::Ecdh(p) => ks.key.ecdh(p),
        }
        .map_err(|_| Refusal::BadData)?;
        // 7C { 82 { result } }, built in wiped buffers: the result may be a
        // decrypted block or a shared secret.
        let mut inner = Zeroizing::new(Vec::with_capacity(result.len() + 4));
        tlv::write(&mut inner, 0x82, &result);
        let mut outer = Zeroizing::new(Vec::with_capacity(inner.len() + 4));
        tlv::write(&mut outer, 0x7C, &inner);
        Ok(Response::secret(outer))
    }

    fn authenticate_management(
        &mut self,
        p1: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Res {
        let key = &self.state.mgmt;
        let block = key.block_size();
        // OpenSC's C_GenerateRandom asks for a challenge with P1 = 00.
        if p1 == 0 && challenge == Some(&[]) && witness.is_none() && response.is_none() {
            let mut random = vec![0u8; block];
            OsRng.fill_bytes(&mut random);
            return Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &random))));
        }
        // 6A80 as for the asymmetric keys: a YubiKey 5.7 answers a 3DES
        // witness request against its AES-192 key so (found by
        // yubikey-manager's device tests).
        if AlgorithmId::from(p1) != key.algorithm() {
            return Err(Refusal::AlgorithmMismatch);
        }
        let pending = self.session.challenge.take();
        self.session.mgmt_authenticated = false;
        match (witness, challenge, response) {
            // Mutual, step 1: send an encrypted witness.
            (Some([]), None, None) => {
                let mut plain = Zeroizing::new(vec![0u8; block]);
                OsRng.fill_bytes(&mut plain);
                let sent = key.encrypt_block(&plain).map_err(|_| Refusal::Internal)?;
                self.session.challenge = Some(Challenge::Witness(plain));
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x80, &sent))))
            }
            // Mutual, step 2: the host proves it decrypted the witness and
            // sends its own challenge.
            (Some(decrypted), Some(host_challenge), None) => {
                let Some(Challenge::Witness(expected)) = pending else {
                    return Err(Refusal::OutOfOrder);
                };
                if decrypted.len() != block || host_challenge.len() != block {
                    return Err(Refusal::BadData);
                }
                if !bool::from(expected.ct_eq(decrypted)) {
                    return Err(Refusal::SecurityStatus);
                }
                self.touch(self.state.mgmt_touch)?;
                let answer = key
                    .encrypt_block(host_challenge)
                    .map_err(|_| Refusal::BadData)?;
                self.session.mgmt_authenticated = true;
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &answer))))
            }
            // External, step 1: send a plain challenge.
            (None, Some([]), None) => {
                let mut plain = Zeroizing::new(vec![0u8; block]);
                OsRng.fill_bytes(&mut plain);
                let sent = plain.to_vec();
                self.session.challenge = Some(Challenge::External(plain));
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &sent))))
            }
            // External, step 2: the host sends E(K, challenge).
            (None, None, Some(answer)) if !answer.is_empty() => {
                let Some(Challenge::External(plain)) = pending else {
                    return Err(Refusal::OutOfOrder);
                };
                let expected =
                    Zeroizing::new(key.encrypt_block(&plain).map_err(|_| Refusal::Internal)?);
                if answer.len() != block || !bool::from(expected.ct_eq(answer)) {
                    return Err(Refusal::SecurityStatus);
                }
                self.touch(self.state.mgmt_touch)?;
                self.session.mgmt_authenticated = true;
                Ok(Response::ok(Vec::new()))
            }
            _ => Err(Refusal::BadData),
        }
    }

    // ---------------------------------------------------------------
    // Key management

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

    /// Puts a key in a slot and saves; on a failed save the slot is
    /// restored.
    fn install_key(&mut self, slot: Slot, ks: KeySlot) -> Result<(), Refusal> {
        self.persist_or_undo(
            |s| s.keys.insert(slot, ks),
            |s, previous| put_back(&mut s.keys, slot, previous),
        )
    }

    fn generate(&mut self, req: &Req<'_>) -> Res {
        if req.p1 != 0 {
            return Err(Refusal::BadP1P2);
        }
        let slot = Slot::new_piv(req.p2).ok_or(Refusal::BadSlot)?;
        self.authorize(req.ins)?;
        let template = tlv::parse_one(req.data).map_err(|_| Refusal::BadData)?;
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
        let (pin_policy, touch_policy) = Card::policies(&inner)?;
        let key = KeyMaterial::generate(alg).map_err(|_| Refusal::BadAlgorithm)?;
        let public = key.public_key_tlvs();
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Generated),
        )?;
        Ok(Response::ok(tlv::encode(0x7F49, &public)))
    }

    fn import(&mut self, req: &Req<'_>) -> Res {
        let alg = AlgorithmId::from(req.p1);
        let slot = Slot::new(req.p2).ok_or(Refusal::BadSlot)?;
        if !alg.is_asymmetric() {
            return Err(Refusal::BadAlgorithm);
        }
        self.authorize(req.ins)?;
        let tlvs = tlv::parse_all(req.data).map_err(|_| Refusal::BadData)?;
        let (pin_policy, touch_policy) = Card::policies(&tlvs)?;
        let key = KeyMaterial::import(alg, req.data).map_err(|_| Refusal::BadData)?;
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported),
        )?;
        Ok(Response::ok(Vec::new()))
    }

    /// MOVE KEY (P1 = destination, P2 = source) or, with P1 = FF, DELETE
    /// KEY. Yubico's "PIV extensions" page: a key moves from and to any
    /// slot but F9, and any key may be deleted, F9's included.
    fn move_key(&mut self, req: &Req<'_>) -> Res {
        let dest = match req.p1 {
            0xFF => None,
            d => Some(Slot::new_piv(d).ok_or(Refusal::BadSlot)?),
        };
        let src = match dest {
            None => Slot::new(req.p2),
            Some(d) => Slot::new_piv(req.p2).filter(|s| *s != d),
        }
        .ok_or(Refusal::BadSlot)?;
        self.authorize(req.ins)?;
        if !self.state.keys.contains_key(&src) {
            return Err(Refusal::NoReference);
        }
        if dest.is_some_and(|d| self.state.keys.contains_key(&d)) {
            return Err(Refusal::DestinationOccupied);
        }
        // Returns the deleted key (no destination) or the key the move
        // displaced, so a failed save can put every key back.
        self.persist_or_undo(
            |s| {
                let ks = s.keys.remove(&src).expect("checked above");
                match dest {
                    Some(d) => (None, s.keys.insert(d, ks)),
                    None => (Some(ks), None),
                }
            },
            |s, (deleted, displaced)| {
                let moved = match dest {
                    Some(d) => {
                        let moved = s.keys.remove(&d);
                        put_back(&mut s.keys, d, displaced);
                        moved
                    }
                    None => deleted,
                };
                put_back(&mut s.keys, src, moved);
            },
        )?;
        Ok(Response::ok(Vec::new()))
    }

    fn cmd_set_management_key(&mut self, req: &Req<'_>) -> Res {
        let touch = match (req.p1, req.p2) {
            (0xFF, 0xFF) => TouchPolicy::Never,
            (0xFF, 0xFE) => TouchPolicy::Always,
            // Yubico.NET.SDK set-mgmt-key.md: FD asks for a cached touch.
            (0xFF, 0xFD) => TouchPolicy::Cached,
            _ => return Err(Refusal::BadP1P2),
        };
        self.authorize(req.ins)?;
        let [alg, key_ref, len, key @ ..] = req.data else {
            return Err(Refusal::BadData);
        };
        if KeyRef::from(*key_ref) != KeyRef::ManagementKey || usize::from(*len) != key.len() {
            return Err(Refusal::BadData);
        }
        let new = ManagementKey::new(AlgorithmId::from(*alg), key).map_err(|_| Refusal::BadData)?;
        self.persist_or_undo(
            |s| {
                (
                    std::mem::replace(&mut s.mgmt, new),
                    std::mem::replace(&mut s.mgmt_touch, touch),
                )
            },
            |s, previous| (s.mgmt, s.mgmt_touch) = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }

    fn get_metadata(&mut self, req: &Req<'_>) -> Res {
        if req.p1 != 0 {
            return Err(Refusal::BadP1P2);
        }
        let mut out = Vec::new();
        match KeyRef::from(req.p2) {
            KeyRef::Pin | KeyRef::Puk => {
                let (pin, default) = if KeyRef::from(req.p2) == KeyRef::Pin {
                    (&self.state.pin, DEFAULT_PIN)
                } else {
                    (&self.state.puk, DEFAULT_PUK)
                };
                tlv::write(&mut out, 0x01, &[AlgorithmId::PinPuk.into()]);
                tlv::write(&mut out, 0x05, &[u8::from(pin.is_default(default))]);
                tlv::write(&mut out, 0x06, &[pin.max_tries, pin.tries_left]);
            }
            KeyRef::ManagementKey => {
                let key = &self.state.mgmt;
                tlv::write(&mut out, 0x01, &[key.algorithm().into()]);
                // The PIN policy byte does not apply to the management key.
                tlv::write(
                    &mut out,
                    0x02,
                    &[PinPolicy::Default.into(), self.state.mgmt_touch.into()],
                );
                tlv::write(&mut out, 0x05, &[u8::from(key.is_default())]);
            }
            _ => {
                let slot = Slot::new(req.p2).ok_or(Refusal::NoReference)?;
                let ks = self.state.keys.get(&slot).ok_or(Refusal::NoReference)?;
                let (pin, touch) = resolved_policies(slot, ks);
                tlv::write(&mut out, 0x01, &[ks.key.algorithm().into()]);
                tlv::write(&mut out, 0x02, &[pin.into(), touch.into()]);
                tlv::write(&mut out, 0x03, &[ks.origin.into()]);
                tlv::write(&mut out, 0x04, &ks.key.public_key_tlvs());
            }
        }
        Ok(Response::ok(out))
    }

    fn attest(&mut self, req: &Req<'_>) -> Res {
        if req.p2 != 0 {
            return Err(Refusal::BadP1P2);
        }
        let slot = Slot::new_piv(req.p1).ok_or(Refusal::BadSlot)?;
        let ks = self.state.keys.get(&slot).ok_or(Refusal::EmptySlot)?;
        if ks.origin != KeyOrigin::Generated {
            return Err(Refusal::NotGenerated);
        }
        let f9 = self
            .state
            .keys
            .get(&Slot::ATTESTATION)
            .ok_or(Refusal::NoReference)?;
        let f9_cert = self
            .state
            .certificate(Slot::ATTESTATION)
            .ok_or(Refusal::NoReference)?;
        let (pin, touch) = resolved_policies(slot, ks);
        let id = &self.state.identity;
        let spki = ks.key.public_key_spki_der();
        let what = x509::Attested {
            slot,
            spki_der: &spki,
            firmware: id.firmware,
            serial: id.serial,
            pin_policy: pin,
            touch_policy: touch,
        };
        let cert = x509::attestation(&f9.key, &f9_cert, &what).map_err(|e| {
            tracing::error!("attestation failed: {e}");
            Refusal::Internal
        })?;
        Ok(Response::ok(cert))
    }

    fn yubikey_reset(&mut self, req: &Req<'_>) -> Res {
        expect_p1p2(req, 0, 0)?;
        if !(self.state.pin.is_blocked() && self.state.puk.is_blocked()) {
            return Err(Refusal::NotBlocked);
        }
        let alg = self.state.mgmt.algorithm();
        let alg = if self.state.identity.firmware >= [5, 7, 0] {
            AlgorithmId::Aes192
        } else {
            alg
        };
        let alg = if alg.is_symmetric() {
            alg
        } else {
            AlgorithmId::TripleDes
        };
        self.persist_or_undo(|s| s.reset_to_factory(alg), CardState::undo_reset)?;
        self.session = Session {
            selected: Some(Applet::Piv),
            ..Session::default()
        };
        Ok(Response::ok(Vec::new()))
    }

    fn set_pin_retries(&mut self, req: &Req<'_>) -> Res {
        let (pin_tries, puk_tries) = (req.p1, req.p2);
        if pin_tries == 0 || puk_tries == 0 || pin_tries > 15 || puk_tries > 15 {
            return Err(Refusal::BadP1P2);
        }
        self.authorize(req.ins)?;
        self.persist_or_undo(
            |s| {
                (
                    std::mem::replace(&mut s.pin, PinState::new(DEFAULT_PIN, pin_tries)),
                    std::mem::replace(&mut s.puk, PinState::new(DEFAULT_PUK, puk_tries)),
                )
            },
            |s, previous| (s.pin, s.puk) = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }
}

/// Appends to a buffer that may hold secrets (a chained PIN, an imported
/// key) without leaving a copy behind: when the buffer must grow, its
/// contents move to a larger one and the old one is wiped as it drops,
/// where `Vec`'s own growth would free it unwiped.
fn extend_wiped(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    let needed = buf.len() + more.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}

/// Restores a map entry to what it was: `previous` back in, or the key
/// removed when there was nothing.
fn put_back<K: Ord, V>(map: &mut std::collections::BTreeMap<K, V>, key: K, previous: Option<V>) {
    match previous {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

enum Operation<'a> {
    Sign(&'a [u8]),
    Ecdh(&'a [u8]),
}

/// The policies a key really has: slot defaults filled in.
fn resolved_policies(slot: Slot, ks: &KeySlot) -> (PinPolicy, TouchPolicy) {
    let pin = access::resolve_pin_policy(slot, ks.pin_policy);
    let touch = match ks.touch_policy {
        TouchPolicy::Default => TouchPolicy::Never,
        t => t,
    };
    (pin, touch)
}

/// CLA rules of SP 800-73-4 part 2, 3.2: only the basic channel without
/// secure messaging, optionally with the chaining bit.
fn check_cla(cla: u8) -> Result<(), Refusal> {
    if cla & 0xE0 != 0 {
        Err(Refusal::BadCla)
    } else if cla & 0x0C != 0 {
        Err(Refusal::SecureMessaging)
    } else if cla & 0x03 != 0 {
        Err(Refusal::LogicalChannel)
    } else {
        Ok(())
    }
}

fn expect_p1p2(req: &Req<'_>, p1: u8, p2: u8) -> Result<(), Refusal> {
    if req.p1 == p1 && req.p2 == p2 {
        Ok(())
    } else {
        Err(Refusal::BadP1P2)
    }
}

/// The SELECT answer: application property template with the PIX and
/// version, the coexistent tag allocation authority, and the algorithms
/// the card supports (SP 800-73-4 part 2, table 3).
pub fn application_property_template() -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::write(&mut inner, 0x4F, &PIV_AID[PIV_RID_LEN..]);
    tlv::write(
        &mut inner,
        0x79,
        &tlv::encode(0x4F, &PIV_AID[..PIV_RID_LEN]),
    );
    let mut algs = Vec::new();
    for alg in AlgorithmId::ASYMMETRIC
        .into_iter()
        .chain(AlgorithmId::SYMMETRIC)
    {
        tlv::write(&mut algs, 0x80, &[alg.into()]);
    }
    tlv::write(&mut algs, 0x06, &[]);
    tlv::write(&mut inner, 0xAC, &algs);
    tlv::encode(0x61, &inner)
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
