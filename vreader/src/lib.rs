//! `vreader`: plugs virtual PIV cards into readers over the vpcd protocol.
//!
//! In connect mode (the default) each card dials a vpcd reader slot of the
//! local pcscd and redials whenever pcscd restarts, so the card reappears
//! by itself. In listen mode each card waits for a reader to dial it: the
//! winscard shim's remote backend, over the TLS link `vreader pair` sets
//! up, or (with `--insecure-plain-listen`) plain vpcd, e.g. vpcd's reverse
//! mode.

#![forbid(unsafe_code)]

pub mod cli;
pub mod credentials;
pub mod host;
pub mod link_files;
pub mod passphrases;
pub mod paths;
pub mod provision;
pub mod readers;
pub mod secrets;
pub mod slots;
