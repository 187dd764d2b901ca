//! The test rig: one pcscd for the machine, vreader processes plugged into
//! its vpcd slots, and helpers to run real client tools.
//!
//! Every test that touches pcscd or the vpcd ports holds [`Rig`], which
//! takes a cross-process lock, so tests from all binaries (and other
//! developers' runs) take turns, and kills its vreader on drop so the slots
//! are free for the next test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The stock vpcd readers (`vpcd::names::reader_name(0)` and `(1)`, as
/// constants for the many tests that use them).
pub const READER0: &str = "Virtual PCD 00 00";
pub const READER1: &str = "Virtual PCD 00 01";
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
pub const LOCK_FILE: &str = "/tmp/virtual-piv-e2e.lock";

/// How long the tests wait for what normally takes milliseconds (pcscd
/// seeing a card come or go, a process listening, a log line). Generous: a
/// loaded CI machine with slow fsync can take seconds, and the wait only
/// costs time when something is wrong (the check itself still has to pass).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The vreader binary: `$VREADER_BIN`, else vreader built by cargo in the
/// profile of the running test or bench (so a release bench measures a
/// release vreader). It is (re)built once per process, as `cargo test -p
/// e2e` would otherwise run a stale or missing binary: cargo builds other
/// packages' binaries only for their own tests.
pub fn vreader_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VREADER_BIN") {
            let p = PathBuf::from(p);
            assert!(p.exists(), "VREADER_BIN={} does not exist", p.display());
            return p;
        }
        build_vreader()
    })
    .clone()
}

fn build_vreader() -> PathBuf {
    // Test binaries live in <target>/<profile>/deps, bins in <target>/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target = dir.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root())
        .args(["build", "--quiet", "-p", "vreader"])
        .env("CARGO_TARGET_DIR", &target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} to build vreader: {e}",
            cargo.to_string_lossy()
        )
    });
    assert!(
        out.status.success(),
        "cargo build -p vreader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dir.join("vreader");
    assert!(
        bin.exists(),
        "{} is missing after cargo build -p vreader (set VREADER_BIN to the binary)",
        bin.display()
    );
    bin
}

/// Runs a command, failing the test with its output if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_with(program, args, &[])
}

/// [`run`] with extra environment variables (e.g. `OPENSC_CONF`).
pub fn run_with(program: &str, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): run scripts/setup-pcsc.sh to install the test tools"
            )
        })
}

/// Runs a command that must succeed; returns stdout + stderr as text.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    run_ok_with(program, args, &[])
}

