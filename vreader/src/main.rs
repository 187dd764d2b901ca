//! `vreader`: host virtual PIV cards for pcscd (vsmartcard vpcd protocol).
//!
//! One function per subcommand; the clap types are in `vreader::cli`.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use piv_applet::{CardOptions, KdfParams, PlainFile, TouchMode};
use tracing::{info, warn};
use vreader::cli::*;
use vreader::host::{self, Endpoint, Limits};
use vreader::passphrases::Passphrases;
use vreader::{credentials, link_files, paths, provision, secrets, slots};

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

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut pass = Passphrases::new(cli.passphrase_file.clone(), cli.allow_plain)?;
    match cli.command {
        Command::Init(args) => init(args, &mut pass),
        Command::Passphrase(args) => passphrase(args, &mut pass),
        Command::Status(args) => status(args, &mut pass),
        Command::Import(args) => import(args, &mut pass),
        Command::Generate(args) => generate(args, &mut pass),
        Command::Selfsign(args) => selfsign(args, &mut pass),
        Command::SetPin(args) => set_pin(args, &mut pass),
        Command::SetPuk(args) => set_puk(args, &mut pass),
        Command::SetManagementKey(args) => set_management_key(args, &mut pass),
        Command::Export(args) => export(args, &mut pass),
        Command::SecureMessaging(args) => secure_messaging(args, &mut pass),
        Command::Readers(args) => readers(args),
        Command::CacheItems(args) => cache_items(args, &mut pass),
        Command::Pair(args) => pair(args),
        Command::Run(args) => run(args, &mut pass),
    }
}

