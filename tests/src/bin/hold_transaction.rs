//! Test helper: connects to a reader, begins a transaction, says "ready"
//! and waits to be killed while holding it.

fn main() {
    let reader = std::env::args().nth(1).expect("reader name");
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd");
    let name = std::ffi::CString::new(reader).unwrap();
    let mut card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .expect("connect");
    let tx = card.transaction().expect("begin transaction");
    let mut buf = [0u8; 64];
    tx.transmit(&[0x00, 0xFD, 0x00, 0x00, 0x00], &mut buf)
        .expect("transmit");
    use std::io::Write;
    print!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
