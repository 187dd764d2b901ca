//! A software PIV card: SP 800-73-4 with the YubiKey 5.7 extensions.
//!
//! The card is a pure state machine: [`Card::process`] takes command APDU
//! bytes and returns response bytes. It does no I/O except through its
//! state [`store`], which writes every change atomically before the card
//! answers, so a crash at any instant leaves a loadable card.

#![forbid(unsafe_code)]

pub mod access;
pub mod apdu;
pub mod card;
pub mod client;
pub mod codec;
pub mod credentials;
pub mod device;
pub mod ec_key;
pub mod enums;
pub mod keys;
pub mod mgmt;
pub mod oid;
pub mod redact;
pub mod refusal;
pub mod rsa_key;
pub mod sealed;
pub mod sm;
pub mod state;
pub mod store;
pub mod tlv;
pub mod x509;

pub use card::{Card, CardError, CardOptions, TouchMode};
pub use enums::{AlgorithmId, KeyRef, ObjectId, PinPolicy, Slot, StatusWord, TouchPolicy};
pub use redact::Redactor;
pub use sealed::{KdfParams, Passphrase};
pub use store::{PlainFile, StoreError};
