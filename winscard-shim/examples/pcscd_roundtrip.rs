//! The same small APDU as benches/roundtrip.rs, through the system's
//! pcscd + vpcd: a card served over vpcd (card side, connecting to vpcd's
//! slot port like `vreader` does) and a client using the real
//! libpcsclite through the `pcsc` crate. Needs a running pcscd with
//! vsmartcard-vpcd (scripts/pcscd.sh start); takes the cross-process e2e
//! lock so it never races the end-to-end tests for the vpcd port.
//!
//! Usage: pcscd_roundtrip [iterations (default 2000)] [port (default 35963)] [external]
//!
//! With `external`, no card server is started: a card must already sit in
//! the reader (e.g. `vreader run --card FILE`), and the lock is not taken
//! (whoever started that card holds it).

#[cfg(not(windows))]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(windows)]
fn main() {
    eprintln!("pcscd_roundtrip measures pcscd: Linux only");
}

#[cfg(not(windows))]
fn main() {
    use std::time::{Duration, Instant};

    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2000, |a| a.parse().expect("iterations"));
    let port: u16 = args.next().map_or(35963, |a| a.parse().expect("port"));
    let external = args.next().is_some_and(|a| a == "external");
    let lock = std::fs::File::create("/tmp/virtual-piv-e2e.lock").expect("lock file");
    if !external {
        lock.lock().expect("e2e lock");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    drop(piv_applet::Card::create(&path, &piv_applet::CardOptions::default()).unwrap());
    let server = (!external).then(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
            .expect("vpcd port (is pcscd running?)");
        // Stopped by shutting the socket down: a read timeout could cut a frame.
        let stopper = s.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            let mut card = piv_applet::Card::open(&path).unwrap();
            common::card_session(&mut card, &mut s, None);
        });
        (stopper, t)
    });

    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
    let reader = format!("Virtual PCD 00 {:02}", port - 35963);
    let reader = std::ffi::CString::new(reader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let card = loop {
        match ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("connect {reader:?}: {e}"),
        }
    };
    let apdu = [0x00u8, 0xFD, 0x00, 0x00, 0x00];
    let mut buf = [0u8; 300];
    for _ in 0..50 {
        card.transmit(&apdu, &mut buf).unwrap();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = card.transmit(&apdu, &mut buf).unwrap();
        times.push(t.elapsed());
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    println!(
        "pcscd + vpcd + {}, GET VERSION: mean {:.1} µs, median {:.1} µs, p99 {:.1} µs ({n} round trips)",
        if external { "external card (vreader)" } else { "vpcd card server thread" },
        mean.as_secs_f64() * 1e6,
        times[n / 2].as_secs_f64() * 1e6,
        times[n * 99 / 100].as_secs_f64() * 1e6
    );
    drop(card);
    if let Some((stopper, t)) = server {
        let _ = stopper.shutdown(std::net::Shutdown::Both);
        t.join().unwrap();
    }
}
