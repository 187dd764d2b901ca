//! `vreader`: host virtual PIV cards for pcscd (vsmartcard vpcd protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use piv_applet::{AlgorithmId, Card, CardOptions, TouchMode};
use tokio::sync::watch;
use tracing::{error, info};
use vreader::host::{self, Endpoint, Limits};
use vreader::{paths, provision};

#[derive(Parser)]
#[command(
    version,
    about = "Virtual PIV cards in vsmartcard's vpcd readers (pcscd)"
)]
struct Cli {
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
        /// Card file; repeat for several cards. `FILE@HOST:PORT` gives the
        /// card its own endpoint.
        #[arg(long = "card", value_name = "FILE[@HOST:PORT]")]
        cards: Vec<String>,
        /// vpcd reader slot of the first card (port 35963 + N); later cards
        /// take the following slots.
        #[arg(long, default_value_t = 0)]
        slot: u16,
        /// Dial this vpcd address instead of 127.0.0.1:35963+slot.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "listen")]
        connect: Option<String>,
        /// Wait for readers on this address instead of dialling (later
        /// cards use the following ports).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Allow --listen on an address other than loopback.
        #[arg(long)]
        allow_remote: bool,
        /// Drop a listen-mode reader that stays silent this many seconds
        /// (0 = never).
        #[arg(long, default_value_t = 0)]
        idle_timeout: u64,
        /// What happens when a key asks for a touch.
        #[arg(long, value_enum, default_value = "auto")]
        touch: Touch,
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
    },
    /// Show what a card file holds (never secrets).
    Status { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vreader: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            file,
            serial,
            mgmt_alg,
            demo_key,
        } => {
            let mgmt_key_alg = match mgmt_alg {
                MgmtAlg::Tdes => AlgorithmId::TripleDes,
                MgmtAlg::Aes128 => AlgorithmId::Aes128,
                MgmtAlg::Aes192 => AlgorithmId::Aes192,
                MgmtAlg::Aes256 => AlgorithmId::Aes256,
            };
            let opts = CardOptions {
                serial,
                mgmt_key_alg,
                ..CardOptions::default()
            };
            let card = provision::create_card(&file, &opts, demo_key)?;
            print!("{}", provision::describe(&card));
            Ok(())
        }
        Command::Status { file } => {
            let card = Card::open(&file)?;
            print!("{}", provision::describe(&card));
            Ok(())
        }
        Command::Run {
            cards,
            slot,
            connect,
            listen,
            allow_remote,
            idle_timeout,
            touch,
        } => {
            if let Some(addr) = listen {
                if !addr.ip().is_loopback() && !allow_remote {
                    bail!("--listen {addr} is not a loopback address; add --allow-remote to accept readers from the network");
                }
            }
            let mut opened = Vec::new();
            let specs = if cards.is_empty() {
                let path = paths::default_card_path();
                if !path.exists() {
                    info!("creating the default card {}", path.display());
                    drop(provision::create_card(
                        &path,
                        &CardOptions::default(),
                        true,
                    )?);
                }
                vec![path.display().to_string()]
            } else {
                cards
            };
            for (i, spec) in specs.iter().enumerate() {
                let (file, explicit) = match spec.rsplit_once('@') {
                    Some((f, ep)) if ep.contains(':') => (f.to_string(), Some(ep.to_string())),
                    _ => (spec.clone(), None),
                };
                let offset = u16::try_from(i).context("too many cards")?;
                let endpoint = match (&explicit, listen, &connect) {
                    (Some(ep), Some(_), _) => Endpoint::Listen(
                        ep.parse()
                            .with_context(|| format!("bad listen address {ep}"))?,
                    ),
                    (Some(ep), None, _) => Endpoint::Connect(ep.clone()),
                    (None, Some(addr), _) => {
                        Endpoint::Listen(SocketAddr::new(addr.ip(), addr.port() + offset))
                    }
                    (None, None, Some(c)) if i == 0 => Endpoint::Connect(c.clone()),
                    (None, None, Some(_)) => {
                        bail!("with --connect, give every further card its own FILE@HOST:PORT")
                    }
                    (None, None, None) => Endpoint::Connect(format!(
                        "127.0.0.1:{}",
                        vpcd::DEFAULT_PORT + slot + offset
                    )),
                };
                let mut card = Card::open(&file)?;
                card.set_touch_mode(match touch {
                    Touch::Auto => TouchMode::AutoConfirm,
                    Touch::Deny => TouchMode::Deny,
                });
                opened.push((file, Arc::new(Mutex::new(card)), endpoint));
            }
            let limits = Limits {
                idle_timeout: (idle_timeout > 0).then(|| Duration::from_secs(idle_timeout)),
                ..Limits::default()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(opened, limits))
        }
    }
}

async fn serve(
    cards: Vec<(String, host::SharedCard, Endpoint)>,
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
                tasks.spawn(host::run_listen(card, listener, file, limits, rx));
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: removing cards"),
        _ = term.recv() => info!("SIGTERM: removing cards"),
        _ = async { while tasks.join_next().await.is_some() {} } => {
            error!("all cards stopped");
        }
    }
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
    Ok(())
}
