//! Prints what msclmd.dll will read from the shim's cache for a card file:
//! every item's name, bytes and decoded meaning, built by the same code the
//! DLL runs (the card is read through APDUs).
//!
//! Usage: cache-items <card.json> [activity]

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: cache-items <card.json> [activity (default 1)]");
        return ExitCode::from(2);
    };
    let activity = match args.next().map(|a| a.to_string_lossy().parse::<u16>()) {
        None => 1,
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            eprintln!("activity: {e}");
            return ExitCode::from(2);
        }
    };
    let mut card = match piv_applet::Card::open(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    card.power_on();
    let opts = winscard::cache::CacheOptions {
        ecc_containers: !std::env::var(winscard::config::vars::CACHE_ECC).is_ok_and(|v| v == "0"),
    };
    match winscard::cache::dump(&mut |apdu| Ok(card.process(apdu)), activity, &opts) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
