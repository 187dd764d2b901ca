//! Linux end-to-end tests of the pcsc-lite build: real clients
//! use our library with no pcscd in the path. OpenSC is pointed at it with
//! `reader_driver pcsc { provider_library = ... }`; the `pcsc` crate
//! client loads it as libpcsclite.so.1 through LD_LIBRARY_PATH.
//!
//! Missing tools fail the tests with a message naming the package; they
//! are never skipped.
#![cfg(target_os = "linux")]

mod common;
use common::{card_session, make_card, serve_over_link, shim_so, DATA};

use std::process::Command;

use e2e::artifacts::example;
use e2e::opensc::{require_tools, wait_for_card_in, wait_for_empty_reader};
use e2e::{
    output_text, vreader_bin, vreader_ok, CertFrom, KillOnDrop, OpenSc, DEADLINE, OPENSC_PKCS11,
};

/// OpenSC pointed at the shim, the card chosen by the shim's environment.
struct Env {
    opensc: OpenSc,
    _dir: tempfile::TempDir,
    _card_dir: Option<tempfile::TempDir>,
}

impl Env {
    /// OpenSC configured to use our library, with the card given by `card_var`.
    fn new(card_var: (&str, String)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("opensc.conf");
        std::fs::write(
            &conf,
            format!(
                "app default {{\n  reader_driver pcsc {{\n    provider_library = {};\n  }}\n}}\n",
                shim_so().display()
            ),
        )
        .unwrap();
        let log = dir.path().join("shim.log");
        let env = vec![
            ("OPENSC_CONF".to_string(), conf.display().to_string()),
            (card_var.0.to_string(), card_var.1),
            ("VIRTUAL_PIV_LOG".to_string(), log.display().to_string()),
        ];
        Env {
            opensc: OpenSc {
                reader: None,
                env,
                // The shim is the PC/SC library: nothing must reach pcscd.
                unset: vec!["PCSCLITE_CSOCK_NAME".to_string()],
                dir: dir.path().to_path_buf(),
                log: Some(log),
            },
            _dir: dir,
            _card_dir: None,
        }
    }

    fn with(mut self, var: &str, value: String) -> Env {
        self.opensc.env.push((var.to_string(), value));
        self
    }

    fn embedded() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let card = make_card(dir.path());
        let mut e = Env::new(("VIRTUAL_PIV_CARD_FILE", card.display().to_string()));
        e._card_dir = Some(dir);
        e
    }

    fn log(&self) -> String {
        self.opensc.log_text()
    }
}

/// The OpenSC suite against the shim's test card, whose certificate is
/// the test data's; the PIN must not reach the shim's log.
fn opensc_suite(env: &Env) {
    let cert = format!("{DATA}/rsa2048.cert.der");
    env.opensc.suite(CertFrom::Der(&cert));
    assert!(!env.log().contains("123456"), "PIN in the shim log");
}

#[test]
fn opensc_against_the_embedded_card() {
    require_tools();
    let env = Env::embedded();
    opensc_suite(&env);
    assert!(
        env.log().contains("cache built"),
        "the shim built the cache at connect:\n{}",
        env.log()
    );
}

