//! Configuration from environment variables: MsRdpEx's names (what its
//! .rdp-to-environment mapping sets, so existing .rdp files keep working)
//! and our own for card files, remote cards and logs.

use std::path::PathBuf;

use piv_applet::credentials::{self, CredentialError, Origin};
use piv_applet::keys::KeyMaterial;
use piv_applet::state::PIN_LENGTHS;
use piv_applet::{Card, CardOptions, Passphrase, PlainFile, Slot};
use sha2::Digest;

use crate::backend::{Backend, Embedded};
use crate::cache::{cert_slots, parse_container_name, CacheOptions};

/// MsRdpEx / sspi-rs variable names.
pub mod vars {
    pub const CERT_PATH: &str = "WINSCARD_CERTIFICATE_FILE_PATH";
    pub const CERT_DATA: &str = "WINSCARD_CERTIFICATE_FILE_DATA";
    pub const KEY_PATH: &str = "WINSCARD_PRIVATE_KEY_FILE_PATH";
    pub const KEY_DATA: &str = "WINSCARD_PRIVATE_KEY_FILE_DATA";
    pub const PIN: &str = "WINSCARD_SMARTCARD_PIN";
    pub const CONTAINER_NAME: &str = "WINSCARD_SMARTCARD_CONTAINER_NAME";
    pub const READER_NAME: &str = "WINSCARD_SMARTCARD_READER_NAME";
    /// Card files (piv-applet JSON), separated like PATH entries.
    pub const CARD_FILE: &str = "VIRTUAL_PIV_CARD_FILE";
    /// File holding the passphrase of encrypted card files.
    pub const CARD_PASSPHRASE_FILE: &str = "VIRTUAL_PIV_CARD_PASSPHRASE_FILE";
    /// The passphrase itself (for launchers that can only set variables;
    /// the file is better: a process's environment is readable by the
    /// same user's other processes).
    pub const CARD_PASSPHRASE: &str = "VIRTUAL_PIV_CARD_PASSPHRASE";
    /// `1` lets a passphrase configuration open card files that are not
    /// encrypted (refused otherwise: one may have been swapped in).
    pub const ALLOW_PLAIN_CARD: &str = "VIRTUAL_PIV_ALLOW_PLAIN_CARD";
    /// `host:port` of `vreader --listen`, comma-separated for several.
    pub const REMOTE: &str = "VIRTUAL_PIV_REMOTE";
    /// The shim's link credentials file for the remote cards (default
    /// `shim.pem` in `link::default_dir()`), written by `vreader pair`.
    pub const LINK: &str = "VIRTUAL_PIV_LINK";
    /// Log file; no logging when unset.
    pub const LOG: &str = "VIRTUAL_PIV_LOG";
    /// tracing filter for the log file (default `info`: no APDUs;
    /// `debug` adds them, redacted).
    pub const LOG_LEVEL: &str = "VIRTUAL_PIV_LOG_LEVEL";
    /// `0` leaves ECC certificates out of the cached container map (on by
    /// default; the layout is documented in docs/msclmd-cache.md).
    pub const CACHE_ECC: &str = "VIRTUAL_PIV_CACHE_ECC";
}

/// Base of generated reader names.
pub const READER_BASE_NAME: &str = "Virtual PIV Reader";

/// Why the configuration cannot be used. Never carries secret values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {detail}")]
    Invalid { var: &'static str, detail: String },
    /// A key or certificate variable, named in the message.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("{0}")]
    Card(String),
}

fn invalid(var: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        detail: detail.into(),
    }
}

/// A card built from MsRdpEx's certificate + key variables.
#[derive(Clone)]
pub struct EphemeralCard {
    pub cert_der: Vec<u8>,
    /// The variable (and file) the certificate came from, for messages.
    pub cert_origin: Origin,
    pub key: KeyMaterial,
    pub key_origin: Origin,
    pub pin: Option<zeroize::Zeroizing<Vec<u8>>>,
    pub guid: [u8; 16],
    pub slot: u8,
}

