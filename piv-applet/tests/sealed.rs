//! Passphrase-encrypted (sealed) card files: what is on disk, opening with
//! the right and wrong passphrase, tampering, re-keying and going back to a
//! plain file.

mod common;
use common::Host;
use piv_applet::sealed::{SealingKey, SEALED_FORMAT_NAME};
use piv_applet::{
    store, AlgorithmId, Card, CardOptions, KdfParams, Passphrase, PlainFile, StatusWord, StoreError,
};

fn opts() -> CardOptions {
    CardOptions {
        serial: Some(4242),
        ..CardOptions::default()
    }
}

/// Cheap Argon2id settings where a test seals many times; the default
/// settings are exercised by `Card::create_with`.
fn fast() -> KdfParams {
    KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    }
}

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.as_bytes().to_vec())
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Bytes that must never appear in a sealed file: the PIN block, the
/// management key, a private key.
fn assert_no_secrets(path: &std::path::Path, secrets: &[Vec<u8>]) {
    let raw = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    for s in secrets {
        assert!(
            !text.contains(&hex::encode(s)),
            "{} holds a secret in clear",
            path.display()
        );
    }
}

#[test]
fn sealed_card_keeps_secrets_off_disk_and_reopens_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let card = Card::create_with(&path, &opts(), Some(&pass("correct horse"))).unwrap();
    assert!(card.is_sealed());
    let mut host = Host { card };
    host.auth_default();
    host.generate(0x9A, AlgorithmId::EccP256, &[]);
    assert_eq!(host.verify_pin(b"000000"), StatusWord::VerifyFail(2));
    drop(host);

    let doc = json(&path);
    assert_eq!(doc["format"], SEALED_FORMAT_NAME);
    assert_eq!(doc["kdf"]["algorithm"], "argon2id");
    assert_eq!(doc["kdf"]["memory_kib"], 65536);
    assert_eq!(doc["aead"]["algorithm"], "XChaCha20-Poly1305");
    assert!(doc.get("pin").is_none() && doc.get("keys").is_none());
    let mgmt_default = hex::decode("010203040506070801020304050607080102030405060708").unwrap();
    assert_no_secrets(&path, &[b"123456\xff\xff".to_vec(), mgmt_default]);

    // Without the passphrase: a clear error naming the file.
    let err = Card::open(&path).expect_err("a sealed file needs its passphrase");
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("encrypted with a passphrase"), "{msg}");
    let err = store::load(&path).err().unwrap().to_string();
    assert!(err.contains("encrypted with a passphrase"), "{err}");

    // Wrong passphrase: refused, the file untouched.
    let before = std::fs::read(&path).unwrap();
    let err = Card::open_with(&path, Some(&pass("correct horsE")))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Right passphrase: the state (the counted wrong try, the key) is there,
    // and later saves stay sealed with a fresh nonce each time.
    let mut host = Host {
        card: Card::open_with(&path, Some(&pass("correct horse"))).unwrap(),
    };
    assert!(host.card.is_sealed());
    assert_eq!(
        host.raw(&common::hex("00200080")).sw,
        StatusWord::VerifyFail(2)
    );
    let nonce_before = json(&path)["aead"]["nonce"].clone();
    assert_eq!(host.verify_pin(b"123456"), StatusWord::Success);
    let after = json(&path);
    assert_eq!(after["format"], SEALED_FORMAT_NAME);
    assert_ne!(after["aead"]["nonce"], nonce_before, "nonce reused");
    assert_eq!(after["kdf"]["salt"], json(&path)["kdf"]["salt"]);
    drop(host);
    let (state, key) = store::load_sealed(&path, Some(&pass("correct horse"))).unwrap();
    assert_eq!(state.pin.tries_left, 3);
    assert!(state.keys.contains_key(&piv_applet::Slot::AUTHENTICATION));
    assert!(key.is_some());
}

