//! A card behind `vreader --listen`, reached over the vpcd protocol with
//! this process playing the reader (what vpcd inside pcscd does): control
//! bytes power on (01) / get ATR (04) / reset (02) / power off (00), and one
//! framed response per command APDU. A closed connection or an empty reply
//! means the card was removed; reconnecting means it was inserted again.
//!
//! The wire format belongs to the `vpcd` crate; this module drives the
//! reader-side state machine over a [`Link`] (a `vpcd::ReaderConnection`
//! in production, a fake in tests).

use std::io;
use std::time::{Duration, Instant};

use crate::backend::Backend;

/// One vpcd connection, as the reader side uses it.
pub trait Link: Send {
    /// Sends a control code (no reply).
    fn control(&mut self, code: u8) -> io::Result<()>;
    /// Asks for the ATR.
    fn atr(&mut self) -> io::Result<Vec<u8>>;
    /// One command APDU, one response APDU.
    fn transmit(&mut self, apdu: &[u8]) -> io::Result<Vec<u8>>;
    /// Whether the card side has closed the connection, without blocking.
    fn closed(&mut self) -> bool;
}

/// Makes new connections to the card.
pub trait Connector: Send {
    fn connect(&mut self) -> io::Result<Box<dyn Link>>;
    fn describe(&self) -> String;
}

/// vpcd control bytes.
pub mod control {
    pub const POWER_OFF: u8 = 0x00;
    pub const POWER_ON: u8 = 0x01;
    pub const RESET: u8 = 0x02;
    pub const GET_ATR: u8 = 0x04;
}

/// Least time between two connection attempts while no card is there, so
/// a waiting SCardGetStatusChange does not hammer the card's host.
const RETRY: Duration = Duration::from_millis(300);

/// How long a connection may go without traffic before a presence poll
/// sends GET ATR, which changes nothing on the card: `vreader --listen`
/// drops a reader silent for its idle timeout (120 s by default), and a
/// user may hold the card connected without using it for longer.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A remote card.
pub struct Remote {
    connector: Box<dyn Connector>,
    link: Option<Box<dyn Link>>,
    /// Last exchange on `link`.
    last_io: Instant,
    last_attempt: Option<Instant>,
    /// Logged once per distinct failure, not every poll.
    last_error: Option<String>,
}

impl Remote {
    /// A remote card at `host:port` (TCP).
    pub fn new(addr: String) -> Remote {
        Remote::with_connector(Box::new(TcpConnector { addr }))
    }

    pub fn with_connector(connector: Box<dyn Connector>) -> Remote {
        Remote {
            connector,
            link: None,
            last_io: Instant::now(),
            last_attempt: None,
            last_error: None,
        }
    }

    fn drop_link(&mut self, why: &str) -> String {
        if self.link.take().is_some() {
            tracing::info!("{}: connection closed: {why}", self.connector.describe());
        }
        why.to_string()
    }

    fn with_link<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Link) -> io::Result<T>,
    ) -> Result<T, String> {
        let link = self
            .link
            .as_mut()
            .ok_or_else(|| "no card connected".to_string())?;
        match f(link.as_mut()) {
            Ok(v) => {
                self.last_io = Instant::now();
                Ok(v)
            }
            Err(e) => Err(self.drop_link(&e.to_string())),
        }
    }

    fn atr_after(&mut self, code: u8) -> Result<Vec<u8>, String> {
        self.with_link(|l| {
            l.control(code)?;
            l.atr()
        })
    }
}

impl Backend for Remote {
    fn power_on(&mut self) -> Result<Vec<u8>, String> {
        if self.link.is_none() && !self.poll_present() {
            return Err("no card connected".into());
        }
        self.atr_after(control::POWER_ON)
    }

    fn power_off(&mut self) {
        let _ = self.with_link(|l| l.control(control::POWER_OFF));
    }

    fn reset(&mut self) -> Result<Vec<u8>, String> {
        self.atr_after(control::RESET)
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        if apdu.len() < 2 {
            // A one-byte message would be read as a control byte.
            return Ok(vec![0x67, 0x00]);
        }
        self.with_link(|l| l.transmit(apdu))
    }

    fn poll_present(&mut self) -> bool {
        if let Some(l) = self.link.as_mut() {
            if !l.closed() {
                if self.last_io.elapsed() >= KEEPALIVE {
                    return self.with_link(|l| l.atr()).is_ok();
                }
                return true;
            }
            self.drop_link("closed by the card");
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return false;
        }
        self.last_attempt = Some(Instant::now());
        match self.connector.connect() {
            Ok(l) => {
                tracing::info!("{}: connected", self.connector.describe());
                self.last_error = None;
                self.link = Some(l);
                self.last_io = Instant::now();
                true
            }
            Err(e) => {
                let e = e.to_string();
                if self.last_error.as_ref() != Some(&e) {
                    tracing::info!("{}: no card: {e}", self.connector.describe());
                    self.last_error = Some(e);
                }
                false
            }
        }
    }

    fn can_change(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("remote card at {} (vpcd)", self.connector.describe())
    }
}

/// How long one exchange may take before the card counts as gone (RSA-4096
/// key generation on a slow host is the longest thing a card does).
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// TCP to `vreader --listen`.
struct TcpConnector {
    addr: String,
}

#[cfg(not(windows))]
struct TcpLink {
    conn: vpcd::ReaderConnection,
    /// A second handle on the same socket, to notice the card leaving while
    /// nobody is talking to it.
    probe: std::net::TcpStream,
}

#[cfg(not(windows))]
fn frame_err(e: vpcd::FrameError) -> io::Error {
    match e {
        vpcd::FrameError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    }
}

