//! OpenSC's tools (opensc-tool, pkcs15-tool, pkcs11-tool with OpenSC's
//! PKCS#11 module) against a card, wherever it is served: through pcscd +
//! vpcd, or through the shim standing in for libpcsclite. The checks are
//! written once here and run for each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::rig::Rig;
use crate::run::{output_text, require_tool, run_ok, succeed};
use crate::DEADLINE;

/// OpenSC's PKCS#11 module (Debian package `opensc-pkcs11`).
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// Fails the test unless OpenSC's tools, its PKCS#11 module and openssl
/// are installed, naming the package to install.
pub fn require_tools() {
    require_tool("opensc-tool", "opensc");
    require_tool("pkcs15-tool", "opensc");
    require_tool("pkcs11-tool", "opensc");
    require_tool("openssl", "openssl");
    assert!(
        Path::new(OPENSC_PKCS11).is_file(),
        "{OPENSC_PKCS11} is missing: install the Debian package `opensc-pkcs11`"
    );
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

/// How OpenSC's tools reach the card under test.
pub struct OpenSc {
    /// The reader for `opensc-tool -r` and `pkcs15-tool --reader`; `None`
    /// leaves the choice to OpenSC (the only reader there is).
    pub reader: Option<String>,
    /// Environment for every tool (e.g. an `OPENSC_CONF` that points OpenSC
    /// at another PC/SC library, and that library's configuration).
    pub env: Vec<(String, String)>,
    /// Environment variables removed for every tool.
    pub unset: Vec<String>,
    /// The tools' working directory, and where signatures and keys go.
    pub dir: PathBuf,
    /// A log shown when a tool fails (the shim's, say).
    pub log: Option<PathBuf>,
}

impl OpenSc {
    /// The card in `reader` of the tests' pcscd, files in `dir`.
    pub fn pcscd(reader: &str, dir: &Path) -> OpenSc {
        OpenSc {
            reader: Some(reader.to_string()),
            env: Vec::new(),
            unset: Vec::new(),
            dir: dir.to_path_buf(),
            log: None,
        }
    }

    /// `program` with this environment, in [`OpenSc::dir`].
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir);
        for var in &self.unset {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs a tool that must succeed; a failure shows the log too.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        succeed(self.command(program).args(args), || {
            self.log.as_ref().map_or_else(String::new, |log| {
                format!("\nlog {}:\n{}", log.display(), self.log_text())
            })
        })
    }

    /// [`OpenSc::run`]'s standard output as text.
    pub fn stdout(&self, program: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(program, args).stdout).into_owned()
    }

    /// The log so far (empty without one, or before it is written).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// `args` behind the reader option (`-r` or `--reader`), if any.
    fn on_reader<'a>(&'a self, option: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = Vec::new();
        if let Some(reader) = &self.reader {
            all.extend([option, reader.as_str()]);
        }
        all.extend_from_slice(args);
        all
    }

    /// `opensc-tool <args>` on the reader.
    pub fn opensc_tool(&self, args: &[&str]) -> String {
        self.stdout("opensc-tool", &self.on_reader("-r", args))
    }

    /// `pkcs15-tool <args>` on the reader.
    pub fn pkcs15_tool(&self, args: &[&str]) -> String {
        self.stdout("pkcs15-tool", &self.on_reader("--reader", args))
    }

    /// opensc-tool recognises a PIV card; returns what it said.
    pub fn names_a_piv_card(&self) -> String {
        let name = self.opensc_tool(&["-n"]);
        assert!(
            name.contains("Personal Identity Verification Card"),
            "opensc-tool -n: {name}"
        );
        name
    }

    /// pkcs15-tool's dump lists the PIV Authentication certificate;
    /// returns the dump.
    pub fn lists_the_piv_authentication_certificate(&self) -> String {
        let dump = self.pkcs15_tool(&["-D"]);
        assert!(
            dump.contains("Certificate for PIV Authentication"),
            "pkcs15-tool -D:\n{dump}"
        );
        dump
    }

    /// OpenSC's PKCS#11 module passes its own self-test (`pkcs11-tool
    /// --test --login`) with PIN 123456.
    pub fn pkcs11_self_test(&self) {
        let out = output_text(&self.run(
            "pkcs11-tool",
            &[
                "--module",
                OPENSC_PKCS11,
                "--test",
                "--login",
                "--pin",
                "123456",
            ],
        ));
        assert!(out.contains("No errors"), "pkcs11-tool --test:\n{out}");
    }

    /// Signs with the card's key `id` through OpenSC's PKCS#11 module (PIN
    /// 123456, `mechanism` and any `extra` pkcs11-tool arguments) and
    /// checks the signature with `openssl dgst -sha256 -verify` against
    /// `cert`.
    pub fn sign_and_verify(&self, id: &str, mechanism: &str, extra: &[&str], cert: CertFrom) {
        let file = |name: String| self.dir.join(name).to_string_lossy().into_owned();
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
        self.run("pkcs11-tool", &args);
        let (form, cert_file) = match cert {
            CertFrom::Card => {
                self.run(
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

    /// What every way of serving a card with an RSA key and its
    /// certificate in 9A (PKCS#15 id 01) must pass: opensc-tool names it,
    /// pkcs15-tool lists the certificate and key, a signature with the key
    /// verifies against `cert`, and the PKCS#11 self-test passes.
    pub fn suite(&self, cert: CertFrom) {
        self.names_a_piv_card();
        let dump = self.lists_the_piv_authentication_certificate();
        assert!(
            dump.contains("PIV AUTH key") || dump.contains("Private RSA Key"),
            "pkcs15-tool -D:\n{dump}"
        );
        self.sign_and_verify("01", "SHA256-RSA-PKCS", &[], cert);
        self.pkcs11_self_test();
    }
}

/// Signs with the card's key `id` through OpenSC's PKCS#11 module as the
/// tests' pcscd sees it: see [`OpenSc::sign_and_verify`].
pub fn pkcs11_sign_and_verify(
    rig: &Rig,
    id: &str,
    mechanism: &str,
    extra: &[&str],
    cert: CertFrom,
) {
    OpenSc::pcscd(crate::READER0, rig.dir.path()).sign_and_verify(id, mechanism, extra, cert);
}

/// What opensc-tool says about `reader` (`-a`: the card's ATR), and
/// whether it succeeded.
fn atr_of(reader: &str, env: &[(String, String)]) -> (bool, String) {
    let out = crate::run::output_of(
        Command::new("opensc-tool")
            .args(["-r", reader, "-a"])
            .envs(env.iter().map(|(k, v)| (k, v))),
    );
    (out.status.success(), output_text(&out))
}

/// Waits until pcscd shows a card in `reader`, asking through opensc-tool
/// (for a process that cannot ask pcsc-lite itself: see
/// [`wait_for_empty_reader`]).
pub fn wait_for_card_in(reader: &str, env: &[(String, String)]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (ok, said) = atr_of(reader, env);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pcscd never saw the card on {reader} (last: {said})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until pcscd reports `reader` empty, asking through opensc-tool.
/// Not [`crate::wait_for_no_card`] for a test binary that links the shim's
/// rlib: its exported `SCard*` functions then stand in for libpcsclite's
/// inside the process, so in-process PC/SC calls would ask the shim, not
/// pcscd. "Card not present" is opensc-tool's answer for an empty reader
/// only; a pcscd error gives another message.
pub fn wait_for_empty_reader(reader: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (ok, said) = atr_of(reader, &[]);
        if !ok && said.contains("Card not present") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{reader} was not reported empty within {DEADLINE:?} (last: {said})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
