//! The smart card cache items msclmd.dll reads through `SCardReadCacheW`,
//! built from what the card itself answers (docs/msclmd-cache.md gives
//! every byte layout, the naming rules and where each fact comes from).
//!
//! The card is read through APDUs only (SELECT, GET DATA of the CHUID and of
//! every certificate object), so an embedded card and a remote one give the
//! same items, and what is cached can never disagree with what msclmd would
//! read from the card itself.

use std::fmt::Write as _;

use der::Decode;
use piv_applet::client::{Client, ClientError};
use piv_applet::{oid, tlv, ObjectId, Slot};

pub mod record;

pub use record::{
    CardCf, CertFile, ContainerInfo, ContainerRecord, DecodeError, EccMagic, KeyBlob, Record, Value,
};

/// Every slot that can hold a certificate msclmd exposes, as (key
/// reference, certificate object tag), in the order containers are
/// numbered: the card's own table of the 24 PIV slots.
pub fn cert_slots() -> impl Iterator<Item = (u8, u32)> {
    Slot::piv().map(|s| (s.key_ref(), s.certificate_object().0))
}

/// One APDU in, response data + SW out; errors mean the card is gone.
pub type Transport<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// Why the cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading the card failed: its transport, a refusal or a malformed
    /// answer.
    #[error(transparent)]
    Card(#[from] ClientError<String>),
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
}

/// What the cache is built from: the CHUID GUID and the certificate of
/// every certificate-bearing slot, exactly as the card returned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo {
    pub guid: [u8; 16],
    pub certs: Vec<SlotCert>,
}

/// One slot's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotCert {
    pub key_ref: u8,
    pub object_tag: u32,
    pub der: Vec<u8>,
}

/// Reads the CHUID GUID and every slot's certificate through APDUs.
pub fn read_card(tx: &mut Transport<'_>) -> Result<CardInfo, CacheError> {
    let mut card = Client::new(tx);
    card.select()?;
    let mut guid = [0u8; 16];
    if let Some(chuid) = card.get_data(ObjectId::CHUID)? {
        if let Some(g) = tlv::find(&chuid, 0x34) {
            if g.len() == 16 {
                guid.copy_from_slice(g);
            }
        }
    }
    let mut certs = Vec::new();
    for slot in Slot::piv() {
        let Some(der) = card.read_certificate(slot)? else {
            continue;
        };
        certs.push(SlotCert {
            key_ref: slot.key_ref(),
            object_tag: slot.certificate_object().0,
            der,
        });
    }
    Ok(CardInfo { guid, certs })
}

/// The container name Windows' PIV minidriver expects: the first 13 CHUID
/// GUID bytes as a lowercase GUID string, then the certificate tag in hex.
/// msclmd scans it with `%30s%6x`, so the tag must sit at characters 30..36.
pub fn container_name(guid: &[u8; 16], object_tag: u32) -> String {
    let g = guid;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:06x}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], object_tag
    )
}

/// The inverse of [`container_name`]: the 13 GUID bytes and the tag, when a
/// name follows the PIV scheme (used to honour a configured container name).
pub fn parse_container_name(name: &str) -> Option<([u8; 13], u32)> {
    let b = name.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: String = name[..30].chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(hex).ok()?;
    let raw: [u8; 13] = raw.try_into().ok()?;
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12];
    let mut g = [0u8; 13];
    for (i, &o) in order.iter().enumerate() {
        g[o] = raw[i];
    }
    let tag = u32::from_str_radix(&name[30..], 16).ok()?;
    cert_slots().any(|(_, t)| t == tag).then_some((g, tag))
}

/// The three freshness counters msclmd keeps (pin, containers, files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    pub pin: u8,
    pub containers: u16,
    pub files: u16,
}

impl Default for Freshness {
    /// The values seen working with mstsc smart card logon (spec section 1).
    fn default() -> Self {
        Freshness {
            pin: 0,
            containers: 1,
            files: 0x0B,
        }
    }
}

/// The 6-byte CARD_CACHE_FILE_FORMAT every item starts with. `activity` is
/// HIWORD(dwEventState) of the reader as this DLL reports it; msclmd adds it
/// to the stored counters, so the header must too or msclmd finds every
/// item stale.
pub fn cardcf(f: Freshness, activity: u16) -> [u8; 6] {
    let c = f.containers.wrapping_add(activity).to_le_bytes();
    let fi = f.files.wrapping_add(activity).to_le_bytes();
    [1, f.pin, c[0], c[1], fi[0], fi[1]]
}

/// One cache item as `SCardReadCacheW` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheItem {
    pub name: String,
    pub value: Vec<u8>,
}

/// Choices that change what is cached.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Serve ECC containers (the default). Their layout follows the
    /// minidriver specification and OpenSC's minidriver, not a capture of
    /// msclmd (docs/msclmd-cache.md), so it can be turned off: the ECC
    /// certificates then get no container and only RSA keys are offered.
    pub ecc_containers: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ecc_containers: true,
        }
    }
}

/// What Windows may do with a container's key, which decides where its
/// size, key blob and certificate file go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// AT_KEYEXCHANGE: `wKeyExchangeKeySizeBits`, `pbKeyExPublicKey`, `kxc`.
    KeyExchange,
    /// AT_SIGNATURE: `wSigKeySizeBits`, `pbSigPublicKey`, `ksc`.
    Signature,
}

