//! yubico-piv-tool (libykpiv) on the card in reader slot 0, for the tests
//! of Yubico's clients.

use std::process::Output;

use crate::reader::READER0;
use crate::run::{run, run_ok};

/// `yubico-piv-tool -r <reader 0> <args>`, success or not.
pub fn ykpiv(args: &[&str]) -> Output {
    let mut all = vec!["-r", READER0];
    all.extend_from_slice(args);
    run("yubico-piv-tool", &all)
}

/// [`ykpiv`] that must succeed; returns stdout + stderr as text.
pub fn ykpiv_ok(args: &[&str]) -> String {
    let mut all = vec!["-r", READER0];
    all.extend_from_slice(args);
    run_ok("yubico-piv-tool", &all)
}
