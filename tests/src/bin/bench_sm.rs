//! Secure messaging through pcscd + vpcd, next to the same command in the
//! clear: GET DATA of the CHUID plain and protected, and the key
//! establishment itself, for each cipher suite, against vreader with a
//! card given SM by `vreader secure-messaging`.
//!
//! `cargo run --release -p e2e --bin bench_sm` (pcscd must run:
//! scripts/pcscd.sh start; the rig takes the e2e lock). Prints a Markdown section
//! for BENCHMARKS.md.

use std::time::{Duration, Instant};

use e2e::{connect, make_card, vreader_ok, wait_for_card, Rig, DEADLINE, READER0};
use piv_applet::client::Client;
use piv_applet::enums::Ins;
use piv_applet::sm::CipherSuite;
use piv_applet::{ObjectId, StatusWord};

/// vreader as users run it (the rig's default debug log writes a line
/// per APDU).
const INFO_LOG: &[(&str, &str)] = &[("RUST_LOG", "info")];

struct Row {
    what: String,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn time(what: String, n: usize, mut op: impl FnMut()) -> Row {
    for _ in 0..n / 10 {
        op();
    }
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        op();
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    Row {
        what,
        p50: times[n / 2],
        p99: times[(n * 99 / 100).min(n - 1)],
        per_second: n as f64 / total.as_secs_f64(),
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let get_chuid = {
        let mut d = vec![0x5C, 0x03];
        d.extend_from_slice(&ObjectId::CHUID.to_bytes());
        d
    };
    let mut rows = Vec::new();
    for (suite, name) in [(CipherSuite::Cs2, "CS2"), (CipherSuite::Cs7, "CS7")] {
        let mut rig = Rig::new();
        let card_file = rig.path("card.json");
        make_card(&card_file, piv_applet::AlgorithmId::Aes192, &[]);
        let path = card_file.to_string_lossy().into_owned();
        vreader_ok(&["secure-messaging", &path, "--suite", &name.to_lowercase()]);
        let index = rig.vreader_with_env(&["--card", &path], INFO_LOG);
        wait_for_card(READER0, DEADLINE);
        let card = connect(READER0);
        let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let mut c = Client::new(|apdu: &[u8]| card.transmit(apdu, &mut buf).map(|r| r.to_vec()));
        c.select().expect("SELECT");
        rows.push(time(
            format!("{name}: GET DATA CHUID in the clear"),
            n,
            || {
                let r = c.send(Ins::GetData, 0x3F, 0xFF, &get_chuid).unwrap();
                assert_eq!(r.sw, StatusWord::Success);
            },
        ));
        rows.push(time(format!("{name}: key establishment"), n / 4, || {
            c.open_secure_messaging(suite, *b"benchsm!").unwrap();
        }));
        rows.push(time(format!("{name}: GET DATA CHUID under SM"), n, || {
            let r = c
                .send_secure(Ins::GetData, 0x3F, 0xFF, &get_chuid, Some(256))
                .unwrap();
            assert_eq!(r.sw, StatusWord::Success);
        }));
        drop(c);
        drop(card);
        rig.stop(index);
    }
    println!("## Secure messaging through pcscd\n");
    println!("{}\n", e2e::bench_machine());
    println!(
        "`cargo run --release -p e2e --bin bench_sm` (BENCH_N={n}): one pcsc-crate connection to \
         vreader (release, info log) through pcscd + vsmartcard-vpcd; the card has secure \
         messaging (`vreader secure-messaging`); the client is `piv_applet::client` (RustCrypto).\n"
    );
    println!("| operation | p50 | p99 | per second |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} |",
            r.what,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.per_second
        );
    }
}