/// 7.5: a passphrase-encrypted card file, opened by the shim with the
/// passphrase from VIRTUAL_PIV_CARD_PASSPHRASE_FILE; without it, or with a
/// wrong one, the shim offers no card and its log says why.
#[test]
fn opensc_against_a_sealed_card_file() {
    require_tools();
    let card_dir = tempfile::tempdir().unwrap();
    let card = make_card(card_dir.path());
    piv_applet::Card::open(&card)
        .unwrap()
        .set_passphrase(
            Some(&piv_applet::Passphrase::new(
                b"shim test passphrase".to_vec(),
            )),
            piv_applet::KdfParams::default(),
        )
        .unwrap();
    let file = std::fs::read_to_string(&card).unwrap();
    assert!(file.contains("virtual-piv-card-sealed") && !file.contains("\"pin\""));
    let pass_file = card_dir.path().join("passphrase");
    std::fs::write(&pass_file, "shim test passphrase\n").unwrap();

    let mut env = Env::new(("VIRTUAL_PIV_CARD_FILE", card.display().to_string()));
    env.opensc.env.push((
        "VIRTUAL_PIV_CARD_PASSPHRASE_FILE".into(),
        pass_file.display().to_string(),
    ));
    opensc_suite(&env);
    // The card's saves (PIN tries during the suite) kept it sealed.
    let file = std::fs::read_to_string(&card).unwrap();
    assert!(file.contains("virtual-piv-card-sealed"));

    for (what, extra) in [
        ("no passphrase", None),
        ("a wrong passphrase", Some("not it")),
    ] {
        let mut env = Env::new(("VIRTUAL_PIV_CARD_FILE", card.display().to_string()));
        if let Some(p) = extra {
            env.opensc
                .env
                .push(("VIRTUAL_PIV_CARD_PASSPHRASE".into(), p.into()));
        }
        let out = e2e::run::output_of(env.opensc.command("opensc-tool").arg("-l"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("Virtual PIV Reader"),
            "{what}: the card must not be offered:\n{text}"
        );
        let log = env.log();
        let want = if extra.is_some() {
            "wrong passphrase"
        } else {
            "VIRTUAL_PIV_CARD_PASSPHRASE_FILE"
        };
        assert!(log.contains(want), "{what}: the log says why:\n{log}");
        assert!(!log.contains("not it"), "the passphrase reached the log");
    }
}

#[test]
fn opensc_with_msrdpex_variables() {
    require_tools();
    let mut env = Env::new((
        "WINSCARD_CERTIFICATE_FILE_PATH",
        format!("{DATA}/rsa2048.cert.der"),
    ));
    env.opensc.env.push((
        "WINSCARD_PRIVATE_KEY_FILE_PATH".into(),
        format!("{DATA}/rsa2048.pkcs1.pem"),
    ));
    env.opensc.names_a_piv_card();
    env.opensc.lists_the_piv_authentication_certificate();
}

/// The `pcsc` crate's client, unmodified, loading our library as
/// libpcsclite.so.1 (its only link to PC/SC).
#[test]
fn pcsc_crate_client_uses_the_shim_as_libpcsclite() {
    let client = example("winscard-shim", "pcsc_client");
    let env = Env::embedded();
    let libdir = env.opensc.dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    std::os::unix::fs::symlink(shim_so(), libdir.join("libpcsclite.so.1")).unwrap();
    let out = e2e::run::succeed(
        env.opensc
            .command(client.to_str().unwrap())
            .env("LD_LIBRARY_PATH", &libdir),
        || format!("\nshim log:\n{}", env.log()),
    );
    let text = output_text(&out);
    assert!(
        text.contains("reader: Virtual PIV Reader 00 00"),
        "served by the shim, not pcscd:\n{text}"
    );
    assert!(text.contains("pcsc-client: OK"), "{text}");
}

/// The remote backend: the shim plays the reader side of vpcd, inside the
/// paired TLS link, against a card served over TCP, and OpenSC cannot
/// tell the difference.
#[test]
fn opensc_against_a_remote_card_over_vpcd() {
    require_tools();
    let card_dir = tempfile::tempdir().unwrap();
    let (addr, shim_file) = serve_over_link(make_card(card_dir.path()), card_dir.path());
    let env = Env::new(("VIRTUAL_PIV_REMOTE", addr))
        .with("VIRTUAL_PIV_LINK", shim_file.display().to_string());
    opensc_suite(&env);
    assert!(env.log().contains("connected"), "{}", env.log());
}

/// What OpenSC reports about a card, minus reader names and timings.
fn card_view(opensc: &OpenSc) -> Vec<String> {
    let mut out = Vec::new();
    for (prog, args) in [
        ("pkcs15-tool", &["--list-certificates"][..]),
        ("pkcs15-tool", &["--list-keys"][..]),
        ("pkcs15-tool", &["--read-certificate", "01"][..]),
        ("pkcs11-tool", &["--module", OPENSC_PKCS11, "-L"][..]),
        ("pkcs11-tool", &["--module", OPENSC_PKCS11, "-O"][..]),
    ] {
        let text = opensc.stdout(prog, args);
        out.extend(
            text.lines()
                // Reader names, pcscd's second (empty) vpcd slot and
                // PKCS#11 object handles differ by construction.
                .filter(|l| {
                    !l.contains("Virtual P")
                        && !l.contains("Using reader")
                        && !l.contains("(empty)")
                        && !l.trim().is_empty()
                })
                .map(|l| {
                    let l = l.trim_end();
                    match l.rsplit_once(' ') {
                        Some((head, n))
                            if head.ends_with("object")
                                && n.bytes().all(|c| c.is_ascii_digit()) =>
                        {
                            head.to_string()
                        }
                        _ => l.to_string(),
                    }
                }),
        );
    }
    out
}

/// Signs with key 01 through OpenSC and verifies the signature against
/// the certificate the test card was made with.
fn sign_and_verify(opensc: &OpenSc) {
    let cert = format!("{DATA}/rsa2048.cert.der");
    opensc.sign_and_verify("01", "SHA256-RSA-PKCS", &[], CertFrom::Der(&cert));
}

/// The same card file through the shim and through pcscd + vpcd: OpenSC
/// sees the same certificates, keys, objects and token serial, and both
/// signatures verify. Uses vpcd's slot 0 port, so it takes the e2e lock
/// (not through `e2e::Rig`, which asks pcsc-lite in-process: this binary
/// links the shim's rlib, whose `SCard*` exports would answer instead).
#[test]
fn same_answers_through_the_shim_and_through_pcscd() {
    require_tools();
    let lock = std::fs::File::create(e2e::LOCK_FILE).unwrap();
    lock.lock().unwrap();
    e2e::pcscd("start");
    let card_dir = tempfile::tempdir().unwrap();
    let card = make_card(card_dir.path());

    let shim = Env::new(("VIRTUAL_PIV_CARD_FILE", card.display().to_string()));
    let via_shim = card_view(&shim.opensc);
    sign_and_verify(&shim.opensc);

    // Now the same file, served to pcscd's vpcd slot 0 by a card thread.
    let mut c = piv_applet::Card::open(&card).expect("open card");
    let mut s = std::net::TcpStream::connect("127.0.0.1:35963")
        .expect("vpcd slot 0 (is vsmartcard-vpcd installed?)");
    let stopper = s.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || card_session(&mut c, &mut s, Some(tx)));
    // vpcd accepts a new card only after noticing the previous one left:
    // wait until it really talks to this session before asking pcscd.
    rx.recv_timeout(DEADLINE)
        .expect("vpcd never talked to the card (is another card connected to slot 0?)");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("opensc.conf");
    std::fs::write(&conf, "app default {\n}\n").unwrap();
    let pcscd = OpenSc {
        reader: None,
        env: vec![("OPENSC_CONF".into(), conf.display().to_string())],
        unset: Vec::new(),
        dir: dir.path().to_path_buf(),
        log: None,
    };
    wait_for_card_in(e2e::READER0, &pcscd.env);
    let via_pcscd = card_view(&pcscd);
    sign_and_verify(&pcscd);
    // Hang up: pcscd sees the card leave and the slot is free again.
    let _ = stopper.shutdown(std::net::Shutdown::Both);
    server.join().unwrap();
    // The slot is left empty for the next user: pcscd must say so (an
    // error from pcscd is not an empty slot).
    wait_for_empty_reader(e2e::READER0);
    assert_eq!(via_shim, via_pcscd, "OpenSC sees the same card both ways");
    assert!(
        via_shim.iter().any(|l| l.contains("serial")),
        "{via_shim:#?}"
    );
}

