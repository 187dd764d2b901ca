//! The shim's remote backend gives nothing to a card host
//! it is not paired with. A fake card host that speaks plain vpcd (what
//! any local user can start on the port while vreader is not listening)
//! must receive no APDU and no PIN, and the shim must say why it refused.
//! Apart from making the pairing, only the configuration API is used, so
//! the test also runs against a shim without the link (where it fails: the
//! fake gets the PIN).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PIN: [u8; 6] = *b"123456";

/// Answers like a vpcd card (ATR for 04, 90 00 for any APDU) and records
/// every byte it receives; hangs up on bytes that stay unparseable.
fn fake_card_host(received: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut decoder = vpcd::FrameDecoder::default();
            let mut buf = [0u8; 4096];
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                received.lock().unwrap().extend_from_slice(&buf[..n]);
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame() {
                    let reply: &[u8] = match frame.as_slice() {
                        [4] => &[0x3B, 0x80, 0x80, 0x01, 0x01],
                        [_] => continue,
                        _ => &[0x90, 0x00],
                    };
                    let _ = s.write_all(&vpcd::encode_frame(reply).unwrap());
                }
            }
        }
    });
    addr
}

/// Log lines, captured for the duration of one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_remote_backend_sends_no_pin_to_an_unpaired_card_host() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let addr = fake_card_host(received.clone());
    // A real pairing exists; the fake is simply not its other side.
    let dir = tempfile::tempdir().unwrap();
    let shim_file = dir.path().join("shim.pem");
    let (shim, _vreader) = winscard::link::generate_pair().unwrap();
    std::fs::write(&shim_file, shim.as_bytes()).unwrap();

    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let vars = [
        ("VIRTUAL_PIV_REMOTE", addr.clone()),
        ("VIRTUAL_PIV_LINK", shim_file.display().to_string()),
    ];
    let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let config = winscard::config::Config::from_lookup(&lookup).unwrap();
    let mut card = winscard::config::open_backend(&config.readers[0].source).unwrap();

    let mut verify = vec![0x00, 0x20, 0x00, 0x80, 0x08];
    verify.extend_from_slice(&PIN);
    verify.extend_from_slice(&[0xFF, 0xFF]);
    assert!(
        !card.poll_present(),
        "an unpaired card host counts as a card"
    );
    assert!(card.power_on().is_err());
    assert!(card.transmit(&verify).is_err());

    let got = received.lock().unwrap().clone();
    assert!(
        !got.windows(PIN.len()).any(|w| w == PIN)
            && !got.windows(5).any(|w| w == [0x00, 0x20, 0x00, 0x80, 0x08]),
        "the fake card host received {}",
        hex::encode(&got)
    );
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("WARN") && text.contains(&addr) && text.contains("refused"),
        "no clear refusal in the shim's log:\n{text}"
    );
}
