//! Running the programs a test drives (client tools, vreader's CLI) and
//! failing the test with everything they said when they do not succeed. A
//! missing program fails the test with what to install; nothing is skipped.

use std::process::{Child, Command, Output, Stdio};

use crate::artifacts::vreader_bin;

/// A program's stdout then stderr, as text (lossy: odd bytes must not hide
/// the rest of a failure message).
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a prepared command with no input, failing the test if it cannot
/// start.
pub fn output_of(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): run scripts/setup-pcsc.sh to install the test tools")
    })
}

/// Runs a prepared command that must succeed. `context` is added to the
/// failure message (say a log the program wrote), and only read then.
pub fn succeed(cmd: &mut Command, context: impl FnOnce() -> String) -> Output {
    let out = output_of(cmd);
    if !out.status.success() {
        let args: Vec<_> = cmd.get_args().collect();
        panic!(
            "{} {args:?} failed ({}):\n{}{}",
            cmd.get_program().to_string_lossy(),
            out.status,
            output_text(&out),
            context()
        );
    }
    out
}

/// Runs a command, failing the test with its output if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_with(program, args, &[])
}

/// [`run`] with extra environment variables (e.g. `OPENSC_CONF`).
pub fn run_with(program: &str, args: &[&str], env: &[(String, String)]) -> Output {
    output_of(
        Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v))),
    )
}

/// Runs a command that must succeed; returns stdout + stderr as text.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    run_ok_with(program, args, &[])
}

/// [`run_ok`] with extra environment variables.
pub fn run_ok_with(program: &str, args: &[&str], env: &[(String, String)]) -> String {
    output_text(&succeed(
        Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v))),
        String::new,
    ))
}

/// Runs `vreader` with these arguments (a CLI command, not a card: see
/// [`crate::Rig::vreader`]).
pub fn vreader(args: &[&str]) -> Output {
    output_of(Command::new(vreader_bin()).args(args))
}

/// [`vreader`] that must succeed; returns stdout + stderr as text.
pub fn vreader_ok(args: &[&str]) -> String {
    output_text(&succeed(
        Command::new(vreader_bin()).args(args),
        String::new,
    ))
}

/// Fails the test unless `tool` is on the PATH, naming the Debian package
/// that has it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{package}` (apt-get install \
         {package}; scripts/setup-pcsc.sh installs every test tool)"
    );
}

/// A process the test started, killed when the test ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback TCP port free at the time of asking (for a listener the
/// test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}
