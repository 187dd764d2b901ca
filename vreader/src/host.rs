//! Serving one card over vpcd connections.
//!
//! A card is owned by its own task, which dials or accepts readers; each
//! connection is served on its own thread, so a card's APDUs run strictly
//! in order and nothing one card does (an RSA-4096 generation, an fsync, a
//! stuck peer) holds up another.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use piv_applet::{Card, Redactor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
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
    /// Time allowed between the first and the last byte of one frame, and
    /// for the peer to take one answer.
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

/// Runs one vpcd connection until the peer leaves or we shut down.
///
/// The connection gets its own OS thread with a blocking socket, like the
/// do-nothing floor card of the benchmark: an async wake-up costs several
/// µs per APDU, a third of the whole pcscd round trip. It also means a
/// slow RSA-4096 generation or an fsync on one card never holds up another.
/// The runtime only watches for shutdown, and then shuts the socket down,
/// which ends the blocking read.
async fn session(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    card: &SharedCard,
    label: &str,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> io::Result<End> {
    // Every connection starts from a card reset, as a card inserted into
    // a reader does: nothing a previous peer proved (PIN, management key)
    // carries over to whoever connects next, in either mode.
    lock(card).reset();
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let closer = stream.try_clone()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let mut worker = {
        let (card, label, stopping) = (card.clone(), label.to_string(), stopping.clone());
        tokio::task::spawn_blocking(move || {
            blocking_session(stream, tls, &card, &label, limits, &stopping)
        })
    };
    tokio::select! {
        r = &mut worker => r.map_err(|e| io::Error::other(format!("card session crashed: {e}")))?,
        _ = shutdown.changed() => {
            stopping.store(true, Ordering::SeqCst);
            let _ = closer.shutdown(std::net::Shutdown::Both);
            let _ = worker.await;
            Ok(End::Shutdown)
        }
    }
}

/// The blocking loop of [`session`].
///
/// Bytes go through a frame decoder rather than being read frame by frame:
/// vpcd sends length and payload separately and pipelines control bytes
/// (`00 01 04`), so one read may bring several frames or part of one. The
/// read timeout is fixed (no setsockopt per APDU); timeouts only matter
/// when a frame is incomplete for too long or the peer is idle too long.
fn blocking_session(
    socket: std::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    card: &SharedCard,
    label: &str,
    limits: Limits,
    stopping: &AtomicBool,
) -> io::Result<End> {
    socket.set_nodelay(true)?;
    let tick = limits
        .idle_timeout
        .map_or(limits.frame_timeout, |i| i.min(limits.frame_timeout))
        .max(Duration::from_millis(10));
    socket.set_read_timeout(Some(tick))?;
    // A peer that stops reading our answers is dropped, not waited for.
    socket.set_write_timeout(Some(limits.frame_timeout))?;
    // The handshake gets the time of one frame: nothing reaches the card
    // before the peer has shown the pinned certificate.
    let mut stream = match tls {
        Some(config) => Transport::Tls(Box::new(winscard::link::accept(
            socket,
            &config,
            limits.frame_timeout,
        )?)),
        None => Transport::Plain(socket),
    };
    let mut redactor = Redactor::default();
    let mut decoder = vpcd::FrameDecoder::default();
    // Wiped when the session ends: reads bring PINs and imported keys.
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 4096]);
    // First byte of the frame in progress; last byte from the peer.
    let mut frame_start: Option<Instant> = None;
    let mut last_seen = Instant::now();
    loop {
        let mut answered = false;
        while let Some(payload) = decoder.next_frame() {
            answered = true;
            if let Some(reply) = answer(&payload, card, label, &mut redactor)? {
                stream.write_all(&reply)?;
                stream.flush()?;
            }
        }
        if answered || decoder.pending() == 0 {
            frame_start = None;
        }
        if decoder.pending() > 0 && frame_start.is_none() {
            frame_start = Some(Instant::now());
        }
        vpcd::quickack(stream.socket());
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if stopping.load(Ordering::SeqCst) => {
                debug!(card = label, "connection closed for shutdown ({e})");
                return Ok(End::Shutdown);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if frame_start.is_some_and(|t| t.elapsed() >= limits.frame_timeout) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer sent half a frame and stopped",
                    ));
                }
                // Idle means between frames; a frame in progress has its
                // own limit.
                if frame_start.is_none()
                    && limits
                        .idle_timeout
                        .is_some_and(|i| last_seen.elapsed() >= i)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer idle too long",
                    ));
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A TLS peer that hung up without close_notify, between frames:
            // as plain TCP's end of stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && decoder.pending() == 0 => {
                return Ok(End::Closed)
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return if stopping.load(Ordering::SeqCst) {
                Ok(End::Shutdown)
            } else if decoder.pending() == 0 {
                Ok(End::Closed)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection inside a frame",
                ))
            };
        }
        last_seen = Instant::now();
        decoder.push(&buf[..n]);
    }
}

