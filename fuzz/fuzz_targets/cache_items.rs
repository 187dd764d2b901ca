//! The shim's cache-item builder (`winscard::cache`) with arbitrary card
//! answers and certificates.
//!
//! Input byte 0 picks the mode and the options:
//! - `mode & 0x0C == 0x0C`: the rest is an item's bytes, decoded as the
//!   item named by `mode >> 4` (a list below): when the typed decoder
//!   accepts them, encoding the record gives back exactly those bytes;
//! - otherwise even: the rest is a list of card responses (2-byte big-endian length
//!   + bytes each) that a fake transport hands out one per APDU, then fails;
//!   `read_card` runs over it (SELECT, GET DATA CHUID and 24 cert objects,
//!   61xx/6Cxx handling, gzip certificates), then `build_items`;
//! - odd: the rest is taken as one certificate DER (plus a GUID) given
//!   straight to `build_items`, so the X.509/SPKI paths get mutated directly.
//! Checked: no panic (nor hang), and for every built item set: headered
//! items carry a length field that matches, the raw cmap is whole
//! 86-byte records, every kxc/ksc record inflates back to a certificate
//! of the card, every item decodes to a typed record that encodes back to
//! the same bytes, and `dump_items` renders everything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use winscard::cache::{self, names, CacheOptions, CardInfo, Freshness, Record, SlotCert};

/// Names whose records the raw mode decodes, one per kind.
const NAMES: [&str; 9] = [
    names::PIN_FRESHNESS,
    names::READ_ONLY,
    names::CAPABILITIES,
    names::KEY_SIZES_SIG,
    names::CMAPFILE,
    names::CMAPFILE_RAW,
    "Cached_ContainerInfo_0a",
    "Cached_GeneralFile/mscp/ksc0a",
    "Cached_Unknown",
];

fn check(info: &CardInfo, mode: u8) {
    let opts = CacheOptions {
        ecc_containers: mode & 2 != 0,
    };
    let fresh = Freshness {
        pin: mode,
        containers: u16::from(mode) * 7,
        files: 0xFFF0,
    };
    let activity = u16::from(mode) << 8;
    let Ok(items) = cache::build_items(info, fresh, activity, &opts) else {
        return;
    };
    let mut certs = 0;
    for it in &items {
        let rec = Record::decode(&it.name, &it.value).expect("built items decode");
        assert!(!matches!(rec, Record::Unknown(_)), "{}", it.name);
        assert_eq!(rec.encode(), it.value, "{}: round trip", it.name);
        let raw = it.name.ends_with("_Freshness") || it.name == names::CMAPFILE_RAW;
        if it.name == names::CMAPFILE_RAW {
            assert_eq!(it.value.len() % 86, 0);
            // Certificates Windows cannot use get no container.
            assert!(it.value.len() / 86 <= info.certs.len());
        }
        if raw {
            continue;
        }
        let (cf, value) = cache::split_header(&it.value).expect("header length matches");
        assert_eq!(cf, cache::cardcf(fresh, activity));
        if it.name.starts_with("Cached_GeneralFile/mscp/k") {
            let der = cache::decompress_cert(value).expect("record inflates");
            assert!(info.certs.iter().any(|c| c.der == der));
            certs += 1;
        }
    }
    assert!(certs <= info.certs.len());
    let _ = cache::dump_items(&items);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x0C == 0x0C {
        let name = NAMES[usize::from(mode >> 4) % NAMES.len()];
        if let Ok(rec) = Record::decode(name, rest) {
            assert_eq!(rec.encode(), rest, "{name}: strict decoding round-trips");
            let _ = rec.to_string();
        }
        return;
    }
    if mode & 1 == 1 {
        let (guid, der) = rest.split_at(rest.len().min(16));
        let mut g = [0u8; 16];
        g[..guid.len()].copy_from_slice(guid);
        let info = CardInfo {
            guid: g,
            certs: vec![SlotCert {
                key_ref: 0x9A,
                object_tag: 0x5FC105,
                der: der.to_vec(),
            }],
        };
        let _ = cache::certificate_public_key(der);
        check(&info, mode);
        return;
    }
    let mut responses = rest;
    let mut calls = 0usize;
    let mut tx = |_apdu: &[u8]| -> Result<Vec<u8>, String> {
        calls += 1;
        if responses.len() < 2 {
            return Err("card gone".into());
        }
        let n =
            usize::from(u16::from_be_bytes([responses[0], responses[1]])).min(responses.len() - 2);
        let r = responses[2..2 + n].to_vec();
        responses = &responses[2 + n..];
        Ok(r)
    };
    if let Ok(info) = cache::read_card(&mut tx) {
        for c in &info.certs {
            assert!(cache::cert_slots().any(|s| s == (c.key_ref, c.object_tag)));
        }
        check(&info, mode);
    }
});
