//! The card-file loader: arbitrary bytes give a card or a clear error,
//! never a panic. Sealed (passphrase-encrypted) envelopes go through the
//! envelope parser and decryption with the passphrase `fuzz` when their
//! Argon2id settings are cheap enough to fuzz (the loader accepts up to
//! 4 GiB, which would only measure Argon2); every card that loads must
//! survive a save and a seal/open round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv_applet::sealed::{self, SealingKey};
use piv_applet::{store, KdfParams, Passphrase};

const CHEAP: KdfParams = KdfParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

fn cheap_enough(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return true; // not JSON: the parser refuses it before any KDF
    };
    let kdf = &v["kdf"];
    let at_most = |k: &str, max: u64| kdf[k].as_u64().is_none_or(|n| n <= max);
    at_most("memory_kib", 64) && at_most("iterations", 2) && at_most("parallelism", 2)
}

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.json");
    let passphrase = Passphrase::new(b"fuzz".to_vec());
    let state = if sealed::is_sealed(data) {
        if !cheap_enough(data) {
            return;
        }
        match SealingKey::open(data, &passphrase, path) {
            Ok((_, plain)) => store::from_bytes(&plain, path).ok(),
            Err(_) => None,
        }
    } else {
        store::from_bytes(data, path).ok()
    };
    if let Some(state) = state {
        let bytes = store::to_bytes(&state);
        store::from_bytes(&bytes, path).expect("saved state loads");
        let key = SealingKey::new(&passphrase, CHEAP).expect("cheap settings are valid");
        let (_, plain) = SealingKey::open(&key.seal(&bytes), &passphrase, path)
            .expect("a sealed card opens with its passphrase");
        assert_eq!(*plain, *bytes, "seal/open round trip");
    }
});