impl KeyRole {
    /// RSA keys are key-exchange keys (as in the Windows capture; they sign
    /// too). An ECC key signs in the PIV signing slots 9A, 9C and 9E and
    /// agrees keys in 9D and the retired slots: OpenSC's minidriver derives
    /// the role from the key's usage, which its PIV driver sets this way.
    pub fn of(key: &PublicKey, key_ref: u8) -> KeyRole {
        match key {
            PublicKey::Rsa { .. } => KeyRole::KeyExchange,
            PublicKey::Ec { .. } if matches!(key_ref, 0x9A | 0x9C | 0x9E) => KeyRole::Signature,
            PublicKey::Ec { .. } => KeyRole::KeyExchange,
        }
    }
}

/// A certificate's public key as msclmd caches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus big-endian without leading zeros, exponent.
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// Curve size in bits (256, 384) and the uncompressed point's X and Y.
    Ec { bits: u16, x: Vec<u8>, y: Vec<u8> },
}

impl PublicKey {
    /// Key size in bits as CONTAINER_MAP_RECORD and CARD_KEY_SIZES count it.
    pub fn bits(&self) -> u16 {
        match self {
            // A modulus of 8192 bytes or more (no real card's) must not
            // wrap to a small size: it saturates.
            PublicKey::Rsa { modulus, .. } => u16::try_from(modulus.len() * 8).unwrap_or(u16::MAX),
            PublicKey::Ec { bits, .. } => *bits,
        }
    }
}

/// The public key of an X.509 certificate.
pub fn certificate_public_key(der: &[u8]) -> Result<PublicKey, CacheError> {
    let bad = |detail: String| CacheError::Malformed {
        what: "certificate".into(),
        detail,
    };
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key_bits = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid {
        oid::RSA => {
            let key = pkcs1_rsa(key_bits).map_err(bad)?;
            Ok(key)
        }
        oid::EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
            let bits = match curve {
                Some(oid::P256) => 256u16,
                Some(oid::P384) => 384,
                Some(other) => return Err(bad(format!("unsupported curve {other}"))),
                None => return Err(bad("unsupported curve ".into())),
            };
            let n = usize::from(bits / 8);
            if key_bits.len() != 1 + 2 * n || key_bits[0] != 4 {
                return Err(bad("EC point is not uncompressed".into()));
            }
            Ok(PublicKey::Ec {
                bits,
                x: key_bits[1..1 + n].to_vec(),
                y: key_bits[1 + n..].to_vec(),
            })
        }
        other => Err(bad(format!("unsupported key algorithm {other}"))),
    }
}

fn pkcs1_rsa(bytes: &[u8]) -> Result<PublicKey, String> {
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    #[derive(der::Sequence)]
    struct RsaPub<'a> {
        modulus: der::asn1::UintRef<'a>,
        exponent: der::asn1::UintRef<'a>,
    }
    let k = RsaPub::from_der(bytes).map_err(|e| e.to_string())?;
    let e = k.exponent.as_bytes();
    if e.len() > 4 {
        return Err("RSA exponent does not fit in 32 bits".into());
    }
    let exponent = e.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
    Ok(PublicKey::Rsa {
        modulus: k.modulus.as_bytes().to_vec(),
        exponent,
    })
}

/// A key's blob for its container: CryptoAPI PUBLICKEYBLOB (RSA) or
/// BCRYPT_ECCKEY_BLOB with the ECDSA magic for a signature key and the ECDH
/// magic for a key-agreement key.
pub fn key_blob(key: &PublicKey, role: KeyRole) -> KeyBlob {
    match key {
        PublicKey::Rsa { modulus, exponent } => KeyBlob::Rsa {
            exponent: *exponent,
            modulus: modulus.clone(),
        },
        PublicKey::Ec { bits, x, y } => KeyBlob::Ecc {
            magic: match (role, *bits == 256) {
                (KeyRole::Signature, true) => EccMagic::EcdsaP256,
                (KeyRole::Signature, false) => EccMagic::EcdsaP384,
                (KeyRole::KeyExchange, true) => EccMagic::EcdhP256,
                (KeyRole::KeyExchange, false) => EccMagic::EcdhP384,
            },
            x: x.clone(),
            y: y.clone(),
        },
    }
}

/// Names of the items, so tests and callers do not repeat string literals.
pub mod names {
    pub const PIN_FRESHNESS: &str = "Cached_CardmodFile\\Cached_Pin_Freshness";
    pub const FILE_FRESHNESS: &str = "Cached_CardmodFile\\Cached_File_Freshness";
    pub const CONTAINER_FRESHNESS: &str = "Cached_CardmodFile\\Cached_Container_Freshness";
    pub const READ_ONLY: &str = "Cached_CardProperty_Read Only Mode_0";
    pub const CACHE_MODE: &str = "Cached_CardProperty_Cache Mode_0";
    pub const X509_ENROLLMENT: &str = "Cached_CardProperty_Supports Windows x.509 Enrollment_0";
    pub const CAPABILITIES: &str = "Cached_CardProperty_Capabilities_0";
    pub const KEY_SIZES_KEYX: &str = "Cached_CardProperty_Key Sizes_1";
    pub const KEY_SIZES_SIG: &str = "Cached_CardProperty_Key Sizes_2";
    pub const CMAPFILE: &str = "Cached_GeneralFile/mscp/cmapfile";
    pub const CMAPFILE_RAW: &str = "Cached_CardmodFile\\Cached_CMAPFile";

    // Per-container names. Windows formats the index differently per item
    // (docs/msclmd-cache.md, "Item names"): basecsp's container-property
    // reader uses "%s_%s_%d" (decimal), CspGetContainerInfo "%s_%02x" (hex),
    // so container 10 is `PIN Identifier_10` but `ContainerInfo_0a`.

