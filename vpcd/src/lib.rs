//! The vsmartcard virtual reader protocol (`vpcd`), defined once for both
//! sides: `vreader` plays the card, the winscard shim's remote backend
//! plays the reader.
//!
//! Every message in both directions is a big-endian `u16` length and that
//! many bytes. From the reader, a one-byte payload is a [`Control`] code and
//! anything else a command APDU; the card answers `GetAtr` and APDUs with
//! one frame each and answers nothing to the other control codes.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use zeroize::Zeroizing;

pub mod names;

/// Port of vpcd's first reader slot (`/dev/null:0x8C7B` in reader.conf);
/// slot N listens on `DEFAULT_PORT + N`.
pub const DEFAULT_PORT: u16 = 0x8C7B;
/// Largest payload a frame can carry.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Control codes the reader sends as one-byte frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    PowerOff,
    PowerOn,
    Reset,
    GetAtr,
    Unknown(u8),
}

impl From<u8> for Control {
    fn from(b: u8) -> Self {
        match b {
            0x00 => Control::PowerOff,
            0x01 => Control::PowerOn,
            0x02 => Control::Reset,
            0x04 => Control::GetAtr,
            other => Control::Unknown(other),
        }
    }
}

impl From<Control> for u8 {
    fn from(c: Control) -> u8 {
        match c {
            Control::PowerOff => 0x00,
            Control::PowerOn => 0x01,
            Control::Reset => 0x02,
            Control::GetAtr => 0x04,
            Control::Unknown(b) => b,
        }
    }
}

/// What a reader sent to the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Control(Control),
    Apdu(&'a [u8]),
}

impl<'a> Request<'a> {
    /// Classifies a frame payload. An empty payload is not a valid request.
    pub fn parse(payload: &'a [u8]) -> Option<Request<'a>> {
        match payload {
            [] => None,
            [b] => Some(Request::Control(Control::from(*b))),
            apdu => Some(Request::Apdu(apdu)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("payload of {0} bytes does not fit a vpcd frame (max {MAX_PAYLOAD})")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Length prefix and payload in one buffer: vpcd's peer must receive a
/// frame in one segment, or Nagle + delayed ACK add ~40 ms per APDU.
///
/// Frames carry PINs, imported keys and decrypted data, so every buffer
/// that holds one here is wiped when it drops ([`Zeroizing`]).
pub fn encode_frame(payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let len = u16::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    let mut v = Zeroizing::new(Vec::with_capacity(payload.len() + 2));
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    Ok(v)
}

/// Incremental frame decoder for byte streams that arrive in pieces. Its
/// buffer is wiped when the decoder drops, and never reallocated without
/// wiping the old one.
#[derive(Default, Debug)]
pub struct FrameDecoder {
    buf: Zeroizing<Vec<u8>>,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            // Vec's own growth would free the old block unwiped.
            let mut bigger =
                Zeroizing::new(Vec::with_capacity(needed.max(2 * self.buf.capacity())));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's payload, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let [hi, lo, ..] = self.buf[..] else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if self.buf.len() < 2 + len {
            return None;
        }
        let payload = Zeroizing::new(self.buf[2..2 + len].to_vec());
        self.buf.drain(..2 + len);
        Some(payload)
    }

    /// Bytes received that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Turns on TCP_NODELAY and, on Linux, TCP_QUICKACK. QUICKACK resets itself
/// after the kernel sends an ACK, so callers re-arm it before every read.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    quickack(stream);
    Ok(())
}

/// Re-arms TCP_QUICKACK (Linux only; elsewhere a no-op). Errors are
/// ignored: the option is a latency optimisation, never a correctness one.
#[cfg(unix)]
pub fn quickack<S: std::os::fd::AsFd>(stream: &S) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// Windows has no TCP_QUICKACK: nothing to re-arm.
#[cfg(not(unix))]
pub fn quickack<S>(_stream: &S) {}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    quickack(stream);
    let mut len = [0u8; 2];
    match stream.read(&mut len[..1])? {
        0 => return Ok(None),
        _ => {
            quickack(stream);
            stream.read_exact(&mut len[1..])?;
        }
    }
    let mut payload = Zeroizing::new(vec![0u8; usize::from(u16::from_be_bytes(len))]);
    quickack(stream);
    stream.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// What a reader sent, owned: the card side's unit of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Control(Control),
    Apdu(Zeroizing<Vec<u8>>),
}

/// The card side: reads the reader's next message. `Ok(None)` when the
/// reader closed the connection; an empty frame (never sent by vpcd) is an
/// `InvalidData` error.
pub fn read_message(stream: &mut TcpStream) -> io::Result<Option<Message>> {
    let Some(payload) = read_frame(stream)? else {
        return Ok(None);
    };
    match Request::parse(&payload) {
        Some(Request::Control(c)) => Ok(Some(Message::Control(c))),
        Some(Request::Apdu(_)) => Ok(Some(Message::Apdu(payload))),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty vpcd frame",
        )),
    }
}

