//! BER-TLV as PIV uses it (SP 800-73-4 part 1, appendix; ISO 7816-4 5.2).
//!
//! Tags are 1 to 3 bytes (multi-byte when the low five bits of the first byte
//! are all set), lengths use the definite short or long form up to 3 length
//! bytes. OpenSC rejects the SIMPLE-TLV `FF xx xx` length form, so encoding
//! always uses BER.

use crate::codec::{DecodeError, Reader};

/// One TLV borrowed from its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u32,
    pub value: &'a [u8],
}

/// Reads a BER tag (1 to 3 bytes).
pub fn read_tag(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    let first = r.u8()?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        for i in 0.. {
            if i == 2 {
                return Err(DecodeError::BadTag);
            }
            let b = r.u8()?;
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Ok(tag)
}

/// Reads a BER definite length.
pub fn read_len(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let first = r.u8()?;
    match first {
        0x00..=0x7F => Ok(usize::from(first)),
        0x81..=0x83 => {
            let n = usize::from(first & 0x7F);
            let bytes = r.take(n)?;
            Ok(bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
        }
        _ => Err(DecodeError::BadLength),
    }
}

/// Reads one TLV.
pub fn read_tlv<'a>(r: &mut Reader<'a>) -> Result<Tlv<'a>, DecodeError> {
    let tag = read_tag(r)?;
    let len = read_len(r)?;
    let value = r.take(len)?;
    Ok(Tlv { tag, value })
}

/// Parses a buffer that must consist of whole TLVs only.
pub fn parse_all(data: &[u8]) -> Result<Vec<Tlv<'_>>, DecodeError> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(read_tlv(&mut r)?);
    }
    Ok(out)
}

/// Parses one TLV that must fill the buffer exactly.
pub fn parse_one(data: &[u8]) -> Result<Tlv<'_>, DecodeError> {
    let mut r = Reader::new(data);
    let t = read_tlv(&mut r)?;
    r.finish()?;
    Ok(t)
}

/// The value of the first TLV with `tag` among the top-level TLVs of `data`.
pub fn find(data: &[u8], tag: u32) -> Option<&[u8]> {
    parse_all(data)
        .ok()?
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value)
}

/// Appends a BER length.
pub fn write_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
}

/// Appends a tag (1 to 3 bytes, no leading zero bytes).
pub fn write_tag(out: &mut Vec<u8>, tag: u32) {
    let b = tag.to_be_bytes();
    let skip = b.iter().take(3).take_while(|x| **x == 0).count();
    out.extend_from_slice(&b[skip..]);
}

/// Appends a whole TLV.
pub fn write(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    write_tag(out, tag);
    write_len(out, value.len());
    out.extend_from_slice(value);
}

/// A TLV as a fresh vector.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 6);
    write(&mut v, tag, value);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1234, 0xFFFF, 0x10000] {
            let value = vec![0xAB; len];
            let enc = encode(0x5FC105, &value);
            let t = parse_one(&enc).unwrap();
            assert_eq!(t.tag, 0x5FC105);
            assert_eq!(t.value.len(), len);
        }
        assert_eq!(encode(0x70, &[0; 0x80])[..3], [0x70, 0x81, 0x80]);
    }

    #[test]
    fn multi_byte_tags() {
        assert_eq!(parse_one(&[0x7F, 0x49, 0x00]).unwrap().tag, 0x7F49);
        assert_eq!(parse_one(&[0x5F, 0xC1, 0x02, 0x00]).unwrap().tag, 0x5FC102);
        assert_eq!(
            parse_one(&[0x5F, 0xC1, 0x82, 0x01, 0x00]),
            Err(DecodeError::BadTag)
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse_all(&[0x53]), Err(DecodeError::Truncated));
        assert_eq!(parse_all(&[0x53, 0x05, 0x00]), Err(DecodeError::Truncated));
        assert_eq!(
            parse_all(&[0x53, 0x84, 0, 0, 0, 1]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(parse_all(&[0x53, 0x80]), Err(DecodeError::BadLength));
        assert_eq!(
            parse_one(&[0x53, 0x00, 0x00]),
            Err(DecodeError::TrailingData)
        );
    }
}
