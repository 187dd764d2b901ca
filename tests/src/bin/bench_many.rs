//! Sixteen cards at once: one vreader serving a directory of 16 card
//! files in the 16 vpcd readers of a `vreader readers` configuration, 16
//! client threads each looping on its own card through pcscd; compared in
//! the same run with one card and one client, and with 16 do-nothing
//! cards (one process each, vreader's socket handling) as the floor.
//! Also vreader's resident memory with the 16 cards.
//!
//! `cargo run --release -p e2e --bin bench_many -- [SECONDS]` (takes the
//! e2e lock; restarts pcscd with the 16-reader configuration and puts the
//! stock one back on exit). Prints a Markdown section for BENCHMARKS.md.

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use e2e::{make_card, wait_for_card, wait_for_no_card, Farm, Rig, DEADLINE};
use vpcd::names::reader_name;

const GET_VERSION: [u8; 5] = [0x00, 0xFD, 0x00, 0x00, 0x00];

/// vreader as users run it: the rig's default debug log writes a line per
/// APDU, which is not what is measured here.
const INFO_LOG: &[(&str, &str)] = &[("RUST_LOG", "info")];

/// One card's round-trip times over the measured rounds.
#[derive(Default)]
struct Card {
    times: Vec<Duration>,
}

/// A configuration's measurements: each card's times and the wall time
/// all its clients ran together.
#[derive(Default)]
struct Run {
    cards: Vec<Card>,
    wall: Duration,
}

impl Run {
    fn add(&mut self, round: Vec<Vec<Duration>>, wall: Duration) {
        if self.cards.is_empty() {
            self.cards = round.iter().map(|_| Card::default()).collect();
        }
        for (card, times) in self.cards.iter_mut().zip(round) {
            card.times.extend(times);
        }
        self.wall += wall;
    }

    fn total(&self) -> usize {
        self.cards.iter().map(|c| c.times.len()).sum()
    }

    fn per_second(&self) -> f64 {
        self.total() as f64 / self.wall.as_secs_f64()
    }

    /// (p50, p99) of each card.
    fn percentiles(&self) -> Vec<(Duration, Duration)> {
        self.cards
            .iter()
            .map(|c| {
                let mut t = c.times.clone();
                t.sort();
                let n = t.len();
                (t[n / 2], t[(n * 99 / 100).min(n - 1)])
            })
            .collect()
    }
}

