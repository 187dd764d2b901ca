//! Drives winscard.dll the way Windows' PIV minidriver (msclmd.dll under
//! basecsp) does during an RDP smart card logon, and checks every answer:
//! establish, list readers, status change (with the PnP pseudo-reader),
//! card name → provider, connect, status, transaction, SELECT, every cache
//! item read with SCARD_AUTOALLOCATE and checked against the card itself,
//! VERIFY, chained GENERAL AUTHENTICATE whose RSA signature verifies
//! against the certificate, write-then-read of the cache, SCardFreeMemory,
//! release. Windows only (run under Wine by scripts/test-windows.sh).
//!
//! Environment: MSCLMD_FLOW_PIN (the card PIN), MSCLMD_FLOW_CONTAINERS (how
//! many containers the card's map must have, default 1).

#[cfg(not(windows))]
fn main() {
    eprintln!("msclmd_flow is a Windows program: build it for x86_64-pc-windows-gnu");
}

#[cfg(windows)]
fn main() {
    flow::run();
    println!("msclmd-flow: OK");
}

#[cfg(windows)]
mod flow {
    use std::io::Read;
    use std::ptr::{null, null_mut};

    use der::{Decode, Encode};
    use piv_applet::client::Client;
    use piv_applet::{oid, tlv, ObjectId};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    use sha2::Digest;
    use windows_sys::core::GUID;
    use windows_sys::Win32::Security::Credentials::*;

    // The data exports, imported the way C programs using SCARD_PCI_T1 do.
    #[link(name = "winscard")]
    extern "C" {
        static g_rgSCardT1Pci: SCARD_IO_REQUEST;
    }

    const AUTO: u32 = u32::MAX;
    const PNP: &str = "\\\\?PnP?\\Notification";

    fn ok(rc: i32, what: &str) {
        if rc != 0 {
            panic!("{what} failed: 0x{:08X}", rc as u32);
        }
    }

    fn w(s: &str) -> Vec<u16> {
        s.encode_utf16().chain([0]).collect()
    }

    fn multi(buf: &[u16]) -> Vec<String> {
        buf.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(String::from_utf16_lossy)
            .collect()
    }

    struct Ctx {
        h: usize,
        card: usize,
        freed: usize,
    }

