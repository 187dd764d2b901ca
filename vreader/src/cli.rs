//! vreader's command line: the clap types, one `Args` struct per
//! subcommand, and the parsers and conversions of their values.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use piv_applet::{AlgorithmId, PinPolicy, Slot, TouchPolicy};

#[derive(Parser)]
#[command(
    version,
    about = "Virtual PIV cards in vsmartcard's vpcd readers (pcscd)"
)]
pub struct Cli {
    /// File holding the passphrase of encrypted card files (its contents
    /// without one final line break). Without it, vreader asks on the
    /// terminal when a card file is encrypted.
    #[arg(
        long,
        global = true,
        env = "VREADER_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// With --passphrase-file: also accept card files that are not
    /// encrypted (without it they are refused, since a plain file where an
    /// encrypted one is expected may have been swapped in).
    #[arg(long, global = true)]
    pub allow_plain: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Touch {
    /// Every touch request is confirmed at once.
    Auto,
    /// Every touch request times out.
    Deny,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MgmtAlg {
    Tdes,
    Aes128,
    Aes192,
    Aes256,
}

#[derive(Subcommand)]
pub enum Command {
    /// Plug cards into readers and serve them until SIGINT/SIGTERM.
    ///
    /// Without --card, uses the default card (created on first run with an
    /// RSA-2048 key and a self-signed certificate in slot 9A).
    Run(RunArgs),
    /// Pair `vreader run --listen` with the winscard shim: writes new
    /// link credentials for both sides (vreader.pem and shim.pem, readable
    /// by the owner only). The shim reads shim.pem (or $VIRTUAL_PIV_LINK);
    /// copy it to the machine that runs the shim if that is another one.
    Pair(PairArgs),
    /// Create a card file with YubiKey factory defaults.
    Init(InitArgs),
    /// Encrypt a card file with a passphrase (Argon2id + XChaCha20-
    /// Poly1305), change its passphrase, or store it in clear again.
    Passphrase(PassphraseArgs),
    /// Show what a card file holds (never secrets).
    Status(StatusArgs),
    /// Put a private key (and its certificate) from a PKCS#12 or PEM/DER
    /// files into a slot. Nothing is written unless key and certificate
    /// load and match.
    Import(ImportArgs),
    /// Generate a key in a slot; optionally write a PKCS#10 request for it.
    Generate(GenerateArgs),
    /// Write a self-signed certificate for a slot's key into the slot;
    /// with --upn it carries the Microsoft smart card logon profile.
    Selfsign(SelfsignArgs),
    /// Set the PIN (its retry counter is reset). The new PIN comes from
    /// --new-pin-file, else $VREADER_NEW_PIN, else the terminal (asked
    /// twice).
    SetPin(SetPinArgs),
    /// Set the PUK (its retry counter is reset). The new PUK comes from
    /// --new-puk-file, else $VREADER_NEW_PUK, else the terminal.
    SetPuk(SetPukArgs),
    /// Set the management key. The key (hex: 24 bytes for TDES/AES192, 16
    /// AES128, 32 AES256) comes from --key-file, else
    /// $VREADER_MANAGEMENT_KEY, else the terminal.
    SetManagementKey(SetManagementKeyArgs),
    /// Write a slot's certificate and/or public key as PEM.
    Export(ExportArgs),
    /// Print the reader.conf entries that give pcscd a vpcd reader for
    /// each of N cards (pcscd serves at most 16), or write them with
    /// --install. Debian's vsmartcard-vpcd gives two (slots 0 and 1).
    Readers(ReadersArgs),
    /// Give the card PIV secure messaging (SP 800-73-4 part 2, 4), or a new
    /// key for it: a secure messaging key and its CVC, signed by
    /// --signer-key (certificate --signer-cert) or by a content signer made
    /// for the card. With --contactless the card acts as on the
    /// contactless interface: PIN, key and other contact-only commands
    /// need secure messaging and, if one is set, the pairing code (eight
    /// digits from --pairing-code-file or $VREADER_PAIRING_CODE). --off
    /// takes it away.
    SecureMessaging(SecureMessagingArgs),
    /// Print the Windows smart card cache items the winscard shim serves
    /// for this card (what msclmd.dll reads), in hex and decoded.
    CacheItems(CacheItemsArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Card file; repeat for several cards. `FILE@N` puts the card in
    /// slot N, `FILE@HOST:PORT` at that address; other cards take the
    /// next free slots.
    #[arg(long = "card", value_name = "FILE[@N|@HOST:PORT]")]
    pub card: Vec<String>,
    /// Serve every card file (`*.json`) in this directory, in the order
    /// of their names, one per slot from --slot on. Slots past 1 need
    /// more vpcd readers in pcscd: see `vreader readers`.
    #[arg(long, value_name = "DIR", conflicts_with = "card")]
    pub cards: Option<PathBuf>,
    /// Slot of the first card: vpcd port 35963 + N (or the --connect /
    /// --listen port + N).
    #[arg(long, default_value_t = 0)]
    pub slot: u16,
    /// Dial vpcd at this address instead of 127.0.0.1:35963 (later
    /// cards use the following ports).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "listen")]
    pub connect: Option<String>,
    /// Wait for readers on this address instead of dialling (later
    /// cards use the following ports). Loopback only, unless
    /// --allow-remote.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Allow --listen on an address other than loopback: anyone who can
    /// reach it can use the card (PIN tries, signatures).
    #[arg(long)]
    pub allow_remote: bool,
    /// Link credentials for --listen (default: vreader.pem in the
    /// directory `vreader pair` writes to). Only the shim paired with
    /// them can reach the cards: TLS 1.3, each side pinned to the other.
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub link_credentials: Option<PathBuf>,
    /// Serve --listen cards as plain vpcd, with no authentication and
    /// no encryption, to anyone who connects (loopback only). For vpcd
    /// tools that cannot speak the TLS link; the shim cannot use it.
    #[arg(long, requires = "listen", conflicts_with_all = ["link_credentials", "allow_remote"])]
    pub insecure_plain_listen: bool,
    /// Drop a listen-mode reader that stays silent this many seconds
    /// (0 = never), so one silent peer cannot hold the card for
    /// everyone. The winscard shim sends a GET ATR every 30 s while it
    /// holds a connection, well inside the default.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// What happens when a key asks for a touch.
    #[arg(long, value_enum, default_value = "auto")]
    pub touch: Touch,
}

#[derive(Args)]
pub struct PairArgs {
    /// Directory for both files (default: $XDG_DATA_HOME/virtual-piv/link
    /// or ~/.local/share/virtual-piv/link).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Replace an existing pairing (the shim's current shim.pem stops
    /// working).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct InitArgs {
    pub file: PathBuf,
    /// Serial number (random when omitted).
    #[arg(long)]
    pub serial: Option<u32>,
    /// Management key algorithm of the default key.
    #[arg(long, value_enum, default_value = "aes192")]
    pub mgmt_alg: MgmtAlg,
    /// Also generate an RSA-2048 key and self-signed certificate in 9A.
    #[arg(long)]
    pub demo_key: bool,
    /// Encrypt the card file with a passphrase (from --passphrase-file,
    /// or asked twice on the terminal).
    #[arg(long)]
    pub encrypt: bool,
}

#[derive(Args)]
pub struct PassphraseArgs {
    pub file: PathBuf,
    /// File holding the new passphrase (asked twice on the terminal
    /// when omitted). The current one, if any, comes from the global
    /// --passphrase-file or the terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "remove")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Decrypt: write the card file in clear again.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    pub file: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    #[arg(long, value_parser = parse_slot)]
    pub slot: Slot,
    /// PKCS#12 (.pfx/.p12) file, as Windows / AD CS or openssl export it.
    #[arg(long, conflicts_with = "key")]
    pub pkcs12: Option<PathBuf>,
    /// File holding the PKCS#12 password (first line).
    #[arg(long, requires = "pkcs12", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// PKCS#12 password (visible to other local users in the process
    /// list: prefer --password-file or $VREADER_PKCS12_PASSWORD).
    #[arg(
        long,
        requires = "pkcs12",
        env = "VREADER_PKCS12_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Private key: PEM, DER or base64; PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Certificate (PEM, DER or base64) for --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "default")]
    pub pin_policy: PinPolicyArg,
    #[arg(long, value_enum, default_value = "default")]
    pub touch_policy: TouchPolicyArg,
}

#[derive(Args)]
pub struct GenerateArgs {
    pub file: PathBuf,
    #[arg(long, value_parser = parse_slot)]
    pub slot: Slot,
    /// RSA1024, RSA2048, RSA3072, RSA4096, ECCP256, ECCP384, ED25519, X25519.
    #[arg(long, value_parser = parse_algorithm)]
    pub algorithm: AlgorithmId,
    /// Write a certificate request (PEM) here, signed by the new key.
    #[arg(long, requires = "subject")]
    pub csr: Option<PathBuf>,
    /// Subject of the request, e.g. "CN=Alice,O=Example".
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long, value_enum, default_value = "default")]
    pub pin_policy: PinPolicyArg,
    #[arg(long, value_enum, default_value = "default")]
    pub touch_policy: TouchPolicyArg,
}

#[derive(Args)]
pub struct SelfsignArgs {
    pub file: PathBuf,
    #[arg(long, value_parser = parse_slot)]
    pub slot: Slot,
    #[arg(long)]
    pub subject: String,
    /// User principal name (e.g. alice@example.test) for Windows logon:
    /// adds the smart card logon and client authentication EKUs.
    #[arg(long)]
    pub upn: Option<String>,
    /// Days of validity, counted from five minutes ago so a verifier
    /// whose clock is a little behind (a domain controller) accepts it.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Args)]
pub struct SetPinArgs {
    pub file: PathBuf,
    /// File holding the new PIN (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "new_pin")]
    pub new_pin_file: Option<PathBuf>,
    /// The new PIN itself: visible to other local users in the process
    /// list and kept in shell history (a warning says so).
    #[arg(long)]
    pub new_pin: Option<String>,
}

#[derive(Args)]
pub struct SetPukArgs {
    pub file: PathBuf,
    /// File holding the new PUK (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "new_puk")]
    pub new_puk_file: Option<PathBuf>,
    /// The new PUK itself (visible in the process list; a warning
    /// says so).
    #[arg(long)]
    pub new_puk: Option<String>,
}

#[derive(Args)]
pub struct SetManagementKeyArgs {
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub algorithm: MgmtAlg,
    /// File holding the key in hex (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    pub key_file: Option<PathBuf>,
    /// The key in hex itself (visible in the process list; a warning
    /// says so).
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// ECDH P-256, AES-128 (a P-256 signer).
    Cs2,
    /// ECDH P-384, AES-256 (a P-384 signer).
    Cs7,
}

impl Suite {
    pub fn suite(self) -> piv_applet::sm::CipherSuite {
        match self {
            Suite::Cs2 => piv_applet::sm::CipherSuite::Cs2,
            Suite::Cs7 => piv_applet::sm::CipherSuite::Cs7,
        }
    }
}

#[derive(Args)]
pub struct SecureMessagingArgs {
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "cs2", conflicts_with = "off")]
    pub suite: Suite,
    /// The content signer's private key (PEM or DER), on the suite's curve.
    #[arg(
        long,
        value_name = "FILE",
        requires = "signer_cert",
        conflicts_with = "off"
    )]
    pub signer_key: Option<PathBuf>,
    /// The content signer's certificate, stored in the card's Secure
    /// Messaging Certificate Signer object for hosts to check the CVC.
    #[arg(
        long,
        value_name = "FILE",
        requires = "signer_key",
        conflicts_with = "off"
    )]
    pub signer_cert: Option<PathBuf>,
    /// Instead of --signer-key/--signer-cert: a CA's private key (PEM or
    /// DER) that issues the certificate of a content signer made for the
    /// card, so hosts can chain the CVC to that CA.
    #[arg(long, value_name = "FILE", requires = "ca_cert", conflicts_with_all = ["signer_key", "off"])]
    pub ca_key: Option<PathBuf>,
    /// The CA's certificate (its subject becomes the signer's issuer).
    #[arg(long, value_name = "FILE", requires = "ca_key", conflicts_with_all = ["signer_cert", "off"])]
    pub ca_cert: Option<PathBuf>,
    /// Act as on the contactless interface (the virtual contact interface
    /// guards contact-only commands).
    #[arg(long, conflicts_with = "off")]
    pub contactless: bool,
    /// File holding the pairing code (its first line).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pairing_code", "off"])]
    pub pairing_code_file: Option<PathBuf>,
    /// The pairing code itself (visible in the process list; a warning
    /// says so).
    #[arg(long, conflicts_with = "off")]
    pub pairing_code: Option<String>,
    /// Take secure messaging away.
    #[arg(long)]
    pub off: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    pub file: PathBuf,
    #[arg(long, value_parser = parse_slot)]
    pub slot: Slot,
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct CacheItemsArgs {
    pub file: PathBuf,
    /// Leave ECC certificates out of the container map, as the shim
    /// does with VIRTUAL_PIV_CACHE_ECC=0.
    #[arg(long)]
    pub no_ecc: bool,
    /// HIWORD(dwEventState) the shim reports for the reader: 1 for a
    /// card present from the start (the headers carry counters + it).
    #[arg(long, default_value_t = 1)]
    pub activity: u16,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PinPolicyArg {
    Default,
    Never,
    Once,
    Always,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TouchPolicyArg {
    Default,
    Never,
    Always,
    Cached,
}

impl PinPolicyArg {
    pub fn policy(self) -> PinPolicy {
        match self {
            PinPolicyArg::Default => PinPolicy::Default,
            PinPolicyArg::Never => PinPolicy::Never,
            PinPolicyArg::Once => PinPolicy::Once,
            PinPolicyArg::Always => PinPolicy::Always,
        }
    }
}

impl TouchPolicyArg {
    pub fn policy(self) -> TouchPolicy {
        match self {
            TouchPolicyArg::Default => TouchPolicy::Default,
            TouchPolicyArg::Never => TouchPolicy::Never,
            TouchPolicyArg::Always => TouchPolicy::Always,
            TouchPolicyArg::Cached => TouchPolicy::Cached,
        }
    }
}

pub fn parse_slot(s: &str) -> Result<Slot, String> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16)
        .ok()
        .and_then(Slot::new)
        .ok_or_else(|| format!("{s} is not a key slot (9a, 9c, 9d, 9e, 82-95, f9)"))
}

