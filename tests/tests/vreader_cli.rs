//! vreader's behaviour around pcscd, as its CLI runs it: cards in chosen
//! slots, the default card, reconnecting after pcscd restarts, clean
//! removal, named errors, listen mode.

use e2e::{
    connect, make_card, pcscd, select_by_rid, transmit, wait_for_card, wait_for_no_card, Rig,
    DEADLINE, READER0, READER1,
};
use piv_applet::AlgorithmId;
use std::time::{Duration, Instant};

const GET_SERIAL: [u8; 5] = [0x00, 0xF8, 0x00, 0x00, 0x00];

#[test]
fn cards_in_chosen_slots() {
    let mut rig = Rig::new();
    let (a, b) = (rig.path("a.json"), rig.path("b.json"));
    make_card(&a, AlgorithmId::Aes192, &[]);
    make_card(&b, AlgorithmId::Aes192, &[]);
    let serial = |p: &std::path::Path| piv_applet::store::load(p).unwrap().identity.serial;
    rig.vreader(&[
        "--card",
        &format!("{}@1", a.display()),
        "--card",
        &format!("{}@0", b.display()),
    ]);
    wait_for_card(READER0, DEADLINE);
    wait_for_card(READER1, DEADLINE);
    for (reader, file) in [(READER0, &b), (READER1, &a)] {
        let r = transmit(&connect(reader), &GET_SERIAL);
        assert_eq!(
            r,
            [&serial(file).to_be_bytes()[..], &[0x90, 0x00]].concat(),
            "{reader}"
        );
    }
}

#[test]
fn default_card_is_created_on_first_run() {
    let mut rig = Rig::new();
    let data = rig.path("xdg-data");
    rig.vreader_with_env(&[], &[("XDG_DATA_HOME", &data)]);
    wait_for_card(READER0, DEADLINE);
    let file = data.join("virtual-piv").join("card.json");
    assert!(file.exists(), "{} was not created", file.display());
    // OpenSC shows the demo key and its certificate at once.
    let out = e2e::run_ok("pkcs15-tool", &["--reader", "0", "-D"]);
    assert!(
        out.contains("X.509 Certificate [Certificate for PIV Authentication]")
            && out.contains("Private RSA Key [PIV AUTH key]"),
        "{out}"
    );
    assert!(rig.stop(0).success());
    wait_for_no_card(READER0, DEADLINE);
    // A second run reuses the same card (same serial).
    let serial = piv_applet::store::load(&file).unwrap().identity.serial;
    rig.vreader_with_env(&[], &[("XDG_DATA_HOME", &data)]);
    wait_for_card(READER0, DEADLINE);
    let r = transmit(&connect(READER0), &GET_SERIAL);
    assert_eq!(r, [&serial.to_be_bytes()[..], &[0x90, 0x00]].concat());
    assert!(rig.stop(1).success());
    // `vreader status` tells what the card holds, never a secret.
    let status = e2e::vreader_ok(&["status", &file.to_string_lossy()]);
    assert!(
        status.contains(&format!("serial:          {serial}")),
        "{status}"
    );
    assert!(status.contains("slot 9A:         RSA2048 key"), "{status}");
    assert!(status.contains("certificate"), "{status}");
    assert!(status.contains("(default PIN)"), "{status}");
    let json = std::fs::read_to_string(&file).unwrap();
    let secrets: Vec<String> = json
        .split('"')
        .filter(|s| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|s| s.to_ascii_uppercase())
        .collect();
    for line in status
        .lines()
        .filter(|l| !l.starts_with("ATR") && !l.starts_with("CHUID"))
    {
        let upper = line.to_ascii_uppercase();
        for s in &secrets {
            assert!(
                !upper.contains(s.as_str()),
                "status shows file data: {line}"
            );
        }
    }
    assert!(!status.contains("010203040506070801020304"), "{status}");
}

