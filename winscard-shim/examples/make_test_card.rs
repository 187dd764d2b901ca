//! Creates a card file for the end-to-end tests: the given PKCS#8 key and
//! certificate in slot 9A, everything else at the card's defaults (PIN
//! 123456). Used by scripts/test-windows.sh and the Linux tests.
//!
//! Usage: make_test_card <card.json> <key.pk8.der> <cert.der> [passphrase-file]
//!
//! With a passphrase file the card file is sealed with that passphrase.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, key, cert, passphrase) = match args.as_slice() {
        [p, k, c] => (p, k, c, None),
        [p, k, c, f] => (p, k, c, Some(f)),
        _ => {
            eprintln!(
                "usage: make_test_card <card.json> <key.pk8.der> <cert.der> [passphrase-file]"
            );
            std::process::exit(2);
        }
    };
    let key = std::fs::read(key).expect("read key");
    let cert = std::fs::read(cert).expect("read certificate");
    let _ = std::fs::remove_file(path);
    let mut card = common::create_card(std::path::Path::new(path), &key, &cert);
    if let Some(f) = passphrase {
        let p = piv_applet::Passphrase::from_file(std::path::Path::new(f)).expect("passphrase");
        card.set_passphrase(Some(&p), piv_applet::KdfParams::default())
            .expect("seal the card file");
    }
    println!("{path}");
}
