//! One pcscd for the machine and exclusive use of its vpcd slots: the
//! cross-process lock every pcscd test takes, the vreader processes a test
//! plugs in, and pcscd restarted with many readers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::artifacts::{root, vreader_bin};
use crate::reader::{card_present, card_state, describe, wait_for_card, READER0, READER1};
use crate::run::run_ok;
use crate::DEADLINE;

/// The lock every user of pcscd and the vpcd ports takes in turn.
pub const LOCK_FILE: &str = "/tmp/virtual-piv-e2e.lock";

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
