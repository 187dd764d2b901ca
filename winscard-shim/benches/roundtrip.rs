//! Round trip of a small APDU (GET VERSION: 3 bytes + SW) through the
//! exported `SCardTransmit` of the in-process shim — with the card in
//! process, and with the card behind vpcd over loopback TCP (the remote
//! backend) — next to the same APDU straight into the card, so the shim's
//! own cost is visible. The pcscd + vpcd path is measured by
//! `examples/pcscd_roundtrip.rs` (it must not link this library).

use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(not(windows))]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(not(windows))]
fn bench(c: &mut Criterion) {
    use winscard::abi_pcsclite as abi;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("card.json");
    let remote = dir.path().join("remote.json");
    drop(piv_applet::Card::create(&local, &piv_applet::CardOptions::default()).unwrap());
    drop(piv_applet::Card::create(&remote, &piv_applet::CardOptions::default()).unwrap());
    std::env::set_var("VIRTUAL_PIV_CARD_FILE", &local);
    // VIRTUAL_PIV_BENCH_REMOTE=host:port measures against an outside card
    // (e.g. `vreader run --card F --listen 127.0.0.1:PORT`, with the shim's
    // side of `vreader pair` at its default place or in VIRTUAL_PIV_LINK)
    // instead.
    let remote_addr = match std::env::var("VIRTUAL_PIV_BENCH_REMOTE") {
        Ok(addr) => addr,
        Err(_) => {
            let (addr, shim_file) = common::serve_over_link(remote, dir.path());
            std::env::set_var("VIRTUAL_PIV_LINK", shim_file);
            addr
        }
    };
    std::env::set_var("VIRTUAL_PIV_REMOTE", remote_addr);
    std::env::remove_var("VIRTUAL_PIV_LOG");
    let apdu = [0x00u8, 0xFD, 0x00, 0x00, 0x00];
    unsafe {
        let mut ctx = 0;
        assert_eq!(
            abi::SCardEstablishContext(0, std::ptr::null(), std::ptr::null(), &mut ctx),
            0
        );
        for (label, reader) in [
            (
                "shim SCardTransmit GET VERSION, embedded card (in-process)",
                c"Virtual PIV Reader 00 00",
            ),
            (
                "shim SCardTransmit GET VERSION, remote card over vpcd in TLS, loopback",
                c"Virtual PIV Reader 01 00",
            ),
        ] {
            let (mut h, mut proto) = (0, 0);
            assert_eq!(
                abi::SCardConnect(ctx, reader.as_ptr(), 2, 3, &mut h, &mut proto),
                0,
                "{label}"
            );
            let mut buf = [0u8; 300];
            c.bench_function(label, |b| {
                b.iter(|| {
                    let mut len = buf.len() as _;
                    let rc = abi::SCardTransmit(
                        h,
                        &abi::g_rgSCardT1Pci,
                        apdu.as_ptr(),
                        apdu.len() as _,
                        std::ptr::null_mut(),
                        buf.as_mut_ptr(),
                        &mut len,
                    );
                    assert_eq!(
                        (rc, &buf[len as usize - 2..len as usize]),
                        (0, &[0x90, 0x00][..])
                    );
                })
            });
            abi::SCardDisconnect(h, 0);
        }
        abi::SCardReleaseContext(ctx);
    }
    let other = dir.path().join("direct.json");
    let mut card = piv_applet::Card::create(&other, &piv_applet::CardOptions::default()).unwrap();
    card.power_on();
    c.bench_function("piv-applet Card::process GET VERSION (no shim)", |b| {
        b.iter(|| assert_eq!(card.process(&apdu).len(), 5))
    });
}

#[cfg(windows)]
fn bench(_c: &mut Criterion) {}

criterion_group!(benches, bench);
criterion_main!(benches);
