//! The log file named by `VIRTUAL_PIV_LOG`. The DLL lives inside someone
//! else's process (mstsc.exe), so the file is the only place its story can
//! be told. APDUs go through piv-applet's Redactor; configuration secrets
//! are never formatted at all.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// The level when `VIRTUAL_PIV_LOG_LEVEL` is unset: connections, card
/// insertions and errors, but no APDUs (they are redacted at `debug`, yet
/// their headers, lengths and public data still show what a user does).
pub const DEFAULT_LEVEL: &str = "info";

/// Installs the file logger once per process; silently does nothing when no
/// file is configured, the file cannot be opened or the host process already
/// has a global subscriber.
pub fn init(file: Option<&std::path::Path>, level: Option<&str>) {
    let Some(path) = file else { return };
    let Ok(f) = open_private(path) else {
        return;
    };
    let filter = EnvFilter::try_new(level.unwrap_or(DEFAULT_LEVEL))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(f))
        .with_ansi(false)
        .with_thread_ids(true)
        .with_env_filter(filter)
        .try_init();
}

/// Opens the log for appending. On Unix a new file is created 0600 (only
/// its owner reads what the host process did with its card); an existing
/// file keeps its mode, since someone chose it. On Windows the file
/// inherits its folder's ACL, as every file the host process writes.
pub fn open_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn a_new_log_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.log");
        drop(super::open_private(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
