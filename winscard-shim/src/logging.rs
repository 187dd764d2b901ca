//! The log file named by `VIRTUAL_PIV_LOG`. The DLL lives inside someone
//! else's process (mstsc.exe), so the file is the only place its story can
//! be told. APDUs go through piv-applet's Redactor; configuration secrets
//! are never formatted at all.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the file logger once per process; silently does nothing when no
/// file is configured, the file cannot be opened or the host process already
/// has a global subscriber.
pub fn init(file: Option<&std::path::Path>, level: Option<&str>) {
    let Some(path) = file else { return };
    let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let filter =
        EnvFilter::try_new(level.unwrap_or("debug")).unwrap_or_else(|_| EnvFilter::new("debug"));
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(f))
        .with_ansi(false)
        .with_thread_ids(true)
        .with_env_filter(filter)
        .try_init();
}
