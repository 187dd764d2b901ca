//! Round trip of a small APDU (GET VERSION, 5 response bytes) through the
//! exported `SCardTransmit` of the in-process shim, next to the same APDU
//! straight into the card, so the shim's own cost is visible.

use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(not(windows))]
fn bench(c: &mut Criterion) {
    use winscard::abi_pcsclite as abi;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    drop(piv_applet::Card::create(&path, &piv_applet::CardOptions::default()).unwrap());
    std::env::set_var("VIRTUAL_PIV_CARD_FILE", &path);
    std::env::remove_var("VIRTUAL_PIV_LOG");
    let apdu = [0x00u8, 0xFD, 0x00, 0x00, 0x00];
    unsafe {
        let mut ctx = 0;
        assert_eq!(
            abi::SCardEstablishContext(0, std::ptr::null(), std::ptr::null(), &mut ctx),
            0
        );
        let mut h = 0;
        let mut proto = 0;
        let reader = c"Virtual PIV Reader 00 00";
        assert_eq!(
            abi::SCardConnect(ctx, reader.as_ptr(), 2, 3, &mut h, &mut proto),
            0
        );
        let mut buf = [0u8; 300];
        c.bench_function("shim SCardTransmit GET VERSION (in-process)", |b| {
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
