//! Command and response APDUs (ISO 7816-4 5.1), short and extended length.

use crate::codec::{DecodeError, Reader};
use crate::enums::{Ins, StatusWord};
use zeroize::Zeroizing;

/// A parsed command APDU borrowing its data field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: Ins,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    /// Expected response length; `None` when the command carries no Le.
    /// Le = 00 is already turned into 256 (short) or 65536 (extended).
    pub le: Option<usize>,
    pub extended: bool,
}

impl<'a> Command<'a> {
    /// Parses any of the seven ISO cases. A length that matches none of them
    /// is [`DecodeError::BadLength`], answered with 6700.
    pub fn parse(bytes: &'a [u8]) -> Result<Command<'a>, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = r.take(4)?;
        let (cla, ins, p1, p2) = (header[0], Ins::from(header[1]), header[2], header[3]);
        let body = r.rest();
        let short_le = |b: u8| if b == 0 { 256 } else { usize::from(b) };
        let ext_le = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => 65536,
            n => usize::from(n),
        };
        let (data, le, extended): (&[u8], Option<usize>, bool) = match body.len() {
            0 => (&[], None, false),
            1 => (&[], Some(short_le(body[0])), false),
            _ if body[0] != 0 => {
                let lc = usize::from(body[0]);
                match body.len() - 1 {
                    n if n == lc => (&body[1..], None, false),
                    n if n == lc + 1 => (&body[1..=lc], Some(short_le(body[lc + 1])), false),
                    _ => return Err(DecodeError::BadLength),
                }
            }
            3 => (&[], Some(ext_le(body[1], body[2])), true),
            n if n > 3 => {
                let lc = usize::from(u16::from_be_bytes([body[1], body[2]]));
                if lc == 0 {
                    return Err(DecodeError::BadLength);
                }
                match n - 3 {
                    m if m == lc => (&body[3..], None, true),
                    m if m == lc + 2 => (
                        &body[3..3 + lc],
                        Some(ext_le(body[3 + lc], body[4 + lc])),
                        true,
                    ),
                    _ => return Err(DecodeError::BadLength),
                }
            }
            _ => return Err(DecodeError::BadLength),
        };
        Ok(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
            extended,
        })
    }

    /// Whether CLA asks for command chaining (bit 0x10).
    pub fn is_chained(&self) -> bool {
        self.cla & 0x10 != 0
    }
}

/// Builds the bytes of a command APDU, choosing extended length only when the
/// data does not fit a short APDU. Used by hosts (tests, the shim's cache
/// reader).
pub fn build_command(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<usize>) -> Vec<u8> {
    let mut v = vec![cla, ins, p1, p2];
    let extended = data.len() > 255 || le.is_some_and(|l| l > 256);
    if extended {
        v.push(0);
        if !data.is_empty() {
            v.extend_from_slice(&(data.len() as u16).to_be_bytes());
            v.extend_from_slice(data);
        }
        if let Some(le) = le {
            v.extend_from_slice(&((le % 65536) as u16).to_be_bytes());
        }
    } else {
        if !data.is_empty() {
            v.push(data.len() as u8);
            v.extend_from_slice(data);
        }
        if let Some(le) = le {
            v.push((le % 256) as u8);
        }
    }
    v
}

/// A response APDU: data followed by a status word. The data is wiped
/// when the response drops: it may be a decrypted block, a shared secret or
/// a PIN-protected object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub data: Zeroizing<Vec<u8>>,
    pub sw: StatusWord,
}

impl Response {
    pub fn ok(data: Vec<u8>) -> Response {
        Response::secret(Zeroizing::new(data))
    }

    /// A success whose data was built in a wiped buffer from the start.
    pub fn secret(data: Zeroizing<Vec<u8>>) -> Response {
        Response {
            data,
            sw: StatusWord::Success,
        }
    }

    pub fn status(sw: StatusWord) -> Response {
        Response {
            data: Zeroizing::new(Vec::new()),
            sw,
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(self.data.len() + 2));
        v.extend_from_slice(&self.data);
        v.extend_from_slice(&u16::from(self.sw).to_be_bytes());
        v
    }

    /// Splits response bytes into data and status word.
    pub fn parse(bytes: &[u8]) -> Result<Response, DecodeError> {
        if bytes.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        let (data, sw) = bytes.split_at(bytes.len() - 2);
        Ok(Response {
            data: Zeroizing::new(data.to_vec()),
            sw: StatusWord::from(u16::from_be_bytes([sw[0], sw[1]])),
        })
    }
}

impl From<StatusWord> for Response {
    fn from(sw: StatusWord) -> Self {
        Response::status(sw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_cases() {
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF]).unwrap();
        assert_eq!((c.data.len(), c.le), (0, None));
        let c = Command::parse(&[0, 0xC0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0x20, 0, 0x80, 2, 1, 2]).unwrap();
        assert_eq!((c.data, c.le), (&[1u8, 2][..], None));
        let c = Command::parse(&[0, 0x20, 0, 0x80, 2, 1, 2, 0x10]).unwrap();
        assert_eq!((c.data, c.le), (&[1u8, 2][..], Some(16)));
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0, 0, 0]).unwrap();
        assert_eq!((c.le, c.extended), (Some(65536), true));
        let c = Command::parse(&[0, 0xDB, 0x3F, 0xFF, 0, 0, 2, 9, 9]).unwrap();
        assert_eq!((c.data, c.le), (&[9u8, 9][..], None));
        let c = Command::parse(&[0, 0xDB, 0x3F, 0xFF, 0, 0, 2, 9, 9, 1, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[9u8, 9][..], Some(256)));
    }

    #[test]
    fn bad_lengths() {
        for bad in [
            &[0u8, 1, 2][..],
            &[0, 1, 2, 3, 5, 1],
            &[0, 1, 2, 3, 0, 1],
            &[0, 1, 2, 3, 0, 0, 0, 0],
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:02X?}");
        }
    }

    #[test]
    fn build_then_parse() {
        for (len, le) in [
            (0, None),
            (3, Some(256)),
            (300, None),
            (300, Some(65536)),
            (0, Some(1000)),
        ] {
            let data = vec![7u8; len];
            let b = build_command(0, 0xDB, 0x3F, 0xFF, &data, le);
            let c = Command::parse(&b).unwrap();
            assert_eq!((c.data, c.le), (&data[..], le));
        }
    }
}
