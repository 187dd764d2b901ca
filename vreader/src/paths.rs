//! Where `vreader run` keeps the default card.

use std::path::PathBuf;

/// `$XDG_DATA_HOME/virtual-piv/card.json`, else
/// `~/.local/share/virtual-piv/card.json`, else `./virtual-piv-card.json`.
pub fn default_card_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("virtual-piv").join("card.json");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/virtual-piv/card.json");
    }
    PathBuf::from("virtual-piv-card.json")
}