    /// `Cached_ContainerProperty_PIN Identifier_<i>`, decimal index.
    pub fn pin_identifier(index: usize) -> String {
        format!("Cached_ContainerProperty_PIN Identifier_{index}")
    }

    /// `Cached_ContainerInfo_<ii>`, two lowercase hex digits.
    pub fn container_info(index: usize) -> String {
        format!("Cached_ContainerInfo_{index:02x}")
    }

    /// The certificate file of a container: `kxc<ii>` for a key-exchange
    /// key, `ksc<ii>` for a signature key, two lowercase hex digits like the
    /// ContainerInfo index (GIDS and Gemalto minidrivers format it in hex;
    /// no source formats it in decimal past 9 except OpenSC's own driver).
    pub fn cert_file(key_exchange: bool, index: usize) -> String {
        let prefix = if key_exchange { "kxc" } else { "ksc" };
        format!("Cached_GeneralFile/mscp/{prefix}{index:02x}")
    }
}

/// Builds every item for a card. `activity` is HIWORD(dwEventState) of the
/// reader this card sits in.
pub fn build_items(
    info: &CardInfo,
    fresh: Freshness,
    activity: u16,
    opts: &CacheOptions,
) -> Result<Vec<CacheItem>, CacheError> {
    let cf = CardCf(cardcf(fresh, activity));
    let mut items = Vec::new();
    let mut put = |name: String, record: Record| {
        items.push(CacheItem {
            name,
            value: record.encode(),
        })
    };
    let dword = |d: u32| Record::Headered(cf, Value::Dword(d));
    put(
        names::PIN_FRESHNESS.into(),
        Record::Counter(fresh.pin.into()),
    );
    put(names::FILE_FRESHNESS.into(), Record::Counter(fresh.files));
    put(
        names::CONTAINER_FRESHNESS.into(),
        Record::Counter(fresh.containers),
    );
    // msclmd marks real PIV cards read-only and never enrolls on them.
    put(names::READ_ONLY.into(), dword(1));
    put(names::CACHE_MODE.into(), dword(1));
    put(names::X509_ENROLLMENT.into(), dword(0));
    put(
        names::CAPABILITIES.into(),
        Record::Headered(cf, Value::Capabilities([1, 0, 1])),
    );
    // CARD_KEY_SIZES for RSA as the card implements it: 1024..4096 by 1024.
    let sizes = Record::Headered(cf, Value::KeySizes([1, 1024, 2048, 4096, 1024]));
    put(names::KEY_SIZES_KEYX.into(), sizes.clone());
    put(names::KEY_SIZES_SIG.into(), sizes);

    // A certificate whose key Windows cannot use here (Ed25519, X25519,
    // another curve, or no parsable certificate) gets no container; every
    // other one does, so one odd slot never hides the RSA keys.
    let containers: Vec<_> = info
        .certs
        .iter()
        .filter_map(|c| {
            let key = certificate_public_key(&c.der).ok()?;
            let ec = matches!(key, PublicKey::Ec { .. });
            (!ec || opts.ecc_containers).then(|| (c, KeyRole::of(&key, c.key_ref), key))
        })
        .collect();
    let cmap: Vec<ContainerRecord> = containers
        .iter()
        .enumerate()
        .map(|(i, (c, role, key))| {
            let (sig_bits, key_exchange_bits) = match role {
                KeyRole::KeyExchange => (0, key.bits()),
                KeyRole::Signature => (key.bits(), 0),
            };
            ContainerRecord {
                name: container_name(&info.guid, c.object_tag),
                // Valid; the first container is also the default.
                flags: if i == 0 { 0x03 } else { 0x01 },
                sig_bits,
                key_exchange_bits,
            }
        })
        .collect();
    put(
        names::CMAPFILE.into(),
        Record::Headered(cf, Value::ContainerMap(cmap.clone())),
    );
    put(names::CMAPFILE_RAW.into(), Record::RawContainerMap(cmap));
    for (i, (c, role, key)) in containers.iter().enumerate() {
        // ROLE_USER: the PIV PIN guards every key msclmd uses.
        put(names::pin_identifier(i), dword(1));
        let blob = key_blob(key, *role).encode();
        let (sig_key, key_exchange_key) = match role {
            KeyRole::KeyExchange => (Vec::new(), blob),
            KeyRole::Signature => (blob, Vec::new()),
        };
        put(
            names::container_info(i),
            Record::Headered(
                cf,
                Value::ContainerInfo(ContainerInfo {
                    version: 0,
                    reserved: 0,
                    sig_key,
                    key_exchange_key,
                }),
            ),
        );
        let file = CertFile::compress(&c.der).map_err(|e| CacheError::Malformed {
            what: format!("certificate in {:06X}", c.object_tag),
            detail: e.to_string(),
        })?;
        put(
            names::cert_file(*role == KeyRole::KeyExchange, i),
            Record::Headered(cf, Value::CertFile(file)),
        );
    }
    Ok(items)
}

/// Splits a headered item into (cardcf, value); None when it is not one.
pub fn split_header(item: &[u8]) -> Option<([u8; 6], &[u8])> {
    record::header(item).ok().map(|(cf, v)| (cf.0, v))
}

/// Inflates a kxc/ksc record value to the certificate DER.
pub fn decompress_cert(value: &[u8]) -> Option<Vec<u8>> {
    CertFile::decode(value).ok()?.certificate()
}

