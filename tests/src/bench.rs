//! What the benchmarks share: the machine line of their reports and the
//! floor card (pcscd + vpcd with no card behind them).

use std::process::Command;
use std::time::Duration;

/// What a benchmark ran on, for its BENCHMARKS.md section: "N cores
/// (nproc), CPU, RAM, Linux VERSION. Date: DATE. pcscd V + vsmartcard-vpcd
/// V".
pub fn bench_machine() -> String {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} cores (nproc), {}, {}, Linux {}. Date: {}. pcscd {} + vsmartcard-vpcd {}",
        sh("nproc"),
        sh("sed -n 's/^model name\\s*: //p' /proc/cpuinfo | head -1"),
        sh("awk '/MemTotal/ {printf \"%.0f GB RAM\", $2/1048576}' /proc/meminfo"),
        sh("uname -r"),
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("dpkg-query -W -f '${Version}' pcscd"),
        sh("dpkg-query -W -f '${Version}' vsmartcard-vpcd"),
    )
}

/// A card that answers 9000 to every APDU, reading and writing as vreader
/// does (TCP_NODELAY, TCP_QUICKACK before each read, buffered frame
/// decoding, one write per frame) with no card behind it: the floor of
/// pcscd + vpcd in the benchmarks. Serves the vpcd slot on `port` until
/// the reader hangs up.
pub fn floor_card(port: u16) {
    use std::io::{Read, Write};
    let mut s = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    vpcd::tune(&s).unwrap();
    let mut decoder = vpcd::FrameDecoder::default();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(p) = decoder.next_frame() {
            let reply: &[u8] = match vpcd::Request::parse(&p) {
                Some(vpcd::Request::Control(vpcd::Control::GetAtr)) => {
                    &piv_applet::state::YUBIKEY5_NFC_ATR
                }
                Some(vpcd::Request::Control(_)) => continue,
                Some(vpcd::Request::Apdu(_)) => &[0x90, 0x00],
                None => return,
            };
            s.write_all(&vpcd::encode_frame(reply).unwrap()).unwrap();
        }
        vpcd::quickack(&s);
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}
