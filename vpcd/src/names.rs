//! The names pcscd gives vpcd reader slots, so the host that places cards
//! and the clients that look for them agree.
//!
//! Debian's vsmartcard-vpcd declares one reader entry ("Virtual PCD")
//! whose driver is built with two slots; more slots come from more
//! entries, each with its own FRIENDLYNAME ("Virtual PCD 1", "Virtual PCD
//! 2", ...). pcscd appends the reader's index among readers of the same
//! name (always 00: every entry has its own name) and the slot within the
//! entry.

/// Slots per reader entry in Debian's build of the vpcd driver.
pub const SLOTS_PER_ENTRY: u32 = 2;
/// The name Debian's entry gives its reader.
const STOCK_NAME: &str = "Virtual PCD";

/// The name pcscd gives reader slot `slot` (slot N listens on
/// `DEFAULT_PORT + N`).
pub fn reader_name(slot: u32) -> String {
    format!(
        "{} 00 {:02X}",
        entry_name(slot / SLOTS_PER_ENTRY),
        slot % SLOTS_PER_ENTRY
    )
}

/// The FRIENDLYNAME of reader entry `entry`.
pub fn entry_name(entry: u32) -> String {
    if entry == 0 {
        STOCK_NAME.to_string()
    } else {
        format!("{STOCK_NAME} {entry}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names_follow_the_entries() {
        assert_eq!(reader_name(0), "Virtual PCD 00 00");
        assert_eq!(reader_name(1), "Virtual PCD 00 01");
        assert_eq!(reader_name(2), "Virtual PCD 1 00 00");
        assert_eq!(reader_name(15), "Virtual PCD 7 00 01");
    }
}
