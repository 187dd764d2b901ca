//! Drives every kind of APDU that carries a secret through a PC/SC reader,
//! with a marker (`QX7Z`, hex 5158375A) inside each secret: PIN and PUK
//! (VERIFY, chained VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER),
//! management keys (SET MANAGEMENT KEY, the mutual authentication),
//! PIN-protected objects and the pairing code (chained PUT DATA, GET DATA
//! answered over GET RESPONSE), a chained IMPORT KEY and an RSA decryption
//! whose plaintext carries the marker. The secrets that cannot carry the
//! marker (the decrypted witness) are printed as `secret: <hex>` lines, so
//! the caller can look for them in logs as well. Exits non-zero on failure.
//!
//! Expects a fresh card from `make_test_card` (PIN 123456, PUK 12345678,
//! default AES-192 management key, the test RSA-2048 key in 9A) in the
//! first reader.
//!
//! Used by winscard-shim/tests/secret_logs.rs.

use std::ffi::CString;

use piv_applet::apdu::build_command;
use piv_applet::enums::{PIV_AID, PIV_RID_LEN};
use piv_applet::mgmt::ManagementKey;
use piv_applet::state::{pad_pin, DEFAULT_PIN, DEFAULT_PUK};
use piv_applet::AlgorithmId;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;

const MARK: &[u8] = b"QX7Z";

fn marked(len: usize) -> Vec<u8> {
    MARK.iter().copied().cycle().take(len).collect()
}

fn fail(what: &str) -> ! {
    eprintln!("secret-apdus: FAILED: {what}");
    std::process::exit(1)
}

/// Raw APDUs throughout, not the PIV client: the chunk sizes and the
/// small Le are the point, and the decrypted witness must be printed.
struct Reader {
    card: pcsc::Card,
}

impl Reader {
    /// One APDU as is (no GET RESPONSE): response data and status word.
    fn raw(&self, apdu: &[u8]) -> (Vec<u8>, u16) {
        let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let r = self
            .card
            .transmit(apdu, &mut buf)
            .unwrap_or_else(|e| fail(&format!("transmit: {e}")));
        let (data, sw) = r.split_at(r.len() - 2);
        (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
    }

    /// A command sent in chunks of `chunk` bytes (CLA 10 on all but the
    /// last), its answer collected over GET RESPONSE with small Le, so
    /// that every secret crosses the log in several pieces.
    fn send(&self, what: &str, ins: u8, p1: u8, p2: u8, data: &[u8], chunk: usize) -> Vec<u8> {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(chunk).collect()
        };
        for c in &chunks[..chunks.len() - 1] {
            let (_, sw) = self.raw(&build_command(0x10, ins, p1, p2, c, None));
            if sw != 0x9000 {
                fail(&format!("{what}: chained chunk answered {sw:04X}"));
            }
        }
        let last = chunks[chunks.len() - 1];
        let (mut out, mut sw) = self.raw(&build_command(0, ins, p1, p2, last, Some(0x40)));
        while sw >> 8 == 0x61 {
            let (more, next) = self.raw(&[0x00, 0xC0, 0x00, 0x00, 0x40]);
            out.extend_from_slice(&more);
            sw = next;
        }
        if sw != 0x9000 {
            fail(&format!("{what}: answered {sw:04X}"));
        }
        out
    }

    /// Mutual authentication with the management key; prints the
    /// decrypted witness, a secret the caller looks for in logs.
    fn authenticate(&self, key: &ManagementKey) {
        let alg = u8::from(key.algorithm());
        let r = self.send("witness", 0x87, alg, 0x9B, &[0x7C, 0x02, 0x80, 0x00], 255);
        let n = key.block_size();
        if r.len() != 4 + n {
            fail("witness length");
        }
        let witness = key
            .decrypt_block(&r[4..])
            .unwrap_or_else(|e| fail(&format!("witness: {e}")));
        println!("secret: {}", hex::encode(&witness));
        let challenge = vec![0x42u8; n];
        let mut data = vec![0x7C, (4 + 2 * n) as u8, 0x80, n as u8];
        data.extend_from_slice(&witness);
        data.extend_from_slice(&[0x81, n as u8]);
        data.extend_from_slice(&challenge);
        let r = self.send("mutual authentication", 0x87, alg, 0x9B, &data, 255);
        let expected = key.encrypt_block(&challenge).unwrap();
        if r[4..] != expected[..] {
            fail("the card's answer to the challenge");
        }
    }
}

/// PUT DATA of a whole object: `5C <id> 53 <value>`.
fn put_data(id: &[u8], value: &[u8]) -> Vec<u8> {
    let mut d = vec![0x5C, id.len() as u8];
    d.extend_from_slice(id);
    piv_applet::tlv::write(&mut d, 0x53, value);
    d
}