/// [`run_ok`] with extra environment variables.
pub fn run_ok_with(program: &str, args: &[&str], env: &[(String, String)]) -> String {
    let out = run_with(program, args, env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The certificate a signature is checked against.
pub enum CertFrom<'a> {
    /// The card's own certificate object for the key, read with pkcs11-tool.
    Card,
    /// A PEM file made outside the card (what was imported).
    Pem(&'a str),
    /// A DER file made outside the card.
    Der(&'a str),
}

/// Signs with the card's key `id` through OpenSC's PKCS#11 module as the
/// tests' pcscd sees it: see [`sign_and_verify_in`].
pub fn pkcs11_sign_and_verify(
    rig: &Rig,
    id: &str,
    mechanism: &str,
    extra: &[&str],
    cert: CertFrom,
) {
    sign_and_verify_in(rig.dir.path(), &[], id, mechanism, extra, cert);
}

/// Signs with the card's key `id` through OpenSC's PKCS#11 module (PIN
/// 123456, `mechanism` and any `extra` pkcs11-tool arguments) and checks the
/// signature with `openssl dgst -sha256 -verify` against `cert`. Files go
/// to `dir`; `env` reaches OpenSC (e.g. an `OPENSC_CONF` pointing it at
/// another PC/SC library).
pub fn sign_and_verify_in(
    dir: &Path,
    env: &[(String, String)],
    id: &str,
    mechanism: &str,
    extra: &[&str],
    cert: CertFrom,
) {
    let file = |name: String| dir.join(name).to_string_lossy().into_owned();
    let (msg, sig, card_cert, public) = (
        file(format!("msg{id}")),
        file(format!("sig{id}")),
        file(format!("cert{id}.der")),
        file(format!("pub{id}.pem")),
    );
    std::fs::write(&msg, b"signed through OpenSC's PKCS#11 module").unwrap();
    let mut args = vec![
        "--module",
        OPENSC_PKCS11,
        "--login",
        "--pin",
        "123456",
        "--sign",
        "--id",
        id,
        "--mechanism",
        mechanism,
        "--input-file",
        &msg,
        "--output-file",
        &sig,
    ];
    args.extend_from_slice(extra);
    run_ok_with("pkcs11-tool", &args, env);
    let (form, cert_file) = match cert {
        CertFrom::Card => {
            run_ok_with(
                "pkcs11-tool",
                &[
                    "--module",
                    OPENSC_PKCS11,
                    "--read-object",
                    "--type",
                    "cert",
                    "--id",
                    id,
                    "--output-file",
                    &card_cert,
                ],
                env,
            );
            ("DER", card_cert.as_str())
        }
        CertFrom::Pem(file) => ("PEM", file),
        CertFrom::Der(file) => ("DER", file),
    };
    run_ok(
        "openssl",
        &[
            "x509", "-inform", form, "-in", cert_file, "-noout", "-pubkey", "-out", &public,
        ],
    );
    let out = run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &public,
            "-signature",
            &sig,
            &msg,
        ],
    );
    assert!(out.contains("Verified OK"), "{mechanism}: {out}");
}

/// Exclusive use of pcscd and the vpcd slots for one test.
pub struct Rig {
    _lock: File,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Rig {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .expect("lock file");
        lock.lock().expect("e2e lock");
        pcscd("start");
        // A card left in a slot by someone else would answer in place of
        // ours: wait for it to go (the previous test's card leaves within
        // pcscd's next poll), then refuse to run. A slot only counts as
        // free when pcscd says so, not when pcscd cannot answer.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let states = [card_state(READER0), card_state(READER1)];
            if states.iter().all(|s| matches!(s, Ok(false))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the vpcd readers are not both free after {DEADLINE:?} ({READER0}: {}, {READER1}: {}; \
                 another vreader running?): the e2e tests need both slots free",
                describe(&states[0]),
                describe(&states[1])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rig {
            _lock: lock,
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn path_str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Starts `vreader run` with these arguments; output goes to a log in
    /// the test's directory.
    pub fn vreader(&mut self, args: &[&str]) -> usize {
        self.vreader_with_env::<&str>(args, &[])
    }

    /// [`Rig::vreader`] with extra environment variables.
    pub fn vreader_with_env<V: AsRef<std::ffi::OsStr>>(
        &mut self,
        args: &[&str],
        env: &[(&str, V)],
    ) -> usize {
        let log = File::create(self.log_path(self.children.len())).unwrap();
        let child = Command::new(vreader_bin())
            .arg("run")
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vreader");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Plugs a card file into reader slot 0 and waits until pcscd sees it.
    pub fn insert(&mut self, card: &Path) {
        self.vreader(&["--card", &card.to_string_lossy()]);
        wait_for_card(READER0, DEADLINE);
    }

    pub fn pid(&self, index: usize) -> u32 {
        self.children[index].id()
    }

    /// Where vreader `index` logs (stdout and stderr).
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.path(&format!("vreader-{index}.log"))
    }

    pub fn log(&self, index: usize) -> String {
        read_log(&self.log_path(index))
    }

    /// Stops a vreader with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, index: usize) -> std::process::ExitStatus {
        let child = &mut self.children[index];
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vreader did not stop within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Let pcscd notice the cards left (at its next poll), so the next
        // lock holder, which may not be a Rig, finds empty slots. Best
        // effort: the next Rig::new checks, and a drop must not panic.
        if !self.children.is_empty() {
            let deadline = Instant::now() + DEADLINE;
            while (card_present(READER0) || card_present(READER1)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs scripts/pcscd.sh with an action.
pub fn pcscd(action: &str) {
    let script = root().join("scripts/pcscd.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(action)
        .output()
        .expect("run scripts/pcscd.sh");
    assert!(
        out.status.success(),
        "scripts/pcscd.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A log file's text so far, empty if it is not there yet (lossy, so odd
/// bytes do not hide the rest).
pub fn read_log(log: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
}

/// Waits until `log` contains `line` (a process logs it when it gets
/// there, which on a loaded machine can take a while).
pub fn wait_for_log(log: &Path, line: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = read_log(log);
        if text.contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get {line:?} within {DEADLINE:?}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until pcsc-lite reports a card in `reader` (retrying while
/// pcscd cannot answer).
pub fn wait_for_card(reader: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = card_state(reader);
        if matches!(state, Ok(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no card appeared in {reader} within {limit:?} (last: {})",
            describe(&state)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until pcsc-lite reports `reader` empty (pcscd notices a removed
/// card at its next poll, up to ~0.4 s later). A PC/SC error is not an
/// empty reader: it is retried until the deadline.
pub fn wait_for_no_card(reader: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = card_state(reader);
        if matches!(state, Ok(false)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{reader} was not reported empty within {limit:?} (last: {})",
            describe(&state)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether pcsc-lite sees a card in `reader` right now; false also when
/// pcscd cannot answer. To tell "empty" from "unknown", use [`card_state`].
pub fn card_present(reader: &str) -> bool {
    matches!(card_state(reader), Ok(true))
}

/// What pcsc-lite says about `reader` right now: `Ok(true)` for a card,
/// `Ok(false)` for a reader it knows to be empty, and an error when it
/// cannot tell (pcscd down or restarting, the reader not (yet) known or
/// unavailable).
pub fn card_state(reader: &str) -> Result<bool, pcsc::Error> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
    let name = std::ffi::CString::new(reader).unwrap();
    let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::from_millis(0), &mut states)?;
    let state = states[0].event_state();
    if state.contains(pcsc::State::UNKNOWN) {
        Err(pcsc::Error::UnknownReader)
    } else if state.contains(pcsc::State::UNAVAILABLE) {
        Err(pcsc::Error::ReaderUnavailable)
    } else if state.contains(pcsc::State::PRESENT) {
        Ok(true)
    } else if state.contains(pcsc::State::EMPTY) {
        Ok(false)
    } else {
        // Neither flag: pcscd has not settled the reader's state yet.
        Err(pcsc::Error::ReaderUnavailable)
    }
}

/// A [`card_state`] result for a failure message.
fn describe(state: &Result<bool, pcsc::Error>) -> String {
    match state {
        Ok(true) => "card present".into(),
        Ok(false) => "empty".into(),
        Err(e) => format!("PC/SC error: {e}"),
    }
}

/// Makes a card file through the library: YubiKey defaults, the given
/// management key algorithm, and keys with self-signed certificates.
pub fn make_card(
    path: &Path,
    mgmt: piv_applet::AlgorithmId,
    keys: &[(piv_applet::Slot, piv_applet::AlgorithmId)],
) {
    use piv_applet::{Card, CardOptions, PinPolicy, TouchPolicy};
    let opts = CardOptions {
        mgmt_key_alg: mgmt,
        ..CardOptions::default()
    };
    let mut card = Card::create(path, &opts).expect("create card");
    for (slot, alg) in keys {
        card.generate_key(*slot, *alg, PinPolicy::Default, TouchPolicy::Default)
            .expect("generate");
        let subject = format!("CN=e2e {slot}");
        let req = piv_applet::x509::CertRequest {
            subject: &subject,
            serial: &[1, 2, 3],
            not_before: piv_applet::x509::valid_from_now(),
            days: 30,
            extensions: vec![],
        };
        card.self_sign(*slot, &req).expect("self-sign");
    }
}

/// pcscd restarted with [`Farm::CARDS`] vpcd readers from a `vreader
/// readers --standalone --install` configuration in the rig's directory
/// (driver copies included), for tests and benchmarks of many cards.
/// Dropping it restarts the stock pcscd (two readers) for whoever comes
/// next.
pub struct Farm;

impl Farm {
    /// The most readers one pcscd serves, all used.
    pub const CARDS: u32 = 16;

    /// `quiet`: pcscd without its debug log (benchmarks).
    pub fn start(rig: &Rig, quiet: bool) -> Farm {
        let conf = rig.path("farm-reader.conf");
        let drivers = rig.path("farm-drivers");
        run_ok(
            vreader_bin().to_str().unwrap(),
            &[
                "readers",
                "--count",
                &Farm::CARDS.to_string(),
                "--standalone",
                "--install",
                "--conf",
                conf.to_str().unwrap(),
                "--driver-dir",
                drivers.to_str().unwrap(),
            ],
        );
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/pcscd.sh"))
            .arg("restart")
            .env("PCSCD_CONF", &conf);
        if quiet {
            cmd.env("PCSCD_QUIET", "1");
        }
        let out = cmd.output().expect("scripts/pcscd.sh");
        assert!(
            out.status.success(),
            "pcscd with {}: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // A guard before the check, so a failed check still restores pcscd.
        let farm = Farm;
        let deadline = Instant::now() + DEADLINE;
        let want: Vec<String> = (0..Farm::CARDS).map(vpcd::names::reader_name).collect();
        loop {
            let states: Vec<_> = want.iter().map(|r| card_state(r)).collect();
            if states.iter().all(|s| matches!(s, Ok(false))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pcscd with {} does not show {} empty readers named as vpcd::names says: {:?}",
                conf.display(),
                Farm::CARDS,
                want.iter().zip(&states).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        farm
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/pcscd.sh"))
            .arg("restart")
            .status();
    }
}

/// What a benchmark ran on, for its BENCHMARKS.md section: "N cores
/// (nproc), CPU, RAM, Linux VERSION. Date: DATE. pcscd V + vsmartcard-vpcd
/// V".
pub fn bench_machine() -> String {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} cores (nproc), {}, {}, Linux {}. Date: {}. pcscd {} + vsmartcard-vpcd {}",
        sh("nproc"),
        sh("sed -n 's/^model name\\s*: //p' /proc/cpuinfo | head -1"),
        sh("awk '/MemTotal/ {printf \"%.0f GB RAM\", $2/1048576}' /proc/meminfo"),
        sh("uname -r"),
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("dpkg-query -W -f '${Version}' pcscd"),
        sh("dpkg-query -W -f '${Version}' vsmartcard-vpcd"),
    )
}

/// A card that answers 9000 to every APDU, reading and writing as vreader
/// does (TCP_NODELAY, TCP_QUICKACK before each read, buffered frame
/// decoding, one write per frame) with no card behind it: the floor of
/// pcscd + vpcd in the benchmarks. Serves the vpcd slot on `port` until
/// the reader hangs up.
pub fn floor_card(port: u16) {
    use std::io::{Read, Write};
    let mut s = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    vpcd::tune(&s).unwrap();
    let mut decoder = vpcd::FrameDecoder::default();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(p) = decoder.next_frame() {
            let reply: &[u8] = match vpcd::Request::parse(&p) {
                Some(vpcd::Request::Control(vpcd::Control::GetAtr)) => {
                    &piv_applet::state::YUBIKEY5_NFC_ATR
                }
                Some(vpcd::Request::Control(_)) => continue,
                Some(vpcd::Request::Apdu(_)) => &[0x90, 0x00],
                None => return,
            };
            s.write_all(&vpcd::encode_frame(reply).unwrap()).unwrap();
        }
        vpcd::quickack(&s);
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stock_reader_constants_are_vpcds_names() {
        assert_eq!(super::READER0, vpcd::names::reader_name(0));
        assert_eq!(super::READER1, vpcd::names::reader_name(1));
    }
}
