//! The card file: one versioned JSON document per card, written atomically.
//!
//! Format (version 1), documented in `docs/card-file.md`:
//!
//! ```json
//! { "format": "virtual-piv-card", "version": 1,
//!   "identity": { "serial": 12345678, "firmware": "5.7.1", "atr": "<hex>",
//!                 "guid": "<hex 16>", "fascn": "<hex 25>", "card_id": "<hex 21>",
//!                 "expiry": "20991231" },
//!   "pin": { "value": "<hex 8, FF padded>", "max_tries": 3, "tries_left": 3 },
//!   "puk": { ... },
//!   "management_key": { "algorithm": "AES192", "key": "<hex>", "touch_policy": "never" },
//!   "keys": { "9A": { "algorithm": "RSA2048", "pin_policy": "default",
//!                     "touch_policy": "default", "origin": "generated",
//!                     "private_key": "<hex PKCS#8 DER>" } },
//!   "objects": { "5FC102": "<hex>", ... } }
//! ```
//!
//! Saving writes a temporary file in the same directory (mode 0600),
//! fsyncs it, renames it over the card file and fsyncs the directory: a
//! crash at any instant leaves either the old or the new file, never a torn
//! one. A lock file next to the card keeps two processes from driving the
//! same card (each would overwrite the other's retry counters).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::enums::{AlgorithmId, KeyOrigin, ObjectId, PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::sealed::{self, Passphrase, SealingKey};
use crate::state::{CardState, Identity, KeySlot, PinState, PIN_BLOCK_LEN};

/// The `format` field every card file carries.
pub const FORMAT_NAME: &str = "virtual-piv-card";
/// The newest card file version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// Why a card file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: field `{field}`: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{path}: already exists (refusing to overwrite a card)")]
    Exists { path: PathBuf },
    #[error("{path}: in use by another process (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    /// A sealed (passphrase-encrypted) card file that cannot be opened
    /// with what was given.
    #[error("{path}: {problem}")]
    Passphrase { path: PathBuf, problem: String },
    /// A plain card file where a passphrase is configured: someone who
    /// can write the file may have swapped a sealed card for a plain one of
    /// their making (then every secret set later would be stored in clear).
    #[error(
        "{path}: the card file is not encrypted, but a passphrase is configured \
         (was the encrypted card file replaced by a plain one?)"
    )]
    NotSealed { path: PathBuf },
}

/// What to do with a plain card file when a passphrase is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlainFile {
    /// Refuse it ([`StoreError::NotSealed`]).
    #[default]
    Refuse,
    /// Open it in clear (the caller's user asked for that explicitly, or
    /// is about to encrypt it).
    Allow,
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, field: impl Into<String>, problem: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Where a card keeps its state.
pub trait Store: Send {
    /// Saves the whole state durably before returning.
    fn save(&mut self, state: &CardState) -> Result<(), StoreError>;
    /// The file behind the store, if any.
    fn path(&self) -> Option<&Path>;
    /// Whether saves are encrypted with a passphrase.
    fn is_sealed(&self) -> bool {
        false
    }
    /// Saves the state under new protection (a passphrase's key, or none)
    /// and keeps using it only once that save succeeded.
    fn reseal(&mut self, state: &CardState, sealing: Option<SealingKey>) -> Result<(), StoreError> {
        let _ = (state, sealing);
        Err(StoreError::Invalid {
            path: self.path().unwrap_or(Path::new("<memory>")).to_path_buf(),
            field: "(store)".into(),
            problem: "this card has no file to encrypt".into(),
        })
    }
}

/// A store that keeps the last saved bytes in memory (tests, ephemeral
/// cards). It can be told to fail, to test the card's rollback.
#[derive(Default)]
pub struct MemoryStore {
    pub saved: Option<Zeroizing<Vec<u8>>>,
    pub fail: bool,
}

impl Store for MemoryStore {
    fn save(&mut self, state: &CardState) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::io(
                Path::new("<memory>"),
                std::io::Error::other("injected failure"),
            ));
        }
        self.saved = Some(to_bytes(state));
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        None
    }
}

/// How long opening a card waits for its lock before reporting it in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A card file with its lock held.
pub struct FileStore {
    path: PathBuf,
    /// The passphrase's key when the file is sealed.
    sealing: Option<SealingKey>,
    _lock: File,
}

impl FileStore {
    fn lock_path(path: &Path) -> PathBuf {
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        path.with_file_name(name)
    }

