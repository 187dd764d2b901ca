//! The vpcd frame decoder on a byte stream cut into arbitrary chunks.
//!
//! Input: one byte `n`, then `n % 16` chunk sizes, then the stream. The
//! stream is pushed in pieces of those sizes (cycled; 0 pushes an empty
//! piece), taking every whole frame after each push. Checked:
//! - no panic;
//! - the frames and the pending byte count do not depend on the chunking
//!   (same as one push of the whole stream, and as a reference parse);
//! - re-encoding the frames with `encode_frame` gives back exactly the
//!   consumed prefix of the stream;
//! - `Request::parse` is None only for an empty payload, a one-byte payload
//!   is a control code that round trips through u8, longer ones are APDUs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpcd::{encode_frame, Control, FrameDecoder, Request};

/// Frames by direct reading of the length prefixes, and the unused tail.
fn reference(stream: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            break;
        }
        frames.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    (frames, rest.len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, tail)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(tail.len());
    let (sizes, stream) = tail.split_at(n);

    // Chunked.
    let mut dec = FrameDecoder::default();
    let mut chunked = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let s = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0xFF);
        i += 1;
        if s == 0 {
            dec.push(&[]);
        }
        let take = usize::from(s).max(1).min(rest.len());
        dec.push(&rest[..take]);
        rest = &rest[take..];
        while let Some(f) = dec.next_frame() {
            chunked.push(f.to_vec());
        }
    }
    assert!(dec.next_frame().is_none());

    // All at once.
    let mut whole = FrameDecoder::default();
    whole.push(stream);
    let mut frames = Vec::new();
    while let Some(f) = whole.next_frame() {
        frames.push(f.to_vec());
    }

    let (expected, pending) = reference(stream);
    assert_eq!(chunked, expected);
    assert_eq!(frames, expected);
    assert_eq!(dec.pending(), pending);
    assert_eq!(whole.pending(), pending);

    let mut encoded = Vec::new();
    for f in &frames {
        encoded.extend_from_slice(&encode_frame(f).expect("decoded frames fit"));
        match Request::parse(f) {
            None => assert!(f.is_empty()),
            Some(Request::Control(c)) => {
                assert_eq!(f.len(), 1);
                assert_eq!(u8::from(c), f[0]);
                assert_eq!(Control::from(u8::from(c)), c);
            }
            Some(Request::Apdu(a)) => {
                assert!(a.len() >= 2);
                assert_eq!(a, &f[..]);
            }
        }
    }
    assert_eq!(&encoded[..], &stream[..stream.len() - pending]);
});