/// The shim's remote backend against the real `vreader --listen`,
/// OpenSC on top, over the link `vreader pair` set up.
#[test]
fn opensc_against_vreader_listen() {
    use std::io::BufRead;
    require_tools();
    let card_dir = tempfile::tempdir().unwrap();
    let card = make_card(card_dir.path());
    let addr = format!("127.0.0.1:{}", e2e::free_port());
    let link = card_dir.path().join("link");
    vreader_ok(&["pair", "--dir", link.to_str().unwrap()]);
    let mut child = Command::new(vreader_bin())
        .args(["run", "--card", card.to_str().unwrap(), "--listen", &addr])
        .args([
            "--link-credentials",
            link.join("vreader.pem").to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vreader");
    let stderr = child.stderr.take().unwrap();
    let _child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waiting for a reader") || line.contains("refused") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("vreader --listen never said it was waiting for a reader");
    // Neither a plain vpcd reader nor a shim of another pairing gets the
    // card, and vreader names each refused peer and the reason.
    let mut plain = vpcd::ReaderConnection::connect(&addr).unwrap();
    plain.set_timeout(Some(DEADLINE)).unwrap();
    plain.control(vpcd::Control::PowerOn).unwrap();
    let atr = plain.atr();
    assert!(atr.is_err(), "a plain vpcd reader got the ATR {atr:?}");
    let line = rx.recv_timeout(DEADLINE).expect("no refusal logged");
    assert!(
        line.contains("reader 127.0.0.1:") && line.contains("refused: TLS handshake failed"),
        "{line}"
    );
    // The impostor pins the real vreader (its certificate is no secret)
    // but has its own key.
    let (stranger, _) = winscard::link::generate_pair().unwrap();
    let real = std::fs::read_to_string(link.join("shim.pem")).unwrap();
    let peer_block = |t: &str| t.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    let impostor = format!(
        "{}{}",
        &stranger[..peer_block(&stranger)],
        &real[peer_block(&real)..]
    );
    let config = winscard::link::Credentials::from_pem(&impostor)
        .unwrap()
        .client_config()
        .unwrap();
    let sock = std::net::TcpStream::connect(&addr).unwrap();
    let got = winscard::link::connect(sock, &config, DEADLINE).and_then(|mut s| {
        winscard::link::write_frame(&mut s, &[vpcd::Control::GetAtr.into()])?;
        winscard::link::read_frame(&mut s, &mut vpcd::FrameDecoder::default())
    });
    assert!(
        matches!(got, Err(_) | Ok(None)),
        "an unpaired shim got {got:?}"
    );
    let line = rx.recv_timeout(DEADLINE).expect("no refusal logged");
    assert!(line.contains("not the paired shim certificate"), "{line}");
    let env = Env::new(("VIRTUAL_PIV_REMOTE", addr.clone())).with(
        "VIRTUAL_PIV_LINK",
        link.join("shim.pem").display().to_string(),
    );
    opensc_suite(&env);
    assert!(
        env.log().contains(&format!("{addr}: connected")),
        "{}",
        env.log()
    );
}
