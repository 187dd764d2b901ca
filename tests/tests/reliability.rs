//! Reliability: SIGKILL at random instants never corrupts the card file
//! or loses an acknowledged wrong PIN try; pcscd restarts, dying clients
//! and hostile listen-mode peers do not take the card down; a soak of
//! 10^5 APDUs over four cards keeps memory flat.

// DEADLINE (30 s) also bounds every wait here for what normally takes
// milliseconds (vreader listening, an acknowledgement, a log line): a
// loaded CI machine with slow fsync can take seconds.
use e2e::{make_card, pcscd, vreader_bin, wait_for_card, wait_for_log, Rig, DEADLINE, READER0};
use piv_applet::{store, AlgorithmId, Card};
use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// pcscd's vpcd reader slots (35963, 35964) with a margin: a listen-mode
/// vreader there would answer pcscd in place of the test's card, or fail.
const VPCD_PORTS: std::ops::RangeInclusive<u16> = 35960..=35970;

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

/// `n` consecutive loopback ports, free right now and clear of
/// [`VPCD_PORTS`]: all of them are held bound at once while checking, as
/// vreader listens on port + i for its card i.
fn free_ports(n: u16) -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let Some(last) = port.checked_add(n - 1) else {
            continue;
        };
        if port <= *VPCD_PORTS.end() && last >= *VPCD_PORTS.start() {
            continue;
        }
        let rest: Result<Vec<_>, _> = (port + 1..=last)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if rest.is_ok() {
            return port;
        }
    }
}