/// A listen-mode connection: TLS with the paired shim, or plain vpcd
/// (connect mode, and the opt-in `--insecure-plain-listen`).
enum Transport {
    Plain(std::net::TcpStream),
    Tls(Box<winscard::link::ServerStream>),
}

impl Transport {
    fn socket(&self) -> &std::net::TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// The card's answer to one frame, framed; `None` for the control bytes
/// that get no answer.
fn answer(
    payload: &[u8],
    card: &SharedCard,
    label: &str,
    redactor: &mut Redactor,
) -> io::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
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
            let resp = lock(card).transmit(apdu);
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

fn frame(payload: &[u8]) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
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
                match session(
                    stream,
                    None,
                    &card,
                    &label,
                    Limits::default(),
                    &mut shutdown,
                )
                .await
                {
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
                        "cannot reach vpcd at {addr} ({e}): is pcscd running with the vsmartcard-vpcd driver, \
                         with a reader for this slot (slots past 1: `vreader readers`)? Retrying until it is."
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
/// second reader waits in the accept queue until the first leaves. With
/// `tls` (the link credentials' server side), only the paired shim gets
/// through; `None` serves plain vpcd to anyone who connects.
pub async fn run_listen(
    card: SharedCard,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
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
        match session(stream, tls.clone(), &card, &label, limits, &mut shutdown).await {
            Ok(End::Shutdown) => return,
            Ok(End::Closed) => info!(card = %label, "reader {peer} left"),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                warn!(card = %label, "reader {peer} {e}; it got nothing from the card")
            }
            Err(e) => warn!(card = %label, "dropping reader {peer}: {e}"),
        }
    }
}

