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

/// How long the card side of a test link waits on a silent peer.
#[cfg(not(windows))]
const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The card side of the link in a thread (what `vreader --listen` does):
/// one connection at a time, every OpenSC process is a new reader
/// connection. Returns the address and the shim's credentials file (in
/// `dir`) paired with this card host. The shim's tests and its
/// round-trip benchmark both use it.
#[cfg(not(windows))]
pub fn serve_over_link(card_path: PathBuf, dir: &Path) -> (String, PathBuf) {
    let (shim, vreader) = winscard::link::generate_pair().unwrap();
    let shim_file = dir.join("shim.pem");
    std::fs::write(&shim_file, shim.as_bytes()).unwrap();
    let config = winscard::link::Credentials::from_pem(&vreader)
        .unwrap()
        .server_config()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        // Another test thread forking a tool may hold a copy of the lock
        // file's descriptor for the instant before its exec: retry briefly.
        let mut tries = 0;
        let mut card = loop {
            match piv_applet::Card::open(&card_path) {
                Ok(c) => break c,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open card: {e}"),
            }
        };
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            let _ = vpcd::tune(&s);
            s.set_read_timeout(Some(LINK_TIMEOUT)).unwrap();
            let Ok(mut tls) = winscard::link::accept(s, &config, LINK_TIMEOUT) else {
                continue;
            };
            card_session_over(&mut card, &mut tls);
        }
    });
    (addr, shim_file)
}