/// What `log` gained since it was `from` bytes long.
fn log_since(log: &std::path::Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        f.seek(std::io::SeekFrom::Start(from)).unwrap();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Starts `vreader run --listen` with `cards` on fresh consecutive ports
/// (card i on port + i) and waits until it listens on all of them; returns
/// it and the first port. Between [`free_ports`] and vreader's bind another
/// process may take a port: vreader then exits with "cannot listen", and
/// it is started again on other ports.
fn spawn_listen(cards: &[&std::path::Path], extra: &[&str], log: &std::path::Path) -> (Child, u16) {
    let n = cards.len() as u16;
    for attempt in 1.. {
        let port = free_ports(n);
        let from = std::fs::metadata(log).map_or(0, |m| m.len());
        let mut cmd = Command::new(vreader_bin());
        cmd.arg("run");
        for c in cards {
            cmd.arg("--card").arg(c);
        }
        // Plain vpcd: these peers test the frame loop, which the TLS link
        // of the shim runs unchanged after its handshake.
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--insecure-plain-listen")
            .args(extra);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("vreader");
        // vreader logs this for each card once its port is bound.
        let listening: Vec<String> = (0..n)
            .map(|i| format!("waiting for a reader on 127.0.0.1:{} ", port + i))
            .collect();
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Exit status first: the log read after it is complete.
            let exited = child.try_wait().unwrap();
            let text = log_since(log, from);
            if listening.iter().all(|l| text.contains(l.as_str())) {
                return (child, port);
            }
            if let Some(status) = exited {
                assert!(
                    text.contains("cannot listen") && attempt < 10,
                    "vreader exited ({status}) before listening on {port}..{}:\n{text}",
                    port + n - 1
                );
                eprintln!("port {port}..{} was taken, trying others", port + n - 1);
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "vreader did not listen on {port}..{} within {DEADLINE:?}:\n{text}",
                    port + n - 1
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    unreachable!()
}

fn connect_reader(port: u16) -> vpcd::ReaderConnection {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match vpcd::ReaderConnection::connect(("127.0.0.1", port)) {
            Ok(r) => {
                r.set_timeout(Some(DEADLINE)).unwrap();
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
    use piv_applet::client::{Client, ClientError};
    let key = piv_applet::mgmt::ManagementKey::default_for(AlgorithmId::Aes192);
    let mut card = Client::new(|apdu: &[u8]| r.transmit(apdu).map(|resp| resp.to_vec()));
    match card.authenticate(&key) {
        Ok(()) => Ok(()),
        Err(ClientError::Transport(e)) => Err(e),
        Err(e) => panic!("management key authentication: {e}"),
    }
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

/// What the client of [`sigkill_rounds`] has seen acknowledged, for the
/// thread that picks the moment of the kill.
#[derive(Default)]
struct Progress {
    /// Operations acknowledged by the card.
    ops: u32,
    /// How long the last of them took, send to answer.
    last_op: Duration,
    /// The client stopped (the connection failed).
    done: bool,
}

/// The two PUKs [`sigkill_rounds`] changes between (8 bytes, no padding).
const PUKS: [&[u8; 8]; 2] = [b"12345678", b"87654321"];

/// `rounds` times: start vreader on the card, drive object writes, PUK
/// changes and wrong PIN tries, SIGKILL it at a random instant, then check
/// that the file loads and holds everything the card acknowledged.
///
/// The instant is random in progress, not in wall-clock time: after a
/// random number (1 to 9) of acknowledged operations (management key
/// authentication, then in turn a certificate write, a PUK change and a
/// wrong PIN try, each saved with fsync), plus a random fraction of the last
/// operation's duration, so the kill lands at a random point inside the
/// next operation and its save whatever the speed of the machine and its
/// disk.
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
    let tmp_prefix = format!("{}.tmp-", file.file_name().unwrap().to_string_lossy());
    let temporary_files = || -> Vec<String> {
        std::fs::read_dir(rig.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&tmp_prefix))
            .collect()
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let (mut acked_wrong, mut acked_writes, mut acked_puk_changes, mut inside_save) =
        (0u32, 0u32, 0u32, 0u32);
    for round in 0..rounds {
        let (mut child, port) = spawn_listen(&[file], &extra, &log);
        let mut r = connect_reader(port);
        let target = 1 + (rng.next() % 9) as u32;
        let per_mille = (rng.next() % 1000) as u32;
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let pid = child.id() as i32;
        let killer = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                let (lock, changed) = &*progress;
                let (p, _) = changed
                    .wait_timeout_while(lock.lock().unwrap(), DEADLINE, |p| {
                        p.ops < target && !p.done
                    })
                    .unwrap();
                let (reached, pause) = (p.ops >= target, p.last_op * per_mille / 1000);
                drop(p);
                if reached {
                    std::thread::sleep(pause);
                }
                unsafe { libc::kill(pid, libc::SIGKILL) };
                reached
            })
        };
        let acked = |started: Instant| {
            let (lock, changed) = &*progress;
            let mut p = lock.lock().unwrap();
            p.ops += 1;
            p.last_op = started.elapsed();
            changed.notify_all();
        };
        // What the card acknowledged before it died.
        let mut last_tries: Option<u8> = None;
        let mut last_object: Option<Vec<u8>> = None;
        // What was being written or set when the kill came: the card may
        // have saved it without getting to answer.
        let mut pending_object: Option<Vec<u8>> = None;
        let mut puk: &[u8; 8] = PUKS[0];
        let mut pending_puk: Option<&[u8; 8]> = None;
        let mut step = 0u64;
        let start = Instant::now();
        let outcome: Result<(), vpcd::FrameError> = (|| {
            let started = Instant::now();
            mgmt_auth(&mut r)?;
            acked(started);
            loop {
                step += 1;
                let started = Instant::now();
                match step % 3 {
                    // A wrong PIN try, counted down and saved before the
                    // answer.
                    0 => {
                        let resp = r.transmit(&[
                            0x00, 0x20, 0x00, 0x80, 0x08, b'0', b'0', b'0', b'0', b'0', b'0', 0xFF,
                            0xFF,
                        ])?;
                        if resp[0] == 0x63 {
                            last_tries = Some(resp[1] & 0x0F);
                            acked_wrong += 1;
                        }
                    }
                    // A certificate-sized object write.
                    1 => {
                        let len = 200 + (rng.next() % 1800) as usize;
                        let value = vec![(step % 251) as u8; len];
                        let mut data = piv_applet::tlv::encode(0x5C, &[0x5F, 0xC1, 0x0D]);
                        piv_applet::tlv::write(&mut data, 0x53, &value);
                        pending_object = Some(value.clone());
                        let resp = r.transmit(&piv_applet::apdu::build_command(
                            0, 0xDB, 0x3F, 0xFF, &data, None,
                        ))?;
                        assert_eq!(*resp, [0x90, 0x00]);
                        last_object = Some(value);
                        acked_writes += 1;
                    }
                    // A PUK change (CHANGE REFERENCE DATA), between two
                    // values. (The PIN's own changes would reset the tries
                    // being counted.)
                    _ => {
                        let new = if puk == PUKS[0] { PUKS[1] } else { PUKS[0] };
                        let mut data = puk.to_vec();
                        data.extend_from_slice(new);
                        pending_puk = Some(new);
                        let resp = r.transmit(&piv_applet::apdu::build_command(
                            0, 0x24, 0x00, 0x81, &data, None,
                        ))?;
                        assert_eq!(*resp, [0x90, 0x00]);
                        puk = new;
                        acked_puk_changes += 1;
                    }
                }
                acked(started);
                // The killer fires within DEADLINE: a card still answering
                // well after that survived its SIGKILL.
                if start.elapsed() > 2 * DEADLINE {
                    return Ok(());
                }
            }
        })();
        {
            let (lock, changed) = &*progress;
            lock.lock().unwrap().done = true;
            changed.notify_all();
        }
        let reached = killer.join().unwrap();
        let _ = child.wait();
        assert!(
            outcome.is_err(),
            "round {round}: the card outlived its SIGKILL"
        );
        assert!(
            reached,
            "round {round}: the card acknowledged {} of the {target} operations due before its SIGKILL (waited {DEADLINE:?}): {outcome:?}",
            progress.0.lock().unwrap().ops
        );
        // A kill between writing and renaming leaves a temporary file
        // (removed by the next open of the card, below).
        if !temporary_files().is_empty() {
            inside_save += 1;
        }
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
            // Either the acknowledged value or the one written after it,
            // whole.
            assert!(
                on_disk == &v || Some(on_disk) == pending_object.as_ref(),
                "round {round}: object torn or lost ({} bytes on disk)",
                on_disk.len()
            );
        }
        // The PUK is the acknowledged one, or the one being set.
        assert!(
            &state.puk.value[..] == puk || pending_puk.is_some_and(|p| &state.puk.value[..] == p),
            "round {round}: the PUK on disk is neither the acknowledged one nor the one being set"
        );
        // Give the PIN its tries and the PUK its first value back for the
        // next round.
        let mut card = Card::open_with(file, pass.as_ref()).unwrap();
        card.set_pin(b"123456").unwrap();
        card.set_puk(PUKS[0]).unwrap();
    }
    // Each kill waits for 1 to 9 acknowledged operations, on average
    // about one of each kind: far fewer means the card did not acknowledge
    // them as it should.
    assert!(
        acked_wrong > rounds / 4 && acked_writes > rounds / 4 && acked_puk_changes > rounds / 4,
        "too few acknowledged operations to test anything: {acked_wrong} tries, {acked_writes} writes, {acked_puk_changes} PUK changes"
    );
    let leftovers = temporary_files();
    // The next open of the card (with its lock held) removes a temporary
    // file left by a kill.
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    eprintln!("{rounds} SIGKILLs ({inside_save} between writing and renaming a save), {acked_wrong} acknowledged wrong tries, {acked_writes} acknowledged writes, {acked_puk_changes} acknowledged PUK changes, {} temporary files left", leftovers.len());
}

/// The APDU loop of [`pcscd_killed_twenty_times_during_an_apdu_loop`] and
/// the test, talking.
#[derive(Default)]
struct ApduLoop {
    stop: AtomicBool,
    /// pcscd restarts so far, counted once the killed pcscd is gone: a
    /// PC/SC context established after it can only reach the new pcscd.
    restarts: AtomicU32,
    /// 1 + the highest count of restarts seen when establishing the context
    /// an APDU then went through (0: none yet).
    served: AtomicU32,
    ok: AtomicU32,
}

/// Waits until an APDU went through a pcscd started after `restarts`
/// restarts (the loop thread must still be running).
fn wait_served(shared: &ApduLoop, looping: &std::thread::JoinHandle<()>, restarts: u32) {
    let deadline = Instant::now() + DEADLINE;
    while shared.served.load(Ordering::SeqCst) <= restarts {
        assert!(
            !looping.is_finished(),
            "the APDU loop stopped (see its panic above)"
        );
        assert!(
            Instant::now() < deadline,
            "no APDU went through within {DEADLINE:?} after pcscd restart {restarts}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each round kills pcscd only once an APDU went through the current
/// pcscd, and the next round starts once one went through the restarted
/// one: every restart is one vreader had to reconnect to, whatever the
/// speed of the machine.
#[test]
fn pcscd_killed_twenty_times_during_an_apdu_loop() {
    let mut rig = Rig::new();
    let file = rig.path("card.json");
    make_card(&file, AlgorithmId::Aes192, &[]);
    rig.insert(&file);
    let shared = Arc::new(ApduLoop::default());
    let looping = {
        let s = shared.clone();
        std::thread::spawn(move || {
            // Every failure waits a little: pcscd is down or restarting.
            let pause = || std::thread::sleep(Duration::from_millis(10));
            let reader = std::ffi::CString::new(READER0).unwrap();
            while !s.stop.load(Ordering::SeqCst) {
                let restarts = s.restarts.load(Ordering::SeqCst);
                let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
                    pause();
                    continue;
                };
                let Ok(card) = ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                else {
                    pause();
                    continue;
                };
                let mut buf = [0u8; 64];
                while let Ok(r) = card.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00], &mut buf) {
                    assert_eq!(r, &[5, 7, 1, 0x90, 0x00]);
                    s.ok.fetch_add(1, Ordering::SeqCst);
                    s.served.fetch_max(restarts + 1, Ordering::SeqCst);
                    if s.stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                pause();
            }
        })
    };
    for round in 0..20 {
        wait_served(&shared, &looping, round);
        // SIGKILL, and wait until the killed pcscd is really gone:
        // pcscd.sh start leaves a still-running pcscd alone.
        pcscd("crash");
        shared.restarts.store(round + 1, Ordering::SeqCst);
        pcscd("start");
        wait_for_card(READER0, DEADLINE);
    }
    wait_served(&shared, &looping, 20);
    shared.stop.store(true, Ordering::SeqCst);
    looping.join().unwrap();
    let log = rig.log(0);
    assert!(
        log.matches("card inserted into the vpcd reader").count() >= 21,
        "vreader reconnected every time"
    );
    eprintln!(
        "20 pcscd restarts, {} APDUs went through",
        shared.ok.load(Ordering::SeqCst)
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
    // Read on a thread, so a helper that never gets its transaction fails
    // the test instead of hanging it.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = [0u8; 5];
        let _ = tx.send(stdout.read_exact(&mut line).map(|()| line));
    });
    let ready = rx.recv_timeout(DEADLINE);
    if !matches!(&ready, Ok(Ok(line)) if line == b"ready") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the helper did not say ready within {DEADLINE:?}: {ready:?}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // pcscd cleans up after the dead client by resetting the card; a
    // client arriving during that cleanup sees the reset (as it would with a
    // physical card) and simply tries again.
    let reader = std::ffi::CString::new(READER0).unwrap();
    let deadline = Instant::now() + DEADLINE;
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
    let log = rig.path("vreader.log");
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (child, port) = spawn_listen(&[&a, &b], &["--idle-timeout", "2"], &log);
    let _child = KillOnDrop(child);
    // Card B's reader comes and goes between the attacks on card A (an
    // idle reader is itself dropped after --idle-timeout).
    let check_good = || {
        let mut good = connect_reader(port + 1);
        assert_eq!(
            *good.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00]).unwrap(),
            [5, 7, 1, 0x90, 0x00]
        );
    };
    check_good();
    let hostile = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
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
    // An empty frame, a half frame (oversize length, few bytes), silence:
    // card A serves them one after the other, each until it is dropped.
    let t = Instant::now();
    let empty = hostile(&[0, 0]);
    let half = hostile(&[0xFF, 0xFF, 1, 2, 3]);
    let silent = hostile(&[]);
    for (s, why) in [
        (empty, "empty frame"),
        (half, "a frame and stopped"),
        (silent, "idle too long"),
    ] {
        let mut buf = [0u8; 1];
        match (&s).read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(_) => panic!("a hostile peer ({why}) got an answer instead of being dropped"),
            Err(e) => panic!("a hostile peer ({why}) was not dropped within {DEADLINE:?}: {e}"),
        }
        // vreader logs a dropped peer after closing its socket, so the
        // peer can see the close first.
        wait_for_log(&log, why);
        check_good();
    }
    // Each went at its own limit (frame 5 s, idle 2 s), with a margin for
    // a loaded machine.
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "dropping the half frame and the silent peer took {:?}",
        t.elapsed()
    );
    // After all that, card A still serves a well-behaved reader.
    let mut again = connect_reader(port);
    assert_eq!(
        *again.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00]).unwrap(),
        [5, 7, 1, 0x90, 0x00]
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
    let refs: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
    let (mut child, port) = spawn_listen(&refs, &[], &rig.path("vreader.log"));
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
                    &[0x00, 0x20, 0x00, 0x80, 0x08][..],
                    &piv_applet::state::pad_pin(piv_applet::state::DEFAULT_PIN),
                ]
                .concat();
                let chuid = piv_applet::ObjectId::CHUID.to_bytes();
                let get_chuid = piv_applet::apdu::build_command(
                    0,
                    0xCB,
                    0x3F,
                    0xFF,
                    &piv_applet::tlv::encode(0x5C, &chuid),
                    Some(256),
                );
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