pub fn parse_algorithm(s: &str) -> Result<AlgorithmId, String> {
    AlgorithmId::from_name(s)
        .filter(|a| a.is_asymmetric())
        .ok_or_else(|| format!("unknown key algorithm {s}"))
}

impl MgmtAlg {
    pub fn algorithm(self) -> AlgorithmId {
        match self {
            MgmtAlg::Tdes => AlgorithmId::TripleDes,
            MgmtAlg::Aes128 => AlgorithmId::Aes128,
            MgmtAlg::Aes192 => AlgorithmId::Aes192,
            MgmtAlg::Aes256 => AlgorithmId::Aes256,
        }
    }
}

#[derive(Args)]
pub struct ReadersArgs {
    /// Number of card slots, counted from slot 0.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "cards",
        conflicts_with = "cards"
    )]
    pub count: Option<u32>,
    /// As many slots as this directory holds card files (`run --cards`).
    #[arg(long, value_name = "DIR")]
    pub cards: Option<PathBuf>,
    /// Write the driver copies and the entries (root, for the default
    /// paths); then restart pcscd.
    #[arg(long)]
    pub install: bool,
    /// A whole reader.conf, with the entry for slots 0 and 1 too, for a
    /// pcscd started with `-c FILE` instead of /etc/reader.conf.d.
    #[arg(long)]
    pub standalone: bool,
    /// Where --install writes the entries.
    #[arg(long, value_name = "FILE", default_value = crate::readers::DEFAULT_CONF)]
    pub conf: PathBuf,
    /// Where --install puts the copies of the vpcd driver.
    #[arg(long, value_name = "DIR", default_value = crate::readers::DEFAULT_DRIVER_DIR)]
    pub driver_dir: PathBuf,
    /// The vpcd driver to copy (and, with --standalone, to use for slots
    /// 0 and 1).
    #[arg(long, value_name = "FILE", default_value = crate::readers::STOCK_DRIVER)]
    pub driver: PathBuf,
    /// vpcd port of slot 0.
    #[arg(long, default_value_t = vpcd::DEFAULT_PORT)]
    pub port: u16,
}
