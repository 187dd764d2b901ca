//! A plain PC/SC client written against the `pcsc` crate, with nothing
//! shim-specific in it: the test rig runs it against our library (as
//! winscard.dll under Wine, as libpcsclite.so.1 on Linux) to show that an
//! unmodified third-party client works. Exits non-zero on any failure.
//!
//! Expects a PIV card with a certificate in slot 9A in the first reader.

use std::ffi::CString;

fn check(cond: bool, what: &str) {
    if !cond {
        eprintln!("pcsc-client: FAILED: {what}");
        std::process::exit(1);
    }
}

/// Sends an APDU and follows 61xx with GET RESPONSE.
fn exchange(card: &pcsc::Card, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    let mut out = Vec::new();
    let mut cmd = apdu.to_vec();
    loop {
        let r = card.transmit(&cmd, &mut buf).unwrap_or_else(|e| {
            eprintln!("pcsc-client: FAILED: transmit: {e}");
            std::process::exit(1)
        });
        let (data, sw) = r.split_at(r.len() - 2);
        out.extend_from_slice(data);
        if sw[0] == 0x61 {
            cmd = vec![0x00, 0xC0, 0x00, 0x00, sw[1]];
            continue;
        }
        return (out, u16::from_be_bytes([sw[0], sw[1]]));
    }
}

fn main() {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).unwrap_or_else(|e| {
        eprintln!("pcsc-client: FAILED: establish: {e}");
        std::process::exit(1)
    });
    let readers: Vec<CString> = ctx.list_readers_owned().expect("list readers");
    check(!readers.is_empty(), "at least one reader");
    let reader = &readers[0];
    println!("reader: {}", reader.to_string_lossy());

    let mut states = vec![
        pcsc::ReaderState::new(reader.as_c_str(), pcsc::State::UNAWARE),
        pcsc::ReaderState::new(pcsc::PNP_NOTIFICATION(), pcsc::State::UNAWARE),
    ];
    ctx.get_status_change(std::time::Duration::from_secs(1), &mut states)
        .expect("status change");
    check(
        states[0].event_state().contains(pcsc::State::PRESENT),
        "card present",
    );
    check(
        states[0].event_state().contains(pcsc::State::CHANGED),
        "state reported as changed",
    );
    let atr = states[0].atr().to_vec();
    check(!atr.is_empty(), "ATR in the reader state");
    for s in &mut states {
        s.sync_current_state();
    }
    let r = ctx.get_status_change(std::time::Duration::from_millis(200), &mut states);
    check(r == Err(pcsc::Error::Timeout), "no change means a timeout");

    let mut card = ctx
        .connect(reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .expect("connect");
    let status = card.status2_owned().expect("status");
    check(
        status.atr() == atr.as_slice(),
        "SCardStatus ATR equals the reader-state ATR",
    );
    check(status.protocol2() == Some(pcsc::Protocol::T1), "T=1");
    let attr_atr = card
        .get_attribute_owned(pcsc::Attribute::AtrString)
        .expect("get attribute");
    check(attr_atr == atr, "SCARD_ATTR_ATR_STRING equals the ATR");
    let vendor = card
        .get_attribute_owned(pcsc::Attribute::VendorName)
        .expect("vendor name");
    println!(
        "vendor: {}",
        String::from_utf8_lossy(&vendor).trim_end_matches('\0')
    );

    let tx = card.transaction().expect("begin transaction");
    let (_, sw) = exchange(
        &tx,
        &[
            0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00,
            0x00,
        ],
    );
    check(sw == 0x9000, "SELECT PIV");
    let (chuid, sw) = exchange(
        &tx,
        &[
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00,
        ],
    );
    check(
        sw == 0x9000 && chuid.first() == Some(&0x53),
        "GET DATA CHUID",
    );
    let (cert, sw) = exchange(
        &tx,
        &[
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00,
        ],
    );
    check(
        sw == 0x9000 && cert.len() > 300,
        "GET DATA certificate 9A (through GET RESPONSE)",
    );
    println!("certificate object: {} bytes", cert.len());
    tx.end(pcsc::Disposition::LeaveCard)
        .map_err(|(_, e)| e)
        .expect("end transaction");
    card.disconnect(pcsc::Disposition::ResetCard)
        .map_err(|(_, e)| e)
        .expect("disconnect");
    println!("pcsc-client: OK");
}