    impl Ctx {
        /// One SCardTransmit into a 258-byte buffer, as msclmd does.
        fn transmit(&self, cmd: &[u8]) -> Result<Vec<u8>, String> {
            let mut buf = vec![0u8; 258];
            let mut len = buf.len() as u32;
            let rc = unsafe {
                SCardTransmit(
                    self.card,
                    &raw const g_rgSCardT1Pci,
                    cmd.as_ptr(),
                    cmd.len() as u32,
                    null_mut(),
                    buf.as_mut_ptr(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(format!("SCardTransmit failed: 0x{:08X}", rc as u32));
            }
            buf.truncate(len as usize);
            Ok(buf)
        }

        /// The PIV client over this card: GET RESPONSE for 61xx, as msclmd
        /// follows it.
        fn piv(&self) -> Client<impl FnMut(&[u8]) -> Result<Vec<u8>, String> + '_> {
            Client::new(|cmd: &[u8]| self.transmit(cmd))
        }

        /// One command APDU, its whole answer.
        fn apdu(&self, cmd: &[u8]) -> (Vec<u8>, u16) {
            let r = self.piv().exchange(cmd).unwrap_or_else(|e| panic!("{e}"));
            (r.data.to_vec(), r.sw.into())
        }

        fn read_cache(&mut self, id: &GUID, name: &str) -> Result<Vec<u8>, u32> {
            let name = w(name);
            let mut p: *mut u8 = null_mut();
            let mut len = AUTO;
            let rc = unsafe {
                SCardReadCacheW(
                    self.h,
                    id,
                    0,
                    name.as_ptr(),
                    (&mut p as *mut *mut u8).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(rc as u32);
            }
            let v = unsafe { std::slice::from_raw_parts(p, len as usize) }.to_vec();
            ok(
                unsafe { SCardFreeMemory(self.h, p.cast()) },
                "SCardFreeMemory",
            );
            self.freed += 1;
            Ok(v)
        }
    }

    /// Reads every cache item and checks it; returns the certificate DER.
    fn check_cache(c: &mut Ctx, id: &GUID, activity: u16, guid: &[u8], cert_der: &[u8]) {
        let raw = |c: &mut Ctx, n: &str| {
            c.read_cache(id, n)
                .unwrap_or_else(|e| panic!("cache item {n}: 0x{e:08X}"))
        };
        let pin = raw(c, "Cached_CardmodFile\\Cached_Pin_Freshness");
        let file = raw(c, "Cached_CardmodFile\\Cached_File_Freshness");
        let cont = raw(c, "Cached_CardmodFile\\Cached_Container_Freshness");
        assert_eq!((pin.len(), file.len(), cont.len()), (2, 2, 2));
        let cf = [
            1,
            pin[0],
            (u16::from_le_bytes([cont[0], cont[1]]) + activity).to_le_bytes()[0],
            (u16::from_le_bytes([cont[0], cont[1]]) + activity).to_le_bytes()[1],
            (u16::from_le_bytes([file[0], file[1]]) + activity).to_le_bytes()[0],
            (u16::from_le_bytes([file[0], file[1]]) + activity).to_le_bytes()[1],
        ];
        let item = |c: &mut Ctx, n: &str| -> Vec<u8> {
            let v = raw(c, n);
            assert_eq!(
                &v[..6],
                &cf,
                "{n}: header = counters + HIWORD(dwEventState)"
            );
            assert_eq!(&v[6..12], &[0; 6], "{n}");
            let len = u32::from_le_bytes(v[12..16].try_into().unwrap()) as usize;
            assert_eq!(len, v.len() - 16, "{n}: value_len");
            v[16..].to_vec()
        };
        assert_eq!(item(c, "Cached_CardProperty_Read Only Mode_0").len(), 4);
        assert_eq!(item(c, "Cached_CardProperty_Cache Mode_0"), [1, 0, 0, 0]);
        assert_eq!(
            item(c, "Cached_CardProperty_Supports Windows x.509 Enrollment_0").len(),
            4
        );
        assert_eq!(item(c, "Cached_CardProperty_Capabilities_0").len(), 12);
        for n in [
            "Cached_CardProperty_Key Sizes_1",
            "Cached_CardProperty_Key Sizes_2",
        ] {
            let v = item(c, n);
            assert_eq!(v.len(), 20, "{n}");
            assert_eq!(&v[..4], &[1, 0, 0, 0], "{n} version");
        }
        let cmap = item(c, "Cached_GeneralFile/mscp/cmapfile");
        assert_eq!(cmap, raw(c, "Cached_CardmodFile\\Cached_CMAPFile"));
        assert!(!cmap.is_empty() && cmap.len() % 86 == 0);
        let name: Vec<u16> = cmap[..80]
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .take_while(|u| *u != 0)
            .collect();
        let name = String::from_utf16_lossy(&name);
        let expect = format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}5fc105",
            guid[3], guid[2], guid[1], guid[0], guid[5], guid[4], guid[7], guid[6], guid[8], guid[9], guid[10], guid[11], guid[12]
        );
        assert_eq!(name, expect, "container name from the CHUID GUID + tag");
        assert!(cmap[2 * 36..80].iter().all(|b| *b == 0), "name zero-padded");
        assert_eq!(cmap[80], 0x03, "default + valid");
        assert_eq!(
            item(c, "Cached_ContainerProperty_PIN Identifier_0"),
            [1, 0, 0, 0]
        );

        let cert = x509_cert::Certificate::from_der(cert_der).expect("card certificate");
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let pk = rsa::RsaPublicKey::from_public_key_der(&spki).expect("RSA certificate");
        let ci = item(c, "Cached_ContainerInfo_00");
        let blob_len = u32::from_le_bytes(ci[12..16].try_into().unwrap()) as usize;
        assert_eq!(blob_len, ci.len() - 16);
        assert_eq!(
            &ci[16..28],
            &[6, 2, 0, 0, 0, 0xA4, 0, 0, b'R', b'S', b'A', b'1']
        );
        assert_eq!(
            ci[36..].to_vec(),
            pk.n().to_bytes_le(),
            "ContainerInfo modulus = certificate modulus"
        );
        assert_eq!(
            u16::from_le_bytes([cmap[84], cmap[85]]) as usize,
            pk.n().bits()
        );

        let kxc = item(c, "Cached_GeneralFile/mscp/kxc00");
        assert_eq!(&kxc[..2], &[1, 0], "zlib-compressed");
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&kxc[4..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(
            u16::from_le_bytes([kxc[2], kxc[3]]) as usize,
            inflated.len()
        );
        assert_eq!(
            inflated, cert_der,
            "kxc00 inflates to the card's certificate"
        );
    }

