//! Reliability: SIGKILL at random instants never corrupts the card file
//! or loses an acknowledged wrong PIN try; pcscd restarts, dying clients
//! and hostile listen-mode peers do not take the card down; a soak of
//! 10^5 APDUs over four cards keeps memory flat.

use e2e::{make_card, pcscd, vreader_bin, wait_for_card, Rig, READER0};
use piv_applet::{store, AlgorithmId, Card};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator, so a failing run can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_listen(
    cards: &[&std::path::Path],
    port: u16,
    extra: &[&str],
    log: &std::path::Path,
) -> Child {
    let mut cmd = Command::new(vreader_bin());
    cmd.arg("run");
    for c in cards {
        cmd.arg("--card").arg(c);
    }
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("vreader")
}

fn connect_reader(port: u16) -> vpcd::ReaderConnection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match vpcd::ReaderConnection::connect(("127.0.0.1", port)) {
            Ok(r) => {
                r.set_timeout(Some(Duration::from_secs(10))).unwrap();
                return r;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "vreader did not listen on {port}: {e}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn mgmt_auth(r: &mut vpcd::ReaderConnection) -> Result<(), vpcd::FrameError> {
    let key = piv_applet::mgmt::ManagementKey::default_for(AlgorithmId::Aes192);
    let resp = r.transmit(&[0x00, 0x87, 0x0A, 0x9B, 0x04, 0x7C, 0x02, 0x80, 0x00])?;
    let witness = key.decrypt_block(&resp[4..20]).unwrap();
    let mut data = vec![0x7C, 0x24, 0x80, 0x10];
    data.extend_from_slice(&witness);
    data.extend_from_slice(&[0x81, 0x10]);
    data.extend_from_slice(&[0x33; 16]);
    let apdu = piv_applet::apdu::build_command(0, 0x87, 0x0A, 0x9B, &data, Some(256));
    let resp = r.transmit(&apdu)?;
    assert_eq!(
        &resp[resp.len() - 2..],
        &[0x90, 0x00],
        "management key authentication"
    );
    Ok(())
}

#[test]
fn sigkill_at_random_instants_keeps_the_card_file_whole() {
    let rig = Rig::new();
    let file = rig.path("card.json");
    make_card(&file, AlgorithmId::Aes192, &[]);
    sigkill_rounds(&rig, &file, 200, None);
}

/// The same with a passphrase-sealed card file (7.5): every save is a new
/// encryption, written with the same atomic replacement.
#[test]
fn sigkill_at_random_instants_keeps_a_sealed_card_file_whole() {
    let rig = Rig::new();
    let file = rig.path("card.json");
    make_card(&file, AlgorithmId::Aes192, &[]);
    let pass_file = rig.path("passphrase");
    std::fs::write(&pass_file, "sigkill test passphrase\n").unwrap();
    let pass = piv_applet::Passphrase::from_file(&pass_file).unwrap();
    Card::open(&file)
        .unwrap()
        .set_passphrase(Some(&pass), piv_applet::KdfParams::default())
        .unwrap();
    sigkill_rounds(&rig, &file, 50, Some(&pass_file));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("virtual-piv-card-sealed"));
}