impl core::fmt::Debug for EphemeralCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EphemeralCard")
            .field("cert_bytes", &self.cert_der.len())
            .field("key", &self.key)
            .field("guid", &hex::encode(self.guid))
            .field("slot", &format_args!("{:02X}", self.slot))
            .field("pin", &self.pin.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Where the passphrase of encrypted card files comes from. Read when a
/// card is opened, so a passphrase file is not held in memory before.
#[derive(Clone)]
pub enum PassphraseSource {
    File(PathBuf),
    Value(zeroize::Zeroizing<Vec<u8>>),
}

impl core::fmt::Debug for PassphraseSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PassphraseSource::File(p) => write!(f, "File({})", p.display()),
            PassphraseSource::Value(_) => f.write_str("Value(<set>)"),
        }
    }
}

impl PassphraseSource {
    fn passphrase(&self) -> Result<Passphrase, ConfigError> {
        match self {
            PassphraseSource::File(p) => Passphrase::from_file(p)
                .map_err(|e| invalid(vars::CARD_PASSPHRASE_FILE, e.to_string())),
            PassphraseSource::Value(v) => Ok(Passphrase::new(v.to_vec())),
        }
    }
}

/// Where one reader's card comes from.
#[derive(Clone, Debug)]
pub enum CardSource {
    File {
        path: PathBuf,
        passphrase: Option<PassphraseSource>,
        /// Open the file even if it is plain while a passphrase is set.
        allow_plain: bool,
    },
    Remote {
        addr: String,
        /// The shim's link credentials file.
        credentials: PathBuf,
    },
    Ephemeral(Box<EphemeralCard>),
}

/// One reader.
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    pub name: String,
    pub source: CardSource,
}

/// Everything the shim is configured with.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub readers: Vec<ReaderConfig>,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub cache: CacheOptions,
}

/// Reader `i`'s generated name, in the platform's usual style.
pub fn reader_name(i: usize) -> String {
    if cfg!(windows) {
        format!("{READER_BASE_NAME} {i}")
    } else {
        format!("{READER_BASE_NAME} {i:02X} 00")
    }
}

/// A variable's bytes, in a buffer cleared on drop, and where they came from.
type Input = (zeroize::Zeroizing<Vec<u8>>, Origin);