fn init(args: InitArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let InitArgs {
        file,
        serial,
        mgmt_alg,
        demo_key,
        encrypt,
    } = args;
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

fn passphrase(args: PassphraseArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let PassphraseArgs {
        file,
        new_passphrase_file,
        remove,
    } = args;
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

fn status(args: StatusArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let StatusArgs { file } = args;
    let card = pass.open(&file)?;
    print!("{}", provision::describe(&card));
    Ok(())
}

fn import(args: ImportArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let ImportArgs {
        file,
        slot,
        pkcs12,
        password_file,
        password,
        key,
        cert,
        pin_policy,
        touch_policy,
    } = args;
    // Load and check everything before the card file is touched.
    let cred = match (pkcs12, key) {
        (Some(p12), _) => {
            let password = match (password_file, password) {
                (Some(f), _) => std::fs::read_to_string(&f)
                    .with_context(|| format!("{}: cannot read the password file", f.display()))?
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

fn generate(args: GenerateArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let GenerateArgs {
        file,
        slot,
        algorithm,
        csr,
        subject,
        pin_policy,
        touch_policy,
    } = args;
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

fn selfsign(args: SelfsignArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let SelfsignArgs {
        file,
        slot,
        subject,
        upn,
        days,
    } = args;
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

fn set_pin(args: SetPinArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let SetPinArgs {
        file,
        new_pin_file,
        new_pin,
    } = args;
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

fn set_puk(args: SetPukArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let SetPukArgs {
        file,
        new_puk_file,
        new_puk,
    } = args;
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

fn set_management_key(args: SetManagementKeyArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let SetManagementKeyArgs {
        file,
        algorithm,
        key_file,
        key,
    } = args;
    let key = secrets::SecretArg {
        what: "the management key",
        flag: "--key",
        file_flag: "--key-file",
        env: "VREADER_MANAGEMENT_KEY",
    }
    .get(key, key_file)?;
    let bytes =
        zeroize::Zeroizing::new(hex::decode(key.trim()).context("the management key must be hex")?);
    let key = piv_applet::mgmt::ManagementKey::new(algorithm.algorithm(), &bytes)?;
    pass.open(&file)?.set_management_key(key)?;
    println!("management key changed");
    Ok(())
}

fn secure_messaging(args: SecureMessagingArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let mut card = pass.open(&args.file)?;
    if args.off {
        card.disable_secure_messaging()?;
        println!("secure messaging off");
        return Ok(());
    }
    let suite = args.suite.suite();
    let (signer, signer_cert) = match (&args.signer_key, &args.signer_cert) {
        (Some(key), Some(cert)) => (
            piv_applet::credentials::read_private_key(key)?,
            piv_applet::credentials::read_certificate(cert)?,
        ),
        _ => {
            let issuer = match (&args.ca_key, &args.ca_cert) {
                (Some(key), Some(cert)) => Some((
                    piv_applet::credentials::read_private_key(key)?,
                    piv_applet::credentials::read_certificate(cert)?,
                )),
                _ => None,
            };
            provision::content_signer(suite, card.state().identity.serial, issuer.as_ref())?
        }
    };
    let pairing_code_given = args.pairing_code.is_some()
        || args.pairing_code_file.is_some()
        || std::env::var_os("VREADER_PAIRING_CODE").is_some();
    let pairing_code = if pairing_code_given {
        Some(
            secrets::SecretArg {
                what: "the pairing code",
                flag: "--pairing-code",
                file_flag: "--pairing-code-file",
                env: "VREADER_PAIRING_CODE",
            }
            .get(args.pairing_code, args.pairing_code_file)?,
        )
    } else {
        None
    };
    card.enable_secure_messaging(
        suite,
        &signer,
        &signer_cert,
        args.contactless,
        pairing_code.as_deref().map(|c| c.trim()),
    )?;
    println!(
        "secure messaging on: {}{}{}",
        suite.name(),
        if args.contactless {
            ", contactless profile"
        } else {
            ""
        },
        if pairing_code.is_some() {
            ", pairing code set"
        } else {
            ""
        }
    );
    Ok(())
}

fn export(args: ExportArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let ExportArgs {
        file,
        slot,
        cert,
        public_key,
    } = args;
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

fn cache_items(args: CacheItemsArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let CacheItemsArgs {
        file,
        no_ecc,
        activity,
    } = args;
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

fn pair(args: PairArgs) -> anyhow::Result<()> {
    let PairArgs { dir, force } = args;
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

fn run(args: RunArgs, pass: &mut Passphrases) -> anyhow::Result<()> {
    let RunArgs {
        card,
        cards,
        slot,
        connect,
        listen,
        allow_remote,
        link_credentials,
        insecure_plain_listen,
        idle_timeout,
        touch,
    } = args;
    let base = match (listen, &connect) {
        (Some(addr), _) => slots::Base::Listen(addr),
        (None, Some(c)) => slots::Base::connect(c).map_err(anyhow::Error::msg)?,
        (None, None) => slots::Base::local_vpcd(),
    };
    let specs = if let Some(dir) = &cards {
        // Each file gets its slot explicitly, so a name with an @ in it
        // is never read as FILE@SLOT.
        slots::card_files(dir)
            .map_err(anyhow::Error::msg)?
            .iter()
            .zip(u32::from(slot)..)
            .map(|(f, n)| format!("{}@{n}", f.display()))
            .collect()
    } else if card.is_empty() {
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
        card
    };
    let placements = slots::place(&specs, &base, slot, allow_remote).map_err(anyhow::Error::msg)?;
    if base.is_local_vpcd() {
        let max = vreader::readers::PCSCD_MAX_READERS;
        if let Some(p) = placements.iter().find(|p| p.slot.is_some_and(|n| n >= max)) {
            bail!(
                "{}: slot {} is past the {max} readers one pcscd serves (slots 0-{})",
                p.file,
                p.slot.unwrap_or_default(),
                max - 1
            );
        }
    }
    // Which card is where, on stdout for the user (the log says more).
    for p in &placements {
        let reader = match p.slot {
            Some(n) if base.is_local_vpcd() => {
                format!("  reader \"{}\"", vpcd::names::reader_name(n))
            }
            _ => String::new(),
        };
        let slot = p.slot.map_or("-".to_string(), |n| n.to_string());
        println!("slot {slot}  {}{reader}  {}", p.endpoint, p.file);
    }
    let mut opened = Vec::new();
    let mut seen = Vec::new();
    for slots::Placement { file, endpoint, .. } in placements {
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
        let path = link_credentials
            .unwrap_or_else(|| winscard::link::default_dir().join(winscard::link::VREADER_FILE));
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
    runtime.block_on(host::serve(opened, tls, limits))
}

fn readers(args: ReadersArgs) -> anyhow::Result<()> {
    let count = match (args.count, &args.cards) {
        (Some(n), _) => n,
        (None, Some(dir)) => {
            u32::try_from(slots::card_files(dir).map_err(anyhow::Error::msg)?.len())?
        }
        (None, None) => bail!("give --count N or --cards DIR"),
    };
    let plan = vreader::readers::plan(
        count,
        args.port,
        args.standalone,
        &args.driver,
        &args.driver_dir,
    )?;
    if !args.install {
        print!("{}", plan.conf);
        if !plan.copies.is_empty() {
            eprintln!(
                "vreader: the entries name {} copies of {} in {}: `vreader readers --install` makes them",
                plan.copies.len(),
                args.driver.display(),
                args.driver_dir.display()
            );
        }
        return Ok(());
    }
    vreader::readers::install(&plan, &args.conf, &args.driver)?;
    println!(
        "wrote {} ({} driver copies in {}); restart pcscd to get readers for slots 0-{}",
        args.conf.display(),
        plan.copies.len(),
        args.driver_dir.display(),
        count - 1
    );
    Ok(())
}
