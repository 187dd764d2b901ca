//! The test support every end-to-end test shares: the rig (one pcscd for
//! the machine, vreader processes plugged into its vpcd slots), running
//! the real client tools, and the checks more than one test makes (the
//! OpenSC suite, signatures verified by openssl).
//!
//! Every test that touches pcscd or the vpcd ports holds [`Rig`], which
//! takes a cross-process lock, so tests from all binaries (and other
//! developers' runs) take turns, and kills its vreader on drop so the slots
//! are free for the next test.
//!
//! The shim's Linux tests use this crate too, so it must never depend on
//! winscard-shim or vreader: a binary that links the shim gets the shim's
//! `SCard*` exports in place of libpcsclite's.

use std::time::Duration;

pub mod artifacts;
pub mod bench;
pub mod card;
pub mod opensc;
pub mod openssl;
pub mod reader;
pub mod rig;
pub mod run;
pub mod ykpiv;

pub use artifacts::{root, vreader_bin};
pub use bench::{bench_machine, floor_card};
pub use card::make_card;
pub use opensc::{pkcs11_sign_and_verify, CertFrom, OpenSc, OPENSC_PKCS11};
pub use reader::{
    card_present, card_state, connect, select_by_rid, transmit, wait_for_card, wait_for_no_card,
    READER0, READER1,
};
pub use rig::{pcscd, read_log, wait_for_log, Farm, Rig, LOCK_FILE};
pub use run::{
    free_port, output_text, require_tool, run, run_ok, run_ok_with, run_with, vreader, vreader_ok,
    KillOnDrop,
};

/// How long the tests wait for what normally takes milliseconds (pcscd
/// seeing a card come or go, a process listening, a log line). Generous: a
/// loaded CI machine with slow fsync can take seconds, and the wait only
/// costs time when something is wrong (the check itself still has to pass).
pub const DEADLINE: Duration = Duration::from_secs(30);
