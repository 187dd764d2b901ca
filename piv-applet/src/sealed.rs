//! Passphrase-encrypted ("sealed") card files.
//!
//! A sealed card file is a small JSON envelope around the ordinary card
//! file (`store::to_bytes`): the key comes from the passphrase through
//! Argon2id (RFC 9106) with a per-file random salt, and the card file is
//! encrypted with XChaCha20-Poly1305 under a fresh random 24-byte nonce at
//! every save. The envelope's parameters are bound to the ciphertext as
//! associated data, so a file whose KDF settings or format were edited does
//! not open, just like one whose ciphertext was.
//!
//! The Argon2id key is derived once when the file is opened or sealed and
//! kept (zeroized on drop) for the card's later saves: a save costs one
//! encryption, not a key derivation. Format: `docs/card-file.md`.

use std::path::Path;

use base64ct::{Base64, Encoding};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::store::StoreError;

/// The `format` field of a sealed card file.
pub const SEALED_FORMAT_NAME: &str = "virtual-piv-card-sealed";
/// The sealed envelope version this build reads and writes.
pub const SEALED_FORMAT_VERSION: u32 = 1;

const KDF_NAME: &str = "argon2id";
const AEAD_NAME: &str = "XChaCha20-Poly1305";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Upper bounds on the KDF settings a file may ask for, so a crafted file
/// cannot make the opener allocate or compute without limit.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

/// A passphrase (bytes as given; zeroized on drop, never printed).
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Passphrase {
        Passphrase(Zeroizing::new(bytes.into()))
    }

    /// The passphrase in a file: its contents without one trailing line
    /// break (`\n` or `\r\n`), so `echo secret > file` works as expected.
    pub fn from_file(path: &Path) -> Result<Passphrase, StoreError> {
        let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        })?);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                field: "(passphrase file)".into(),
                problem: "the passphrase is empty".into(),
            });
        }
        Ok(Passphrase(Zeroizing::new(bytes.to_vec())))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Argon2id cost settings. The default is RFC 9106's second recommended
/// option (64 MiB, 3 passes) with one lane, since the derivation runs on
/// one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// The derived key of one sealed file, with what is needed to seal it again.
pub struct SealingKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    params: KdfParams,
    salt: [u8; SALT_LEN],
}

impl core::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SealingKey({:?})", self.params)
    }
}

// Envelope on disk. `deny_unknown_fields` for the same reason as the card
// file: a typo is reported, not ignored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    version: u32,
    kdf: KdfV1,
    aead: AeadV1,
    ciphertext: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct KdfV1 {
    algorithm: String,
    /// Argon2 version number (0x13 = 19, the current one).
    version: u32,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct AeadV1 {
    algorithm: String,
    nonce: String,
}

/// What the AEAD authenticates besides the ciphertext: every envelope field
/// except the ciphertext (the nonce is authenticated by its use).
#[derive(Serialize)]
struct AssociatedData<'a> {
    format: &'a str,
    version: u32,
    kdf: &'a KdfV1,
    aead_algorithm: &'a str,
}

fn associated_data(format: &str, version: u32, kdf: &KdfV1, aead: &str) -> Vec<u8> {
    serde_json::to_vec(&AssociatedData {
        format,
        version,
        kdf,
        aead_algorithm: aead,
    })
    .expect("serialising to memory cannot fail")
}

/// Only the `format` field, to tell a sealed file from a plain one.
#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
}

/// Whether these card file bytes are a sealed envelope.
pub fn is_sealed(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Probe>(bytes)
        .ok()
        .and_then(|p| p.format)
        .is_some_and(|f| f == SEALED_FORMAT_NAME)
}

fn derive(
    passphrase: &Passphrase,
    params: KdfParams,
    salt: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, argon2::Error> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(KEY_LEN),
        )?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon.hash_password_into(passphrase.bytes(), salt, &mut key[..])?;
    Ok(key)
}

impl SealingKey {
    /// A key for a file about to be sealed: fresh random salt.
    pub fn new(passphrase: &Passphrase, params: KdfParams) -> Result<SealingKey, StoreError> {
        if passphrase.bytes().is_empty() {
            return Err(StoreError::Passphrase {
                path: Path::new("<new card file>").to_path_buf(),
                problem: "the passphrase is empty".into(),
            });
        }
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let key = derive(passphrase, params, &salt).map_err(|e| StoreError::Passphrase {
            path: Path::new("<new card file>").to_path_buf(),
            problem: format!("Argon2id settings refused: {e}"),
        })?;
        Ok(SealingKey { key, params, salt })
    }

