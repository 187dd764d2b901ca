//! Writing the link credentials of a new pairing (`vreader pair`); the
//! format and the TLS setup are the shim's `link` module, shared by both
//! sides.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Writes `shim.pem` and `vreader.pem` into `dir`; returns their paths
/// (shim's first). Refuses to replace a pairing unless `force`: the copy
/// of shim.pem the shim has would silently stop working.
pub fn pair(dir: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let shim = dir.join(winscard::link::SHIM_FILE);
    let vreader = dir.join(winscard::link::VREADER_FILE);
    if !force {
        if let Some(p) = [&shim, &vreader].into_iter().find(|p| p.exists()) {
            bail!(
                "{}: a pairing exists; give --force to replace it (the shim then needs the new {})",
                p.display(),
                winscard::link::SHIM_FILE
            );
        }
    }
    private_dir(dir)?;
    let (shim_pem, vreader_pem) = winscard::link::generate_pair().map_err(anyhow::Error::msg)?;
    write_private(&vreader, &vreader_pem)?;
    write_private(&shim, &shim_pem)?;
    Ok((shim, vreader))
}

/// Creates `dir` (and its parents) readable by the owner only; an
/// existing directory is left as it is (the files are private anyway).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("{}: cannot create the directory", dir.display()))
}

/// Writes a file only its owner can read (mode 0600 also when replacing
/// one: `open` keeps the mode of an existing file).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("{}: cannot make it private", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_writes_private_files_and_keeps_an_existing_pairing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("link");
        let (shim, vreader) = pair(&dir, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [&shim, &vreader] {
                let mode = std::fs::metadata(p).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", p.display());
            }
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let before = std::fs::read(&shim).unwrap();
        let e = pair(&dir, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(&shim).unwrap(), before);
        pair(&dir, true).unwrap();
        assert_ne!(std::fs::read(&shim).unwrap(), before);
        winscard::link::Credentials::load(&shim).unwrap();
        winscard::link::Credentials::load(&vreader).unwrap();
    }
}