/// Bytes from a `_FILE_PATH` or `_FILE_DATA` pair (data wins, like sspi-rs).
fn read_input(
    get: &dyn Fn(&str) -> Option<String>,
    path_var: &'static str,
    data_var: &'static str,
) -> Result<Option<Input>, ConfigError> {
    if let Some(d) = get(data_var).filter(|s| !s.trim().is_empty()) {
        let bytes = zeroize::Zeroizing::new(d.into_bytes());
        return Ok(Some((bytes, Origin::Variable(data_var.into()))));
    }
    if let Some(p) = get(path_var).filter(|s| !s.trim().is_empty()) {
        let path = PathBuf::from(p);
        let origin = Origin::FileFromVariable {
            var: path_var.into(),
            path: path.clone(),
        };
        let bytes = credentials::read_file(&path, &origin)?;
        return Ok(Some((bytes, origin)));
    }
    Ok(None)
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (tests pass a map).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            log_file: get(vars::LOG).filter(|s| !s.is_empty()).map(PathBuf::from),
            log_level: get(vars::LOG_LEVEL).filter(|s| !s.is_empty()),
            cache: CacheOptions {
                ecc_containers: get(vars::CACHE_ECC).is_none_or(|v| v != "0"),
            },
            ..Config::default()
        };
        let mut sources = Vec::new();
        let cert = read_input(get, vars::CERT_PATH, vars::CERT_DATA)?;
        let key = read_input(get, vars::KEY_PATH, vars::KEY_DATA)?;
        match (cert, key) {
            (Some((c, cert_origin)), Some((k, key_origin))) => {
                let cert_der = credentials::certificate(&c, &cert_origin)?;
                let key = credentials::private_key(&k, &key_origin)?;
                let pin = match get(vars::PIN) {
                    Some(p) if !PIN_LENGTHS.contains(&p.len()) => {
                        return Err(invalid(
                            vars::PIN,
                            format!(
                                "a PIV PIN has {} to {} bytes, got {}",
                                PIN_LENGTHS.start(),
                                PIN_LENGTHS.end(),
                                p.len()
                            ),
                        ))
                    }
                    Some(p) => Some(zeroize::Zeroizing::new(p.into_bytes())),
                    None => None,
                };
                let digest = sha2::Sha256::digest(&cert_der);
                let mut guid: [u8; 16] = digest[..16].try_into().expect("32-byte digest");
                let mut slot = 0x9A;
                if let Some(name) = get(vars::CONTAINER_NAME).filter(|s| !s.is_empty()) {
                    match parse_container_name(&name) {
                        Some((g13, tag)) => {
                            guid[..13].copy_from_slice(&g13);
                            slot = cert_slots().find(|(_, t)| *t == tag).map(|(s, _)| s).unwrap_or(0x9A);
                        }
                        None => tracing::warn!(
                            "{}={name:?} does not follow the PIV naming rule (GUID + certificate tag, 36 \
                             characters) that msclmd needs; the container is named from the card's CHUID instead",
                            vars::CONTAINER_NAME
                        ),
                    }
                }
                sources.push(CardSource::Ephemeral(Box::new(EphemeralCard {
                    cert_der,
                    cert_origin,
                    key,
                    key_origin,
                    pin,
                    guid,
                    slot,
                })));
            }
            (Some(_), None) => {
                return Err(invalid(
                    vars::KEY_PATH,
                    format!(
                        "a certificate is configured but no private key ({} or {})",
                        vars::KEY_PATH,
                        vars::KEY_DATA
                    ),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    vars::CERT_PATH,
                    format!(
                        "a private key is configured but no certificate ({} or {})",
                        vars::CERT_PATH,
                        vars::CERT_DATA
                    ),
                ))
            }
            (None, None) => {}
        }
        let passphrase = match (
            get(vars::CARD_PASSPHRASE_FILE).filter(|s| !s.is_empty()),
            get(vars::CARD_PASSPHRASE).filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    vars::CARD_PASSPHRASE,
                    format!("set either it or {}, not both", vars::CARD_PASSPHRASE_FILE),
                ))
            }
            (Some(f), None) => Some(PassphraseSource::File(PathBuf::from(f))),
            (None, Some(v)) => Some(PassphraseSource::Value(zeroize::Zeroizing::new(
                v.into_bytes(),
            ))),
            (None, None) => None,
        };
        let allow_plain = match get(vars::ALLOW_PLAIN_CARD).as_deref() {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(invalid(
                    vars::ALLOW_PLAIN_CARD,
                    format!("{other:?} is neither 1 nor 0"),
                ))
            }
        };
        if let Some(files) = get(vars::CARD_FILE).filter(|s| !s.is_empty()) {
            sources.extend(
                std::env::split_paths(&files)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|path| CardSource::File {
                        path,
                        passphrase: passphrase.clone(),
                        allow_plain,
                    }),
            );
        }
        if let Some(remotes) = get(vars::REMOTE).filter(|s| !s.is_empty()) {
            let credentials = get(vars::LINK)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::link::default_dir().join(crate::link::SHIM_FILE));
            for r in remotes.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                if !r.contains(':') {
                    return Err(invalid(vars::REMOTE, format!("{r:?} is not host:port")));
                }
                sources.push(CardSource::Remote {
                    addr: r.to_string(),
                    credentials: credentials.clone(),
                });
            }
        }
        let first_name = get(vars::READER_NAME).filter(|s| !s.is_empty());
        for (i, source) in sources.into_iter().enumerate() {
            let name = match (&first_name, i) {
                (Some(n), 0) => n.clone(),
                _ => reader_name(i),
            };
            cfg.readers.push(ReaderConfig { name, source });
        }
        Ok(cfg)
    }
}