#[cfg(not(windows))]
impl Link for TcpLink {
    fn control(&mut self, code: u8) -> io::Result<()> {
        self.conn
            .control(vpcd::Control::from(code))
            .map_err(frame_err)
    }

    fn atr(&mut self) -> io::Result<Vec<u8>> {
        self.conn.atr().map_err(frame_err)
    }

    fn transmit(&mut self, apdu: &[u8]) -> io::Result<Vec<u8>> {
        self.conn
            .transmit(apdu)
            .map(|r| r.to_vec())
            .map_err(frame_err)
    }

    fn closed(&mut self) -> bool {
        // Only called under the reader lock, so flipping the shared socket
        // to non-blocking for one peek cannot race a blocking read.
        if self.probe.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let closed = match self.probe.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        closed | self.probe.set_nonblocking(false).is_err()
    }
}

impl Connector for TcpConnector {
    #[cfg(not(windows))]
    fn connect(&mut self) -> io::Result<Box<dyn Link>> {
        use std::net::ToSocketAddrs;
        let addr = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        let probe = stream.try_clone()?;
        let conn = vpcd::ReaderConnection::new(stream)?;
        conn.set_timeout(Some(IO_TIMEOUT))?;
        Ok(Box::new(TcpLink { conn, probe }))
    }

    #[cfg(windows)]
    fn connect(&mut self) -> io::Result<Box<dyn Link>> {
        let _ = IO_TIMEOUT;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "remote cards on Windows wait for the vpcd crate to build there (its quickack() needs std::os::fd)",
        ))
    }

    fn describe(&self) -> String {
        self.addr.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A card side that answers like vreader: ATR on 04, an echo + 9000 for
    /// APDUs; `gone` simulates the card closing the connection.
    struct FakeLink {
        log: Arc<Mutex<Vec<Vec<u8>>>>,
        gone: Arc<Mutex<bool>>,
    }

    impl FakeLink {
        fn check(&mut self, msg: &[u8]) -> io::Result<()> {
            if *self.gone.lock().unwrap() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.log.lock().unwrap().push(msg.to_vec());
            Ok(())
        }
    }

    impl Link for FakeLink {
        fn control(&mut self, code: u8) -> io::Result<()> {
            self.check(&[code])
        }
        fn atr(&mut self) -> io::Result<Vec<u8>> {
            self.check(&[control::GET_ATR])?;
            Ok(vec![0x3B, 0x01, 0x02])
        }
        fn transmit(&mut self, apdu: &[u8]) -> io::Result<Vec<u8>> {
            self.check(apdu)?;
            Ok([&apdu[1..2], &[0x90, 0x00][..]].concat())
        }
        fn closed(&mut self) -> bool {
            *self.gone.lock().unwrap()
        }
    }

    struct FakeConnector {
        up: Arc<Mutex<bool>>,
        log: Arc<Mutex<Vec<Vec<u8>>>>,
        gone: Arc<Mutex<bool>>,
    }

    impl Connector for FakeConnector {
        fn connect(&mut self) -> io::Result<Box<dyn Link>> {
            if !*self.up.lock().unwrap() {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            *self.gone.lock().unwrap() = false;
            Ok(Box::new(FakeLink {
                log: self.log.clone(),
                gone: self.gone.clone(),
            }))
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    #[test]
    fn reader_side_state_machine() {
        let up = Arc::new(Mutex::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let gone = Arc::new(Mutex::new(false));
        let mut r = Remote::with_connector(Box::new(FakeConnector {
            up: up.clone(),
            log: log.clone(),
            gone: gone.clone(),
        }));
        assert!(!r.poll_present(), "nothing listening");
        assert!(r.power_on().is_err());
        *up.lock().unwrap() = true;
        // The clock is moved by hand, not slept on: a stalled test thread
        // must not turn "too early" into "late enough".
        r.last_attempt = Some(Instant::now() + Duration::from_secs(3600));
        assert!(!r.poll_present(), "retries are spaced");
        r.last_attempt = Some(Instant::now() - RETRY);
        assert!(r.poll_present());
        assert_eq!(r.power_on().unwrap(), [0x3B, 0x01, 0x02]);
        assert_eq!(
            r.transmit(&[0x00, 0xFD, 0x00, 0x00]).unwrap(),
            [0xFD, 0x90, 0x00]
        );
        assert_eq!(r.reset().unwrap(), [0x3B, 0x01, 0x02]);
        r.power_off();
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                vec![1],
                vec![4],
                vec![0x00, 0xFD, 0x00, 0x00],
                vec![2],
                vec![4],
                vec![0]
            ],
            "vpcd's sequences: 01 04 to power on, 02 04 to reset, 00 to power off"
        );
        // A connection quiet for KEEPALIVE gets a GET ATR at the next
        // presence poll, so vreader's idle timeout does not remove a card
        // a user holds connected.
        log.lock().unwrap().clear();
        assert!(r.poll_present());
        assert!(log.lock().unwrap().is_empty(), "no traffic while recent");
        r.last_io = Instant::now() - KEEPALIVE;
        assert!(r.poll_present());
        assert_eq!(*log.lock().unwrap(), vec![vec![4]]);
        assert!(r.poll_present());
        assert_eq!(log.lock().unwrap().len(), 1, "one GET ATR per quiet spell");
        *gone.lock().unwrap() = true;
        assert!(r.transmit(&[0x00, 0xFD, 0x00, 0x00]).is_err());
        *up.lock().unwrap() = false;
        r.last_attempt = Some(Instant::now() - RETRY);
        assert!(!r.poll_present(), "removed");
    }
}