#[test]
fn any_edit_to_a_sealed_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let plain = store::to_bytes(Card::ephemeral(&opts()).unwrap().state());
    let key = SealingKey::new(&pass("pw"), fast()).unwrap();
    let sealed = key.seal(&plain);
    std::fs::write(&path, &sealed).unwrap();
    assert!(store::load_sealed(&path, Some(&pass("pw"))).is_ok());

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut doc: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        f(&mut doc);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        store::load_sealed(&path, Some(&pass("pw")))
            .expect_err("an edited file must not open")
            .to_string()
    };
    // Authenticated fields: the AEAD refuses.
    let flip = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b[10] = if b[10] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let msg = edit(&|d| d["ciphertext"] = flip(d["ciphertext"].as_str().unwrap()).into());
    assert!(
        msg.contains("wrong passphrase, or the file was altered"),
        "{msg}"
    );
    let msg = edit(&|d| {
        d["aead"]["nonce"] = "00".repeat(24).into();
    });
    assert!(msg.contains("altered"), "{msg}");
    let msg = edit(&|d| {
        d["kdf"]["salt"] = "11".repeat(16).into();
    });
    assert!(msg.contains("altered"), "{msg}");
    let msg = edit(&|d| d["kdf"]["iterations"] = 2.into());
    assert!(msg.contains("altered"), "{msg}");
    // Malformed fields: named.
    let msg = edit(&|d| d["kdf"]["memory_kib"] = (u32::MAX).into());
    assert!(msg.contains("field `kdf.memory_kib`"), "{msg}");
    let msg = edit(&|d| d["kdf"]["algorithm"] = "scrypt".into());
    assert!(msg.contains("field `kdf.algorithm`"), "{msg}");
    let msg = edit(&|d| d["aead"]["nonce"] = "zz".into());
    assert!(msg.contains("field `aead.nonce`"), "{msg}");
    let msg = edit(&|d| d["version"] = 2.into());
    assert!(msg.contains("field `version`"), "{msg}");
    let msg = edit(&|d| d["extra"] = 1.into());
    assert!(msg.contains("unknown field"), "{msg}");
    let msg = edit(&|d| {
        d.as_object_mut().unwrap().remove("ciphertext");
    });
    assert!(msg.contains("ciphertext"), "{msg}");
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
}

#[test]
fn passphrase_can_be_set_changed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    drop(Card::create(&path, &opts()).unwrap());

    // Plain → sealed.
    let mut card = Card::open(&path).unwrap();
    assert!(!card.is_sealed());
    card.set_passphrase(Some(&pass("one")), fast()).unwrap();
    assert!(card.is_sealed());
    assert_eq!(json(&path)["format"], SEALED_FORMAT_NAME);
    drop(card);
    assert!(Card::open(&path).is_err());

    // Change it: the old one no longer opens the file, the salt is new.
    let salt = json(&path)["kdf"]["salt"].clone();
    let mut card = Card::open_with(&path, Some(&pass("one"))).unwrap();
    card.set_passphrase(Some(&pass("two")), fast()).unwrap();
    drop(card);
    assert_ne!(json(&path)["kdf"]["salt"], salt);
    assert!(Card::open_with(&path, Some(&pass("one"))).is_err());

    // Sealed → plain.
    let mut card = Card::open_with(&path, Some(&pass("two"))).unwrap();
    card.set_passphrase(None, fast()).unwrap();
    assert!(!card.is_sealed());
    drop(card);
    assert_eq!(json(&path)["format"], "virtual-piv-card");
    // A plain file opens without a passphrase; with one it is refused
    // (a sealed file swapped for a plain one), unless the
    // caller allows it explicitly.
    assert!(Card::open(&path).is_ok());
    let err = Card::open_with(&path, Some(&pass("anything")))
        .expect_err("a plain file where a passphrase is configured");
    assert!(matches!(err, StoreError::NotSealed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&path.display().to_string()) && msg.contains("not encrypted"),
        "{msg}"
    );
    assert!(store::load_sealed(&path, Some(&pass("anything"))).is_err());
    assert!(
        Card::open_with_policy(&path, Some(&pass("anything")), PlainFile::Allow)
            .is_ok_and(|c| !c.is_sealed())
    );

    // An ephemeral card has no file to seal.
    let mut eph = Card::ephemeral(&opts()).unwrap();
    assert!(eph.set_passphrase(Some(&pass("x")), fast()).is_err());
}

#[test]
fn passphrase_files_lose_one_line_break_and_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.json");
    let key = SealingKey::new(&pass("secret"), fast()).unwrap();
    std::fs::write(
        &card,
        key.seal(&store::to_bytes(Card::ephemeral(&opts()).unwrap().state())),
    )
    .unwrap();
    for (contents, opens) in [
        (&b"secret\n"[..], true),
        (b"secret\r\n", true),
        (b"secret", true),
        (b"secret\n\n", false),
        (b" secret", false),
    ] {
        let f = dir.path().join("pass");
        std::fs::write(&f, contents).unwrap();
        let p = Passphrase::from_file(&f).unwrap();
        assert_eq!(
            store::load_sealed(&card, Some(&p)).is_ok(),
            opens,
            "{contents:?}"
        );
    }
    let f = dir.path().join("empty");
    std::fs::write(&f, b"\n").unwrap();
    let err = Passphrase::from_file(&f).unwrap_err().to_string();
    assert!(err.contains("the passphrase is empty"), "{err}");
    let err = Passphrase::from_file(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    assert_eq!(format!("{:?}", pass("hunter2")), "Passphrase(..)");
}