/// Builds the card of an [`EphemeralCard`]: key and certificate in their
/// slot (after checking that they belong together) and the PIN.
pub fn build_ephemeral(e: &EphemeralCard) -> Result<Card, ConfigError> {
    let card_err = |what: &str, detail: String| ConfigError::Card(format!("{what}: {detail}"));
    credentials::check_match(&e.key, &e.key_origin, &e.cert_der, &e.cert_origin)?;
    let opts = CardOptions {
        guid: Some(e.guid),
        ..CardOptions::default()
    };
    let mut card =
        Card::ephemeral(&opts).map_err(|err| card_err("creating the card", err.to_string()))?;
    let slot = Slot::new(e.slot).ok_or_else(|| card_err("slot", format!("{:02X}", e.slot)))?;
    card.import_key(
        slot,
        e.key.clone(),
        piv_applet::PinPolicy::Default,
        piv_applet::TouchPolicy::Default,
    )
    .map_err(|err| card_err("importing the private key", err.to_string()))?;
    card.put_certificate(slot, &e.cert_der)
        .map_err(|err| card_err("storing the certificate", err.to_string()))?;
    if let Some(pin) = &e.pin {
        card.set_pin(pin)
            .map_err(|err| invalid(vars::PIN, format!("the card refused the PIN: {err}")))?;
    }
    Ok(card)
}

