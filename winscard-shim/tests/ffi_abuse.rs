//! FFI abuse of the pcsc-lite build under valgrind.
//!
//! `tests/ffi_abuse/abuse.c` drives every export of `libwinscard.so`
//! through the C ABI (NULL pointers, zero lengths, tiny buffers,
//! SCARD_AUTOALLOCATE + SCardFreeMemory, stale and foreign handles,
//! concurrent threads) and checks the SCARD_* code of each call. These tests
//! compile it with gcc against pcsc-lite's headers and our library, and run
//! it under `valgrind --leak-check=full --errors-for-leak-kinds=definite`:
//! a wrong code, a memory error or a definite leak fails the test.
//!
//! A missing tool (gcc, valgrind, nm, the pcsc-lite headers) fails the test
//! with the package to install; nothing is skipped.
#![cfg(target_os = "linux")]

mod common;
use common::{make_card, shim_so};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use e2e::require_tool;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ffi_abuse/abuse.c");

/// The valgrind command line (also quoted in RELIABILITY.md).
const VALGRIND: &[&str] = &[
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--show-leak-kinds=all",
    "--error-exitcode=99",
    "--num-callers=40",
];

/// Each mode takes well under 10 s under valgrind on 2 cores.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

struct Driver {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

/// Builds the driver once: a private copy of the library (so a concurrent
/// `cargo build` cannot swap it under valgrind) and abuse.c linked to it.
fn driver() -> &'static Driver {
    static D: OnceLock<Driver> = OnceLock::new();
    D.get_or_init(|| {
        require_tool("gcc", "gcc");
        require_tool("valgrind", "valgrind");
        require_tool("nm", "binutils");
        assert!(
            Path::new("/usr/include/PCSC/winscard.h").is_file(),
            "<PCSC/winscard.h> is missing: install the Debian package `libpcsclite-dev`"
        );
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libwinscard.so");
        std::fs::copy(shim_so(), &lib).unwrap();
        check_every_export_is_driven(&lib);
        let exe = dir.path().join("abuse");
        let out = Command::new("gcc")
            .args([
                "-std=gnu11",
                "-O1",
                "-g",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pthread",
            ])
            // pcsc-lite's headers include each other without the PCSC/ prefix.
            .arg("-I/usr/include/PCSC")
            .arg(SOURCE)
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", dir.path().display()))
            .arg("-lwinscard")
            .arg(format!("-Wl,-rpath,{}", dir.path().display()))
            .output()
            .expect("run gcc");
        assert!(
            out.status.success(),
            "gcc failed to build {SOURCE}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Driver { dir, exe }
    })
}

/// Every function and variable the library exports must be named in
/// abuse.c, so a new export cannot slip past this test.
fn check_every_export_is_driven(lib: &Path) {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib)
        .output()
        .expect("run nm");
    assert!(out.status.success(), "nm -D {}", lib.display());
    let exports: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("SCard") || s.starts_with("pcsc_") || s.starts_with("g_rg"))
        .map(str::to_string)
        .collect();
    assert!(
        exports.len() >= 22,
        "expected the pcsc-lite exports, got {exports:?}"
    );
    let source = std::fs::read_to_string(SOURCE).unwrap();
    let missing: Vec<&String> = exports
        .iter()
        .filter(|e| !source.contains(&format!("{e}(")) && !source.contains(&format!("{e}.")))
        .collect();
    assert!(
        missing.is_empty(),
        "exports not driven by tests/ffi_abuse/abuse.c: {missing:?}"
    );
}

