//! Where the passphrase of encrypted card files comes from, for every
//! subcommand that opens one.

use std::path::{Path, PathBuf};

use anyhow::bail;
use piv_applet::{Card, Passphrase, PlainFile, StoreError};
use tracing::warn;

/// Where the passphrase of encrypted card files comes from: the
/// --passphrase-file, else the terminal (asked once, then reused for the
/// other cards of the same command).
pub struct Passphrases {
    file: Option<PathBuf>,
    /// The passphrase once known (from the file or typed).
    pub known: Option<Passphrase>,
    /// Plain card files are refused when a passphrase file is configured,
    /// unless this is set (--allow-plain).
    allow_plain: bool,
}

impl Passphrases {
    pub fn new(file: Option<PathBuf>, allow_plain: bool) -> anyhow::Result<Passphrases> {
        let known = file.as_deref().map(Passphrase::from_file).transpose()?;
        Ok(Passphrases {
            file,
            known,
            allow_plain,
        })
    }

    /// Opens a card file, plain or encrypted. A configured passphrase file
    /// means the cards are expected encrypted: a plain one is refused
    /// unless --allow-plain. A passphrase typed for an earlier card says
    /// nothing about this one, so it does not make plain files suspect.
    pub fn open(&mut self, path: impl AsRef<Path>) -> anyhow::Result<Card> {
        let plain = if self.file.is_some() && !self.allow_plain {
            PlainFile::Refuse
        } else {
            PlainFile::Allow
        };
        self.open_with_policy(path.as_ref(), plain)
    }

    pub fn open_with_policy(&mut self, path: &Path, plain: PlainFile) -> anyhow::Result<Card> {
        let card = match Card::open_with_policy(path, self.known.as_ref(), plain) {
            Err(StoreError::Passphrase { .. }) if self.known.is_none() && stdin_is_terminal() => {
                let p = prompt(&format!("passphrase for {}: ", path.display()))?;
                let card = Card::open_with_policy(path, Some(&p), plain)?;
                self.known = Some(p);
                card
            }
            Err(e @ StoreError::Passphrase { .. }) if self.known.is_none() => {
                bail!("{e} (give --passphrase-file FILE or set $VREADER_PASSPHRASE_FILE)")
            }
            Err(e @ StoreError::NotSealed { .. }) => {
                bail!("{e}; give --allow-plain to use it as it is")
            }
            other => other?,
        };
        if self.file.is_some() && !card.is_sealed() {
            warn!(
                "{}: the card file is not encrypted; the passphrase is not used",
                path.display()
            );
        }
        Ok(card)
    }

    /// A passphrase for encrypting: from `file`, else asked twice.
    pub fn new_passphrase(file: Option<&Path>) -> anyhow::Result<Passphrase> {
        if let Some(f) = file {
            return Ok(Passphrase::from_file(f)?);
        }
        if !stdin_is_terminal() {
            bail!("no passphrase: give a passphrase file, or run on a terminal to type one");
        }
        let first = zeroize::Zeroizing::new(rpassword::prompt_password("new passphrase: ")?);
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("new passphrase again: ")?);
        if first.is_empty() {
            bail!("the passphrase is empty");
        }
        if *first != *again {
            bail!("the two passphrases differ");
        }
        Ok(Passphrase::new(first.as_bytes().to_vec()))
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

pub fn prompt(text: &str) -> anyhow::Result<Passphrase> {
    let typed = zeroize::Zeroizing::new(rpassword::prompt_password(text)?);
    Ok(Passphrase::new(typed.as_bytes().to_vec()))
}
