//! Creates a card file for the end-to-end tests: the given PKCS#8 key and
//! certificate in slot 9A, everything else at the card's defaults (PIN
//! 123456). Used by scripts/test-windows.sh and the Linux tests.
//!
//! Usage: make_test_card <card.json> <key.pk8.der> <cert.der> [passphrase-file]
//!        make_test_card --slots <card.json> <dir>
//!
//! With a passphrase file the card file is sealed with that passphrase.
//! With `--slots`, every key slot whose `<dir>/<slot>.key.pk8.der` and
//! `<dir>/<slot>.cert.der` exist (slot in lowercase hex: 9a, 82...) gets
//! that key and certificate; the others stay empty.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path, dir] = args.as_slice() {
        if flag == "--slots" {
            slots(std::path::Path::new(path), std::path::Path::new(dir));
            println!("{path}");
            return;
        }
    }
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

/// A card with a key and certificate in every slot `dir` has files for.
fn slots(path: &std::path::Path, dir: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let mut card =
        piv_applet::Card::create(path, &piv_applet::CardOptions::default()).expect("create card");
    for slot in piv_applet::Slot::piv() {
        let r = slot.key_ref();
        let (Ok(key), Ok(cert)) = (
            std::fs::read(dir.join(format!("{r:02x}.key.pk8.der"))),
            std::fs::read(dir.join(format!("{r:02x}.cert.der"))),
        ) else {
            continue;
        };
        let km = piv_applet::keys::KeyMaterial::from_pkcs8_der(&key).expect("key");
        card.import_key_and_certificate(
            slot,
            km,
            Some(&cert),
            piv_applet::PinPolicy::Default,
            piv_applet::TouchPolicy::Default,
        )
        .unwrap_or_else(|e| panic!("slot {r:02x}: {e}"));
    }
}
