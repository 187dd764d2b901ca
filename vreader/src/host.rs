//! Serving one card over vpcd connections.
//!
//! A card is owned by its own task; its APDUs are processed strictly in
//! order. Crypto runs inside `block_in_place`, so an RSA-4096 key
//! generation on one card does not stall the other cards' sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piv_applet::enums::Ins;
use piv_applet::{Card, Redactor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use vpcd::{Control, Request};

/// A card shared between its serving task and whoever flushes it at exit.
pub type SharedCard = Arc<Mutex<Card>>;

/// Where a card plugs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Dial a vpcd reader slot (pcscd), redialling forever.
    Connect(String),
    /// Wait for a reader to dial us.
    Listen(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Connect(a) => write!(f, "connect {a}"),
            Endpoint::Listen(a) => write!(f, "listen {a}"),
        }
    }
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

/// Whether an APDU may take long: key generation, private-key operations
/// and anything that writes the card file (fsync). Those run in
/// `block_in_place` so other cards' sockets stay served meanwhile; the
/// read-only commands (most of any session) run inline, which saves a
/// thread hand-off per APDU.
fn may_block(apdu: &[u8]) -> bool {
    !matches!(
        apdu.get(1).copied().map(Ins::from),
        Some(
            Ins::Select
                | Ins::GetData
                | Ins::GetResponse
                | Ins::GetVersion
                | Ins::GetSerial
                | Ins::GetMetadata
        )
    )
}

/// Runs one vpcd connection until the peer leaves or we shut down.
///
/// Bytes are read into a frame decoder rather than frame by frame: vpcd
/// sends length and payload separately and pipelines control bytes
/// (`00 01 04`), so one read often brings several frames.
async fn session(
    mut stream: TcpStream,
    card: &SharedCard,
    label: &str,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> io::Result<End> {
    stream.set_nodelay(true)?;
    let mut redactor = Redactor::default();
    let mut decoder = vpcd::FrameDecoder::default();
    let mut buf = vec![0u8; 4096];
    // When the frame in progress must be complete.
    let mut frame_deadline: Option<tokio::time::Instant> = None;
    loop {
        let mut answered = false;
        while let Some(payload) = decoder.next_frame() {
            answered = true;
            if let Some(reply) = answer(&payload, card, label, &mut redactor)? {
                stream.write_all(&reply).await?;
            }
        }
        // A frame must arrive whole within frame_timeout of its first byte.
        if answered || decoder.pending() == 0 {
            frame_deadline = None;
        }
        if decoder.pending() > 0 && frame_deadline.is_none() {
            frame_deadline = Some(tokio::time::Instant::now() + limits.frame_timeout);
        }
        vpcd::quickack(&stream);
        // Fast path: the rest of a frame has usually arrived already.
        let n = match stream.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let limit = async {
                    match (frame_deadline, limits.idle_timeout) {
                        (Some(d), _) => tokio::time::sleep_until(d).await,
                        (None, Some(t)) => tokio::time::sleep(t).await,
                        (None, None) => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = stream.read(&mut buf) => r?,
                    _ = shutdown.changed() => return Ok(End::Shutdown),
                    _ = limit => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            if frame_deadline.is_some() {
                                "peer sent part of a frame and stopped"
                            } else {
                                "peer idle too long"
                            },
                        ))
                    }
                }
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return if decoder.pending() == 0 {
                Ok(End::Closed)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection inside a frame",
                ))
            };
        }
        decoder.push(&buf[..n]);
    }
}

/// The card's answer to one frame, framed; `None` for the control bytes
/// that get no answer.
fn answer(
    payload: &[u8],
    card: &SharedCard,
    label: &str,
    redactor: &mut Redactor,
) -> io::Result<Option<Vec<u8>>> {
    let reply = match Request::parse(payload) {
        None => return Err(io::Error::new(io::ErrorKind::InvalidData, "empty frame")),
        Some(Request::Control(c)) => {
            debug!(card = label, "control {c:?}");
            match c {
                Control::PowerOn => lock(card).power_on(),
                Control::PowerOff => lock(card).power_off(),
                Control::Reset => lock(card).reset(),
                Control::GetAtr => return frame(&lock(card).atr()).map(Some),
                Control::Unknown(b) => {
                    warn!(card = label, "unknown vpcd control byte {b:#04x} ignored")
                }
            }
            return Ok(None);
        }
        Some(Request::Apdu(apdu)) => {
            let start = Instant::now();
            let resp = if may_block(apdu) {
                tokio::task::block_in_place(|| lock(card).process(apdu))
            } else {
                lock(card).process(apdu)
            };
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
    frame(&reply).map(Some)
}

fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    vpcd::encode_frame(payload).map_err(io::Error::other)
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

#[cfg(test)]
mod tests {
    use super::*;
    use piv_applet::CardOptions;

    const GET_SERIAL: [u8; 5] = [0x00, 0xF8, 0x00, 0x00, 0x00];

    async fn listening_card(serial: u32, limits: Limits) -> (SocketAddr, watch::Sender<bool>) {
        let opts = CardOptions {
            serial: Some(serial),
            ..CardOptions::default()
        };
        let card = Arc::new(Mutex::new(Card::ephemeral(&opts).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(run_listen(card, listener, serial.to_string(), limits, rx));
        (addr, tx)
    }

    /// A blocking vpcd reader, as the winscard shim's remote backend is.
    fn serial_via_reader(addr: SocketAddr) -> Vec<u8> {
        let mut r = vpcd::ReaderConnection::connect(addr).unwrap();
        r.set_timeout(Some(Duration::from_secs(5))).unwrap();
        r.control(Control::PowerOn).unwrap();
        assert_eq!(r.atr().unwrap(), piv_applet::state::YUBIKEY5_ATR.to_vec());
        r.transmit(&GET_SERIAL).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_reader_never_holds_up_another_card() {
        let limits = Limits {
            frame_timeout: Duration::from_millis(300),
            idle_timeout: None,
        };
        let (a, _stop_a) = listening_card(11, limits).await;
        let (b, stop_b) = listening_card(22, limits).await;
        // A reader that sends half a frame and stalls on card A.
        let mut stuck = std::net::TcpStream::connect(a).unwrap();
        std::io::Write::write_all(&mut stuck, &[0x00, 0x05, 0x00]).unwrap();
        // Card B answers meanwhile, and card A once the stuck peer is dropped.
        let b_reply = tokio::task::spawn_blocking(move || serial_via_reader(b))
            .await
            .unwrap();
        assert_eq!(b_reply, [0, 0, 0, 22, 0x90, 0x00]);
        let a_reply = tokio::task::spawn_blocking(move || serial_via_reader(a))
            .await
            .unwrap();
        assert_eq!(a_reply, [0, 0, 0, 11, 0x90, 0x00]);
        // Shutdown closes the listener: card B is gone.
        stop_b.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(std::net::TcpStream::connect(b).is_err());
    }
}