/// `rounds` times: start vreader on the card, drive wrong PIN tries and
/// object writes, SIGKILL it at a random instant, then check that the file
/// loads and holds everything the card acknowledged.
fn sigkill_rounds(
    rig: &Rig,
    file: &std::path::Path,
    rounds: u32,
    passphrase_file: Option<&std::path::Path>,
) {
    let log = rig.path("vreader.log");
    let pass = passphrase_file.map(|f| piv_applet::Passphrase::from_file(f).unwrap());
    let extra: Vec<&str> = match passphrase_file {
        Some(f) => vec!["--passphrase-file", f.to_str().unwrap()],
        None => vec![],
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let (mut acked_wrong, mut acked_writes) = (0u32, 0u32);
    for round in 0..rounds {
        let port = free_port();
        let mut child = spawn_listen(&[file], port, &extra, &log);
        let mut r = connect_reader(port);
        let kill_after = Duration::from_micros(rng.next() % 30_000);
        let start = Instant::now();
        let pid = child.id() as i32;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        // What the card acknowledged before it died.
        let mut last_tries: Option<u8> = None;
        let mut last_object: Option<Vec<u8>> = None;
        let mut step = 0u64;
        let outcome: Result<(), vpcd::FrameError> = (|| {
            mgmt_auth(&mut r)?;
            loop {
                step += 1;
                if step.is_multiple_of(2) {
                    let resp = r.transmit(&[
                        0x00, 0x20, 0x00, 0x80, 0x08, b'0', b'0', b'0', b'0', b'0', b'0', 0xFF,
                        0xFF,
                    ])?;
                    if resp[0] == 0x63 {
                        last_tries = Some(resp[1] & 0x0F);
                        acked_wrong += 1;
                    }
                } else {
                    let len = 200 + (rng.next() % 1800) as usize;
                    let value = vec![(step % 251) as u8; len];
                    let mut data = piv_applet::tlv::encode(0x5C, &[0x5F, 0xC1, 0x0D]);
                    piv_applet::tlv::write(&mut data, 0x53, &value);
                    let resp = r.transmit(&piv_applet::apdu::build_command(
                        0, 0xDB, 0x3F, 0xFF, &data, None,
                    ))?;
                    assert_eq!(resp, vec![0x90, 0x00]);
                    last_object = Some(value);
                    acked_writes += 1;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return Ok(());
                }
            }
        })();
        killer.join().unwrap();
        let _ = child.wait();
        assert!(
            outcome.is_err(),
            "round {round}: the card outlived its SIGKILL"
        );
        // The file must load, and hold at least what was acknowledged.
        let (state, _) = store::load_sealed(file, pass.as_ref())
            .unwrap_or_else(|e| panic!("round {round}: card file unusable after SIGKILL: {e}"));
        if let Some(t) = last_tries {
            assert!(
                state.pin.tries_left <= t,
                "round {round}: an acknowledged wrong PIN try was lost ({} > {t})",
                state.pin.tries_left
            );
        }
        if let Some(v) = last_object {
            let on_disk = state
                .objects
                .get(&piv_applet::ObjectId(0x5FC10D))
                .expect("acknowledged object is on disk");
            // Either the acknowledged value or the one written after it.
            assert!(
                on_disk == &v || on_disk.len() >= 200,
                "round {round}: object torn"
            );
        }
        // Give the PIN its tries back for the next round.
        Card::open_with(file, pass.as_ref())
            .unwrap()
            .set_pin(b"123456")
            .unwrap();
    }
    assert!(
        acked_wrong > rounds / 4 && acked_writes > rounds / 4,
        "the kills landed too early to test anything: {acked_wrong} tries, {acked_writes} writes"
    );
    let leftovers: Vec<_> = std::fs::read_dir(rig.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    // A kill between writing and renaming leaves a temporary file; the
    // next open of the card (with its lock held) removes it.
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    eprintln!("{rounds} SIGKILLs, {acked_wrong} acknowledged wrong tries, {acked_writes} acknowledged writes, {} temporary files left", leftovers.len());
}

#[test]
fn pcscd_killed_twenty_times_during_an_apdu_loop() {
    let mut rig = Rig::new();
    let file = rig.path("card.json");
    make_card(&file, AlgorithmId::Aes192, &[]);
    rig.insert(&file);
    for round in 0..20 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let looping = std::thread::spawn(move || {
            let mut ok = 0u32;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
                    continue;
                };
                let reader = std::ffi::CString::new(READER0).unwrap();
                let Ok(card) = ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                else {
                    continue;
                };
                let mut buf = [0u8; 64];
                while let Ok(r) = card.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00], &mut buf) {
                    assert_eq!(r, &[5, 7, 1, 0x90, 0x00]);
                    ok += 1;
                    if s.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(150));
        let _ = Command::new("pkill").args(["-9", "-x", "pcscd"]).status();
        pcscd("start");
        wait_for_card(READER0, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = looping.join().unwrap();
        assert!(ok > 0, "round {round}: no APDU went through");
    }
    let log = rig.log(0);
    assert!(
        log.matches("card inserted into the vpcd reader").count() >= 21,
        "vreader reconnected every time"
    );
}

#[test]
fn client_killed_inside_a_transaction_leaves_the_card_usable() {
    let mut rig = Rig::new();
    let file = rig.path("card.json");
    make_card(&file, AlgorithmId::Aes192, &[]);
    rig.insert(&file);
    let helper = std::path::Path::new(env!("CARGO_BIN_EXE_hold_transaction"));
    let mut child = Command::new(helper)
        .arg(READER0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 5];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"ready");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // pcscd cleans up after the dead client by resetting the card; a
    // client arriving during that cleanup sees the reset (as it would with a
    // physical card) and simply tries again.
    let reader = std::ffi::CString::new(READER0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = (|| -> Result<Vec<u8>, pcsc::Error> {
            let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
            let mut card = ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)?;
            let tx = card.transaction()?;
            let mut buf = [0u8; 64];
            Ok(tx
                .transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00], &mut buf)?
                .to_vec())
        })();
        match attempt {
            Ok(r) => {
                assert_eq!(r, vec![5, 7, 1, 0x90, 0x00]);
                break;
            }
            Err(
                e @ (pcsc::Error::ResetCard
                | pcsc::Error::ProtoMismatch
                | pcsc::Error::SharingViolation),
            ) if Instant::now() < deadline => {
                eprintln!("retrying after {e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the card is not usable after the transaction holder died: {e:?}"),
        }
    }
}