fn main() {
    let ctx = pcsc::Context::establish(pcsc::Scope::User)
        .unwrap_or_else(|e| fail(&format!("establish: {e}")));
    let readers: Vec<CString> = ctx.list_readers_owned().expect("list readers");
    let Some(name) = readers.first() else {
        fail("no reader")
    };
    let card = ctx
        .connect(name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .unwrap_or_else(|e| fail(&format!("connect: {e}")));
    let r = Reader { card };
    r.send("SELECT", 0xA4, 0x04, 0x00, &PIV_AID[..PIV_RID_LEN], 255);

    let pin = pad_pin(b"QX7Z12");
    let puk = pad_pin(b"QX7Z5678");
    // PIN and PUK changed to values that carry the marker, then used.
    let data = [pad_pin(DEFAULT_PIN), pin].concat();
    r.send("CHANGE REFERENCE DATA (PIN)", 0x24, 0x00, 0x80, &data, 255);
    r.send("VERIFY", 0x20, 0x00, 0x80, &pin, 255);
    r.send("chained VERIFY", 0x20, 0x00, 0x80, &pin, 3);
    let data = [pad_pin(DEFAULT_PUK), puk].concat();
    r.send("CHANGE REFERENCE DATA (PUK)", 0x24, 0x00, 0x81, &data, 255);
    let data = [puk, pin].concat();
    r.send("RESET RETRY COUNTER", 0x2C, 0x00, 0x80, &data, 255);
    r.send("VERIFY", 0x20, 0x00, 0x80, &pin, 255);

    // A new management key that carries the marker, used at once.
    r.authenticate(&ManagementKey::default_for(AlgorithmId::Aes192));
    let new_key = marked(24);
    let mut data = vec![u8::from(AlgorithmId::Aes192), 0x9B, 24];
    data.extend_from_slice(&new_key);
    r.send("SET MANAGEMENT KEY", 0xFF, 0xFF, 0xFF, &data, 255);
    let key = ManagementKey::new(AlgorithmId::Aes192, &new_key).unwrap();
    r.authenticate(&key);

    // ykman's PIN-protected management key in printed information,
    // written in small chunks (only the first names the object), and the
    // other PIN-protected objects and the pairing code, read back over
    // GET RESPONSE.
    let mut inner = Vec::new();
    piv_applet::tlv::write(&mut inner, 0x89, &new_key);
    let protected = piv_applet::tlv::encode(0x88, &inner);
    r.send(
        "PUT DATA 5FC109",
        0xDB,
        0x3F,
        0xFF,
        &put_data(&[0x5F, 0xC1, 0x09], &protected),
        8,
    );
    for id in [[0x5F, 0xC1, 0x03], [0x5F, 0xC1, 0x08], [0x5F, 0xC1, 0x21]] {
        r.send(
            "PUT DATA",
            0xDB,
            0x3F,
            0xFF,
            &put_data(&id, &marked(300)),
            200,
        );
    }
    r.send(
        "PUT DATA 5FC123",
        0xDB,
        0x3F,
        0xFF,
        &put_data(&[0x5F, 0xC1, 0x23], &marked(8)),
        5,
    );
    for id in [
        [0x5F, 0xC1, 0x09],
        [0x5F, 0xC1, 0x03],
        [0x5F, 0xC1, 0x08],
        [0x5F, 0xC1, 0x21],
        [0x5F, 0xC1, 0x23],
    ] {
        let got = r.send(
            "GET DATA",
            0xCB,
            0x3F,
            0xFF,
            &[0x5C, 0x03, id[0], id[1], id[2]],
            255,
        );
        if !got.windows(MARK.len()).any(|w| w == MARK) {
            fail("GET DATA did not return what PUT DATA wrote");
        }
    }

    // A P-256 key whose private scalar carries the marker, imported in
    // chunks.
    let mut data = vec![0x06, 32];
    data.extend(marked(32));
    r.send("IMPORT KEY", 0xFE, 0x11, 0x9E, &data, 10);

    // Raw RSA decryption in 9A of a plaintext that carries the marker.
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rsa2048.key.pk8.der"
    ))
    .expect("test key");
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).expect("test key");
    let plain = marked(256);
    let c = rsa::BigUint::from_bytes_be(&plain).modpow(key.e(), key.n());
    let mut c = c.to_bytes_be();
    while c.len() < 256 {
        c.insert(0, 0);
    }
    let mut inner = vec![0x82, 0x00];
    piv_applet::tlv::write(&mut inner, 0x81, &c);
    let data = piv_applet::tlv::encode(0x7C, &inner);
    let got = r.send(
        "GENERAL AUTHENTICATE (decrypt)",
        0x87,
        0x07,
        0x9A,
        &data,
        200,
    );
    if !got.ends_with(&plain) {
        fail("the decryption");
    }
    println!("secret-apdus: OK");
}