/// `readers` clients, one thread each on its own reader, all starting
/// together and looping for `secs` after 20 warm-up round trips. Returns
/// each client's round-trip times and the wall time from the common start
/// to the last client's end.
fn round(readers: u32, secs: f64) -> (Vec<Vec<Duration>>, Duration) {
    let barrier = Barrier::new(readers as usize);
    let limit = Duration::from_secs_f64(secs);
    let (times, ends): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|n| {
                let barrier = &barrier;
                s.spawn(move || {
                    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
                    let name = CString::new(reader_name(n)).unwrap();
                    let card = ctx
                        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                        .unwrap_or_else(|e| panic!("connect {}: {e}", reader_name(n)));
                    let mut buf = [0u8; 300];
                    for _ in 0..20 {
                        card.transmit(&GET_VERSION, &mut buf).expect("warm-up");
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut times = Vec::with_capacity(50_000);
                    while start.elapsed() < limit {
                        let t = Instant::now();
                        let r = card.transmit(&GET_VERSION, &mut buf).expect("transmit");
                        times.push(t.elapsed());
                        assert!(r.ends_with(&[0x90, 0x00]), "{}", reader_name(n));
                    }
                    (times, start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (t, start, end) = h.join().expect("client");
                (t, (start, end))
            })
            .unzip()
    });
    let start = ends.iter().map(|(s, _)| *s).min().unwrap();
    let end = ends.iter().map(|(_, e)| *e).max().unwrap();
    (times, end - start)
}

fn spawn_floor(port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--floor-card", &port.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("floor card process")
}

fn wait_all(readers: u32) {
    for n in 0..readers {
        wait_for_card(&reader_name(n), DEADLINE);
    }
}

fn wait_none(readers: u32) {
    for n in 0..readers {
        wait_for_no_card(&reader_name(n), DEADLINE);
    }
}

/// Floor rounds: `readers` do-nothing card processes.
fn floor_round(readers: u32, secs: f64, run: &mut Run) {
    let mut children: Vec<Child> = (0..readers)
        .map(|n| spawn_floor(vpcd::DEFAULT_PORT + n as u16))
        .collect();
    wait_all(readers);
    let (t, wall) = round(readers, secs);
    run.add(t, wall);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    wait_none(readers);
}

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let Some(a) = args.next() {
        if a == "--floor-card" {
            let port = args.next().and_then(|p| p.parse().ok()).expect("port");
            return e2e::floor_card(port);
        }
    }
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let cards = Farm::CARDS;
    let mut rig = Rig::new();
    let farm = Farm::start(&rig, true);
    let vreader = e2e::vreader_bin();

    let dir = rig.path("cards");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..cards {
        make_card(
            &dir.join(format!("card-{i:02}.json")),
            piv_applet::AlgorithmId::Aes192,
            &[],
        );
    }
    let one = rig.path("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(dir.join("card-00.json"), one.join("card-00.json")).unwrap();

    // Floor and vreader alternate over several rounds, so a burst of
    // other load on the machine hits both alike.
    let rounds = 4;
    let per_round = secs / rounds as f64;
    let (mut floor1, mut ours1, mut floor16, mut ours16) = (
        Run::default(),
        Run::default(),
        Run::default(),
        Run::default(),
    );
    let (mut rss, mut hwm) = (0u64, 0u64);
    for _ in 0..rounds {
        floor_round(1, per_round, &mut floor1);

        let i = rig.vreader_with_env(&["--cards", one.to_str().unwrap()], INFO_LOG);
        wait_all(1);
        let (t, wall) = round(1, per_round);
        ours1.add(t, wall);
        rig.stop(i);
        wait_none(1);

        floor_round(cards, per_round, &mut floor16);

        let i = rig.vreader_with_env(&["--cards", dir.to_str().unwrap()], INFO_LOG);
        wait_all(cards);
        let (t, wall) = round(cards, per_round);
        ours16.add(t, wall);
        let pid = rig.pid(i);
        rss = rss.max(status_kb(pid, "VmRSS:"));
        hwm = hwm.max(status_kb(pid, "VmHWM:"));
        rig.stop(i);
        wait_none(cards);
    }
    drop(farm);

    println!("## Sixteen cards at once\n");
    println!(
        "Machine: {}. pcscd as `pcscd -f -c` with the configuration of `vreader readers --count 16 --standalone`, no debug log. vreader: {} (release build), one process serving 16 card files (`vreader run --cards DIR`). Clients: one thread per card in one process, each with its own PC/SC context and connection, looping on GET VERSION `00 FD 00 00 00` (SCardTransmit through the `pcsc` crate) for {per_round:.2} s after 20 warm-up round trips, all started together; {rounds} rounds in which the rows alternate. Floor: one do-nothing card process per reader, socket handling as vreader's.\n\nCommand: `cargo run --release -p e2e --bin bench_many -- {secs}` (takes the e2e lock; restarts pcscd with 16 readers and puts the stock two back).\n",
        e2e::bench_machine(),
        vreader.display(),
    );
    println!("| configuration | round trips | aggregate round trips/s | p50 (median of cards) | p99 (best card - worst card) |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, r: &Run| {
        let mut p = r.percentiles();
        p.sort_by_key(|x| x.0);
        let p50 = p[p.len() / 2].0;
        let best = p.iter().map(|x| x.1).min().unwrap();
        let worst = p.iter().map(|x| x.1).max().unwrap();
        println!(
            "| {name} | {} | {:.0} | {p50:?} | {best:?} - {worst:?} |",
            r.total(),
            r.per_second()
        );
    };
    row("1 do-nothing card, 1 client", &floor1);
    row("1 vreader card, 1 client", &ours1);
    row("16 do-nothing cards, 16 clients (floor)", &floor16);
    row("16 cards in one vreader, 16 clients", &ours16);
    println!();
    println!("Per card, 16 cards in one vreader:\n");
    println!("| reader | round trips | p50 | p99 |");
    println!("|---|---|---|---|");
    for (n, (card, (p50, p99))) in ours16.cards.iter().zip(ours16.percentiles()).enumerate() {
        println!(
            "| {} | {} | {p50:?} | {p99:?} |",
            reader_name(n as u32),
            card.times.len()
        );
    }
    let p99: Vec<Duration> = ours16.percentiles().iter().map(|x| x.1).collect();
    let spread = p99.iter().max().unwrap().as_secs_f64() / p99.iter().min().unwrap().as_secs_f64();
    let counts: Vec<usize> = ours16.cards.iter().map(|c| c.times.len()).collect();
    println!();
    println!(
        "Aggregate, 16 vreader cards / 16 do-nothing cards: {:.2}x (target ≥ 0.8x).",
        ours16.per_second() / floor16.per_second()
    );
    println!(
        "Starvation: highest p99 / lowest p99 among the 16 cards: {spread:.2}x (target ≤ 2x); round trips per card {} to {}.",
        counts.iter().min().unwrap(),
        counts.iter().max().unwrap()
    );
    println!(
        "16 clients / 1 client, aggregate: vreader {:.2}x, floor {:.2}x.",
        ours16.per_second() / ours1.per_second(),
        floor16.per_second() / floor1.per_second()
    );
    println!(
        "vreader resident memory with 16 cards, read from /proc/PID/status after the load: VmRSS {:.1} MB, peak VmHWM {:.1} MB (target < 20 MB).",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
