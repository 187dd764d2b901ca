//! The card-file loader: arbitrary bytes give a card or a clear error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::store;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = store::from_bytes(data, std::path::Path::new("fuzz.json")) {
        let bytes = store::to_bytes(&state);
        store::from_bytes(&bytes, std::path::Path::new("fuzz.json")).expect("saved state loads");
    }
});