    /// BER length at `b[0..]`: (length, bytes the length field takes).
    fn ber_len(b: &[u8]) -> (usize, usize) {
        match b[0] {
            0x81 => (b[1] as usize, 2),
            0x82 => (u16::from_be_bytes([b[1], b[2]]) as usize, 3),
            n if n < 0x80 => (n as usize, 1),
            n => panic!("unexpected BER length byte {n:02X}"),
        }
    }

    /// Every container of the map, checked against the card itself: the
    /// tag in its name selects the certificate object read with GET DATA,
    /// and its items must carry that certificate and its public key, under
    /// Windows' index formats (PIN Identifier decimal,
    /// ContainerInfo and kxc/ksc two lowercase hex digits).
    fn check_containers(c: &mut Ctx, id: &GUID, expect: usize) {
        let raw = c
            .read_cache(id, "Cached_CardmodFile\\Cached_CMAPFile")
            .expect("cmap");
        assert_eq!(raw.len(), expect * 86, "{expect} containers in the map");
        for i in 0..expect {
            let rec = &raw[i * 86..(i + 1) * 86];
            let name: Vec<u16> = rec[..80]
                .chunks(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let name = String::from_utf16_lossy(&name);
            let tag = u32::from_str_radix(&name[30..36], 16).expect("tag in the name");
            // The client checks the outer tag 53 and unwraps it.
            let inner = c
                .piv()
                .get_data(ObjectId(tag))
                .unwrap_or_else(|e| panic!("GET DATA {tag:06X}: {e}"))
                .unwrap_or_else(|| panic!("GET DATA {tag:06X}: no object"));
            assert_eq!(inner[0], 0x70);
            let (clen, n) = ber_len(&inner[1..]);
            let cert_der = inner[1 + n..1 + n + clen].to_vec();
            let cert = x509_cert::Certificate::from_der(&cert_der).expect("certificate");
            let spki = &cert.tbs_certificate.subject_public_key_info;
            // PIV slots 9A, 9C, 9E sign; 9D and retired slots agree keys.
            let signing = matches!(tag, 0x5FC105 | 0x5FC10A | 0x5FC101);
            let ec = spki.algorithm.oid == oid::EC;
            let key_exchange = !ec || !signing;
            let hex = format!("{i:02x}");

            let pin_item = c
                .read_cache(id, &format!("Cached_ContainerProperty_PIN Identifier_{i}"))
                .unwrap_or_else(|e| panic!("PIN Identifier_{i}: 0x{e:08X}"));
            assert_eq!(&pin_item[16..], &[1, 0, 0, 0]);
            let ci = c
                .read_cache(id, &format!("Cached_ContainerInfo_{hex}"))
                .unwrap_or_else(|e| panic!("ContainerInfo_{hex}: 0x{e:08X}"));
            let ci = &ci[16..];
            let sig_len = u32::from_le_bytes(ci[8..12].try_into().unwrap()) as usize;
            let kx_len = u32::from_le_bytes(ci[12..16].try_into().unwrap()) as usize;
            let blob = &ci[16..];
            assert_eq!(blob.len(), sig_len + kx_len);
            if ec {
                let point = spki.subject_public_key.raw_bytes();
                let n = (point.len() - 1) / 2;
                let magic: &[u8] = match (signing, n) {
                    (true, 32) => b"ECS1",
                    (true, 48) => b"ECS3",
                    (false, 32) => b"ECK1",
                    (false, 48) => b"ECK3",
                    _ => panic!("curve with {n}-byte coordinates"),
                };
                assert_eq!(
                    (sig_len, kx_len),
                    if signing {
                        (8 + 2 * n, 0)
                    } else {
                        (0, 8 + 2 * n)
                    },
                    "container {i}: ECC key in the slot of its role"
                );
                assert_eq!(&blob[..4], magic, "container {i}: magic");
                assert_eq!(blob[4..8], (n as u32).to_le_bytes());
                assert_eq!(&blob[8..], &point[1..], "container {i}: X || Y");
                let bits = if signing { &rec[82..84] } else { &rec[84..86] };
                assert_eq!(u16::from_le_bytes([bits[0], bits[1]]) as usize, n * 8);
            } else {
                let pk = rsa::RsaPublicKey::from_public_key_der(&spki.to_der().unwrap()).unwrap();
                assert_eq!((sig_len, kx_len), (0, 20 + pk.size()));
                assert_eq!(
                    blob[20..].to_vec(),
                    pk.n().to_bytes_le(),
                    "container {i}: own modulus"
                );
                assert_eq!(
                    u16::from_le_bytes([rec[84], rec[85]]) as usize,
                    pk.n().bits()
                );
            }
            let prefix = if key_exchange { "kxc" } else { "ksc" };
            let other = if key_exchange { "ksc" } else { "kxc" };
            let file = c
                .read_cache(id, &format!("Cached_GeneralFile/mscp/{prefix}{hex}"))
                .unwrap_or_else(|e| panic!("{prefix}{hex}: 0x{e:08X}"));
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(&file[20..])
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(
                inflated, cert_der,
                "{prefix}{hex} is container {i}'s certificate"
            );
            assert_eq!(
                c.read_cache(id, &format!("Cached_GeneralFile/mscp/{other}{hex}")),
                Err(0x8010_0070),
                "container {i} has no {other} file"
            );
        }
        for gone in [
            format!("Cached_ContainerInfo_{expect:02x}"),
            format!("Cached_GeneralFile/mscp/kxc{expect:02x}"),
        ] {
            assert_eq!(
                c.read_cache(id, &gone),
                Err(0x8010_0070),
                "{gone}: past the last container"
            );
        }
    }

    fn pkcs1_block(digest: &[u8], k: usize) -> Vec<u8> {
        // DigestInfo for SHA-256, then EMSA-PKCS1-v1_5 padding, as msclmd sends it.
        let mut t = vec![
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        t.extend_from_slice(digest);
        let mut em = vec![0x00, 0x01];
        em.resize(k - t.len() - 1, 0xFF);
        em.push(0x00);
        em.extend_from_slice(&t);
        em
    }

    pub fn run() {
        let pin = std::env::var("MSCLMD_FLOW_PIN")
            .unwrap_or_else(|_| String::from_utf8_lossy(piv_applet::state::DEFAULT_PIN).into());
        let started = unsafe { SCardAccessStartedEvent() };
        assert!(!started.is_null(), "SCardAccessStartedEvent");
        unsafe { SCardReleaseStartedEvent() };

        let mut c = Ctx {
            h: 0,
            card: 0,
            freed: 0,
        };
        ok(
            unsafe { SCardEstablishContext(SCARD_SCOPE_USER, null(), null(), &mut c.h) },
            "SCardEstablishContext",
        );
        ok(unsafe { SCardIsValidContext(c.h) }, "SCardIsValidContext");

        // Needed length with a NULL buffer, a short buffer, then autoallocate.
        let mut len = 0u32;
        ok(
            unsafe { SCardListReadersW(c.h, null(), null_mut(), &mut len) },
            "SCardListReadersW (length)",
        );
        let mut short = vec![0u16; 2];
        let mut slen = 2u32;
        let rc = unsafe { SCardListReadersW(c.h, null(), short.as_mut_ptr(), &mut slen) };
        assert_eq!(
            rc as u32, 0x8010_0008,
            "short buffer → SCARD_E_INSUFFICIENT_BUFFER"
        );
        assert_eq!(slen, len);
        let mut p: *mut u16 = null_mut();
        let mut alen = AUTO;
        ok(
            unsafe { SCardListReadersW(c.h, null(), (&mut p as *mut *mut u16).cast(), &mut alen) },
            "SCardListReadersW (auto)",
        );
        let readers = multi(unsafe { std::slice::from_raw_parts(p, alen as usize) });
        ok(unsafe { SCardFreeMemory(c.h, p.cast()) }, "SCardFreeMemory");
        assert_eq!(alen, len);
        assert!(!readers.is_empty());
        let reader = readers[0].clone();
        println!("reader: {reader}");

        // Status change: answers at once for UNAWARE, PnP reports one reader.
        let (rn, pn) = (w(&reader), w(PNP));
        let mut st: [SCARD_READERSTATEW; 2] = unsafe { std::mem::zeroed() };
        st[0].szReader = rn.as_ptr();
        st[1].szReader = pn.as_ptr();
        ok(
            unsafe { SCardGetStatusChangeW(c.h, 0, st.as_mut_ptr(), 2) },
            "SCardGetStatusChangeW",
        );
        let ev = st[0].dwEventState;
        assert!(
            ev & SCARD_STATE_PRESENT != 0 && ev & SCARD_STATE_CHANGED != 0,
            "event 0x{ev:08X}"
        );
        assert_eq!(
            st[1].dwEventState >> 16,
            readers.len() as u32,
            "PnP reader count"
        );
        let activity = (ev >> 16) as u16;
        let atr = st[0].rgbAtr[..st[0].cbAtr as usize].to_vec();
        st[0].dwCurrentState = ev & !SCARD_STATE_CHANGED;
        st[1].dwCurrentState = st[1].dwEventState & !SCARD_STATE_CHANGED;
        let rc = unsafe { SCardGetStatusChangeW(c.h, 100, st.as_mut_ptr(), 2) };
        assert_eq!(rc as u32, 0x8010_000A, "unchanged → SCARD_E_TIMEOUT");

        // ATR → card name → card module, as basecsp finds msclmd.
        let mut p: *mut u16 = null_mut();
        let mut l = AUTO;
        ok(
            unsafe {
                SCardListCardsW(
                    c.h,
                    atr.as_ptr(),
                    null(),
                    0,
                    (&mut p as *mut *mut u16).cast(),
                    &mut l,
                )
            },
            "SCardListCardsW",
        );
        let cards = multi(unsafe { std::slice::from_raw_parts(p, l as usize) });
        ok(unsafe { SCardFreeMemory(c.h, p.cast()) }, "SCardFreeMemory");
        let card_name = w(&cards[0]);
        let mut prov = vec![0u16; 64];
        let mut pl = prov.len() as u32;
        ok(
            unsafe {
                SCardGetCardTypeProviderNameW(
                    c.h,
                    card_name.as_ptr(),
                    0x8000_0001,
                    prov.as_mut_ptr(),
                    &mut pl,
                )
            },
            "provider",
        );
        assert_eq!(multi(&prov[..pl as usize]), vec!["msclmd.dll".to_string()]);
        let mut dt = 0u32;
        ok(
            unsafe { SCardGetDeviceTypeIdW(c.h, rn.as_ptr(), &mut dt) },
            "SCardGetDeviceTypeIdW",
        );

        let mut proto = 0u32;
        ok(
            unsafe {
                SCardConnectW(
                    c.h,
                    rn.as_ptr(),
                    SCARD_SHARE_SHARED,
                    SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
                    &mut c.card,
                    &mut proto,
                )
            },
            "SCardConnectW",
        );
        assert_eq!(proto, SCARD_PROTOCOL_T1);
        // SCardStatusW with a NULL ATR buffer, as basecsp calls it.
        let (mut state, mut sproto, mut atr_len) = (0u32, 0u32, 0u32);
        let mut nl = 0u32;
        ok(
            unsafe {
                SCardStatusW(
                    c.card,
                    null_mut(),
                    &mut nl,
                    &mut state,
                    &mut sproto,
                    null_mut(),
                    &mut atr_len,
                )
            },
            "SCardStatusW",
        );
        assert_eq!(
            (state, sproto, atr_len as usize),
            (SCARD_SPECIFIC, SCARD_PROTOCOL_T1, atr.len())
        );
        let mut attr = vec![0u8; 64];
        let mut al = attr.len() as u32;
        ok(
            unsafe { SCardGetAttrib(c.card, 0x0009_0303, attr.as_mut_ptr(), &mut al) },
            "SCardGetAttrib ATR",
        );
        assert_eq!(&attr[..al as usize], atr.as_slice());

        ok(
            unsafe { SCardBeginTransaction(c.card) },
            "SCardBeginTransaction",
        );
        c.piv().select().expect("SELECT");
        let chuid = c
            .piv()
            .get_data(ObjectId::CHUID)
            .expect("GET DATA CHUID")
            .expect("a CHUID");
        let guid = tlv::find(&chuid, 0x34).expect("GUID in CHUID").to_vec();
        assert_eq!(guid.len(), 16, "GUID in CHUID");
        let obj = c
            .piv()
            .get_data(ObjectId::CERT_PIV_AUTH)
            .expect("GET DATA 9A certificate")
            .expect("a 9A certificate");
        // 70 82 LL LL <cert> inside 53 (the client checked and unwrapped it)
        assert_eq!(obj[0], 0x70);
        let clen = if obj[1] == 0x82 {
            u16::from_be_bytes([obj[2], obj[3]]) as usize
        } else {
            panic!("long certificate expected")
        };
        let cert_der = obj[4..4 + clen].to_vec();

        let id: GUID = unsafe { std::ptr::read_unaligned(guid.as_ptr().cast()) };
        check_cache(&mut c, &id, activity, &guid, &cert_der);
        let containers = std::env::var("MSCLMD_FLOW_CONTAINERS")
            .map(|v| v.parse().expect("MSCLMD_FLOW_CONTAINERS"))
            .unwrap_or(1);
        check_containers(&mut c, &id, containers);
        println!("{containers} containers checked against the card");

        // VERIFY then the chained GENERAL AUTHENTICATE msclmd sends.
        // Raw APDUs: msclmd's exact bytes (VERIFY without Le, its own
        // chaining split) are what this flow checks the shim passes on.
        let mut verify = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        verify.extend_from_slice(&piv_applet::state::pad_pin(pin.as_bytes()));
        assert_eq!(c.apdu(&verify).1, 0x9000, "VERIFY");
        let cert = x509_cert::Certificate::from_der(&cert_der).unwrap();
        let pk = rsa::RsaPublicKey::from_public_key_der(
            &cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap(),
        )
        .unwrap();
        let digest = sha2::Sha256::digest(b"RDP smart card logon");
        let block = pkcs1_block(&digest, pk.size());
        let mut data = vec![0x7C, 0x82, 0x01, 0x06, 0x82, 0x00, 0x81, 0x82, 0x01, 0x00];
        data.extend_from_slice(&block);
        let (first, rest) = data.split_at(255);
        let mut a1 = vec![0x10, 0x87, 0x07, 0x9A, 0xFF];
        a1.extend_from_slice(first);
        assert_eq!(c.apdu(&a1).1, 0x9000, "first chunk");
        let mut a2 = vec![0x00, 0x87, 0x07, 0x9A, rest.len() as u8];
        a2.extend_from_slice(rest);
        a2.push(0x00);
        let (resp, sw) = c.apdu(&a2);
        assert_eq!(sw, 0x9000, "GENERAL AUTHENTICATE");
        assert_eq!(
            &resp[..8],
            &[0x7C, 0x82, 0x01, 0x04, 0x82, 0x82, 0x01, 0x00]
        );
        let sig = &resp[8..];
        pk.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, sig)
            .expect("signature verifies against the certificate");
        println!("signature verified ({} bytes)", sig.len());

        // msclmd writes items back; the next read must return them.
        let name = w("Cached_CardProperty_Read Only Mode_0");
        let newval = [
            1u8, 0, 3, 0, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0,
        ];
        ok(
            unsafe {
                SCardWriteCacheW(
                    c.h,
                    &id,
                    9,
                    name.as_ptr(),
                    newval.as_ptr(),
                    newval.len() as u32,
                )
            },
            "SCardWriteCacheW",
        );
        let mut back = vec![0u8; 64];
        let mut bl = back.len() as u32;
        ok(
            unsafe { SCardReadCacheW(c.h, &id, 9, name.as_ptr(), back.as_mut_ptr(), &mut bl) },
            "SCardReadCacheW written",
        );
        assert_eq!(&back[..bl as usize], &newval);
        let rc =
            unsafe { SCardReadCacheW(c.h, &id, 10, name.as_ptr(), back.as_mut_ptr(), &mut bl) };
        assert_eq!(
            rc as u32, 0x8010_0071,
            "other freshness → SCARD_W_CACHE_ITEM_STALE"
        );

        ok(
            unsafe { SCardEndTransaction(c.card, SCARD_LEAVE_CARD) },
            "SCardEndTransaction",
        );
        ok(
            unsafe { SCardDisconnect(c.card, SCARD_LEAVE_CARD) },
            "SCardDisconnect",
        );
        let rc = unsafe {
            SCardTransmit(
                c.card,
                &raw const g_rgSCardT1Pci,
                a1.as_ptr(),
                4,
                null_mut(),
                back.as_mut_ptr(),
                &mut bl,
            )
        };
        assert_eq!(
            rc as u32, 0x8010_0003,
            "closed handle → SCARD_E_INVALID_HANDLE"
        );
        ok(unsafe { SCardReleaseContext(c.h) }, "SCardReleaseContext");
        // ERROR_INVALID_HANDLE, as Windows documents for this call.
        assert_eq!(unsafe { SCardIsValidContext(c.h) } as u32, 6);
        println!("cache items read and freed: {}", c.freed);
    }
}