/// Serves every card at its endpoint until SIGINT or SIGTERM, then
/// removes them all: each card's task ends and its socket closes.
pub async fn serve(
    cards: Vec<(String, SharedCard, Endpoint)>,
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
                tasks.spawn(run_connect(card, addr, file, rx));
            }
            Endpoint::Listen(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for card {file}"))?;
                tasks.spawn(run_listen(card, listener, tls.clone(), file, limits, rx));
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

#[cfg(test)]
mod tests {
    use super::*;
    use piv_applet::CardOptions;

    const GET_SERIAL: [u8; 5] = [0x00, 0xF8, 0x00, 0x00, 0x00];

    async fn listening_card(
        serial: u32,
        limits: Limits,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        listening_card_with(serial, limits, None).await
    }

    async fn listening_card_with(
        serial: u32,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let opts = CardOptions {
            serial: Some(serial),
            ..CardOptions::default()
        };
        let card = Arc::new(Mutex::new(Card::ephemeral(&opts).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run_listen(
            card,
            listener,
            tls,
            serial.to_string(),
            limits,
            rx,
        ));
        (addr, tx, task)
    }

    /// A blocking vpcd reader, as the winscard shim's remote backend is.
    fn serial_via_reader(addr: SocketAddr) -> Vec<u8> {
        let mut r = vpcd::ReaderConnection::connect(addr).unwrap();
        r.set_timeout(Some(Duration::from_secs(30))).unwrap();
        r.control(Control::PowerOn).unwrap();
        assert_eq!(
            r.atr().unwrap(),
            piv_applet::state::YUBIKEY5_NFC_ATR.to_vec()
        );
        r.transmit(&GET_SERIAL).unwrap().to_vec()
    }

    /// Audit item 5: a PIN verified over one vpcd connection must not be
    /// worth anything on the next one (vreader redials after a drop, and
    /// whoever is behind the next connection did not enter the PIN).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redialled_connection_starts_from_a_reset_card() {
        let card = Arc::new(Mutex::new(
            Card::ephemeral(&CardOptions {
                serial: Some(5),
                ..CardOptions::default()
            })
            .unwrap(),
        ));
        let reader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = reader.local_addr().unwrap().to_string();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run_connect(card, addr, "5".into(), rx));
        let statuses = tokio::task::spawn_blocking(move || {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let (stream, _) = reader.accept().unwrap();
                let mut r = vpcd::ReaderConnection::new(stream).unwrap();
                r.set_timeout(Some(Duration::from_secs(30))).unwrap();
                if answers.is_empty() {
                    let verify = [
                        0x00, 0x20, 0x00, 0x80, 0x08, b'1', b'2', b'3', b'4', b'5', b'6', 0xFF,
                        0xFF,
                    ];
                    assert_eq!(*r.transmit(&verify).unwrap(), [0x90, 0x00]);
                }
                // VERIFY without data: is the PIN verified in this session?
                answers.push(r.transmit(&[0x00, 0x20, 0x00, 0x80]).unwrap().to_vec());
                // Dropping the connection makes vreader redial.
            }
            answers
        })
        .await
        .unwrap();
        assert_eq!(statuses, [vec![0x90, 0x00], vec![0x63, 0xC3]]);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("connect mode stops when told")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_reader_never_holds_up_another_card() {
        let limits = Limits {
            frame_timeout: Duration::from_millis(300),
            idle_timeout: None,
        };
        let (a, _stop_a, _) = listening_card(11, limits).await;
        let (b, stop_b, b_task) = listening_card(22, limits).await;
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
        tokio::time::timeout(Duration::from_secs(30), b_task)
            .await
            .expect("the listener stops when told")
            .unwrap();
        assert!(std::net::TcpStream::connect(b).is_err());
    }

    /// The serial number over the link with `shim_pem`'s credentials.
    fn serial_via_link(addr: SocketAddr, shim_pem: &str) -> io::Result<Vec<u8>> {
        use winscard::link;
        let config = link::Credentials::from_pem(shim_pem)
            .unwrap()
            .client_config()
            .unwrap();
        let timeout = Duration::from_secs(30);
        let mut s = link::connect(std::net::TcpStream::connect(addr)?, &config, timeout)?;
        let mut decoder = vpcd::FrameDecoder::default();
        link::write_frame(&mut s, &[Control::PowerOn.into()])?;
        link::write_frame(&mut s, &GET_SERIAL)?;
        link::read_frame(&mut s, &mut decoder)?
            .map(|f| f.to_vec())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tls_listener_serves_only_the_paired_shim() {
        let (shim, vreader) = winscard::link::generate_pair().unwrap();
        // A shim of another pairing that pins this vreader (its
        // certificate is no secret) but has its own key.
        let (other, _) = winscard::link::generate_pair().unwrap();
        let peer_block = |t: &str| t.rfind("-----BEGIN CERTIFICATE-----").unwrap();
        let stranger = format!(
            "{}{}",
            &other[..peer_block(&other)],
            &shim[peer_block(&shim)..]
        );
        let config = winscard::link::Credentials::from_pem(&vreader)
            .unwrap()
            .server_config()
            .unwrap();
        let limits = Limits {
            frame_timeout: Duration::from_secs(5),
            idle_timeout: None,
        };
        let (addr, _stop, _) = listening_card_with(33, limits, Some(config)).await;
        // Its handshake ends on its side, then the card host refuses its
        // certificate and sends no answer.
        let refused = tokio::task::spawn_blocking(move || serial_via_link(addr, &stranger))
            .await
            .unwrap();
        assert!(refused.is_err(), "an unpaired shim got {refused:?}");
        // A plain vpcd reader gets no ATR.
        let plain = tokio::task::spawn_blocking(move || {
            let mut r = vpcd::ReaderConnection::connect(addr)?;
            r.set_timeout(Some(Duration::from_secs(30)))?;
            r.control(Control::PowerOn).map_err(io::Error::other)?;
            r.atr().map_err(io::Error::other)
        })
        .await
        .unwrap();
        assert!(plain.is_err(), "a plain vpcd reader got {plain:?}");
        // The paired shim is served after both.
        let reply = tokio::task::spawn_blocking(move || serial_via_link(addr, &shim))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, [0, 0, 0, 33, 0x90, 0x00]);
    }
}