    /// Takes the card's lock, waiting up to [`LOCK_WAIT`] for it.
    ///
    /// The lock is an `flock` on an open file description, and a
    /// multi-threaded process that spawns a program shares that description
    /// with the child from fork until exec. So a card closed an instant ago
    /// can still look held; only a lock held for longer than that means
    /// another process has the card.
    fn take_lock(path: &Path) -> Result<File, StoreError> {
        let lock_path = FileStore::lock_path(path);
        let lock = open_private(&lock_path, false).map_err(|e| StoreError::io(&lock_path, e))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(lock),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        lock: lock_path,
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
            }
        }
    }

    /// Locks a new card file path; fails if a card is already there.
    pub fn create(path: &Path) -> Result<FileStore, StoreError> {
        FileStore::create_with(path, None)
    }

    /// As [`Self::create`]; with a key, every save is sealed with it.
    pub fn create_with(path: &Path, sealing: Option<SealingKey>) -> Result<FileStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        let lock = FileStore::take_lock(path)?;
        if path.exists() {
            return Err(StoreError::Exists {
                path: path.to_path_buf(),
            });
        }
        Ok(FileStore {
            path: path.to_path_buf(),
            sealing,
            _lock: lock,
        })
    }

    /// Locks and loads an existing plain card file.
    pub fn open(path: &Path) -> Result<(FileStore, CardState), StoreError> {
        FileStore::open_with(path, None)
    }

    /// Locks and loads an existing card file, plain or sealed (a sealed one
    /// needs its passphrase; a plain one is refused when a passphrase is
    /// given). Saves keep the file's protection.
    pub fn open_with(
        path: &Path,
        passphrase: Option<&Passphrase>,
    ) -> Result<(FileStore, CardState), StoreError> {
        FileStore::open_with_policy(path, passphrase, PlainFile::Refuse)
    }

    /// As [`Self::open_with`], with a choice for a plain file.
    pub fn open_with_policy(
        path: &Path,
        passphrase: Option<&Passphrase>,
        plain: PlainFile,
    ) -> Result<(FileStore, CardState), StoreError> {
        let lock = FileStore::take_lock(path)?;
        remove_stale_temporaries(path);
        let (state, sealing) = load_with_policy(path, passphrase, plain)?;
        Ok((
            FileStore {
                path: path.to_path_buf(),
                sealing,
                _lock: lock,
            },
            state,
        ))
    }
}

impl FileStore {
    /// Writes the state with the given protection (plain, or sealed with
    /// that key).
    fn write(&self, state: &CardState, sealing: Option<&SealingKey>) -> Result<(), StoreError> {
        let plain = to_bytes(state);
        match sealing {
            None => write_atomically(&self.path, &plain),
            Some(key) => write_atomically(&self.path, &key.seal(&plain)),
        }
    }
}

impl Store for FileStore {
    fn save(&mut self, state: &CardState) -> Result<(), StoreError> {
        self.write(state, self.sealing.as_ref())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn is_sealed(&self) -> bool {
        self.sealing.is_some()
    }

    fn reseal(&mut self, state: &CardState, sealing: Option<SealingKey>) -> Result<(), StoreError> {
        self.write(state, sealing.as_ref())?;
        self.sealing = sealing;
        Ok(())
    }
}

/// Creates the directories a new card goes into, readable by their owner
/// only on Unix (they hold card files and lock files; existing
/// directories are left as they are).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Opens a file only its owner may read. A symbolic link in its place is
/// refused (ELOOP) rather than followed: otherwise whoever can write the
/// card's directory could make us create or lock a file elsewhere.
fn open_private(path: &Path, truncate_new: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if truncate_new {
        o.create_new(true);
    } else {
        o.create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// Removes `<card>.tmp-<pid>` files left by a process killed between
/// writing and renaming. Only called with the card's lock held, so no
/// other process can be writing one.
fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // The rename must be made durable by syncing the directory (Unix).
    #[cfg(unix)]
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = open_private(&tmp, true)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = fs::remove_file(&tmp);
        StoreError::io(path, e)
    })
}

// -------------------------------------------------------------------
// File format

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: String,
    version: u32,
    identity: IdentityV1,
    pin: PinV1,
    puk: PinV1,
    management_key: MgmtV1,
    #[serde(default)]
    keys: BTreeMap<String, KeyV1>,
    #[serde(default)]
    objects: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure_messaging: Option<SmV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmV1 {
    cipher_suite: String,
    private_key: String,
    cvc: String,
    contactless: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pairing_code: Option<String>,
}

