//! Serving one card over vpcd connections.
//!
//! A card is owned by its own task; its APDUs are processed strictly in
//! order. Crypto runs inside `block_in_place`, so an RSA-4096 key
//! generation on one card does not stall the other cards' sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piv_applet::{Card, Redactor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use vpcd::{Control, Request};

/// A card shared between its serving task and whoever flushes it at exit.
pub type SharedCard = Arc<Mutex<Card>>;

/// Where a card plugs in.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Dial a vpcd reader slot (pcscd), redialling forever.
    Connect(String),
    /// Wait for a reader to dial us.
    Listen(SocketAddr),
}

/// Limits that keep one misbehaving peer from holding a card forever.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time allowed between the first and the last byte of one frame.
    pub frame_timeout: Duration,
    /// Time a listen-mode peer may stay silent before it is dropped;
    /// `None` keeps idle connections (connect mode: pcscd polls anyway).
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_timeout: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The reader closed the connection (pcscd stopped, card removed).
    Closed,
    /// We are shutting down.
    Shutdown,
}

fn lock(card: &SharedCard) -> std::sync::MutexGuard<'_, Card> {
    // A panic while holding the lock cannot leave the card inconsistent
    // (every change is saved before the answer), so keep serving.
    card.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read_exact_timed(
    stream: &mut TcpStream,
    buf: &mut [u8],
    limit: Duration,
) -> io::Result<()> {
    vpcd::quickack(stream);
    match tokio::time::timeout(limit, stream.read_exact(buf)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer sent half a frame and stopped",
        )),
    }
}

/// Runs one vpcd connection until the peer leaves or we shut down.
async fn session(
    mut stream: TcpStream,
    card: &SharedCard,
    label: &str,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> io::Result<End> {
    stream.set_nodelay(true)?;
    let mut redactor = Redactor::default();
    loop {
        let mut first = [0u8; 1];
        vpcd::quickack(&stream);
        let idle = async {
            match limits.idle_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = stream.read(&mut first) => {
                if r? == 0 {
                    return Ok(End::Closed);
                }
            }
            _ = shutdown.changed() => return Ok(End::Shutdown),
            _ = idle => return Err(io::Error::new(io::ErrorKind::TimedOut, "peer idle too long")),
        }
        let mut second = [0u8; 1];
        read_exact_timed(&mut stream, &mut second, limits.frame_timeout).await?;
        let len = usize::from(u16::from_be_bytes([first[0], second[0]]));
        let mut payload = vec![0u8; len];
        read_exact_timed(&mut stream, &mut payload, limits.frame_timeout).await?;
        let reply = match Request::parse(&payload) {
            None => return Err(io::Error::new(io::ErrorKind::InvalidData, "empty frame")),
            Some(Request::Control(c)) => {
                debug!(card = label, "control {c:?}");
                match c {
                    Control::PowerOn => lock(card).power_on(),
                    Control::PowerOff => lock(card).power_off(),
                    Control::Reset => lock(card).reset(),
                    Control::GetAtr => {
                        let atr = lock(card).atr();
                        stream
                            .write_all(&vpcd::encode_frame(&atr).expect("ATR fits"))
                            .await?;
                    }
                    Control::Unknown(b) => {
                        warn!(card = label, "unknown vpcd control byte {b:#04x} ignored")
                    }
                }
                continue;
            }
            Some(Request::Apdu(apdu)) => {
                let start = Instant::now();
                let resp = tokio::task::block_in_place(|| lock(card).process(apdu));
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let (c, r) = (redactor.command(apdu), redactor.response(&resp));
                    debug!(
                        card = label,
                        micros = start.elapsed().as_micros() as u64,
                        "APDU {c} -> {r}"
                    );
                }
                resp
            }
        };
        stream
            .write_all(&vpcd::encode_frame(&reply).map_err(io::Error::other)?)
            .await?;
    }
}

/// Dials `addr` until shutdown, serving the card on every connection.
pub async fn run_connect(
    card: SharedCard,
    addr: String,
    label: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut last_warning: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match TcpStream::connect(&addr).await {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                last_warning = None;
                info!(card = %label, "card inserted into the vpcd reader at {addr}");
                match session(stream, &card, &label, Limits::default(), &mut shutdown).await {
                    Ok(End::Shutdown) => {
                        info!(card = %label, "card removed (shutting down)");
                        return;
                    }
                    Ok(End::Closed) => {
                        info!(card = %label, "reader at {addr} closed the connection; redialling")
                    }
                    Err(e) => warn!(card = %label, "connection to {addr} failed: {e}; redialling"),
                }
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    warn!(
                        card = %label,
                        "cannot reach vpcd at {addr} ({e}): is pcscd running with the vsmartcard-vpcd driver? \
                         Retrying until it is."
                    );
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Serves the card to readers that dial `listener`, one at a time; a
/// second reader waits in the accept queue until the first leaves.
pub async fn run_listen(
    card: SharedCard,
    listener: TcpListener,
    label: String,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(card = %label, "waiting for a reader on {local}");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(card = %label, "accept on {local} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        info!(card = %label, "reader {peer} connected");
        match session(stream, &card, &label, limits, &mut shutdown).await {
            Ok(End::Shutdown) => return,
            Ok(End::Closed) => info!(card = %label, "reader {peer} left"),
            Err(e) => warn!(card = %label, "dropping reader {peer}: {e}"),
        }
        // A new reader starts from a powered-off card, like a reinsertion.
        lock(&card).reset();
    }
}
