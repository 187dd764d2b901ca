//! Round trips of a small APDU through pcscd + vpcd to (a) a do-nothing
//! card with vreader's socket settings (the floor of the stack), (b)
//! vreader with a real card, (c) vsmartcard's Python vicc; plus the time
//! from `vreader run` to the card being visible in pcscd.
//!
//! `cargo run --release -p e2e --bin bench_roundtrip` (pcscd must run:
//! scripts/pcscd.sh start). Prints a Markdown section for BENCHMARKS.md.

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{card_present, make_card, wait_for_card, wait_for_no_card, Rig, DEADLINE, READER0};

const GET_VERSION: [u8; 5] = [0x00, 0xFD, 0x00, 0x00, 0x00];

/// vreader as users run it: the rig's default debug log writes a line per
/// APDU, which is not what is measured here.
const INFO_LOG: &[(&str, &str)] = &[("RUST_LOG", "info")];

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Round-trip times of `n` APDUs (after a warm-up) and their total time.
fn sample(n: usize) -> (Vec<Duration>, Duration) {
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
    let reader = CString::new(READER0).unwrap();
    let card = ctx
        .connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .expect("connect");
    let mut buf = [0u8; 300];
    for _ in 0..20.min(n) {
        card.transmit(&GET_VERSION, &mut buf).expect("warm-up");
    }
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = card.transmit(&GET_VERSION, &mut buf).expect("transmit");
        times.push(t.elapsed());
        assert!(r.len() >= 2);
    }
    (times, start.elapsed())
}

fn stats(mut times: Vec<Duration>, total: Duration) -> Stats {
    let n = times.len();
    times.sort();
    Stats {
        per_second: n as f64 / total.as_secs_f64(),
        p50: times[n / 2],
        p99: times[(n * 99 / 100).min(n - 1)],
    }
}

fn measure(n: usize) -> Stats {
    let (times, total) = sample(n);
    stats(times, total)
}

fn spawn_floor() -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--floor-card")
        .stdin(Stdio::null())
        .spawn()
        .expect("floor card process")
}

fn wait_gone() {
    wait_for_no_card(READER0, DEADLINE);
}