/// Opens a reader's backend.
pub fn open_backend(src: &CardSource) -> Result<Box<dyn Backend>, ConfigError> {
    match src {
        CardSource::File {
            path: p,
            passphrase,
            allow_plain,
        } => {
            let passphrase = passphrase
                .as_ref()
                .map(PassphraseSource::passphrase)
                .transpose()?;
            let plain = if *allow_plain {
                PlainFile::Allow
            } else {
                PlainFile::Refuse
            };
            let card = match Card::open_with_policy(p, passphrase.as_ref(), plain) {
                Err(e @ piv_applet::StoreError::Passphrase { .. }) if passphrase.is_none() => {
                    return Err(ConfigError::Card(format!(
                        "{e} (set {} or {})",
                        vars::CARD_PASSPHRASE_FILE,
                        vars::CARD_PASSPHRASE
                    )))
                }
                Err(e @ piv_applet::StoreError::NotSealed { .. }) => {
                    return Err(ConfigError::Card(format!(
                        "{e} (set {}=1 to use it as it is)",
                        vars::ALLOW_PLAIN_CARD
                    )))
                }
                r => r.map_err(|e| ConfigError::Card(e.to_string()))?,
            };
            Ok(Box::new(Embedded::new(
                card,
                format!("card file {}", p.display()),
            )))
        }
        CardSource::Ephemeral(e) => {
            let card = build_ephemeral(e)?;
            Ok(Box::new(Embedded::new(
                card,
                format!("card from {} + {}", vars::CERT_PATH, vars::KEY_PATH),
            )))
        }
        CardSource::Remote { addr, credentials } => Ok(Box::new(crate::remote::Remote::new(
            addr.clone(),
            credentials.clone(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup<'a>(m: &'a HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| m.get(k).cloned()
    }

    #[test]
    fn empty_environment_has_no_readers() {
        let m = HashMap::new();
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        assert!(c.readers.is_empty());
        assert!(c.log_file.is_none());
    }

    #[test]
    fn files_and_remotes_make_one_reader_each() {
        let sep = if cfg!(windows) { ";" } else { ":" };
        let mut m = HashMap::new();
        m.insert(vars::CARD_FILE, format!("/a.json{sep}/b.json"));
        m.insert(vars::REMOTE, "127.0.0.1:35963, host:1".to_string());
        m.insert(vars::READER_NAME, "My Reader".to_string());
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        assert_eq!(c.readers.len(), 4);
        assert_eq!(c.readers[0].name, "My Reader");
        assert_eq!(c.readers[1].name, reader_name(1));
        assert!(
            matches!(&c.readers[3].source, CardSource::Remote { addr, .. } if addr == "host:1")
        );
    }

    #[test]
    fn card_passphrase_comes_from_one_variable_and_is_never_printed() {
        let mut m = HashMap::new();
        m.insert(vars::CARD_FILE, "/a.json".to_string());
        m.insert(vars::CARD_PASSPHRASE, "hunter2-passphrase".to_string());
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        let CardSource::File { passphrase, .. } = &c.readers[0].source else {
            panic!("a card file")
        };
        assert!(matches!(passphrase, Some(PassphraseSource::Value(_))));
        assert!(!format!("{c:?}").contains("hunter2"));
        m.insert(vars::CARD_PASSPHRASE_FILE, "/p".to_string());
        let err = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(err.contains(vars::CARD_PASSPHRASE_FILE), "{err}");
        m.remove(vars::CARD_PASSPHRASE);
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        // A missing passphrase file is named when the card is opened.
        let err = open_backend(&c.readers[0].source)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(vars::CARD_PASSPHRASE_FILE) && err.contains("/p"),
            "{err}"
        );
    }

    /// With a passphrase configured, a plain card file
    /// (a sealed one swapped for it) is refused, naming the file, unless
    /// VIRTUAL_PIV_ALLOW_PLAIN_CARD=1.
    #[test]
    fn a_plain_card_file_is_refused_when_a_passphrase_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let card = dir.path().join("card.json");
        drop(Card::create(&card, &CardOptions::default()).unwrap());
        let mut m = HashMap::new();
        m.insert(vars::CARD_FILE, card.display().to_string());
        m.insert(vars::CARD_PASSPHRASE, "hunter2-passphrase".to_string());
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        let err = open_backend(&c.readers[0].source)
            .err()
            .expect("a plain file must be refused")
            .to_string();
        assert!(
            err.contains(&card.display().to_string())
                && err.contains("not encrypted")
                && err.contains(vars::ALLOW_PLAIN_CARD),
            "{err}"
        );
        m.insert(vars::ALLOW_PLAIN_CARD, "1".to_string());
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        assert!(open_backend(&c.readers[0].source).is_ok());
        m.insert(vars::ALLOW_PLAIN_CARD, "yes".to_string());
        let err = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(err.contains(vars::ALLOW_PLAIN_CARD), "{err}");
    }

    #[test]
    fn bad_remote_and_half_pairs_are_named() {
        let mut m = HashMap::new();
        m.insert(vars::REMOTE, "nohost".to_string());
        let e = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(e.contains(vars::REMOTE), "{e}");
        let mut m = HashMap::new();
        m.insert(vars::CERT_DATA, "AAAA".to_string());
        let e = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(e.contains("no private key"), "{e}");
    }

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

    fn b64(bytes: &[u8]) -> String {
        <base64ct::Base64 as base64ct::Encoding>::encode_string(bytes)
    }

    /// The encodings MsRdpEx users have, through the variables (the
    /// encodings themselves are piv-applet's `credentials` tests).
    #[test]
    fn keys_and_certificates_in_every_encoding() {
        let cert = std::fs::read(format!("{DATA}/rsa2048.cert.der")).unwrap();
        let pk8 = std::fs::read(format!("{DATA}/rsa2048.key.pk8.der")).unwrap();
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &cert).unwrap();
        let keys = [
            (vars::KEY_PATH, format!("{DATA}/rsa2048.key.pk8.der")),
            (vars::KEY_DATA, b64(&pk8)),
            (vars::KEY_PATH, format!("{DATA}/rsa2048.pkcs1.pem")),
        ];
        let certs = [
            (vars::CERT_PATH, format!("{DATA}/rsa2048.cert.der")),
            (vars::CERT_DATA, b64(&cert)),
            (vars::CERT_DATA, pem),
        ];
        for (kvar, k) in &keys {
            for (cvar, c) in &certs {
                let mut m = HashMap::new();
                m.insert(*kvar, k.clone());
                m.insert(*cvar, c.clone());
                let cfg = Config::from_lookup(&lookup(&m)).unwrap();
                let CardSource::Ephemeral(e) = &cfg.readers[0].source else {
                    panic!("ephemeral card expected")
                };
                assert_eq!(e.cert_der, cert, "{cvar}");
                build_ephemeral(e).unwrap_or_else(|err| panic!("{kvar} + {cvar}: {err}"));
            }
        }
        let mut m = HashMap::new();
        m.insert(vars::CERT_DATA, "not a certificate".to_string());
        m.insert(vars::KEY_DATA, b64(&pk8));
        let e = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(e.starts_with(vars::CERT_DATA), "{e}");
        m.insert(vars::CERT_DATA, b64(&cert));
        m.insert(
            vars::KEY_DATA,
            "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n".to_string(),
        );
        let e = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(e.contains(vars::KEY_DATA), "{e}");
        // A file named by a variable: both are named.
        m.remove(vars::KEY_DATA);
        m.insert(vars::KEY_PATH, "/nonexistent/key.pem".to_string());
        let e = Config::from_lookup(&lookup(&m)).unwrap_err().to_string();
        assert!(
            e.contains(vars::KEY_PATH)
                && e.contains("/nonexistent/key.pem")
                && e.contains("cannot read"),
            "{e}"
        );
    }

    /// The MsRdpEx path end to end: variables → card with key, certificate
    /// and PIN, stable CHUID GUID derived from the certificate.
    #[test]
    fn msrdpex_variables_make_a_working_card() {
        let cert = std::fs::read(format!("{DATA}/rsa2048.cert.der")).unwrap();
        let mut m = HashMap::new();
        m.insert(vars::CERT_DATA, b64(&cert));
        m.insert(vars::KEY_PATH, format!("{DATA}/rsa2048.pkcs1.pem"));
        m.insert(vars::PIN, "24681357".to_string());
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        assert_eq!(c.readers.len(), 1);
        let CardSource::Ephemeral(e) = &c.readers[0].source else {
            panic!("ephemeral card expected")
        };
        assert!(
            !format!("{e:?}").contains("24681357"),
            "Debug hides the PIN"
        );
        let mut card = build_ephemeral(e).unwrap();
        card.power_on();
        let mut tx = |a: &[u8]| -> Result<Vec<u8>, String> { Ok(card.process(a)) };
        let info = crate::cache::read_card(&mut tx).unwrap();
        assert_eq!(info.guid, e.guid);
        assert_eq!(info.certs.len(), 1);
        assert_eq!(info.certs[0].der, cert);
        piv_applet::client::Client::new(&mut tx)
            .verify_pin(b"24681357")
            .unwrap();

        // A PIV-style container name picks the GUID and the slot.
        m.insert(
            vars::CONTAINER_NAME,
            "1d8ac658-e065-92a0-85af-090b075fc10b".to_string(),
        );
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        let CardSource::Ephemeral(e) = &c.readers[0].source else {
            panic!()
        };
        assert_eq!(e.slot, 0x9D);
        assert_eq!(
            crate::cache::container_name(&e.guid, 0x5FC10B),
            "1d8ac658-e065-92a0-85af-090b075fc10b"
        );

        m.insert(vars::PIN, "12".to_string());
        assert!(Config::from_lookup(&lookup(&m))
            .unwrap_err()
            .to_string()
            .contains(vars::PIN));
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let mut m = HashMap::new();
        m.insert(vars::CERT_PATH, format!("{DATA}/rsa2048.cert.der"));
        m.insert(vars::KEY_PATH, format!("{DATA}/p256.sec1.pem"));
        let c = Config::from_lookup(&lookup(&m)).unwrap();
        let CardSource::Ephemeral(e) = &c.readers[0].source else {
            panic!()
        };
        let err = build_ephemeral(e)
            .map(|_| ())
            .expect_err("mismatch must fail")
            .to_string();
        // Names both variables and their files.
        assert!(
            err.contains("does not match the certificate")
                && err.contains(&format!("{} ({DATA}/p256.sec1.pem)", vars::KEY_PATH))
                && err.contains(&format!("{} ({DATA}/rsa2048.cert.der)", vars::CERT_PATH)),
            "{err}"
        );
    }
}
