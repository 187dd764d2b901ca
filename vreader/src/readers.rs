//! Enough vpcd readers in pcscd for many cards: the reader.conf entries,
//! and the driver copies they need (the names pcscd gives their slots are
//! in `vpcd::names`).
//!
//! Debian's vsmartcard-vpcd declares one reader (`/etc/reader.conf.d/vpcd`)
//! whose driver is built with two slots, ports 35963 and 35964. More cards
//! need more reader entries, each two ports further on. Each extra entry
//! needs its own copy of the driver file: the driver keeps its connections
//! in a table indexed by slot number alone, and pcscd loads a library file
//! once however many entries name it, so two entries sharing one file
//! would overwrite each other's slots. pcscd serves at most 16 readers
//! (`PCSCLITE_MAX_READERS_CONTEXTS`), so 16 slots in all.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vpcd::names::{entry_name, reader_name, SLOTS_PER_ENTRY};

/// The most readers one pcscd serves.
pub const PCSCD_MAX_READERS: u32 = 16;
/// The driver as Debian installs it.
pub const STOCK_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// Where `--install` writes the entries (pcscd reads every file there).
pub const DEFAULT_CONF: &str = "/etc/reader.conf.d/virtual-piv";
/// Where `--install` puts the driver copies.
pub const DEFAULT_DRIVER_DIR: &str = "/usr/local/lib/virtual-piv/vpcd";

/// What to write for `count` card slots from port `base_port` on.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The reader.conf text.
    pub conf: String,
    /// The driver copies the entries name, to be made before pcscd reads
    /// the text.
    pub copies: Vec<PathBuf>,
}

/// The entries that give pcscd readers for slots `0..count`. Without
/// `standalone`, the first entry is left to Debian's own file; with it,
/// the text is a whole reader.conf for `pcscd -c FILE`, whose first entry
/// uses `driver` itself.
pub fn plan(
    count: u32,
    base_port: u16,
    standalone: bool,
    driver: &Path,
    driver_dir: &Path,
) -> anyhow::Result<Plan> {
    if count == 0 || count > PCSCD_MAX_READERS {
        bail!("{count} slots: pcscd serves 1 to {PCSCD_MAX_READERS} readers");
    }
    // pcscd runs from its own directory, and its reader.conf values are
    // single words: a relative path would point elsewhere, a space, quote,
    // '#' or line break would cut the value or start another entry.
    let driver = conf_path(driver)?;
    let driver_dir = conf_path(driver_dir)?;
    let entries = count.div_ceil(SLOTS_PER_ENTRY);
    let last_port = u32::from(base_port) + entries * SLOTS_PER_ENTRY - 1;
    if last_port > u32::from(u16::MAX) {
        bail!("{count} slots from port {base_port} go past port 65535");
    }
    let mut conf = format!(
        "# vpcd readers for {count} virtual PIV cards, written by `vreader readers`.\n\
         # Slot N listens on port {base_port} + N. Each entry below has its own copy\n\
         # of the vpcd driver: entries sharing one driver file would overwrite each\n\
         # other's slots. Copy the driver again after upgrading vsmartcard-vpcd\n\
         # (`vreader readers --install` does both), then restart pcscd.\n"
    );
    if !standalone {
        let _ = writeln!(
            conf,
            "# Slots 0 and 1 are the reader of Debian's /etc/reader.conf.d/vpcd."
        );
    }
    let mut copies = Vec::new();
    for entry in 0..entries {
        if entry == 0 && !standalone {
            continue;
        }
        let driver = if entry == 0 {
            driver.to_path_buf()
        } else {
            let copy = driver_dir.join(format!("libifdvpcd-{entry}.so"));
            copies.push(copy.clone());
            copy
        };
        let port = u32::from(base_port) + entry * SLOTS_PER_ENTRY;
        let _ = write!(
            conf,
            "\n# slots {first}-{last}: {a} and {b}\n\
             FRIENDLYNAME \"{name}\"\n\
             DEVICENAME   /dev/null:0x{port:04X}\n\
             LIBPATH      {driver}\n\
             CHANNELID    0x{port:04X}\n",
            first = entry * SLOTS_PER_ENTRY,
            last = entry * SLOTS_PER_ENTRY + SLOTS_PER_ENTRY - 1,
            a = reader_name(entry * SLOTS_PER_ENTRY),
            b = reader_name(entry * SLOTS_PER_ENTRY + 1),
            name = entry_name(entry),
            driver = driver.display(),
        );
    }
    Ok(Plan { conf, copies })
}