#[test]
fn hostile_listen_mode_peers_are_dropped_and_other_cards_go_on() {
    let rig = Rig::new();
    let (a, b) = (rig.path("a.json"), rig.path("b.json"));
    make_card(&a, AlgorithmId::Aes192, &[]);
    make_card(&b, AlgorithmId::Aes192, &[]);
    let port = free_port();
    let log = rig.path("vreader.log");
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = KillOnDrop(spawn_listen(
        &[&a, &b],
        port,
        &["--idle-timeout", "2"],
        &log,
    ));
    // Card B's reader comes and goes between the attacks on card A (an
    // idle reader is itself dropped after --idle-timeout).
    let check_good = || {
        let mut good = connect_reader(port + 1);
        assert_eq!(
            good.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00]).unwrap(),
            vec![5, 7, 1, 0x90, 0x00]
        );
    };
    check_good();
    let hostile = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(bytes).unwrap();
        s
    };
    // Garbage that happens to be frames gets status words, not a crash.
    let mut rng = XorShift(42);
    let mut s = hostile(&[]);
    for _ in 0..200 {
        let len = (rng.next() % 40) as usize + 2;
        let mut frame = vec![0u8, len as u8];
        frame.extend((0..len).map(|_| rng.next() as u8));
        s.write_all(&frame).unwrap();
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).unwrap();
        let mut resp = vec![0u8; u16::from_be_bytes(hdr) as usize];
        s.read_exact(&mut resp).unwrap();
        assert!(resp.len() >= 2);
    }
    drop(s);
    check_good();
    // An empty frame, a half frame (oversize length, few bytes), silence.
    let t = Instant::now();
    let empty = hostile(&[0, 0]);
    let half = hostile(&[0xFF, 0xFF, 1, 2, 3]);
    let silent = hostile(&[]);
    for s in [empty, half, silent] {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 1];
        let n = (&s).read(&mut buf).unwrap_or(0);
        assert_eq!(
            n, 0,
            "a hostile peer got an answer instead of being dropped"
        );
        check_good();
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("empty frame"), "{text}");
    assert!(text.contains("a frame and stopped"), "{text}");
    assert!(text.contains("idle too long"), "{text}");
    // After all that, card A still serves a well-behaved reader.
    let mut again = connect_reader(port);
    assert_eq!(
        again.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00]).unwrap(),
        vec![5, 7, 1, 0x90, 0x00]
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn soak_four_cards_hundred_thousand_apdus() {
    let rig = Rig::new();
    let files: Vec<_> = (0..4).map(|i| rig.path(&format!("card{i}.json"))).collect();
    for f in &files {
        make_card(
            f,
            AlgorithmId::Aes192,
            &[(piv_applet::Slot::AUTHENTICATION, AlgorithmId::EccP256)],
        );
    }
    let port = free_port();
    let refs: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
    let mut child = spawn_listen(&refs, port, &[], &rig.path("vreader.log"));
    let per_card = 25_000u32;
    // Warm up so the first RSS reading is the steady state.
    for i in 0..4 {
        let mut r = connect_reader(port + i);
        for _ in 0..200 {
            r.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00]).unwrap();
        }
    }
    let rss_start = rss_kib(child.id());
    let start = Instant::now();
    let workers: Vec<_> = (0..4u16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut r = connect_reader(port + i);
                let verify = [
                    0x00, 0x20, 0x00, 0x80, 0x08, b'1', b'2', b'3', b'4', b'5', b'6', 0xFF, 0xFF,
                ];
                let get_chuid = [
                    0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00,
                ];
                let mut sign = vec![
                    0x00, 0x87, 0x11, 0x9A, 0x26, 0x7C, 0x24, 0x82, 0x00, 0x81, 0x20,
                ];
                sign.extend_from_slice(&[0x5A; 32]);
                sign.push(0x00);
                let mut errors = 0u32;
                for n in 0..per_card {
                    type Check = fn(&[u8]) -> bool;
                    let (apdu, check): (&[u8], Check) = match n % 50 {
                        0 => (&verify, |r| r == [0x90, 0x00]),
                        1 => (&sign, |r| r[0] == 0x7C && r.ends_with(&[0x90, 0x00])),
                        _ => (&get_chuid, |r| r[0] == 0x53 && r.ends_with(&[0x90, 0x00])),
                    };
                    match r.transmit(apdu) {
                        Ok(resp) if check(&resp) => {}
                        _ => errors += 1,
                    }
                }
                errors
            })
        })
        .collect();
    let errors: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = start.elapsed();
    let rss_end = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "soak: {} APDUs ({} signatures) over 4 cards in {elapsed:?}, {errors} errors, vreader RSS {rss_start} KiB -> {rss_end} KiB",
        4 * per_card,
        4 * per_card / 50
    );
    assert_eq!(errors, 0);
    assert!(
        rss_end <= rss_start + 4096,
        "memory grew: {rss_start} KiB -> {rss_end} KiB"
    );
}