#[test]
fn vreader_reconnects_after_pcscd_restarts() {
    let mut rig = Rig::new();
    let card_file = rig.path("card.json");
    make_card(&card_file, AlgorithmId::Aes192, &[]);
    rig.insert(&card_file);
    for round in 0..3 {
        pcscd("restart");
        wait_for_card(READER0, DEADLINE);
        let card = connect(READER0);
        let r = transmit(&card, &select_by_rid());
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00], "round {round}");
    }
    assert!(
        rig.log(0).contains("redialling"),
        "vreader noticed the restarts"
    );
}

#[test]
fn two_cards_in_two_slots_and_clean_removal() {
    let mut rig = Rig::new();
    let (a, b) = (rig.path("a.json"), rig.path("b.json"));
    make_card(&a, AlgorithmId::Aes192, &[]);
    make_card(&b, AlgorithmId::Aes192, &[]);
    let serial = |p: &std::path::Path| piv_applet::store::load(p).unwrap().identity.serial;
    let index = rig.vreader(&[
        "--card",
        &a.to_string_lossy(),
        "--card",
        &b.to_string_lossy(),
    ]);
    wait_for_card(READER0, DEADLINE);
    wait_for_card(READER1, DEADLINE);
    for (reader, file) in [(READER0, &a), (READER1, &b)] {
        let r = transmit(&connect(reader), &GET_SERIAL);
        assert_eq!(&r[..4], &serial(file).to_be_bytes(), "{reader}");
    }
    // SIGTERM removes both cards and exits cleanly.
    let status = rig.stop(index);
    assert!(status.success(), "vreader exit status {status}");
    // pcscd must then report both readers empty (it notices at its next
    // poll; the deadline only matters on a loaded machine).
    wait_for_no_card(READER0, DEADLINE);
    wait_for_no_card(READER1, DEADLINE);
    // The card files are intact and unlocked.
    assert!(piv_applet::Card::open(&a).is_ok() && piv_applet::Card::open(&b).is_ok());
}

#[test]
fn bad_card_file_is_named() {
    let rig = Rig::new();
    let file = rig.path("broken.json");
    std::fs::write(&file, "{\"format\": \"virtual-piv-card\"").unwrap();
    let out = e2e::vreader(&["run", "--card", &file.to_string_lossy()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.json"), "{err}");
    let out = e2e::vreader(&["status", &rig.path_str("missing.json")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}

#[test]
fn pcscd_absent_at_start_then_started() {
    let mut rig = Rig::new();
    let card_file = rig.path("card.json");
    make_card(&card_file, AlgorithmId::Aes192, &[]);
    pcscd("stop");
    let index = rig.vreader(&["--card", &card_file.to_string_lossy()]);
    // A clear message while pcscd is absent, at vreader's first failed dial.
    e2e::wait_for_log(&rig.log_path(index), "is pcscd running");
    pcscd("start");
    wait_for_card(READER0, DEADLINE);
    let r = transmit(&connect(READER0), &select_by_rid());
    assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
}

#[test]
fn listen_mode_serves_a_reader_and_refuses_remote_addresses() {
    let mut rig = Rig::new();
    let card_file = rig.path("card.json");
    make_card(&card_file, AlgorithmId::Aes192, &[]);
    let addr = format!("127.0.0.1:{}", e2e::free_port());
    rig.vreader(&[
        "--card",
        &card_file.to_string_lossy(),
        "--listen",
        &addr,
        "--insecure-plain-listen",
    ]);
    let deadline = Instant::now() + DEADLINE;
    let mut reader = loop {
        match vpcd::ReaderConnection::connect(&addr) {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "vreader --listen did not listen: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    reader.control(vpcd::Control::PowerOn).unwrap();
    assert_eq!(
        reader.atr().unwrap(),
        piv_applet::state::YUBIKEY5_NFC_ATR.to_vec()
    );
    let r = reader.transmit(&select_by_rid()).unwrap();
    assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
    let out = e2e::vreader(&[
        "run",
        "--card",
        &card_file.to_string_lossy(),
        "--listen",
        "0.0.0.0:1",
    ]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--allow-remote")
    );
}
