//! The card file: round trips, atomic replacement, permissions, locking and
//! errors that name the file and the field.

mod common;
use common::Host;
use piv_applet::{store, AlgorithmId, Card, CardOptions, StatusWord};

fn opts() -> CardOptions {
    CardOptions {
        serial: Some(7),
        ..CardOptions::default()
    }
}

#[test]
fn every_change_is_on_disk_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let mut card = Card::create(&path, &opts()).unwrap();
    let mut host = Host {
        card: Card::ephemeral(&opts()).unwrap(),
    };
    std::mem::swap(&mut host.card, &mut card);
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    assert_eq!(host.verify_pin(b"000000"), StatusWord::VerifyFail(2));
    // Read the file while the card is still open: it already holds the key
    // and the counted wrong try.
    let on_disk = store::load(&path).unwrap();
    assert_eq!(on_disk.pin.tries_left, 2);
    assert!(on_disk.keys.contains_key(&piv_applet::Slot::AUTHENTICATION));
    drop(host);
    // Reopened, the card answers the same.
    let mut host = Host {
        card: Card::open(&path).unwrap(),
    };
    assert_eq!(
        host.raw(&common::hex("00200080")).sw,
        StatusWord::VerifyFail(2)
    );
    assert_eq!(*host.raw(&common::hex("00F8000000")).data, vec![0, 0, 0, 7]);
    assert_eq!(host.raw(&common::hex("00F7009A00")).sw, StatusWord::Success);
}

#[test]
fn full_state_round_trips_through_the_file() {
    let mut host = Host::new();
    host.auth_default();
    for (slot, alg) in [
        (0x9A, AlgorithmId::Rsa1024),
        (0x9C, AlgorithmId::EccP256),
        (0x9D, AlgorithmId::EccP384),
        (0x9E, AlgorithmId::Ed25519),
        (0x82, AlgorithmId::X25519),
    ] {
        host.generate(slot, alg, &[0xAA, 1, 1, 0xAB, 1, 2]);
    }
    host.put_data(&[0x5F, 0xC1, 0x09], &[1, 2, 3]);
    let bytes = store::to_bytes(host.card.state());
    let loaded = store::from_bytes(&bytes, std::path::Path::new("x.json")).unwrap();
    assert_eq!(&store::to_bytes(&loaded)[..], &bytes[..]);
    for (slot, ks) in &host.card.state().keys {
        assert_eq!(
            loaded.keys[slot].key.public_key_spki_der(),
            ks.key.public_key_spki_der()
        );
    }
}

#[test]
fn file_is_private_and_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    drop(Card::create(&path, &opts()).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "card.json" || n == "card.json.lock"),
        "{names:?}"
    );
}

#[test]
fn create_refuses_to_overwrite_and_open_refuses_a_locked_card() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let card = Card::create(&path, &opts()).unwrap();
    let err = Card::open(&path).unwrap_err();
    assert!(
        matches!(err, piv_applet::StoreError::Locked { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("card.json"));
    drop(card);
    let err = Card::create(&path, &opts()).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert!(Card::open(&path).is_ok());
}

/// A lock that is let go within a moment (another thread's fork sharing
/// the lock until its exec, a process handing the card over) is waited out
/// rather than reported as "in use".
#[test]
fn open_waits_out_a_lock_released_a_moment_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let card = Card::create(&path, &opts()).unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        drop(card);
    });
    let opened = Card::open(&path);
    holder.join().unwrap();
    assert!(opened.is_ok(), "{:?}", opened.err());
}

#[test]
fn bad_files_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    drop(Card::create(&path, &opts()).unwrap());
    let good = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "(document)"),
        (good.replace("\"version\": 1", "\"version\": 99"), "version"),
        (
            good.replace("\"tries_left\": 3", "\"tries_left\": 9"),
            "pin.tries_left",
        ),
        (
            good.replace("\"serial\": 7", "\"serial\": \"seven\""),
            "identity.serial",
        ),
        (
            good.replace("\"algorithm\": \"AES192\"", "\"algorithm\": \"AES999\""),
            "management_key.algorithm",
        ),
        (
            good.replacen("\"guid\": \"", "\"guid\": \"00", 1),
            "identity.guid",
        ),
        (
            good.replacen(
                "\"format\": \"virtual-piv-card\"",
                "\"format\": \"other\"",
                1,
            ),
            "format",
        ),
        (
            good.replacen("\"F9\": {", "\"F9\": { \"extra\": 1,", 1),
            "keys.F9",
        ),
        (
            good.replacen("\"private_key\": \"", "\"private_key\": \"00", 1),
            "keys.F9.private_key",
        ),
    ];
    for (content, field) in cases {
        std::fs::write(&path, &content).unwrap();
        let err = Card::open(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(field), "expected field {field} in: {err}");
    }
    std::fs::remove_file(&path).unwrap();
    let err = Card::open(&path).unwrap_err().to_string();
    assert!(err.contains("card.json"), "{err}");
}

#[test]
fn secrets_do_not_reach_debug_output() {
    let mut host = Host::new();
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    let text = format!("{:?} {:?}", host.card, host.card.state());
    let saved = store::to_bytes(host.card.state());
    let json: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    let pkcs8 = json["keys"]["9A"]["private_key"].as_str().unwrap();
    let mgmt = json["management_key"]["key"].as_str().unwrap();
    assert!(
        !text.to_lowercase().contains(&pkcs8[pkcs8.len() - 40..]),
        "private key leaked in Debug"
    );
    assert!(
        !text.to_lowercase().contains(mgmt),
        "management key leaked in Debug"
    );
    assert!(!text.contains("313233343536"), "PIN leaked in Debug");
}

/// The directories a new card file goes into are private
/// (0700), and a symbolic link planted as the lock file is not followed.
#[cfg(unix)]
#[test]
fn card_directories_are_private_and_the_lock_is_no_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/virtual-piv");
    let path = nested.join("card.json");
    drop(Card::create(&path, &opts()).unwrap());
    for d in [dir.path().join("a"), nested.clone()] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", d.display());
    }

    // The lock file replaced by a link to a file the attacker wants created
    // or locked: opening the card refuses and creates nothing there.
    let lock = nested.join("card.json.lock");
    let _ = std::fs::remove_file(&lock);
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let err = Card::open(&path)
        .expect_err("a symlinked lock file")
        .to_string();
    assert!(err.contains("card.json.lock"), "{err}");
    assert!(!target.exists(), "the link was followed");
    // Also for a new card.
    let path2 = nested.join("card2.json");
    std::os::unix::fs::symlink(&target, nested.join("card2.json.lock")).unwrap();
    assert!(Card::create(&path2, &opts()).is_err());
    assert!(!target.exists(), "the link was followed");
}