/// A readable view of one item, or why its bytes are not what its name says.
pub fn decode(name: &str, value: &[u8]) -> String {
    match Record::decode(name, value) {
        Ok(r) => r.to_string(),
        Err(e) => format!("does not decode: {e}"),
    }
}

/// Every item as text: name, hex bytes, decoded view.
pub fn dump_items(items: &[CacheItem]) -> String {
    let mut s = String::new();
    for it in items {
        let _ = writeln!(
            s,
            "{}\n  hex: {}\n  {}",
            it.name,
            hex::encode(&it.value),
            decode(&it.name, &it.value)
        );
    }
    s
}

/// What msclmd will see for a card: reads it through `tx` (one APDU in, the
/// response with its status word out) and prints every item exactly as the
/// shim would serve it in a reader whose event count is `activity`.
pub fn dump(
    tx: &mut Transport<'_>,
    activity: u16,
    opts: &CacheOptions,
) -> Result<String, CacheError> {
    let info = read_card(tx)?;
    let items = build_items(&info, Freshness::default(), activity, opts)?;
    let mut s = format!("CHUID GUID {}\n", hex::encode(info.guid));
    for c in &info.certs {
        let _ = writeln!(
            s,
            "slot {:02X} (object {:06X}): container {}",
            c.key_ref,
            c.object_tag,
            container_name(&info.guid, c.object_tag)
        );
    }
    s.push('\n');
    s.push_str(&dump_items(&items));
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rsa_key_size_saturates_instead_of_wrapping() {
        let key = |bytes: usize| super::PublicKey::Rsa {
            modulus: vec![0xC5; bytes],
            exponent: 65537,
        };
        assert_eq!(key(256).bits(), 2048);
        assert_eq!(key(8191).bits(), 65528);
        assert_eq!(key(8192).bits(), u16::MAX);
    }

    #[test]
    fn endless_get_response_chains_are_cut_off() {
        let mut calls = 0usize;
        let mut tx = |_: &[u8]| -> Result<Vec<u8>, String> {
            calls += 1;
            Ok(vec![0xAA; 200].into_iter().chain([0x61, 0x00]).collect())
        };
        let e = read_card(&mut tx).unwrap_err();
        assert!(e.to_string().contains("kept answering 61xx/6Cxx"), "{e}");
        assert!(calls <= piv_applet::client::MAX_RESPONSE_ROUNDS + 1);
    }

    /// What the shim logs when a card cannot be read names the step and
    /// the card's answer.
    #[test]
    fn read_card_errors_name_the_step() {
        fn run(mut tx: impl FnMut(&[u8]) -> Result<Vec<u8>, String>) -> String {
            read_card(&mut tx).unwrap_err().to_string()
        }
        assert_eq!(
            run(|_: &[u8]| Err("gone".into())),
            "card transport failed: gone"
        );
        assert_eq!(
            run(|_: &[u8]| Ok(vec![0x6A, 0x82])),
            "card answered 6A82 to SELECT PIV"
        );
        assert_eq!(
            run(|_: &[u8]| Ok(vec![0x90])),
            "malformed response: 1 bytes"
        );
        let get_data = |answer: Vec<u8>| {
            move |apdu: &[u8]| -> Result<Vec<u8>, String> {
                Ok(if apdu[1] == 0xA4 {
                    vec![0x90, 0x00]
                } else {
                    answer.clone()
                })
            }
        };
        assert_eq!(
            run(get_data(vec![0x69, 0x82])),
            "card answered 6982 to GET DATA"
        );
        assert_eq!(
            run(get_data(vec![0x54, 0x00, 0x90, 0x00])),
            "malformed object 5FC102: outer tag 54, expected 53"
        );
        let mut bad_gzip = Vec::new();
        tlv::write(&mut bad_gzip, 0x70, &[0x1F, 0x8B, 0x08]);
        tlv::write(&mut bad_gzip, 0x71, &[0x01]);
        let bad_gzip = [tlv::encode(0x53, &bad_gzip), vec![0x90, 0x00]].concat();
        let e = run(get_data(bad_gzip));
        assert!(
            e.starts_with("malformed gzip certificate in 5FC105: "),
            "{e}"
        );
    }

    /// Containers are numbered in msclmd's slot order, each slot with the
    /// object msclmd derives from its key reference.
    #[test]
    fn cert_slots_follow_msclmd_numbering() {
        let slots: Vec<(u8, u32)> = cert_slots().collect();
        assert_eq!(slots.len(), 24);
        assert_eq!(
            slots[..4],
            [
                (0x9A, 0x5FC105),
                (0x9C, 0x5FC10A),
                (0x9D, 0x5FC10B),
                (0x9E, 0x5FC101)
            ]
        );
        for (i, (key_ref, tag)) in slots[4..].iter().enumerate() {
            assert_eq!(*key_ref, 0x82 + i as u8);
            // msclmd: key reference = tag low byte + 0x75.
            assert_eq!(tag & 0xFF, u32::from(*key_ref) - 0x75);
            assert_eq!(tag >> 8, 0x5FC1);
        }
    }

    use super::*;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;

    const CERT: &[u8] = include_bytes!("../tests/data/rsa2048.cert.der");
    const EC_CERT: &[u8] = include_bytes!("../tests/data/p256.cert.der");
    /// The spec's container-name vector, completed with three arbitrary bytes.
    const GUID: [u8; 16] = [
        0x58, 0xc6, 0x8a, 0x1d, 0x65, 0xe0, 0xa0, 0x92, 0x85, 0xaf, 0x09, 0x0b, 0x07, 0x11, 0x22,
        0x33,
    ];

    fn info(certs: &[(u8, u32, &[u8])]) -> CardInfo {
        CardInfo {
            guid: GUID,
            certs: certs
                .iter()
                .map(|(k, t, d)| SlotCert {
                    key_ref: *k,
                    object_tag: *t,
                    der: d.to_vec(),
                })
                .collect(),
        }
    }

    fn item<'a>(items: &'a [CacheItem], name: &str) -> &'a [u8] {
        &items
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no item {name}"))
            .value
    }

    /// The header with the default counters and activity 1, built by hand.
    fn hdr(len: u32) -> Vec<u8> {
        let mut v = vec![0x01, 0x00, 0x02, 0x00, 0x0C, 0x00, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// The modulus through an independent path (rsa crate over the SPKI).
    fn modulus_le(cert: &[u8]) -> Vec<u8> {
        let c = x509_cert::Certificate::from_der(cert).unwrap();
        let spki = der::Encode::to_der(&c.tbs_certificate.subject_public_key_info).unwrap();
        rsa::RsaPublicKey::from_public_key_der(&spki)
            .unwrap()
            .n()
            .to_bytes_le()
    }

    #[test]
    fn container_name_matches_the_spec_vector() {
        assert_eq!(
            container_name(&GUID, 0x5FC105),
            "1d8ac658-e065-92a0-85af-090b075fc105"
        );
        assert_eq!(
            container_name(&GUID, 0x5FC10D),
            "1d8ac658-e065-92a0-85af-090b075fc10d"
        );
        let (g, tag) = parse_container_name("1d8ac658-e065-92a0-85af-090b075fc105").unwrap();
        assert_eq!(&g, &GUID[..13]);
        assert_eq!(tag, 0x5FC105);
        assert!(parse_container_name("te-RDPsmartcardlogon5-fc36fc18-e0-25895").is_none());
        assert!(parse_container_name("1d8ac658-e065-92a0-85af-090b075fc199").is_none());
    }

    #[test]
    fn every_item_byte_for_byte() {
        let items = build_items(
            &info(&[(0x9A, 0x5FC105, CERT)]),
            Freshness::default(),
            1,
            &CacheOptions::default(),
        )
        .unwrap();
        assert_eq!(item(&items, names::PIN_FRESHNESS), [0x00, 0x00]);
        assert_eq!(item(&items, names::FILE_FRESHNESS), [0x0B, 0x00]);
        assert_eq!(item(&items, names::CONTAINER_FRESHNESS), [0x01, 0x00]);
        assert_eq!(
            item(&items, names::READ_ONLY),
            cat(&[&hdr(4), &[1, 0, 0, 0]])
        );
        assert_eq!(
            item(&items, names::CACHE_MODE),
            cat(&[&hdr(4), &[1, 0, 0, 0]])
        );
        assert_eq!(
            item(&items, names::X509_ENROLLMENT),
            cat(&[&hdr(4), &[0, 0, 0, 0]])
        );
        assert_eq!(
            item(&items, names::CAPABILITIES),
            cat(&[&hdr(12), &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]])
        );
        let sizes: &[u8] = &[
            1, 0, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0x10, 0, 0, 0, 4, 0, 0,
        ];
        assert_eq!(sizes.len(), 20, "CARD_KEY_SIZES is exactly 20 bytes");
        assert_eq!(item(&items, names::KEY_SIZES_KEYX), cat(&[&hdr(20), sizes]));
        assert_eq!(item(&items, names::KEY_SIZES_SIG), cat(&[&hdr(20), sizes]));

        let mut rec = Vec::new();
        for c in "1d8ac658-e065-92a0-85af-090b075fc105".encode_utf16() {
            rec.extend_from_slice(&c.to_le_bytes());
        }
        rec.resize(80, 0);
        rec.extend_from_slice(&[0x03, 0x00, 0x00, 0x00, 0x00, 0x08]);
        assert_eq!(rec.len(), 86);
        assert_eq!(item(&items, names::CMAPFILE), cat(&[&hdr(86), &rec]));
        assert_eq!(item(&items, names::CMAPFILE_RAW), rec);
        assert_eq!(
            item(&items, "Cached_ContainerProperty_PIN Identifier_0"),
            cat(&[&hdr(4), &[1, 0, 0, 0]])
        );

        let m = modulus_le(CERT);
        assert_eq!(m.len(), 256);
        let blob = cat(&[
            &[0x06, 0x02, 0x00, 0x00, 0x00, 0xA4, 0x00, 0x00],
            b"RSA1",
            &[0x00, 0x08, 0x00, 0x00],
            &[0x01, 0x00, 0x01, 0x00],
            &m,
        ]);
        assert_eq!(blob.len(), 276);
        let ci = item(&items, "Cached_ContainerInfo_00");
        assert_eq!(ci, cat(&[&hdr(292), &[0; 12], &[0x14, 0x01, 0, 0], &blob]));

        let kxc = item(&items, "Cached_GeneralFile/mscp/kxc00");
        let (cf, v) = split_header(kxc).expect("value_len matches");
        assert_eq!(cf, [0x01, 0x00, 0x02, 0x00, 0x0C, 0x00]);
        assert_eq!(
            &v[..4],
            &[
                0x01,
                0x00,
                (CERT.len() & 0xFF) as u8,
                (CERT.len() >> 8) as u8
            ]
        );
        assert_eq!(
            &v[4..6],
            &[0x78, 0x9C],
            "zlib stream with its RFC 1950 header"
        );
        assert_eq!(
            decompress_cert(v).unwrap(),
            CERT,
            "kxc inflates to exactly the card's certificate"
        );
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names.len(), 14, "{names:?}");
    }

    #[test]
    fn header_follows_counters_plus_activity() {
        let f = Freshness {
            pin: 3,
            containers: 7,
            files: 0x20,
        };
        for activity in [0u16, 1, 2, 0x1234] {
            let items = build_items(
                &info(&[(0x9A, 0x5FC105, CERT)]),
                f,
                activity,
                &CacheOptions::default(),
            )
            .unwrap();
            let expect = cardcf(f, activity);
            assert_eq!(expect[..2], [1, 3]);
            assert_eq!(u16::from_le_bytes([expect[2], expect[3]]), 7 + activity);
            assert_eq!(u16::from_le_bytes([expect[4], expect[5]]), 0x20 + activity);
            for it in &items {
                if it.name.starts_with("Cached_CardmodFile\\") {
                    continue;
                }
                let (cf, _) =
                    split_header(&it.value).unwrap_or_else(|| panic!("{} header", it.name));
                assert_eq!(cf, expect, "{}", it.name);
            }
            // The raw counters never include the activity: msclmd adds it.
            assert_eq!(item(&items, names::CONTAINER_FRESHNESS), 7u16.to_le_bytes());
        }
        assert_eq!(
            cardcf(Freshness::default(), 1),
            [0x01, 0x00, 0x02, 0x00, 0x0C, 0x00]
        );
    }

    #[test]
    fn several_containers_are_numbered_and_only_the_first_is_default() {
        let items = build_items(
            &info(&[
                (0x9A, 0x5FC105, CERT),
                (0x9D, 0x5FC10B, CERT),
                (0x82, 0x5FC10D, CERT),
            ]),
            Freshness::default(),
            1,
            &CacheOptions::default(),
        )
        .unwrap();
        let raw = item(&items, names::CMAPFILE_RAW);
        assert_eq!(raw.len(), 3 * 86);
        assert_eq!(raw[80], 0x03);
        assert_eq!(raw[86 + 80], 0x01);
        assert_eq!(raw[2 * 86 + 80], 0x01);
        let name2: Vec<u16> = raw[86..166]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert!(
            String::from_utf16_lossy(&name2).starts_with("1d8ac658-e065-92a0-85af-090b075fc10b\0")
        );
        for i in 0..3 {
            assert!(items
                .iter()
                .any(|it| it.name == format!("Cached_ContainerProperty_PIN Identifier_{i}")));
            assert!(items
                .iter()
                .any(|it| it.name == format!("Cached_ContainerInfo_{i:02}")));
            assert!(items
                .iter()
                .any(|it| it.name == format!("Cached_GeneralFile/mscp/kxc{i:02}")));
        }
    }

    /// The test certificate with its modulus changed in one byte: 24
    /// certificates whose public keys all differ, without generating keys.
    fn distinct_certs(n: usize) -> Vec<Vec<u8>> {
        let be: Vec<u8> = modulus_le(CERT).into_iter().rev().collect();
        let at = CERT.windows(be.len()).position(|w| w == be).unwrap();
        (0..n)
            .map(|i| {
                let mut c = CERT.to_vec();
                c[at + 40] ^= i as u8 + 1;
                c
            })
            .collect()
    }

    /// With every key slot filled, each container's items
    /// carry Windows' index format (ContainerInfo and kxc: hex; PIN
    /// Identifier: decimal) and each ContainerInfo holds its own key.
    #[test]
    fn all_24_slots_are_named_in_windows_index_formats() {
        let certs = distinct_certs(24);
        let slots: Vec<(u8, u32)> = cert_slots().collect();
        let info = CardInfo {
            guid: GUID,
            certs: cert_slots()
                .zip(&certs)
                .map(|((key_ref, object_tag), der)| SlotCert {
                    key_ref,
                    object_tag,
                    der: der.clone(),
                })
                .collect(),
        };
        let items = build_items(&info, Freshness::default(), 1, &CacheOptions::default()).unwrap();
        assert_eq!(items.len(), 11 + 3 * 24);
        let hex = [
            "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "0a", "0b", "0c", "0d",
            "0e", "0f", "10", "11", "12", "13", "14", "15", "16", "17",
        ];
        let raw = item(&items, names::CMAPFILE_RAW);
        assert_eq!(raw.len(), 24 * 86);
        for (i, cert) in certs.iter().enumerate() {
            let rec = &raw[i * 86..(i + 1) * 86];
            let units: Vec<u16> = rec[..80]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let tag = format!("{:06x}", slots[i].1);
            assert!(
                String::from_utf16_lossy(&units).ends_with(&tag),
                "record {i}"
            );
            assert_eq!(
                item(
                    &items,
                    &format!("Cached_ContainerProperty_PIN Identifier_{i}")
                ),
                cat(&[&hdr(4), &[1, 0, 0, 0]])
            );
            let (_, ci) =
                split_header(item(&items, &format!("Cached_ContainerInfo_{}", hex[i]))).unwrap();
            assert_eq!(ci[36..], modulus_le(cert), "container {i} has its own key");
            let (_, kxc) = split_header(item(
                &items,
                &format!("Cached_GeneralFile/mscp/kxc{}", hex[i]),
            ))
            .unwrap();
            assert_eq!(&decompress_cert(kxc).unwrap(), cert, "kxc of container {i}");
        }
        // The decimal names of the old encoder must not exist: `_10` is
        // container 16 (retired slot 8E), not container 10.
        let (_, ci16) = split_header(item(&items, "Cached_ContainerInfo_10")).unwrap();
        assert_eq!(ci16[36..], modulus_le(&certs[16]));
        assert!(!items.iter().any(|it| it.name == "Cached_ContainerInfo_23"));
    }

    #[test]
    fn rsa_blob_for_every_size() {
        for bits in [1024usize, 2048, 3072, 4096] {
            let mut modulus = vec![0xA5; bits / 8];
            modulus[0] = 0xC3;
            modulus[bits / 8 - 1] = 0x01;
            let b = key_blob(
                &PublicKey::Rsa {
                    modulus: modulus.clone(),
                    exponent: 65537,
                },
                KeyRole::KeyExchange,
            )
            .encode();
            assert_eq!(b.len(), 20 + bits / 8);
            assert_eq!(
                u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize,
                bits
            );
            assert_eq!(b[20], 0x01, "little-endian: least significant byte first");
            assert_eq!(*b.last().unwrap(), 0xC3);
        }
    }

    /// The P-256 test key's X and Y, through an independent path (p256).
    fn ec_xy(cert: &[u8]) -> Vec<u8> {
        let c = x509_cert::Certificate::from_der(cert).unwrap();
        let spki = der::Encode::to_der(&c.tbs_certificate.subject_public_key_info).unwrap();
        let pk = p256::PublicKey::from_public_key_der(&spki).unwrap();
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        pk.to_encoded_point(false).as_bytes()[1..].to_vec()
    }

    /// RSA in 9A, P-256 in 9C (signing) and in 9D (key
    /// agreement). Every container is served by default, each ECC key with
    /// the magic, size field and certificate file of its role; turning ECC
    /// off still serves the RSA container.
    #[test]
    fn mixed_rsa_and_ecc_cards_serve_every_container() {
        let i = info(&[
            (0x9A, 0x5FC105, CERT),
            (0x9C, 0x5FC10A, EC_CERT),
            (0x9D, 0x5FC10B, EC_CERT),
        ]);
        let items = build_items(&i, Freshness::default(), 1, &CacheOptions::default()).unwrap();
        let raw = item(&items, names::CMAPFILE_RAW);
        assert_eq!(raw.len(), 3 * 86, "every container, RSA and ECC");
        assert_eq!(
            &raw[82..86],
            &[0x00, 0x00, 0x00, 0x08],
            "RSA-2048: key exchange"
        );
        assert_eq!(
            &raw[86 + 82..86 + 86],
            &[0x00, 0x01, 0x00, 0x00],
            "9C: 256 signature bits"
        );
        assert_eq!(
            &raw[2 * 86 + 82..],
            &[0x00, 0x00, 0x00, 0x01],
            "9D: 256 key-exchange bits"
        );
        let xy = ec_xy(EC_CERT);
        assert_eq!(xy.len(), 64);

        let ci = item(&items, "Cached_ContainerInfo_01");
        let sig_blob = cat(&[b"ECS1", &[32, 0, 0, 0], &xy]);
        assert_eq!(
            ci,
            cat(&[&hdr(16 + 72), &[0; 8], &[72, 0, 0, 0], &[0; 4], &sig_blob])
        );
        let (_, v) = split_header(item(&items, "Cached_GeneralFile/mscp/ksc01")).unwrap();
        assert_eq!(decompress_cert(v).unwrap(), EC_CERT);
        assert!(!items
            .iter()
            .any(|it| it.name == "Cached_GeneralFile/mscp/kxc01"));

        let ci = item(&items, "Cached_ContainerInfo_02");
        let kx_blob = cat(&[b"ECK1", &[32, 0, 0, 0], &xy]);
        assert_eq!(
            ci,
            cat(&[&hdr(16 + 72), &[0; 8], &[0; 4], &[72, 0, 0, 0], &kx_blob])
        );
        let (_, v) = split_header(item(&items, "Cached_GeneralFile/mscp/kxc02")).unwrap();
        assert_eq!(decompress_cert(v).unwrap(), EC_CERT);
        assert!(!items
            .iter()
            .any(|it| it.name == "Cached_GeneralFile/mscp/ksc02"));

        let items = build_items(
            &i,
            Freshness::default(),
            1,
            &CacheOptions {
                ecc_containers: false,
            },
        )
        .unwrap();
        let raw = item(&items, names::CMAPFILE_RAW);
        assert_eq!(raw.len(), 86, "ECC off: the RSA container alone");
        assert_eq!(raw[80], 0x03);
        assert!(items.iter().any(|it| it.name == "Cached_ContainerInfo_00"));
        assert!(!items.iter().any(|it| it.name == "Cached_ContainerInfo_01"));
    }

    /// A certificate Windows cannot use (here: not a certificate at all)
    /// costs only its own container.
    #[test]
    fn an_unusable_certificate_does_not_hide_the_others() {
        let i = info(&[
            (0x9A, 0x5FC105, &[0x30, 0x03, 0x02, 0x01, 0x00][..]),
            (0x9D, 0x5FC10B, CERT),
        ]);
        let items = build_items(&i, Freshness::default(), 1, &CacheOptions::default()).unwrap();
        let raw = item(&items, names::CMAPFILE_RAW);
        assert_eq!(raw.len(), 86);
        assert_eq!(raw[80], 0x03, "the first usable container is the default");
        let (_, v) = split_header(item(&items, "Cached_GeneralFile/mscp/kxc00")).unwrap();
        assert_eq!(decompress_cert(v).unwrap(), CERT);
    }

    #[test]
    fn dump_decodes_every_item() {
        let items = build_items(
            &info(&[(0x9A, 0x5FC105, CERT)]),
            Freshness::default(),
            1,
            &CacheOptions::default(),
        )
        .unwrap();
        let text = dump_items(&items);
        assert!(text.contains("1d8ac658-e065-92a0-85af-090b075fc105"));
        assert!(text.contains("CN=Virtual PIV Test User"));
        assert!(text.contains("CARD_KEY_SIZES [1, 1024, 2048, 4096, 1024]"));
        assert!(!text.contains("does not match"));
    }

    /// Layouts against items captured from a real Windows virtual smart card.
    #[test]
    fn layouts_agree_with_the_windows_capture() {
        // Measured data, kept in the repository (see tests/data/README.md).
        let text = include_str!("../tests/data/tpm-vsc-cache-items.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let items = v["items"].as_object().unwrap();
        let get = |n: &str| hex::decode(items[n].as_str().unwrap()).unwrap();
        let pin = get(names::PIN_FRESHNESS);
        let cont = get(names::CONTAINER_FRESHNESS);
        let file = get(names::FILE_FRESHNESS);
        let f = Freshness {
            pin: pin[0],
            containers: u16::from_le_bytes([cont[0], cont[1]]),
            files: u16::from_le_bytes([file[0], file[1]]),
        };
        let expect_cf = cardcf(f, 0);
        for (name, hexval) in items {
            if name.starts_with("Cached_CardmodFile\\") {
                continue;
            }
            let raw = hex::decode(hexval.as_str().unwrap()).unwrap();
            let (cf, _) = split_header(&raw).unwrap_or_else(|| panic!("{name}: header length"));
            assert_eq!(cf, expect_cf, "{name}: counters + activity 0");
            assert_eq!(&raw[6..12], &[0; 6], "{name}: reserved bytes");
        }
        let (caps_item, cmap_item) = (get(names::CAPABILITIES), get(names::CMAPFILE));
        let (kxc_item, ci_item) = (
            get("Cached_GeneralFile/mscp/kxc00"),
            get("Cached_ContainerInfo_00"),
        );
        let (_, caps) = split_header(&caps_item).unwrap();
        assert_eq!(caps.len(), 12);
        let (_, cmap) = split_header(&cmap_item).unwrap();
        assert_eq!(cmap.len(), 86);
        let (_, kxc) = split_header(&kxc_item).unwrap();
        let der = decompress_cert(kxc).expect("capture's kxc inflates to its declared length");
        let (_, ci) = split_header(&ci_item).unwrap();
        assert_eq!(&ci[..12], &[0; 12]);
        let blob_len = u32::from_le_bytes(ci[12..16].try_into().unwrap()) as usize;
        assert_eq!(blob_len, ci.len() - 16);
        // Our encoder, fed the capture's certificate, gives the capture's key blob.
        let key = certificate_public_key(&der).unwrap();
        assert_eq!(key_blob(&key, KeyRole::KeyExchange).encode(), &ci[16..]);
        assert_eq!(modulus_le(&der), &ci[36..]);
        // Every captured item decodes to a typed record that encodes back
        // to exactly the captured bytes.
        for (name, hexval) in items {
            let raw = hex::decode(hexval.as_str().unwrap()).unwrap();
            let rec = Record::decode(name, &raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!matches!(rec, Record::Unknown(_)), "{name}: a known item");
            assert_eq!(rec.encode(), raw, "{name}: round trip");
        }
        // And our decoder reads the capture's items.
        assert!(decode(
            "Cached_GeneralFile/mscp/kxc00",
            &get("Cached_GeneralFile/mscp/kxc00")
        )
        .contains("CN=pw14"));
    }

    /// A card answering through 61xx chains and gzip-compressed certificate objects.
    #[test]
    fn read_card_follows_get_response_and_gzip() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(CERT).unwrap();
        let gz = gz.finish().unwrap();
        let mut obj = Vec::new();
        tlv::write(&mut obj, 0x70, &gz);
        tlv::write(&mut obj, 0x71, &[0x01]);
        tlv::write(&mut obj, 0xFE, &[]);
        let obj = tlv::encode(0x53, &obj);
        let chuid = tlv::encode(0x53, &tlv::encode(0x34, &GUID));
        let mut pending: Vec<u8> = Vec::new();
        let mut tx = |apdu: &[u8]| -> Result<Vec<u8>, String> {
            let full = match apdu[1] {
                0xA4 => vec![],
                0xC0 => std::mem::take(&mut pending),
                0xCB if apdu[5..].starts_with(&[0x5C, 0x03, 0x5F, 0xC1, 0x02]) => chuid.clone(),
                0xCB if apdu[5..].starts_with(&[0x5C, 0x03, 0x5F, 0xC1, 0x0B]) => obj.clone(),
                _ => return Ok(vec![0x6A, 0x82]),
            };
            let n = full.len().min(100);
            pending = full[n..].to_vec();
            let mut r = full[..n].to_vec();
            if pending.is_empty() {
                r.extend_from_slice(&[0x90, 0x00]);
            } else {
                r.extend_from_slice(&[0x61, pending.len().min(255) as u8]);
            }
            Ok(r)
        };
        let got = read_card(&mut tx).unwrap();
        assert_eq!(got.guid, GUID);
        assert_eq!(
            got.certs,
            vec![SlotCert {
                key_ref: 0x9D,
                object_tag: 0x5FC10B,
                der: CERT.to_vec()
            }]
        );
    }
}
