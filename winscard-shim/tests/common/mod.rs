//! What the shim's integration tests, benchmark and pcscd example share:
//! the test key and certificate, a card file holding them, and the card
//! side of a vpcd connection. (The benchmark and the example include this
//! file by path, so not every item is used everywhere.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The test RSA-2048 key (PKCS#8 and PKCS#1) and its certificate.
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// A card file in `dir` with the test key and certificate in 9A, everything
/// else at the card's defaults (PIN 123456).
pub fn make_card(dir: &Path) -> PathBuf {
    let path = dir.join("card.json");
    let key = std::fs::read(Path::new(DATA).join("rsa2048.key.pk8.der")).unwrap();
    let cert = std::fs::read(Path::new(DATA).join("rsa2048.cert.der")).unwrap();
    create_card(&path, &key, &cert);
    path
}

/// Creates the card file `path` with the PKCS#8 `key` and its certificate
/// in 9A, everything else at the card's defaults.
pub fn create_card(path: &Path, key: &[u8], cert: &[u8]) -> piv_applet::Card {
    let mut card =
        piv_applet::Card::create(path, &piv_applet::CardOptions::default()).expect("create card");
    let km = piv_applet::keys::KeyMaterial::from_pkcs8_der(key).expect("key");
    card.import_key_and_certificate(
        piv_applet::Slot::AUTHENTICATION,
        km,
        Some(cert),
        piv_applet::PinPolicy::Default,
        piv_applet::TouchPolicy::Default,
    )
    .expect("import key and certificate");
    card
}

/// The shim as built by cargo (this package's cdylib), for the tests
/// that load it as a C library.
#[cfg(target_os = "linux")]
pub fn shim_so() -> PathBuf {
    let p = e2e::artifacts::profile_dir().join("libwinscard.so");
    assert!(
        p.is_file(),
        "{} not built (cargo builds it with the package's lib target)",
        p.display()
    );
    p
}

/// Answers one vpcd connection from the card side until it closes (the
/// owner ends it with `shutdown` on a clone of the stream: a read timeout
/// could cut a frame in half). Not on Windows, where the vpcd crate is not
/// built (make_test_card includes this file there).
#[cfg(not(windows))]
pub fn card_session(
    card: &mut piv_applet::Card,
    s: &mut std::net::TcpStream,
    mut first: Option<std::sync::mpsc::Sender<()>>,
) {
    vpcd::tune(s).unwrap();
    loop {
        let Ok(Some(frame)) = vpcd::read_frame(s) else {
            return;
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        if let Some(r) = answer(card, &frame) {
            if vpcd::write_frame(s, &r).is_err() {
                return;
            }
        }
    }
}

/// What the card side answers to one vpcd frame (`None`: no answer).
#[cfg(not(windows))]
fn answer(card: &mut piv_applet::Card, frame: &[u8]) -> Option<Vec<u8>> {
    match vpcd::Request::parse(frame) {
        Some(vpcd::Request::Control(vpcd::Control::PowerOn)) => {
            card.power_on();
            None
        }
        Some(vpcd::Request::Control(vpcd::Control::PowerOff)) => {
            card.power_off();
            None
        }
        Some(vpcd::Request::Control(vpcd::Control::Reset)) => {
            card.reset();
            None
        }
        Some(vpcd::Request::Control(vpcd::Control::GetAtr)) => Some(card.atr()),
        Some(vpcd::Request::Apdu(apdu)) => Some(card.process(apdu)),
        _ => None,
    }
}

/// [`card_session`] inside an established link (TLS): what `vreader
/// --listen` serves the shim's remote backend.
#[cfg(not(windows))]
pub fn card_session_over(
    card: &mut piv_applet::Card,
    s: &mut (impl std::io::Read + std::io::Write),
) {
    let mut decoder = vpcd::FrameDecoder::default();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(frame) = decoder.next_frame() {
            if let Some(r) = answer(card, &frame) {
                let Ok(bytes) = vpcd::encode_frame(&r) else {
                    return;
                };
                if s.write_all(&bytes).and_then(|()| s.flush()).is_err() {
                    return;
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}
