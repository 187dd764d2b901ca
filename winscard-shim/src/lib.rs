//! A virtual smart card resource manager in one library: `winscard.dll` for
//! Windows (MsRdpEx loads it into mstsc.exe, and Windows' own basecsp +
//! msclmd run on top) and a pcsc-lite compatible `libpcsclite.so.1` for
//! Linux (OpenSC and any PC/SC client, no pcscd).
//!
//! All logic is plain Rust in [`shim`] (contexts, readers, handles,
//! transactions, status changes), [`cache`] (the msclmd cache items) and
//! [`config`]; the two ABI modules only translate pointers and integers.
//! They, and the buffer helpers they share, are the only modules allowed
//! `unsafe`.

#![deny(unsafe_code)]

pub mod backend;
pub mod cache;
pub mod config;
pub mod consts;
pub mod error;
pub mod link;
pub mod logging;
pub mod remote;
pub mod shim;

/// The exported pcsc-lite functions, public so in-process benchmarks can
/// call exactly what a C client calls.
#[cfg(not(windows))]
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod abi_pcsclite;
#[allow(unsafe_code)]
mod abi_util;
#[cfg(windows)]
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod abi_windows;

use std::sync::OnceLock;

pub use error::{ScardError, ScardResult};
pub use shim::Shim;

static GLOBAL: OnceLock<Result<Shim, String>> = OnceLock::new();

/// Builds a resource manager from a configuration, opening every card.
/// A card that cannot be opened fails the whole set-up: silently serving
/// fewer cards than configured would only move the error somewhere harder
/// to find.
pub fn shim_from_config(cfg: &config::Config) -> Result<Shim, config::ConfigError> {
    let mut readers = Vec::new();
    for r in &cfg.readers {
        readers.push((r.name.clone(), config::open_backend(&r.source)?));
    }
    Ok(Shim::new(readers, cfg.cache.clone()))
}

/// The process-wide instance the exported functions use, configured from
/// the environment on first use.
pub fn global() -> ScardResult<&'static Shim> {
    let r = GLOBAL.get_or_init(|| {
        let cfg = match config::Config::from_env() {
            Ok(c) => c,
            Err(e) => {
                // Logging may not be configured yet: try anyway with the raw variable.
                let log = std::env::var_os(config::vars::LOG).map(std::path::PathBuf::from);
                logging::init(log.as_deref(), None);
                tracing::error!("configuration: {e}");
                return Err(e.to_string());
            }
        };
        logging::init(cfg.log_file.as_deref(), cfg.log_level.as_deref());
        tracing::info!(
            "winscard-shim {} starting: {} reader(s)",
            env!("CARGO_PKG_VERSION"),
            cfg.readers.len()
        );
        shim_from_config(&cfg).map_err(|e| {
            tracing::error!("opening the cards: {e}");
            e.to_string()
        })
    });
    r.as_ref().map_err(|_| ScardError::NoService)
}