/// Writes one frame with a single write.
pub fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> Result<(), FrameError> {
    stream.write_all(&encode_frame(payload)?)?;
    Ok(())
}

/// The reader side of a vpcd connection: what vpcd does inside pcscd.
pub struct ReaderConnection {
    stream: TcpStream,
}

impl ReaderConnection {
    pub fn new(stream: TcpStream) -> io::Result<ReaderConnection> {
        tune(&stream)?;
        Ok(ReaderConnection { stream })
    }

    pub fn connect(addr: impl std::net::ToSocketAddrs) -> io::Result<ReaderConnection> {
        ReaderConnection::new(TcpStream::connect(addr)?)
    }

    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    pub fn control(&mut self, c: Control) -> Result<(), FrameError> {
        write_frame(&mut self.stream, &[c.into()])
    }

    fn reply(&mut self) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        match read_frame(&mut self.stream)? {
            Some(p) if !p.is_empty() => Ok(p),
            // An empty reply or a closed stream both mean the card left.
            _ => Err(FrameError::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "card removed",
            ))),
        }
    }

    pub fn atr(&mut self) -> Result<Vec<u8>, FrameError> {
        self.control(Control::GetAtr)?;
        Ok(self.reply()?.to_vec())
    }

    /// Sends a command APDU and returns the response APDU.
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        if apdu.len() < 2 {
            // One byte would be read as a control code by the card.
            return Err(FrameError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an APDU has at least 4 bytes",
            )));
        }
        write_frame(&mut self.stream, apdu)?;
        self.reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut d = FrameDecoder::default();
        let a = encode_frame(&[0x00, 0xA4, 0x04, 0x00]).unwrap();
        let b = encode_frame(&[0x04]).unwrap();
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for byte in &all[..3] {
            d.push(&[*byte]);
            assert_eq!(d.next_frame(), None);
        }
        d.push(&all[3..]);
        assert_eq!(*d.next_frame().unwrap(), vec![0x00, 0xA4, 0x04, 0x00]);
        assert_eq!(
            Request::parse(&d.next_frame().unwrap()),
            Some(Request::Control(Control::GetAtr))
        );
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.pending(), 0);
        assert!(matches!(
            encode_frame(&vec![0; 70000]),
            Err(FrameError::TooLarge(70000))
        ));
        assert_eq!(Request::parse(&[]), None);
        for b in 0..=255u8 {
            assert_eq!(u8::from(Control::from(b)), b);
        }
    }

    #[test]
    fn reader_and_card_over_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let card = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            tune(&s).unwrap();
            let mut seen = Vec::new();
            while let Some(p) = read_frame(&mut s).unwrap() {
                match Request::parse(&p) {
                    Some(Request::Control(Control::GetAtr)) => {
                        write_frame(&mut s, &[0x3B, 0x00]).unwrap()
                    }
                    Some(Request::Control(c)) => seen.push(c),
                    Some(Request::Apdu(a)) => write_frame(&mut s, &[a[1], 0x90, 0x00]).unwrap(),
                    None => break,
                }
            }
            seen
        });
        let mut r = ReaderConnection::connect(addr).unwrap();
        r.control(Control::PowerOn).unwrap();
        assert_eq!(r.atr().unwrap(), vec![0x3B, 0x00]);
        assert_eq!(
            *r.transmit(&[0, 0xFD, 0, 0]).unwrap(),
            vec![0xFD, 0x90, 0x00]
        );
        r.control(Control::PowerOff).unwrap();
        assert!(
            r.transmit(&[0]).is_err(),
            "a 1-byte APDU would be a control"
        );
        drop(r);
        assert_eq!(
            card.join().unwrap(),
            vec![Control::PowerOn, Control::PowerOff]
        );
    }

    #[test]
    fn card_side_reads_messages() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            // Frames split across writes, then a truncated one.
            s.write_all(&[0x00]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            s.write_all(&[0x01, 0x01, 0x00, 0x04, 0x00, 0xFD, 0x00, 0x00])
                .unwrap();
            s.write_all(&[0x00, 0x00]).unwrap();
        });
        let (mut card, _) = listener.accept().unwrap();
        tune(&card).unwrap();
        assert_eq!(
            read_message(&mut card).unwrap(),
            Some(Message::Control(Control::PowerOn))
        );
        assert_eq!(
            read_message(&mut card).unwrap(),
            Some(Message::Apdu(Zeroizing::new(vec![0x00, 0xFD, 0x00, 0x00])))
        );
        assert_eq!(
            read_message(&mut card).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        reader.join().unwrap();
        assert_eq!(read_message(&mut card).unwrap(), None);
    }
}