impl Drop for SmV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_key);
        if let Some(code) = self.pairing_code.as_mut() {
            zeroize::Zeroize::zeroize(code);
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityV1 {
    serial: u32,
    firmware: String,
    atr: String,
    guid: String,
    fascn: String,
    card_id: String,
    expiry: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinV1 {
    value: String,
    max_tries: u8,
    tries_left: u8,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MgmtV1 {
    algorithm: String,
    key: String,
    touch_policy: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyV1 {
    algorithm: String,
    pin_policy: String,
    touch_policy: String,
    origin: String,
    private_key: String,
}

impl Drop for PinV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

impl Drop for MgmtV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Drop for KeyV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_key);
    }
}

fn name_of<T: Copy + PartialEq>(names: &[(T, &'static str)], v: T) -> &'static str {
    names
        .iter()
        .find(|(x, _)| *x == v)
        .map_or("default", |(_, n)| n)
}

fn origin_name(o: KeyOrigin) -> &'static str {
    match o {
        KeyOrigin::Imported => "imported",
        _ => "generated",
    }
}

/// Serialises a state (contains secrets: the buffer is zeroized on drop).
pub fn to_bytes(state: &CardState) -> Zeroizing<Vec<u8>> {
    let id = &state.identity;
    let pin = |p: &PinState| PinV1 {
        value: hex::encode(&p.value[..]),
        max_tries: p.max_tries,
        tries_left: p.tries_left,
    };
    let file = FileV1 {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        identity: IdentityV1 {
            serial: id.serial,
            firmware: format!("{}.{}.{}", id.firmware[0], id.firmware[1], id.firmware[2]),
            atr: hex::encode_upper(&id.atr),
            guid: hex::encode_upper(id.guid),
            fascn: hex::encode_upper(id.fascn),
            card_id: hex::encode_upper(id.card_id),
            expiry: String::from_utf8_lossy(&id.expiry).into_owned(),
        },
        pin: pin(&state.pin),
        puk: pin(&state.puk),
        management_key: MgmtV1 {
            algorithm: state.mgmt.algorithm().name().unwrap_or("TDES").into(),
            key: hex::encode(state.mgmt.key_bytes()),
            touch_policy: name_of(&TouchPolicy::NAMES, state.mgmt_touch).into(),
        },
        keys: state
            .keys
            .iter()
            .map(|(slot, ks)| {
                let alg = ks.key.algorithm();
                (
                    slot.to_string(),
                    KeyV1 {
                        algorithm: alg.name().unwrap_or("?").into(),
                        pin_policy: name_of(&PinPolicy::NAMES, ks.pin_policy).into(),
                        touch_policy: name_of(&TouchPolicy::NAMES, ks.touch_policy).into(),
                        origin: origin_name(ks.origin).into(),
                        private_key: hex::encode(&ks.key.to_storage()[..]),
                    },
                )
            })
            .collect(),
        objects: state
            .objects
            .iter()
            .map(|(id, v)| (id.to_string(), hex::encode_upper(v)))
            .collect(),
        secure_messaging: state.secure_messaging.as_ref().map(|sm| SmV1 {
            cipher_suite: sm.suite().name().into(),
            private_key: hex::encode(&sm.key.to_storage()[..]),
            cvc: hex::encode_upper(&sm.cvc),
            contactless: sm.contactless,
            pairing_code: sm
                .pairing_code
                .as_ref()
                .map(|c| String::from_utf8_lossy(&c[..]).into_owned()),
        }),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    serde_json::to_writer_pretty(&mut *out, &file).expect("serialising to memory cannot fail");
    out.push(b'\n');
    out
}

/// Reads and checks a plain card file (a sealed one is refused with a
/// [`StoreError::Passphrase`] saying so).
pub fn load(path: &Path) -> Result<CardState, StoreError> {
    load_sealed(path, None).map(|(state, _)| state)
}

/// Reads and checks a card file, plain or sealed; for a sealed file also
/// returns its key, with which the caller can save it again. A plain file
/// is refused when a passphrase is given.
pub fn load_sealed(
    path: &Path,
    passphrase: Option<&Passphrase>,
) -> Result<(CardState, Option<SealingKey>), StoreError> {
    load_with_policy(path, passphrase, PlainFile::Refuse)
}

/// As [`load_sealed`], with a choice for a plain file.
pub fn load_with_policy(
    path: &Path,
    passphrase: Option<&Passphrase>,
    plain: PlainFile,
) -> Result<(CardState, Option<SealingKey>), StoreError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| StoreError::io(path, e))?);
    if !sealed::is_sealed(&bytes) {
        if passphrase.is_some() && plain == PlainFile::Refuse {
            return Err(StoreError::NotSealed {
                path: path.to_path_buf(),
            });
        }
        return Ok((from_bytes(&bytes, path)?, None));
    }
    let passphrase = passphrase.ok_or_else(|| StoreError::Passphrase {
        path: path.to_path_buf(),
        problem: "the card file is encrypted with a passphrase, and none was given".into(),
    })?;
    let (key, plain) = SealingKey::open(&bytes, passphrase, path)?;
    Ok((from_bytes(&plain, path)?, Some(key)))
}

/// Parses card file bytes; `path` is only used to name the file in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<CardState, StoreError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let file: FileV1 = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        StoreError::invalid(
            path,
            if field == "." {
                "(document)".into()
            } else {
                field
            },
            e.into_inner().to_string(),
        )
    })?;
    let bad = |field: &str, problem: &str| StoreError::invalid(path, field, problem);
    if file.format != FORMAT_NAME {
        return Err(bad("format", &format!("expected \"{FORMAT_NAME}\"")));
    }
    if file.version != FORMAT_VERSION {
        return Err(bad(
            "version",
            &format!(
                "version {} is not supported (this build reads {FORMAT_VERSION})",
                file.version
            ),
        ));
    }
    let fixed = |field: &str, text: &str, n: usize| -> Result<Vec<u8>, StoreError> {
        let v = hex::decode(text).map_err(|e| bad(field, &format!("not hex: {e}")))?;
        if n != 0 && v.len() != n {
            return Err(bad(field, &format!("must be {n} bytes, found {}", v.len())));
        }
        Ok(v)
    };
    let id = &file.identity;
    let firmware: Vec<u8> = id
        .firmware
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<u8>| v.len() == 3)
        .ok_or_else(|| bad("identity.firmware", "must look like 5.7.1"))?;
    let mut atr = fixed("identity.atr", &id.atr, 0)?;
    if atr.len() < 2 || atr.len() > 33 {
        return Err(bad("identity.atr", "an ATR has 2 to 33 bytes"));
    }
    // The USB ATR was the default before the card had a Management
    // application, never a choice of the user (no tool sets the ATR): such
    // a card gets today's default, which ykman needs (see state.rs).
    if atr == crate::state::YUBIKEY5_USB_ATR {
        atr = crate::state::YUBIKEY5_NFC_ATR.to_vec();
    }
    if id.expiry.len() != 8 || !id.expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("identity.expiry", "must be YYYYMMDD"));
    }
    let identity = Identity {
        serial: id.serial,
        firmware: [firmware[0], firmware[1], firmware[2]],
        atr,
        guid: fixed("identity.guid", &id.guid, 16)?
            .try_into()
            .expect("length checked"),
        fascn: fixed("identity.fascn", &id.fascn, 25)?
            .try_into()
            .expect("length checked"),
        card_id: fixed("identity.card_id", &id.card_id, 21)?
            .try_into()
            .expect("length checked"),
        expiry: id.expiry.as_bytes().try_into().expect("length checked"),
    };
    let pin = |field: &str, p: &PinV1| -> Result<PinState, StoreError> {
        let value = Zeroizing::new(fixed(&format!("{field}.value"), &p.value, PIN_BLOCK_LEN)?);
        if p.max_tries == 0 || p.max_tries > 15 {
            return Err(bad(&format!("{field}.max_tries"), "must be 1 to 15"));
        }
        if p.tries_left > p.max_tries {
            return Err(bad(&format!("{field}.tries_left"), "larger than max_tries"));
        }
        let mut block = Zeroizing::new([0u8; PIN_BLOCK_LEN]);
        block.copy_from_slice(&value);
        Ok(PinState {
            value: block,
            max_tries: p.max_tries,
            tries_left: p.tries_left,
        })
    };
    let policy = |field: &str, text: &str| -> Result<PinPolicy, StoreError> {
        PinPolicy::NAMES
            .iter()
            .find(|(_, n)| *n == text)
            .map(|(p, _)| *p)
            .ok_or_else(|| bad(field, "unknown PIN policy"))
    };
    let touch = |field: &str, text: &str| -> Result<TouchPolicy, StoreError> {
        TouchPolicy::NAMES
            .iter()
            .find(|(_, n)| *n == text)
            .map(|(p, _)| *p)
            .ok_or_else(|| bad(field, "unknown touch policy"))
    };
    let m = &file.management_key;
    let mgmt_alg = AlgorithmId::from_name(&m.algorithm)
        .filter(|a| a.is_symmetric())
        .ok_or_else(|| {
            bad(
                "management_key.algorithm",
                "must be TDES, AES128, AES192 or AES256",
            )
        })?;
    let mgmt_key = Zeroizing::new(fixed("management_key.key", &m.key, 0)?);
    let mgmt = ManagementKey::new(mgmt_alg, &mgmt_key)
        .map_err(|e| bad("management_key.key", &e.to_string()))?;
    let mut keys = BTreeMap::new();
    for (name, k) in &file.keys {
        let field = format!("keys.{name}");
        let slot = u8::from_str_radix(name, 16)
            .ok()
            .and_then(Slot::new)
            .ok_or_else(|| bad(&field, "not a key slot (9A, 9C, 9D, 9E, 82-95, F9)"))?;
        let alg = AlgorithmId::from_name(&k.algorithm)
            .filter(|a| a.is_asymmetric())
            .ok_or_else(|| bad(&format!("{field}.algorithm"), "unknown key algorithm"))?;
        let der = Zeroizing::new(fixed(&format!("{field}.private_key"), &k.private_key, 0)?);
        let key = KeyMaterial::from_storage(alg, &der)
            .map_err(|e| bad(&format!("{field}.private_key"), &e.to_string()))?;
        let origin = match k.origin.as_str() {
            "generated" => KeyOrigin::Generated,
            "imported" => KeyOrigin::Imported,
            _ => {
                return Err(bad(
                    &format!("{field}.origin"),
                    "must be generated or imported",
                ))
            }
        };
        keys.insert(
            slot,
            // Files written before policies were fixed at key creation may
            // say "default": it is fixed here, for the slot the key is in.
            KeySlot::new(
                slot,
                key,
                policy(&format!("{field}.pin_policy"), &k.pin_policy)?,
                touch(&format!("{field}.touch_policy"), &k.touch_policy)?,
                origin,
            ),
        );
    }
    let mut objects = BTreeMap::new();
    for (name, value) in &file.objects {
        let field = format!("objects.{name}");
        let id = u32::from_str_radix(name, 16)
            .ok()
            .map(ObjectId)
            .filter(|id| id.is_known())
            .ok_or_else(|| bad(&field, "not a PIV data object tag"))?;
        objects.insert(id, fixed(&field, value, 0)?);
    }
    let secure_messaging = match &file.secure_messaging {
        None => None,
        Some(sm) => {
            let suite = crate::sm::CipherSuite::from_name(&sm.cipher_suite)
                .ok_or_else(|| bad("secure_messaging.cipher_suite", "must be CS2 or CS7"))?;
            let der = Zeroizing::new(fixed("secure_messaging.private_key", &sm.private_key, 0)?);
            let key = crate::sm::SmKey::from_storage(suite, &der).map_err(|e| {
                bad(
                    "secure_messaging.private_key",
                    &format!("{e} (a PKCS#8 key on the cipher suite's curve)"),
                )
            })?;
            let cvc = fixed("secure_messaging.cvc", &sm.cvc, 0)?;
            let decoded = crate::sm::Cvc::decode(&cvc)
                .map_err(|e| bad("secure_messaging.cvc", &e.to_string()))?;
            if decoded.public_point != key.public_point() {
                return Err(bad(
                    "secure_messaging.cvc",
                    "certifies another key than secure_messaging.private_key",
                ));
            }
            let pairing_code = match &sm.pairing_code {
                None => None,
                Some(code) => Some(Zeroizing::new(
                    crate::sm::parse_pairing_code(code)
                        .map_err(|e| bad("secure_messaging.pairing_code", e))?,
                )),
            };
            Some(crate::state::SecureMessaging {
                key,
                cvc,
                contactless: sm.contactless,
                pairing_code,
            })
        }
    };
    Ok(CardState {
        identity,
        pin: pin("pin", &file.pin)?,
        puk: pin("puk", &file.puk)?,
        mgmt,
        mgmt_touch: touch("management_key.touch_policy", &m.touch_policy)?,
        keys,
        objects,
        secure_messaging,
    })
}