    pub fn params(&self) -> KdfParams {
        self.params
    }

    fn kdf_fields(&self) -> KdfV1 {
        KdfV1 {
            algorithm: KDF_NAME.into(),
            version: argon2::Version::V0x13 as u32,
            memory_kib: self.params.memory_kib,
            iterations: self.params.iterations,
            parallelism: self.params.parallelism,
            salt: hex::encode(self.salt),
        }
    }

    /// The sealed file for `plaintext` (a serialised card file).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let kdf = self.kdf_fields();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(SEALED_FORMAT_NAME, SEALED_FORMAT_VERSION, &kdf, AEAD_NAME);
        let ciphertext = XChaCha20Poly1305::new((&*self.key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length a card file has");
        let envelope = Envelope {
            format: SEALED_FORMAT_NAME.into(),
            version: SEALED_FORMAT_VERSION,
            kdf,
            aead: AeadV1 {
                algorithm: AEAD_NAME.into(),
                nonce: hex::encode(nonce),
            },
            ciphertext: Base64::encode_string(&ciphertext),
        };
        let mut out = serde_json::to_vec_pretty(&envelope).expect("serialising to memory");
        out.push(b'\n');
        out
    }

    /// Opens a sealed file: the key (for later saves) and the plaintext
    /// card file. `path` names the file in errors.
    pub fn open(
        bytes: &[u8],
        passphrase: &Passphrase,
        path: &Path,
    ) -> Result<(SealingKey, Zeroizing<Vec<u8>>), StoreError> {
        let bad = |field: &str, problem: String| StoreError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            problem,
        };
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let env: Envelope = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            bad(
                if field == "." { "(document)" } else { &field },
                e.into_inner().to_string(),
            )
        })?;
        if env.format != SEALED_FORMAT_NAME {
            return Err(bad("format", format!("expected \"{SEALED_FORMAT_NAME}\"")));
        }
        if env.version != SEALED_FORMAT_VERSION {
            return Err(bad(
                "version",
                format!(
                    "sealed format version {} is not supported (this build reads {SEALED_FORMAT_VERSION})",
                    env.version
                ),
            ));
        }
        let kdf = &env.kdf;
        if kdf.algorithm != KDF_NAME {
            return Err(bad(
                "kdf.algorithm",
                format!("only \"{KDF_NAME}\" is supported"),
            ));
        }
        if kdf.version != argon2::Version::V0x13 as u32 {
            return Err(bad(
                "kdf.version",
                "only Argon2 version 19 (0x13) is supported".into(),
            ));
        }
        if kdf.memory_kib > MAX_MEMORY_KIB {
            return Err(bad(
                "kdf.memory_kib",
                format!("more than {MAX_MEMORY_KIB} KiB"),
            ));
        }
        if kdf.iterations == 0 || kdf.iterations > MAX_ITERATIONS {
            return Err(bad(
                "kdf.iterations",
                format!("must be 1 to {MAX_ITERATIONS}"),
            ));
        }
        if kdf.parallelism == 0 || kdf.parallelism > MAX_PARALLELISM {
            return Err(bad(
                "kdf.parallelism",
                format!("must be 1 to {MAX_PARALLELISM}"),
            ));
        }
        let salt: [u8; SALT_LEN] = hex::decode(&kdf.salt)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("kdf.salt", format!("must be {SALT_LEN} bytes of hex")))?;
        if env.aead.algorithm != AEAD_NAME {
            return Err(bad(
                "aead.algorithm",
                format!("only \"{AEAD_NAME}\" is supported"),
            ));
        }
        let nonce: [u8; NONCE_LEN] = hex::decode(&env.aead.nonce)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("aead.nonce", format!("must be {NONCE_LEN} bytes of hex")))?;
        let ciphertext = Base64::decode_vec(&env.ciphertext)
            .map_err(|e| bad("ciphertext", format!("not base64: {e}")))?;
        let params = KdfParams {
            memory_kib: kdf.memory_kib,
            iterations: kdf.iterations,
            parallelism: kdf.parallelism,
        };
        let key = derive(passphrase, params, &salt)
            .map_err(|e| bad("kdf", format!("Argon2id settings refused: {e}")))?;
        let aad = associated_data(&env.format, env.version, kdf, &env.aead.algorithm);
        let plaintext = XChaCha20Poly1305::new((&*key).into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Passphrase {
                path: path.to_path_buf(),
                problem: "wrong passphrase, or the file was altered (authentication failed)".into(),
            })?;
        Ok((SealingKey { key, params, salt }, Zeroizing::new(plaintext)))
    }
}