/// Runs the driver in `mode` under valgrind with exactly the given shim
/// configuration (everything else the shim reads is removed).
fn run(mode: &str, vars: &[(&str, String)]) {
    let d = driver();
    let started = Instant::now();
    let mut cmd = Command::new("valgrind");
    cmd.args(VALGRIND).arg(&d.exe).arg(mode);
    for (k, _) in std::env::vars() {
        if k.starts_with("WINSCARD_") || k.starts_with("VIRTUAL_PIV_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    // Output to a file, and a deadline: a hang (say a wait that SCardCancel
    // no longer ends) fails the test instead of blocking the suite.
    let log = d.dir.path().join(format!("valgrind-{mode}.txt"));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("run valgrind");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mode {mode} still running after {DEADLINE:?} (hung?):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("ffi abuse:") || l.contains("ERROR SUMMARY") || l.contains("definitely lost")
        })
        .collect();
    eprintln!(
        "{mode}: {:.1} s under valgrind\n{}",
        started.elapsed().as_secs_f64(),
        summary.join("\n")
    );
    match status.code() {
        Some(0) => {}
        Some(99) => {
            panic!("valgrind found memory errors or definite leaks in mode {mode}:\n{text}")
        }
        Some(1) => panic!("wrong SCARD_* codes in mode {mode} (FAIL lines):\n{text}"),
        other => panic!("the driver crashed or was killed in mode {mode} ({other:?}):\n{text}"),
    }
    let kept = autoallocations_left(&text);
    assert!(
        kept.is_empty(),
        "SCARD_AUTOALLOCATE buffers still held at exit although the driver freed every one \
         with SCardFreeMemory (mode {mode}):\n{}",
        kept.join("\n")
    );
    assert!(
        text.contains("ERROR SUMMARY: 0 errors"),
        "no clean valgrind summary in mode {mode}:\n{text}"
    );
    assert!(
        text.contains(&format!("ffi abuse: mode {mode}:")) && text.contains(" 0 failed"),
        "the driver did not finish mode {mode}:\n{text}"
    );
}

/// Valgrind loss records of blocks made by `abi_util::allocate` (the
/// SCARD_AUTOALLOCATE buffers). The library keeps them in a table until
/// SCardFreeMemory, so a forgotten one is "reachable", not "definitely
/// lost": look for them by allocation stack instead. The table's own
/// storage (hashbrown) is not one of them.
fn autoallocations_left(valgrind_output: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current: Option<String> = None;
    for line in valgrind_output.lines() {
        let body = line.split_once("== ").map_or("", |(_, b)| b);
        if line.contains(" in loss record ") {
            records.extend(current.take());
            current = Some(format!("{body}\n"));
        } else if body.trim().is_empty() {
            records.extend(current.take());
        } else if let Some(r) = current.as_mut() {
            r.push_str(body);
            r.push('\n');
        }
    }
    records.extend(current);
    records
        .into_iter()
        .filter(|r| {
            r.contains(": allocate<") && r.contains("(abi_util.rs:") && !r.contains("hashbrown")
        })
        .collect()
}

#[test]
fn autoallocation_leak_detector_finds_a_forgotten_buffer() {
    // Shape of valgrind's record for a buffer SCardListReaders handed out
    // and nobody freed, next to the allocation table's own storage.
    let out = "==1== 32 bytes in 1 blocks are possibly lost in loss record 7 of 24
==1==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1==    by 0x498D738: allocate<u8> (abi_util.rs:67)
==1==    by 0x498D738: winscard::abi_util::write_out (abi_util.rs:106)
==1== 
==1== 116 bytes in 1 blocks are possibly lost in loss record 8 of 24
==1==    by 0x49586AC: hashbrown::raw::RawTable<T,A>::reserve_rehash (src/raw/mod.rs:1013)
==1==    by 0x498D8D8: allocate<u8> (abi_util.rs:73)
==1== 
";
    let found = autoallocations_left(out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("loss record 7"));
}

#[test]
fn every_export_abused_with_a_card_under_valgrind() {
    let dir = tempfile::tempdir().unwrap();
    let card = make_card(dir.path());
    run(
        "card",
        &[
            ("VIRTUAL_PIV_CARD_FILE", card.display().to_string()),
            // Exercise the logging path of every call too.
            (
                "VIRTUAL_PIV_LOG",
                dir.path().join("shim.log").display().to_string(),
            ),
        ],
    );
}

#[test]
fn every_export_abused_with_no_readers_under_valgrind() {
    run("noreaders", &[]);
}

#[test]
fn every_export_without_service_under_valgrind() {
    run(
        "noservice",
        &[(
            "VIRTUAL_PIV_CARD_FILE",
            "/nonexistent/ffi-abuse/card.json".to_string(),
        )],
    );
}
