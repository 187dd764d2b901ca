//! A plain PC/SC client written against the `pcsc` crate, with nothing
//! shim-specific in it: the test rig runs it against our library (as
//! winscard.dll under Wine, as libpcsclite.so.1 on Linux) to show that an
//! unmodified third-party client works. Exits non-zero on any failure.
//!
//! Expects a PIV card with a certificate in slot 9A in the first reader.

use std::ffi::CString;

use piv_applet::client::Client;
use piv_applet::ObjectId;

fn check(cond: bool, what: &str) {
    if !cond {
        eprintln!("pcsc-client: FAILED: {what}");
        std::process::exit(1);
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
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    // Plain PC/SC transmits; the PIV client follows 61xx with GET RESPONSE.
    let mut piv = Client::new(|apdu: &[u8]| tx.transmit(apdu, &mut buf).map(<[u8]>::to_vec));
    let failed = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("pcsc-client: FAILED: {what}: {e}");
        std::process::exit(1)
    };
    piv.select().unwrap_or_else(|e| failed("SELECT PIV", &e));
    let chuid = piv
        .get_data(ObjectId::CHUID)
        .unwrap_or_else(|e| failed("GET DATA CHUID", &e));
    check(chuid.is_some(), "GET DATA CHUID");
    let cert = piv
        .get_data(ObjectId::CERT_PIV_AUTH)
        .unwrap_or_else(|e| failed("GET DATA certificate 9A", &e))
        .unwrap_or_default();
    check(
        cert.len() > 300,
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