/// Writes the driver copies (from `driver`) and then the conf file, each
/// atomically, so pcscd never reads an entry whose driver is half written.
pub fn install(plan: &Plan, conf: &Path, driver: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(driver).with_context(|| {
        format!(
            "cannot read the vpcd driver {} (is vsmartcard-vpcd installed?)",
            driver.display()
        )
    })?;
    // Every directory is checked before anything is written.
    let files = plan.copies.iter().map(PathBuf::as_path).chain([conf]);
    for dir in files.filter_map(Path::parent) {
        // A bare file name is in the current directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        create_dir(dir)?;
        only_owner_writes(dir)?;
    }
    for copy in &plan.copies {
        write_atomically(copy, &bytes)?;
    }
    write_atomically(conf, plan.conf.as_bytes())
}

/// `path` made absolute, if it can stand as a reader.conf value.
fn conf_path(path: &Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    match abs.to_str() {
        Some(s)
            if !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '#') =>
        {
            Ok(abs)
        }
        _ => bail!(
            "{}: pcscd's reader.conf cannot name a path with spaces, quotes, '#', \
             line breaks or non-UTF-8 bytes",
            path.display()
        ),
    }
}

/// Whatever the umask, directories made here are writable by their owner
/// only.
fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// pcscd runs as root, reads the entries and loads the driver copies they
/// name: whoever can replace one of those files, or rename a directory on
/// the way to them, chooses code for pcscd to run. So `dir` and every
/// directory above it must belong to root or to whoever runs this and be
/// writable by no one else, except that a sticky directory above (such
/// as /tmp) is allowed, since others cannot rename what is in it.
fn only_owner_writes(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let given =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let real = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    // The owner of /proc/self is this process's effective user.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    // Both the path as given (a symlink on it could be re-pointed) and
    // where it leads.
    let ancestors = given
        .ancestors()
        .enumerate()
        .chain(real.ancestors().enumerate());
    for (i, d) in ancestors {
        let m = std::fs::metadata(d).with_context(|| format!("cannot read {}", d.display()))?;
        let mode = m.mode();
        let others_write = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if m.uid() != 0 && Some(m.uid()) != me {
            bail!(
                "{} belongs to user {}: pcscd (root) would load a driver or read entries                  that user could replace; choose a directory owned by root",
                d.display(),
                m.uid()
            );
        }
        if others_write && (i == 0 || !sticky) {
            bail!(
                "{} is writable by other users (mode {:o}): pcscd (root) would load a driver                  or read entries they could replace; choose a directory only its owner can write",
                d.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

/// Readable by everyone (pcscd may run as its own user), written by
/// rename so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        // A name left over (or planted: create_new does not follow a
        // symlink) is removed, not written through.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_slots_add_seven_entries_to_debians_one() {
        let p = plan(16, 35963, false, Path::new(STOCK_DRIVER), Path::new("/d")).unwrap();
        assert_eq!(p.copies.len(), 7);
        assert_eq!(p.conf.matches("FRIENDLYNAME").count(), 7);
        assert!(p.conf.contains(
            "DEVICENAME   /dev/null:0x8C7D\nLIBPATH      /d/libifdvpcd-1.so\nCHANNELID    0x8C7D"
        ));
        assert!(p
            .conf
            .contains("FRIENDLYNAME \"Virtual PCD 7\"\nDEVICENAME   /dev/null:0x8C89"));
        assert!(!p.conf.contains(STOCK_DRIVER));
        // Odd counts round up to whole entries.
        assert_eq!(
            plan(3, 35963, false, Path::new(STOCK_DRIVER), Path::new("/d"))
                .unwrap()
                .copies
                .len(),
            1
        );
        // Two slots need nothing beyond Debian's entry.
        let p = plan(2, 35963, false, Path::new(STOCK_DRIVER), Path::new("/d")).unwrap();
        assert!(p.copies.is_empty() && !p.conf.contains("FRIENDLYNAME"));
    }

    #[test]
    fn standalone_includes_the_stock_entry() {
        let p = plan(4, 35963, true, Path::new(STOCK_DRIVER), Path::new("/d")).unwrap();
        assert_eq!(p.copies, [PathBuf::from("/d/libifdvpcd-1.so")]);
        assert!(p.conf.contains(&format!(
            "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME   /dev/null:0x8C7B\nLIBPATH      {STOCK_DRIVER}"
        )));
    }

    #[test]
    fn refusals() {
        let (s, d) = (Path::new(STOCK_DRIVER), Path::new("/d"));
        assert!(plan(0, 35963, false, s, d).is_err());
        assert!(plan(17, 35963, false, s, d).is_err());
        assert!(plan(4, 65534, true, s, d).is_err());
        let e = plan(4, 35963, false, s, Path::new("/a b")).unwrap_err();
        assert!(e.to_string().contains("/a b: pcscd's reader.conf"), "{e}");
        assert!(plan(4, 35963, true, Path::new("/x\nLIBPATH /evil"), d).is_err());
        assert!(plan(4, 35963, false, s, Path::new("/d#")).is_err());
    }

    #[test]
    fn relative_paths_are_written_absolute() {
        let p = plan(4, 35963, false, Path::new(STOCK_DRIVER), Path::new("d")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(p.copies, vec![cwd.join("d/libifdvpcd-1.so")]);
        assert!(p.conf.contains(&format!(
            "LIBPATH      {}",
            cwd.join("d/libifdvpcd-1.so").display()
        )));
    }

    #[test]
    fn install_writes_copies_and_conf() {
        let dir = tempfile::tempdir().unwrap();
        let driver = dir.path().join("driver.so");
        std::fs::write(&driver, b"\x7fELF driver").unwrap();
        let p = plan(6, 35963, true, &driver, &dir.path().join("drivers")).unwrap();
        let conf = dir.path().join("etc/reader.conf");
        install(&p, &conf, &driver).unwrap();
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), p.conf);
        for c in &p.copies {
            assert_eq!(std::fs::read(c).unwrap(), b"\x7fELF driver");
        }
        let e = install(&p, &conf, &dir.path().join("missing.so")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.so"), "{e:#}");
    }

    #[test]
    fn install_refuses_directories_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let driver = dir.path().join("driver.so");
        std::fs::write(&driver, b"\x7fELF driver").unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Driver copies in a world-writable directory: refused, named.
        let p = plan(6, 35963, false, &driver, &open).unwrap();
        let e = install(&p, &dir.path().join("reader.conf"), &driver).unwrap_err();
        assert!(
            format!("{e:#}").contains("writable by other users"),
            "{e:#}"
        );
        assert!(
            format!("{e:#}").contains(&open.display().to_string()),
            "{e:#}"
        );
        assert!(p.copies.iter().all(|c| !c.exists()));
        // Entries below one: refused too, even with the copies elsewhere.
        let p = plan(6, 35963, false, &driver, &dir.path().join("drivers")).unwrap();
        let e = install(&p, &open.join("sub/reader.conf"), &driver).unwrap_err();
        assert!(
            format!("{e:#}").contains("writable by other users"),
            "{e:#}"
        );
        // The same directory, writable by its owner only: accepted.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        install(&p, &open.join("sub/reader.conf"), &driver).unwrap();
    }
}
