//! What pcsc-lite says about the vpcd readers, and talking to a card in
//! one with the `pcsc` crate.

use std::ffi::CString;
use std::time::{Duration, Instant};

/// The stock vpcd readers (`vpcd::names::reader_name(0)` and `(1)`, as
/// constants for the many tests that use them).
pub const READER0: &str = "Virtual PCD 00 00";
pub const READER1: &str = "Virtual PCD 00 01";

/// Waits until pcsc-lite reports a card in `reader` (retrying while
/// pcscd cannot answer).
pub fn wait_for_card(reader: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = card_state(reader);
        if matches!(state, Ok(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no card appeared in {reader} within {limit:?} (last: {})",
            describe(&state)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until pcsc-lite reports `reader` empty (pcscd notices a removed
/// card at its next poll, up to ~0.4 s later). A PC/SC error is not an
/// empty reader: it is retried until the deadline.
pub fn wait_for_no_card(reader: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = card_state(reader);
        if matches!(state, Ok(false)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{reader} was not reported empty within {limit:?} (last: {})",
            describe(&state)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether pcsc-lite sees a card in `reader` right now; false also when
/// pcscd cannot answer. To tell "empty" from "unknown", use [`card_state`].
pub fn card_present(reader: &str) -> bool {
    matches!(card_state(reader), Ok(true))
}

/// What pcsc-lite says about `reader` right now: `Ok(true)` for a card,
/// `Ok(false)` for a reader it knows to be empty, and an error when it
/// cannot tell (pcscd down or restarting, the reader not (yet) known or
/// unavailable).
pub fn card_state(reader: &str) -> Result<bool, pcsc::Error> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
    let name = std::ffi::CString::new(reader).unwrap();
    let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::from_millis(0), &mut states)?;
    let state = states[0].event_state();
    if state.contains(pcsc::State::UNKNOWN) {
        Err(pcsc::Error::UnknownReader)
    } else if state.contains(pcsc::State::UNAVAILABLE) {
        Err(pcsc::Error::ReaderUnavailable)
    } else if state.contains(pcsc::State::PRESENT) {
        Ok(true)
    } else if state.contains(pcsc::State::EMPTY) {
        Ok(false)
    } else {
        // Neither flag: pcscd has not settled the reader's state yet.
        Err(pcsc::Error::ReaderUnavailable)
    }
}

/// A [`card_state`] result for a failure message.
pub(crate) fn describe(state: &Result<bool, pcsc::Error>) -> String {
    match state {
        Ok(true) => "card present".into(),
        Ok(false) => "empty".into(),
        Err(e) => format!("PC/SC error: {e}"),
    }
}

/// Connects to the card in `reader` through pcscd (shared, any protocol).
pub fn connect(reader: &str) -> pcsc::Card {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
    let name = CString::new(reader).unwrap();
    ctx.connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .expect("connect")
}

/// Sends one APDU and returns the whole response (data and status word).
pub fn transmit(card: &pcsc::Card, apdu: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    card.transmit(apdu, &mut buf).expect("transmit").to_vec()
}

/// SELECT by the NIST RID alone, the shortest AID the card selects PIV by.
pub fn select_by_rid() -> Vec<u8> {
    let aid = &piv_applet::enums::PIV_AID[..piv_applet::enums::PIV_RID_LEN];
    piv_applet::apdu::build_command(0, 0xA4, 0x04, 0x00, aid, None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stock_reader_constants_are_vpcds_names() {
        assert_eq!(super::READER0, vpcd::names::reader_name(0));
        assert_eq!(super::READER1, vpcd::names::reader_name(1));
    }
}
