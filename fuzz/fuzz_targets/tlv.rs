//! BER-TLV parsing never panics, and what parses re-encodes to the same
//! bytes when the input used minimal lengths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::tlv;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = tlv::parse_all(data) {
        let mut out = Vec::new();
        for t in &items {
            tlv::write(&mut out, t.tag, t.value);
        }
        // Re-parsing our own encoding gives the same items.
        let again = tlv::parse_all(&out).expect("own encoding parses");
        assert_eq!(again, items);
    }
    let _ = tlv::find(data, 0x53);
    let _ = piv_applet::apdu::Command::parse(data);
});