fn vicc() -> Option<Child> {
    let shim = std::env::temp_dir().join("virtual-piv-vicc-shim");
    std::fs::create_dir_all(&shim).ok()?;
    let link = shim.join("Crypto");
    if !link.exists() {
        std::os::unix::fs::symlink("/usr/lib/python3/dist-packages/Cryptodome", &link).ok()?;
    }
    Command::new("/usr/bin/python3")
        .args([
            "/usr/bin/vicc",
            "-t",
            "iso7816",
            "-P",
            &vpcd::DEFAULT_PORT.to_string(),
        ])
        .env(
            "PYTHONPATH",
            format!(
                "/usr/lib/python3/site-packages/virtualsmartcard:/usr/lib/python3/site-packages:{}",
                shim.display()
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn main() {
    if std::env::args().any(|a| a == "--floor-card") {
        return e2e::floor_card(vpcd::DEFAULT_PORT);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let mut rig = Rig::new();
    // pcscd as desktops run it (no -d -a): its per-APDU debug log would
    // add the same cost to every row and hide differences. Restored on exit.
    let debug_pcscd = std::env::var_os("BENCH_PCSCD_DEBUG").is_some();
    struct RestorePcscd(bool);
    impl Drop for RestorePcscd {
        fn drop(&mut self) {
            if self.0 {
                e2e::pcscd("restart");
            }
        }
    }
    let _restore = RestorePcscd(!debug_pcscd);
    if !debug_pcscd {
        let out = Command::new("bash")
            .arg(e2e::root().join("scripts/pcscd.sh"))
            .arg("restart")
            .env("PCSCD_QUIET", "1")
            .output()
            .expect("scripts/pcscd.sh");
        assert!(out.status.success(), "pcscd restart failed");
    }
    let vreader = e2e::vreader_bin();

    // The floor and vreader alternate over several rounds, so a burst of
    // load from other work on the machine hits both rows alike.
    let card_file = rig.path("card.json");
    make_card(&card_file, piv_applet::AlgorithmId::Aes192, &[]);
    let rounds = 4;
    let per_round = n.div_ceil(rounds);
    let (mut floor_times, mut floor_total) = (Vec::new(), Duration::ZERO);
    let (mut our_times, mut our_total) = (Vec::new(), Duration::ZERO);
    for _ in 0..rounds {
        let mut floor_child = spawn_floor();
        wait_for_card(READER0, DEADLINE);
        let (t, total) = sample(per_round);
        floor_times.extend(t);
        floor_total += total;
        let _ = floor_child.kill();
        let _ = floor_child.wait();
        wait_gone();

        let index = rig.vreader_with_env(&["--card", &card_file.to_string_lossy()], INFO_LOG);
        wait_for_card(READER0, DEADLINE);
        let (t, total) = sample(per_round);
        our_times.extend(t);
        our_total += total;
        rig.stop(index);
        wait_gone();
    }
    let n = per_round * rounds;
    let floor = stats(floor_times, floor_total);
    let ours = stats(our_times, our_total);

    // --quick: only the floor and vreader rows (for tuning).
    let quick = std::env::args().any(|a| a == "--quick");
    if quick {
        println!(
            "floor p50 {:?} p99 {:?} {:.0}/s; vreader p50 {:?} p99 {:?} {:.0}/s; ratio {:.2}",
            floor.p50,
            floor.p99,
            floor.per_second,
            ours.p50,
            ours.p99,
            ours.per_second,
            ours.p50.as_secs_f64() / floor.p50.as_secs_f64()
        );
        return;
    }
    let mut startup = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let i = rig.vreader_with_env(&["--card", &card_file.to_string_lossy()], INFO_LOG);
        while !card_present(READER0) {
            std::thread::sleep(Duration::from_millis(2));
        }
        startup.push(t.elapsed());
        rig.stop(i);
        wait_gone();
    }
    startup.sort();

    let vicc_n = 100;
    let vicc_stats = vicc().map(|mut child| {
        wait_for_card(READER0, DEADLINE);
        let s = measure(vicc_n);
        let _ = child.kill();
        let _ = child.wait();
        wait_gone();
        s
    });

    println!("## vreader round trip\n");
    println!(
        "Machine: {}, {}. vreader: {} (release build). All rows in the same run, one after the other, on the same reader (`Virtual PCD 00 00`). APDU: GET VERSION `00 FD 00 00 00` through the `pcsc` crate (SCardTransmit), {n} round trips per card after 20 warm-up ({vicc_n} for vicc); the floor and vreader alternate in {rounds} rounds of {per_round}.\n\nCommand: `cargo run --release -p e2e --bin bench_roundtrip -- {n}` (pcscd running; takes the e2e lock).\n",
        e2e::bench_machine(),
        if debug_pcscd {
            "pcscd -f -d -a (debug and APDU log)"
        } else {
            "pcscd -f (no debug log, as desktops run it)"
        },
        vreader.display(),
    );
    println!("| card | round trips/s | p50 | p99 |");
    println!("|---|---|---|---|");
    let row = |name: &str, s: &Stats| {
        println!(
            "| {name} | {:.0} | {:?} | {:?} |",
            s.per_second, s.p50, s.p99
        )
    };
    row(
        "floor: do-nothing card process, same socket handling",
        &floor,
    );
    row("vreader + piv-applet", &ours);
    match &vicc_stats {
        Some(v) => row("vsmartcard vicc (Python, iso7816 card)", v),
        None => println!("| vsmartcard vicc | not run (vicc missing) | | |"),
    }
    println!();
    println!(
        "vreader / floor p50: {:.2}x (target ≤ 1.2x).",
        ours.p50.as_secs_f64() / floor.p50.as_secs_f64()
    );
    if let Some(v) = &vicc_stats {
        println!(
            "vicc / vreader p50: {:.0}x faster (target ≥ 50x).",
            v.p50.as_secs_f64() / ours.p50.as_secs_f64()
        );
    }
    println!(
        "\nTime from `vreader run` to the card being present in pcscd (5 runs): min {:?}, median {:?}, max {:?} (pcscd polls vpcd readers about every 0.4 s).",
        startup[0], startup[2], startup[4]
    );
}
