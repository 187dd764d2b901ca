//! Secrets given to a command (a new PIN, PUK or management key): from a
//! file, an environment variable or the terminal, so that they stay out of
//! the process list (`/proc/*/cmdline`, readable by every local user) and
//! shell history. The command-line form still works, with a warning.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// Where one secret of a command may come from.
pub struct SecretArg {
    /// What it is, for prompts and errors ("the new PIN").
    pub what: &'static str,
    /// The option carrying it on the command line (`--new-pin`).
    pub flag: &'static str,
    /// The option naming a file that holds it (`--new-pin-file`).
    pub file_flag: &'static str,
    /// The environment variable holding it (`VREADER_NEW_PIN`).
    pub env: &'static str,
}

impl SecretArg {
    /// The secret: from the command line (with a warning), the file, the
    /// environment variable, else asked twice on the terminal.
    pub fn get(
        &self,
        argv: Option<String>,
        file: Option<PathBuf>,
    ) -> anyhow::Result<Zeroizing<String>> {
        self.resolve(
            argv,
            file.as_deref(),
            std::env::var(self.env).ok(),
            std::io::IsTerminal::is_terminal(&std::io::stdin()),
        )
    }

    fn resolve(
        &self,
        argv: Option<String>,
        file: Option<&Path>,
        env: Option<String>,
        terminal: bool,
    ) -> anyhow::Result<Zeroizing<String>> {
        if let Some(v) = argv {
            tracing::warn!(
                "{} on the command line is visible to other local users (process list) and kept \
                 in shell history: prefer {} FILE, ${} or the prompt",
                self.flag,
                self.file_flag,
                self.env
            );
            return Ok(Zeroizing::new(v));
        }
        if let Some(f) = file {
            return read_first_line(f);
        }
        if let Some(v) = env.filter(|v| !v.is_empty()) {
            return Ok(Zeroizing::new(v));
        }
        if !terminal {
            bail!(
                "no value for {}: give {} FILE or set ${} (or run on a terminal to type it)",
                self.what,
                self.file_flag,
                self.env
            );
        }
        let first = Zeroizing::new(rpassword::prompt_password(format!("{}: ", self.what))?);
        let again = Zeroizing::new(rpassword::prompt_password(format!(
            "{} again: ",
            self.what
        ))?);
        if *first != *again {
            bail!("the two entries of {} differ", self.what);
        }
        Ok(first)
    }
}

/// The first line of a secret file, without its line break.
pub fn read_first_line(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the file", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: SecretArg = SecretArg {
        what: "the new PIN",
        flag: "--new-pin",
        file_flag: "--new-pin-file",
        env: "VREADER_NEW_PIN",
    };

    #[test]
    fn argv_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "13572468\nignored\n").unwrap();
        let env = Some("24681357".to_string());
        let got = |a: Option<&str>, file: Option<&Path>, env: Option<String>| {
            PIN.resolve(a.map(str::to_string), file, env, false)
                .map(|v| v.to_string())
        };
        assert_eq!(
            got(Some("11223344"), None, env.clone()).unwrap(),
            "11223344"
        );
        assert_eq!(got(None, Some(&f), env.clone()).unwrap(), "13572468");
        assert_eq!(got(None, None, env).unwrap(), "24681357");
        let err = got(None, None, None).unwrap_err().to_string();
        assert!(
            err.contains("--new-pin-file") && err.contains("VREADER_NEW_PIN"),
            "{err}"
        );
        let err = got(None, Some(&dir.path().join("missing")), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
