//! `vreader`: host virtual PIV cards for pcscd (vsmartcard vpcd protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use piv_applet::{
    AlgorithmId, Card, CardOptions, KdfParams, Passphrase, PinPolicy, PlainFile, Slot, StoreError,
    TouchMode, TouchPolicy,
};
use tokio::sync::watch;
use tracing::{error, info, warn};
use vreader::host::{self, Endpoint, Limits};
use vreader::{credentials, link_files, paths, provision, secrets, slots};

#[derive(Parser)]
#[command(
    version,
    about = "Virtual PIV cards in vsmartcard's vpcd readers (pcscd)"
)]
struct Cli {
    /// File holding the passphrase of encrypted card files (its contents
    /// without one final line break). Without it, vreader asks on the
    /// terminal when a card file is encrypted.
    #[arg(
        long,
        global = true,
        env = "VREADER_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    passphrase_file: Option<PathBuf>,
    /// With --passphrase-file: also accept card files that are not
    /// encrypted (without it they are refused, since a plain file where an
    /// encrypted one is expected may have been swapped in).
    #[arg(long, global = true)]
    allow_plain: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Touch {
    /// Every touch request is confirmed at once.
    Auto,
    /// Every touch request times out.
    Deny,
}

#[derive(Clone, Copy, ValueEnum)]
enum MgmtAlg {
    Tdes,
    Aes128,
    Aes192,
    Aes256,
}

#[derive(Subcommand)]
enum Command {
    /// Plug cards into readers and serve them until SIGINT/SIGTERM.
    ///
    /// Without --card, uses the default card (created on first run with an
    /// RSA-2048 key and a self-signed certificate in slot 9A).
    Run {
        /// Card file; repeat for several cards. `FILE@N` puts the card in
        /// slot N, `FILE@HOST:PORT` at that address; other cards take the
        /// next free slots.
        #[arg(long = "card", value_name = "FILE[@N|@HOST:PORT]")]
        cards: Vec<String>,
        /// Slot of the first card: vpcd port 35963 + N (or the --connect /
        /// --listen port + N).
        #[arg(long, default_value_t = 0)]
        slot: u16,
        /// Dial vpcd at this address instead of 127.0.0.1:35963 (later
        /// cards use the following ports).
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "listen")]
        connect: Option<String>,
        /// Wait for readers on this address instead of dialling (later
        /// cards use the following ports). Loopback only, unless
        /// --allow-remote.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Allow --listen on an address other than loopback: anyone who can
        /// reach it can use the card (PIN tries, signatures).
        #[arg(long)]
        allow_remote: bool,
        /// Link credentials for --listen (default: vreader.pem in the
        /// directory `vreader pair` writes to). Only the shim paired with
        /// them can reach the cards: TLS 1.3, each side pinned to the other.
        #[arg(long, value_name = "FILE", requires = "listen")]
        link_credentials: Option<PathBuf>,
        /// Serve --listen cards as plain vpcd, with no authentication and
        /// no encryption, to anyone who connects (loopback only). For vpcd
        /// tools that cannot speak the TLS link; the shim cannot use it.
        #[arg(long, requires = "listen", conflicts_with_all = ["link_credentials", "allow_remote"])]
        insecure_plain_listen: bool,
        /// Drop a listen-mode reader that stays silent this many seconds
        /// (0 = never), so one silent peer cannot hold the card for
        /// everyone. The winscard shim sends a GET ATR every 30 s while it
        /// holds a connection, well inside the default.
        #[arg(long, default_value_t = 120)]
        idle_timeout: u64,
        /// What happens when a key asks for a touch.
        #[arg(long, value_enum, default_value = "auto")]
        touch: Touch,
    },
    /// Pair `vreader run --listen` with the winscard shim: writes new
    /// link credentials for both sides (vreader.pem and shim.pem, readable
    /// by the owner only). The shim reads shim.pem (or $VIRTUAL_PIV_LINK);
    /// copy it to the machine that runs the shim if that is another one.
    Pair {
        /// Directory for both files (default: $XDG_DATA_HOME/virtual-piv/link
        /// or ~/.local/share/virtual-piv/link).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace an existing pairing (the shim's current shim.pem stops
        /// working).
        #[arg(long)]
        force: bool,
    },
    /// Create a card file with YubiKey factory defaults.
    Init {
        file: PathBuf,
        /// Serial number (random when omitted).
        #[arg(long)]
        serial: Option<u32>,
        /// Management key algorithm of the default key.
        #[arg(long, value_enum, default_value = "aes192")]
        mgmt_alg: MgmtAlg,
        /// Also generate an RSA-2048 key and self-signed certificate in 9A.
        #[arg(long)]
        demo_key: bool,
        /// Encrypt the card file with a passphrase (from --passphrase-file,
        /// or asked twice on the terminal).
        #[arg(long)]
        encrypt: bool,
    },
    /// Encrypt a card file with a passphrase (Argon2id + XChaCha20-
    /// Poly1305), change its passphrase, or store it in clear again.
    Passphrase {
        file: PathBuf,
        /// File holding the new passphrase (asked twice on the terminal
        /// when omitted). The current one, if any, comes from the global
        /// --passphrase-file or the terminal.
        #[arg(long, value_name = "FILE", conflicts_with = "remove")]
        new_passphrase_file: Option<PathBuf>,
        /// Decrypt: write the card file in clear again.
        #[arg(long)]
        remove: bool,
    },
    /// Show what a card file holds (never secrets).
    Status { file: PathBuf },
    /// Put a private key (and its certificate) from a PKCS#12 or PEM/DER
    /// files into a slot. Nothing is written unless key and certificate
    /// load and match.
    Import {
        file: PathBuf,
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        /// PKCS#12 (.pfx/.p12) file, as Windows / AD CS or openssl export it.
        #[arg(long, conflicts_with = "key")]
        pkcs12: Option<PathBuf>,
        /// File holding the PKCS#12 password (first line).
        #[arg(long, requires = "pkcs12", conflicts_with = "password")]
        password_file: Option<PathBuf>,
        /// PKCS#12 password (visible to other local users in the process
        /// list: prefer --password-file or $VREADER_PKCS12_PASSWORD).
        #[arg(
            long,
            requires = "pkcs12",
            env = "VREADER_PKCS12_PASSWORD",
            hide_env_values = true
        )]
        password: Option<String>,
        /// Private key: PEM, DER or base64; PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Certificate (PEM, DER or base64) for --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "default")]
        pin_policy: PinPolicyArg,
        #[arg(long, value_enum, default_value = "default")]
        touch_policy: TouchPolicyArg,
    },
    /// Generate a key in a slot; optionally write a PKCS#10 request for it.
    Generate {
        file: PathBuf,
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        /// RSA1024, RSA2048, RSA3072, RSA4096, ECCP256, ECCP384, ED25519, X25519.
        #[arg(long, value_parser = parse_algorithm)]
        algorithm: AlgorithmId,
        /// Write a certificate request (PEM) here, signed by the new key.
        #[arg(long, requires = "subject")]
        csr: Option<PathBuf>,
        /// Subject of the request, e.g. "CN=Alice,O=Example".
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, value_enum, default_value = "default")]
        pin_policy: PinPolicyArg,
        #[arg(long, value_enum, default_value = "default")]
        touch_policy: TouchPolicyArg,
    },
    /// Write a self-signed certificate for a slot's key into the slot;
    /// with --upn it carries the Microsoft smart card logon profile.
    Selfsign {
        file: PathBuf,
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        #[arg(long)]
        subject: String,
        /// User principal name (e.g. alice@example.test) for Windows logon:
        /// adds the smart card logon and client authentication EKUs.
        #[arg(long)]
        upn: Option<String>,
        /// Days of validity, counted from five minutes ago so a verifier
        /// whose clock is a little behind (a domain controller) accepts it.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Set the PIN (its retry counter is reset). The new PIN comes from
    /// --new-pin-file, else $VREADER_NEW_PIN, else the terminal (asked
    /// twice).
    SetPin {
        file: PathBuf,
        /// File holding the new PIN (its first line).
        #[arg(long, value_name = "FILE", conflicts_with = "new_pin")]
        new_pin_file: Option<PathBuf>,
        /// The new PIN itself: visible to other local users in the process
        /// list and kept in shell history (a warning says so).
        #[arg(long)]
        new_pin: Option<String>,
    },
    /// Set the PUK (its retry counter is reset). The new PUK comes from
    /// --new-puk-file, else $VREADER_NEW_PUK, else the terminal.
    SetPuk {
        file: PathBuf,
        /// File holding the new PUK (its first line).
        #[arg(long, value_name = "FILE", conflicts_with = "new_puk")]
        new_puk_file: Option<PathBuf>,
        /// The new PUK itself (visible in the process list; a warning
        /// says so).
        #[arg(long)]
        new_puk: Option<String>,
    },
    /// Set the management key. The key (hex: 24 bytes for TDES/AES192, 16
    /// AES128, 32 AES256) comes from --key-file, else
    /// $VREADER_MANAGEMENT_KEY, else the terminal.
    SetManagementKey {
        file: PathBuf,
        #[arg(long, value_enum)]
        algorithm: MgmtAlg,
        /// File holding the key in hex (its first line).
        #[arg(long, value_name = "FILE", conflicts_with = "key")]
        key_file: Option<PathBuf>,
        /// The key in hex itself (visible in the process list; a warning
        /// says so).
        #[arg(long)]
        key: Option<String>,
    },
    /// Write a slot's certificate and/or public key as PEM.
    Export {
        file: PathBuf,
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print the Windows smart card cache items the winscard shim serves
    /// for this card (what msclmd.dll reads), in hex and decoded.
    CacheItems {
        file: PathBuf,
        /// Leave ECC certificates out of the container map, as the shim
        /// does with VIRTUAL_PIV_CACHE_ECC=0.
        #[arg(long)]
        no_ecc: bool,
        /// HIWORD(dwEventState) the shim reports for the reader: 1 for a
        /// card present from the start (the headers carry counters + it).
        #[arg(long, default_value_t = 1)]
        activity: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PinPolicyArg {
    Default,
    Never,
    Once,
    Always,
}

#[derive(Clone, Copy, ValueEnum)]
enum TouchPolicyArg {
    Default,
    Never,
    Always,
    Cached,
}

impl PinPolicyArg {
    fn policy(self) -> PinPolicy {
        match self {
            PinPolicyArg::Default => PinPolicy::Default,
            PinPolicyArg::Never => PinPolicy::Never,
            PinPolicyArg::Once => PinPolicy::Once,
            PinPolicyArg::Always => PinPolicy::Always,
        }
    }
}

impl TouchPolicyArg {
    fn policy(self) -> TouchPolicy {
        match self {
            TouchPolicyArg::Default => TouchPolicy::Default,
            TouchPolicyArg::Never => TouchPolicy::Never,
            TouchPolicyArg::Always => TouchPolicy::Always,
            TouchPolicyArg::Cached => TouchPolicy::Cached,
        }
    }
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16)
        .ok()
        .and_then(Slot::new)
        .ok_or_else(|| format!("{s} is not a key slot (9a, 9c, 9d, 9e, 82-95, f9)"))
}

fn parse_algorithm(s: &str) -> Result<AlgorithmId, String> {
    AlgorithmId::from_name(s)
        .filter(|a| a.is_asymmetric())
        .ok_or_else(|| format!("unknown key algorithm {s}"))
}

impl MgmtAlg {
    fn algorithm(self) -> AlgorithmId {
        match self {
            MgmtAlg::Tdes => AlgorithmId::TripleDes,
            MgmtAlg::Aes128 => AlgorithmId::Aes128,
            MgmtAlg::Aes192 => AlgorithmId::Aes192,
            MgmtAlg::Aes256 => AlgorithmId::Aes256,
        }
    }
}

/// Runs slow work (RSA-4096 generation) while showing that it progresses.
fn with_progress<T: Send>(what: &str, work: impl FnOnce() -> T + Send) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            let start = std::time::Instant::now();
            let mut shown = false;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if start.elapsed() > Duration::from_millis(500) {
                    eprint!("\r{what}... {:.1} s", start.elapsed().as_secs_f32());
                    shown = true;
                }
            }
            if shown {
                eprintln!("\r{what}... done in {:.1} s", start.elapsed().as_secs_f32());
            }
        });
        let out = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = ticker.join();
        out
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes would garble log files and journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors that already quote their cause (the card store's do)
            // would otherwise print it twice.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            eprintln!("vreader: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Where the passphrase of encrypted card files comes from: the
/// --passphrase-file, else the terminal (asked once, then reused for the
/// other cards of the same command).
struct Passphrases {
    file: Option<PathBuf>,
    known: Option<Passphrase>,
    /// Plain card files are refused when a passphrase file is configured,
    /// unless this is set (--allow-plain).
    allow_plain: bool,
}

impl Passphrases {
    fn new(file: Option<PathBuf>, allow_plain: bool) -> anyhow::Result<Passphrases> {
        let known = file.as_deref().map(Passphrase::from_file).transpose()?;
        Ok(Passphrases {
            file,
            known,
            allow_plain,
        })
    }

    /// Opens a card file, plain or encrypted. A configured passphrase file
    /// means the cards are expected encrypted: a plain one is refused
    /// unless --allow-plain. A passphrase typed for an earlier card says
    /// nothing about this one, so it does not make plain files suspect.
    fn open(&mut self, path: impl AsRef<std::path::Path>) -> anyhow::Result<Card> {
        let plain = if self.file.is_some() && !self.allow_plain {
            PlainFile::Refuse
        } else {
            PlainFile::Allow
        };
        self.open_with_policy(path.as_ref(), plain)
    }

    fn open_with_policy(
        &mut self,
        path: &std::path::Path,
        plain: PlainFile,
    ) -> anyhow::Result<Card> {
        let card = match Card::open_with_policy(path, self.known.as_ref(), plain) {
            Err(StoreError::Passphrase { .. }) if self.known.is_none() && stdin_is_terminal() => {
                let p = prompt(&format!("passphrase for {}: ", path.display()))?;
                let card = Card::open_with_policy(path, Some(&p), plain)?;
                self.known = Some(p);
                card
            }
            Err(e @ StoreError::Passphrase { .. }) if self.known.is_none() => {
                bail!("{e} (give --passphrase-file FILE or set $VREADER_PASSPHRASE_FILE)")
            }
            Err(e @ StoreError::NotSealed { .. }) => {
                bail!("{e}; give --allow-plain to use it as it is")
            }
            other => other?,
        };
        if self.file.is_some() && !card.is_sealed() {
            warn!(
                "{}: the card file is not encrypted; the passphrase is not used",
                path.display()
            );
        }
        Ok(card)
    }

    /// A passphrase for encrypting: from `file`, else asked twice.
    fn new_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Passphrase> {
        if let Some(f) = file {
            return Ok(Passphrase::from_file(f)?);
        }
        if !stdin_is_terminal() {
            bail!("no passphrase: give a passphrase file, or run on a terminal to type one");
        }
        let first = zeroize::Zeroizing::new(rpassword::prompt_password("new passphrase: ")?);
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("new passphrase again: ")?);
        if first.is_empty() {
            bail!("the passphrase is empty");
        }
        if *first != *again {
            bail!("the two passphrases differ");
        }
        Ok(Passphrase::new(first.as_bytes().to_vec()))
    }
}

fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

fn prompt(text: &str) -> anyhow::Result<Passphrase> {
    let typed = zeroize::Zeroizing::new(rpassword::prompt_password(text)?);
    Ok(Passphrase::new(typed.as_bytes().to_vec()))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut pass = Passphrases::new(cli.passphrase_file.clone(), cli.allow_plain)?;
    match cli.command {
        Command::Init {
            file,
            serial,
            mgmt_alg,
            demo_key,
            encrypt,
        } => {
            let mgmt_key_alg = mgmt_alg.algorithm();
            let opts = CardOptions {
                serial,
                mgmt_key_alg,
                ..CardOptions::default()
            };
            let passphrase = if encrypt {
                Some(match pass.known.take() {
                    Some(p) => p,
                    None => Passphrases::new_passphrase(None)?,
                })
            } else {
                None
            };
            let card = provision::create_card(&file, &opts, demo_key, passphrase.as_ref())?;
            print!("{}", provision::describe(&card));
            Ok(())
        }
        Command::Passphrase {
            file,
            new_passphrase_file,
            remove,
        } => {
            // Encrypting a plain card is what this command is for.
            let mut card = pass.open_with_policy(&file, PlainFile::Allow)?;
            if remove {
                if !card.is_sealed() {
                    bail!("{}: the card file is not encrypted", file.display());
                }
                card.set_passphrase(None, KdfParams::default())?;
                println!("{}: stored in clear (mode 0600)", file.display());
            } else {
                let new = Passphrases::new_passphrase(new_passphrase_file.as_deref())?;
                let was = card.is_sealed();
                card.set_passphrase(Some(&new), KdfParams::default())?;
                println!(
                    "{}: {}",
                    file.display(),
                    if was {
                        "passphrase changed"
                    } else {
                        "encrypted with the passphrase"
                    }
                );
            }
            Ok(())
        }
        Command::Status { file } => {
            let card = pass.open(&file)?;
            print!("{}", provision::describe(&card));
            Ok(())
        }
        Command::Import {
            file,
            slot,
            pkcs12,
            password_file,
            password,
            key,
            cert,
            pin_policy,
            touch_policy,
        } => {
            // Load and check everything before the card file is touched.
            let cred = match (pkcs12, key) {
                (Some(p12), _) => {
                    let password = match (password_file, password) {
                        (Some(f), _) => std::fs::read_to_string(&f)
                            .with_context(|| {
                                format!("{}: cannot read the password file", f.display())
                            })?
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string(),
                        (None, Some(p)) => p,
                        (None, None) => String::new(),
                    };
                    credentials::from_pkcs12(&p12, &password)?
                }
                (None, Some(k)) => {
                    let key = credentials::read_private_key(&k)?;
                    let certificate = match cert {
                        Some(c) => {
                            let der = credentials::read_certificate(&c)?;
                            credentials::check_match(
                                &key,
                                &credentials::Origin::File(k),
                                &der,
                                &credentials::Origin::File(c),
                            )?;
                            Some(der)
                        }
                        None => None,
                    };
                    credentials::Credential { key, certificate }
                }
                (None, None) => bail!("give --pkcs12 FILE or --key FILE [--cert FILE]"),
            };
            let alg = cred.key.algorithm();
            let subject = cred.certificate.as_deref().map(credentials::subject);
            let mut card = pass.open(&file)?;
            card.import_key_and_certificate(
                slot,
                cred.key,
                cred.certificate.as_deref(),
                pin_policy.policy(),
                touch_policy.policy(),
            )?;
            match subject {
                Some(s) => println!(
                    "imported a {} key and the certificate {s} into slot {slot}",
                    alg.name().unwrap_or("?")
                ),
                None => println!(
                    "imported a {} key into slot {slot} (no certificate)",
                    alg.name().unwrap_or("?")
                ),
            }
            Ok(())
        }
        Command::Generate {
            file,
            slot,
            algorithm,
            csr,
            subject,
            pin_policy,
            touch_policy,
        } => {
            let mut card = pass.open(&file)?;
            let what = format!(
                "generating an {} key in slot {slot}",
                algorithm.name().unwrap_or("?")
            );
            let spki = with_progress(&what, || {
                card.generate_key(slot, algorithm, pin_policy.policy(), touch_policy.policy())
            })?;
            println!("{}", credentials::pem("PUBLIC KEY", &spki).trim_end());
            if let (Some(out), Some(subject)) = (csr, subject) {
                let req = card.certificate_request(slot, &subject)?;
                std::fs::write(&out, credentials::pem("CERTIFICATE REQUEST", &req))
                    .with_context(|| format!("{}: cannot write", out.display()))?;
                println!("certificate request written to {}", out.display());
            }
            Ok(())
        }
        Command::Selfsign {
            file,
            slot,
            subject,
            upn,
            days,
        } => {
            let mut card = pass.open(&file)?;
            let extensions = match &upn {
                Some(upn) => piv_applet::x509::smart_card_logon_extensions(upn)?,
                None => vec![],
            };
            let mut serial = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
            let req = piv_applet::x509::CertRequest {
                subject: &subject,
                serial: &serial,
                not_before: piv_applet::x509::valid_from_now(),
                days,
                extensions,
            };
            let der = card.self_sign(slot, &req)?;
            println!("{}", credentials::pem("CERTIFICATE", &der).trim_end());
            Ok(())
        }
        Command::SetPin {
            file,
            new_pin_file,
            new_pin,
        } => {
            let pin = secrets::SecretArg {
                what: "the new PIN",
                flag: "--new-pin",
                file_flag: "--new-pin-file",
                env: "VREADER_NEW_PIN",
            }
            .get(new_pin, new_pin_file)?;
            pass.open(&file)?.set_pin(pin.as_bytes())?;
            println!("PIN changed");
            Ok(())
        }
        Command::SetPuk {
            file,
            new_puk_file,
            new_puk,
        } => {
            let puk = secrets::SecretArg {
                what: "the new PUK",
                flag: "--new-puk",
                file_flag: "--new-puk-file",
                env: "VREADER_NEW_PUK",
            }
            .get(new_puk, new_puk_file)?;
            pass.open(&file)?.set_puk(puk.as_bytes())?;
            println!("PUK changed");
            Ok(())
        }
        Command::SetManagementKey {
            file,
            algorithm,
            key_file,
            key,
        } => {
            let key = secrets::SecretArg {
                what: "the management key",
                flag: "--key",
                file_flag: "--key-file",
                env: "VREADER_MANAGEMENT_KEY",
            }
            .get(key, key_file)?;
            let bytes = zeroize::Zeroizing::new(
                hex::decode(key.trim()).context("the management key must be hex")?,
            );
            let key = piv_applet::mgmt::ManagementKey::new(algorithm.algorithm(), &bytes)?;
            pass.open(&file)?.set_management_key(key)?;
            println!("management key changed");
            Ok(())
        }
        Command::Export {
            file,
            slot,
            cert,
            public_key,
        } => {
            let card = pass.open(&file)?;
            if cert.is_none() && public_key.is_none() {
                bail!("give --cert FILE and/or --public-key FILE");
            }
            if let Some(out) = cert {
                let der = card
                    .certificate(slot)
                    .ok_or_else(|| anyhow::anyhow!("slot {slot} holds no certificate"))?;
                std::fs::write(&out, credentials::pem("CERTIFICATE", &der))
                    .with_context(|| format!("{}: cannot write", out.display()))?;
            }
            if let Some(out) = public_key {
                let spki = card
                    .public_key(slot)
                    .ok_or_else(|| anyhow::anyhow!("slot {slot} holds no key"))?;
                std::fs::write(&out, credentials::pem("PUBLIC KEY", &spki))
                    .with_context(|| format!("{}: cannot write", out.display()))?;
            }
            Ok(())
        }
        Command::CacheItems {
            file,
            no_ecc,
            activity,
        } => {
            let mut card = pass.open(&file)?;
            card.power_on();
            let opts = winscard::cache::CacheOptions {
                ecc_containers: !no_ecc,
            };
            let text = winscard::cache::dump(&mut |apdu| Ok(card.process(apdu)), activity, &opts)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{text}");
            Ok(())
        }
        Command::Pair { dir, force } => {
            let dir = dir.unwrap_or_else(winscard::link::default_dir);
            let (shim, vreader) = link_files::pair(&dir, force)?;
            println!(
                "vreader's side: {} (`vreader run --listen` uses it by default)",
                vreader.display()
            );
            println!(
                "the shim's side: {} (the shim reads it by default; elsewhere set {}=PATH)",
                shim.display(),
                winscard::config::vars::LINK
            );
            Ok(())
        }
        Command::Run {
            cards,
            slot,
            connect,
            listen,
            allow_remote,
            link_credentials,
            insecure_plain_listen,
            idle_timeout,
            touch,
        } => {
            let base = match (listen, &connect) {
                (Some(addr), _) => slots::Base::Listen(addr),
                (None, Some(c)) => slots::Base::connect(c).map_err(anyhow::Error::msg)?,
                (None, None) => slots::Base::local_vpcd(),
            };
            let specs = if cards.is_empty() {
                let path = paths::default_card_path();
                if !path.exists() {
                    // Sealed with the configured passphrase, if any: a plain
                    // file would then be refused (see Passphrases::open).
                    info!("creating the default card {}", path.display());
                    drop(provision::create_card(
                        &path,
                        &CardOptions::default(),
                        true,
                        pass.known.as_ref(),
                    )?);
                }
                vec![path.display().to_string()]
            } else {
                cards
            };
            let placements =
                slots::place(&specs, &base, slot, allow_remote).map_err(anyhow::Error::msg)?;
            let mut opened = Vec::new();
            let mut seen = Vec::new();
            for slots::Placement { file, endpoint } in placements {
                // The file lock would report the second use as "another
                // process"; say what is really wrong.
                let canonical = std::fs::canonicalize(&file).ok();
                if canonical.is_some() && seen.contains(&canonical) {
                    bail!("card file {file} is given twice: one file is one card");
                }
                seen.push(canonical);
                let mut card = pass.open(&file)?;
                card.set_touch_mode(match touch {
                    Touch::Auto => TouchMode::AutoConfirm,
                    Touch::Deny => TouchMode::Deny,
                });
                opened.push((file, Arc::new(Mutex::new(card)), endpoint));
            }
            let tls = if !opened
                .iter()
                .any(|(_, _, e)| matches!(e, Endpoint::Listen(_)))
            {
                None
            } else if insecure_plain_listen {
                warn!(
                    "INSECURE: --insecure-plain-listen: the cards are served as plain vpcd, without \
                     authentication or encryption, to any local process that connects"
                );
                None
            } else {
                let path = link_credentials.unwrap_or_else(|| {
                    winscard::link::default_dir().join(winscard::link::VREADER_FILE)
                });
                let config = winscard::link::Credentials::load(&path)
                    .and_then(|c| c.server_config())
                    .map_err(anyhow::Error::msg)?;
                info!(
                    "--listen link: TLS with the shim paired by {}",
                    path.display()
                );
                Some(config)
            };
            let limits = Limits {
                idle_timeout: (idle_timeout > 0).then(|| Duration::from_secs(idle_timeout)),
                ..Limits::default()
            };
            // Connections are served on blocking threads (see host.rs); the
            // runtime only dials, accepts and waits for signals.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(opened, tls, limits))
        }
    }
}

async fn serve(
    cards: Vec<(String, host::SharedCard, Endpoint)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (file, card, endpoint) in cards {
        let rx = stop_rx.clone();
        match endpoint {
            Endpoint::Connect(addr) => {
                info!("card {file} -> vpcd reader {addr}");
                tasks.spawn(host::run_connect(card, addr, file, rx));
            }
            Endpoint::Listen(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for card {file}"))?;
                tasks.spawn(host::run_listen(
                    card,
                    listener,
                    tls.clone(),
                    file,
                    limits,
                    rx,
                ));
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A card task only ends by panicking (a bug): the other cards go on.
    let signalled = tokio::select! {
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: removing cards"); true }
        _ = term.recv() => { info!("SIGTERM: removing cards"); true }
        _ = async {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    error!("a card stopped: {e}");
                }
            }
        } => false,
    };
    let _ = stop_tx.send(true);
    // Every change was saved before its answer; closing the sockets is
    // what tells the readers the cards are gone.
    let deadline = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => break,
        }
    }
    if !signalled {
        bail!("every card stopped (see the errors above)");
    }
    Ok(())
}
