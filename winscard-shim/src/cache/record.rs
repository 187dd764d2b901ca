//! Every cache item as a typed record that encodes to, and decodes from,
//! exactly the bytes `SCardReadCacheW` returns: the one place that knows the
//! layouts of docs/msclmd-cache.md. The builder, the `vreader cache-items`
//! dump and the fuzz target all go through it. Decoding is strict: it
//! accepts only what encoding can produce, so `encode(decode(b)) == b`.

use std::fmt;
use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use super::names;

/// Why bytes are not the item their name says.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

fn bad(what: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        what,
        detail: detail.into(),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 6-byte CARD_CACHE_FILE_FORMAT (bVersion, pin counter, container and
/// file counters each plus the reader's activity count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardCf(pub [u8; 6]);

/// One item, by what its name says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `Cached_CardmodFile\Cached_*_Freshness`: a raw u16 counter.
    Counter(u16),
    /// `Cached_CardmodFile\Cached_CMAPFile`: the container map, no header.
    RawContainerMap(Vec<ContainerRecord>),
    /// Every other known item: the 16-byte header, then the value.
    Headered(CardCf, Value),
    /// A name this module does not know (e.g. one msclmd wrote).
    Unknown(Vec<u8>),
}

/// The value after the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A DWORD/BOOL property (read only, cache mode, enrollment, PIN id).
    Dword(u32),
    /// CARD_CAPABILITIES {dwVersion, fCertificateCompression, fKeyGen}.
    Capabilities([u32; 3]),
    /// CARD_KEY_SIZES {dwVersion, min, default, max, increment}.
    KeySizes([u32; 5]),
    /// `mscp/cmapfile`.
    ContainerMap(Vec<ContainerRecord>),
    /// A serialized CONTAINER_INFO.
    ContainerInfo(ContainerInfo),
    /// `mscp/kxc<ii>` / `ksc<ii>`.
    CertFile(CertFile),
}

/// The kind of record a name holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    RawContainerMap,
    Dword,
    Capabilities,
    KeySizes,
    ContainerMap,
    ContainerInfo,
    CertFile,
    Unknown,
}

fn kind(name: &str) -> Kind {
    if name.starts_with("Cached_CardmodFile\\Cached_") && name.ends_with("_Freshness") {
        Kind::Counter
    } else if name == names::CMAPFILE_RAW {
        Kind::RawContainerMap
    } else if name == names::CMAPFILE {
        Kind::ContainerMap
    } else if name.starts_with("Cached_CardProperty_Capabilities_") {
        Kind::Capabilities
    } else if name.starts_with("Cached_CardProperty_Key Sizes_") {
        Kind::KeySizes
    } else if name.starts_with("Cached_ContainerInfo_") {
        Kind::ContainerInfo
    } else if name.starts_with("Cached_GeneralFile/mscp/kxc")
        || name.starts_with("Cached_GeneralFile/mscp/ksc")
    {
        Kind::CertFile
    } else if name.starts_with("Cached_CardProperty_")
        || name.starts_with("Cached_ContainerProperty_")
    {
        Kind::Dword
    } else {
        Kind::Unknown
    }
}

/// Splits a headered item into its cardcf and its value: the 16-byte header
/// is the cardcf, six zero bytes and the value's length (u32).
pub fn header(bytes: &[u8]) -> Result<(CardCf, &[u8]), DecodeError> {
    if bytes.len() < 16 {
        return Err(bad(
            "header",
            format!("{} bytes, expected 16 or more", bytes.len()),
        ));
    }
    if bytes[6..12] != [0; 6] {
        return Err(bad("header", "bytes 6..12 are not zero"));
    }
    let len = le32(bytes, 12) as usize;
    let v = &bytes[16..];
    if v.len() != len {
        return Err(bad(
            "header",
            format!("value_len {len} but {} bytes follow", v.len()),
        ));
    }
    Ok((CardCf(bytes[..6].try_into().expect("6 bytes")), v))
}

impl Record {
    /// The item's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Counter(c) => c.to_le_bytes().to_vec(),
            Record::RawContainerMap(recs) => recs.iter().flat_map(|r| r.encode()).collect(),
            Record::Headered(cf, value) => {
                let v = value.encode();
                let mut out = Vec::with_capacity(16 + v.len());
                out.extend_from_slice(&cf.0);
                out.extend_from_slice(&[0; 6]);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(&v);
                out
            }
            Record::Unknown(b) => b.clone(),
        }
    }

    /// The record an item named `name` holds in `bytes`.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Record, DecodeError> {
        let k = kind(name);
        match k {
            Kind::Counter => match bytes {
                [a, b] => Ok(Record::Counter(u16::from_le_bytes([*a, *b]))),
                _ => Err(bad("counter", format!("{} bytes, expected 2", bytes.len()))),
            },
            Kind::RawContainerMap => {
                Ok(Record::RawContainerMap(ContainerRecord::decode_all(bytes)?))
            }
            Kind::Unknown => Ok(Record::Unknown(bytes.to_vec())),
            _ => {
                let (cf, v) = header(bytes)?;
                let words = |n: usize, what: &'static str| -> Result<Vec<u32>, DecodeError> {
                    if v.len() != 4 * n {
                        return Err(bad(what, format!("{} bytes, expected {}", v.len(), 4 * n)));
                    }
                    Ok((0..n).map(|i| le32(v, 4 * i)).collect())
                };
                let value = match k {
                    Kind::Dword => Value::Dword(words(1, "DWORD")?[0]),
                    Kind::Capabilities => {
                        Value::Capabilities(words(3, "CARD_CAPABILITIES")?.try_into().expect("3"))
                    }
                    Kind::KeySizes => {
                        Value::KeySizes(words(5, "CARD_KEY_SIZES")?.try_into().expect("5"))
                    }
                    Kind::ContainerMap => Value::ContainerMap(ContainerRecord::decode_all(v)?),
                    Kind::ContainerInfo => Value::ContainerInfo(ContainerInfo::decode(v)?),
                    Kind::CertFile => Value::CertFile(CertFile::decode(v)?),
                    _ => unreachable!("handled above"),
                };
                Ok(Record::Headered(cf, value))
            }
        }
    }
}

impl Value {
    fn encode(&self) -> Vec<u8> {
        let words = |w: &[u32]| w.iter().flat_map(|v| v.to_le_bytes()).collect();
        match self {
            Value::Dword(d) => d.to_le_bytes().to_vec(),
            Value::Capabilities(w) => words(w),
            Value::KeySizes(w) => words(w),
            Value::ContainerMap(recs) => recs.iter().flat_map(|r| r.encode()).collect(),
            Value::ContainerInfo(ci) => ci.encode(),
            Value::CertFile(f) => f.encode(),
        }
    }
}

/// One 86-byte CONTAINER_MAP_RECORD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// The container name (at most 39 UTF-16 units: the 40th is the NUL).
    pub name: String,
    /// 0x01 valid, 0x02 default.
    pub flags: u8,
    pub sig_bits: u16,
    pub key_exchange_bits: u16,
}

impl ContainerRecord {
    pub const LEN: usize = 86;

    pub fn encode(&self) -> [u8; 86] {
        let mut r = [0u8; 86];
        for (i, unit) in self.name.encode_utf16().take(39).enumerate() {
            r[2 * i..2 * i + 2].copy_from_slice(&unit.to_le_bytes());
        }
        r[80] = self.flags;
        r[82..84].copy_from_slice(&self.sig_bits.to_le_bytes());
        r[84..86].copy_from_slice(&self.key_exchange_bits.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> Result<ContainerRecord, DecodeError> {
        let units: Vec<u16> = r[..80].chunks_exact(2).map(|c| le16(c, 0)).collect();
        let end = units
            .iter()
            .position(|u| *u == 0)
            .ok_or_else(|| bad("container record", "name has no NUL"))?;
        if units[end..].iter().any(|u| *u != 0) || r[81] != 0 {
            return Err(bad("container record", "padding or reserved byte not zero"));
        }
        let name = String::from_utf16(&units[..end])
            .map_err(|_| bad("container record", "name is not UTF-16"))?;
        Ok(ContainerRecord {
            name,
            flags: r[80],
            sig_bits: le16(r, 82),
            key_exchange_bits: le16(r, 84),
        })
    }

    fn decode_all(b: &[u8]) -> Result<Vec<ContainerRecord>, DecodeError> {
        if !b.len().is_multiple_of(Self::LEN) {
            return Err(bad(
                "container map",
                format!("{} bytes is not whole 86-byte records", b.len()),
            ));
        }
        b.chunks_exact(Self::LEN).map(Self::decode).collect()
    }
}

/// A serialized CONTAINER_INFO: version, reserved, cbSigPublicKey,
/// cbKeyExPublicKey, then the key-exchange blob and the signature blob
/// (in that order, as basecsp stores them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub version: u32,
    pub reserved: u32,
    pub sig_key: Vec<u8>,
    pub key_exchange_key: Vec<u8>,
}

impl ContainerInfo {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [
            self.version,
            self.reserved,
            self.sig_key.len() as u32,
            self.key_exchange_key.len() as u32,
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.key_exchange_key);
        v.extend_from_slice(&self.sig_key);
        v
    }

    fn decode(v: &[u8]) -> Result<ContainerInfo, DecodeError> {
        if v.len() < 16 {
            return Err(bad("CONTAINER_INFO", format!("{} bytes", v.len())));
        }
        let (sig, kx) = (le32(v, 8) as usize, le32(v, 12) as usize);
        if sig.checked_add(kx) != Some(v.len() - 16) {
            return Err(bad(
                "CONTAINER_INFO",
                format!("key lengths {sig} + {kx} but {} bytes follow", v.len() - 16),
            ));
        }
        Ok(ContainerInfo {
            version: le32(v, 0),
            reserved: le32(v, 4),
            key_exchange_key: v[16..16 + kx].to_vec(),
            sig_key: v[16 + kx..].to_vec(),
        })
    }
}

/// A public key blob in a CONTAINER_INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyBlob {
    /// CryptoAPI PUBLICKEYBLOB, CALG_RSA_KEYX: the modulus big-endian here,
    /// little-endian on the wire.
    Rsa { exponent: u32, modulus: Vec<u8> },
    /// CNG BCRYPT_ECCKEY_BLOB: magic, then X and Y big-endian.
    Ecc {
        magic: EccMagic,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// The BCRYPT_ECCKEY_BLOB magics the cache uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EccMagic {
    EcdsaP256,
    EcdsaP384,
    EcdhP256,
    EcdhP384,
}

impl EccMagic {
    const ALL: [(EccMagic, u32, &'static str); 4] = [
        (EccMagic::EcdsaP256, 0x3153_4345, "ECS1"),
        (EccMagic::EcdsaP384, 0x3353_4345, "ECS3"),
        (EccMagic::EcdhP256, 0x314B_4345, "ECK1"),
        (EccMagic::EcdhP384, 0x334B_4345, "ECK3"),
    ];

    fn value(self) -> u32 {
        Self::ALL.iter().find(|m| m.0 == self).expect("listed").1
    }

    /// The four-character tag (`ECS1`...).
    pub fn tag(self) -> &'static str {
        Self::ALL.iter().find(|m| m.0 == self).expect("listed").2
    }

    /// Bytes per coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            EccMagic::EcdsaP256 | EccMagic::EcdhP256 => 32,
            EccMagic::EcdsaP384 | EccMagic::EcdhP384 => 48,
        }
    }
}

const RSA_BLOB_HEAD: [u8; 12] = [
    0x06, 0x02, 0x00, 0x00, 0x00, 0xA4, 0x00, 0x00, b'R', b'S', b'A', b'1',
];

impl KeyBlob {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            KeyBlob::Rsa { exponent, modulus } => {
                let mut v = RSA_BLOB_HEAD.to_vec();
                v.extend_from_slice(&((modulus.len() * 8) as u32).to_le_bytes());
                v.extend_from_slice(&exponent.to_le_bytes());
                v.extend(modulus.iter().rev());
                v
            }
            KeyBlob::Ecc { magic, x, y } => {
                let mut v = magic.value().to_le_bytes().to_vec();
                v.extend_from_slice(&(x.len() as u32).to_le_bytes());
                v.extend_from_slice(x);
                v.extend_from_slice(y);
                v
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<KeyBlob, DecodeError> {
        if b.starts_with(&RSA_BLOB_HEAD) && b.len() >= 20 {
            let bits = le32(b, 12) as usize;
            if !bits.is_multiple_of(8) || b.len() != 20 + bits / 8 {
                return Err(bad(
                    "PUBLICKEYBLOB",
                    format!("bit length {bits}, {} bytes", b.len()),
                ));
            }
            return Ok(KeyBlob::Rsa {
                exponent: le32(b, 16),
                modulus: b[20..].iter().rev().copied().collect(),
            });
        }
        if b.len() >= 8 {
            let m = le32(b, 0);
            if let Some(&(magic, _, _)) = EccMagic::ALL.iter().find(|e| e.1 == m) {
                let n = magic.coordinate_len();
                if le32(b, 4) as usize != n || b.len() != 8 + 2 * n {
                    return Err(bad(
                        "BCRYPT_ECCKEY_BLOB",
                        format!("{} bytes for {}", b.len(), magic.tag()),
                    ));
                }
                return Ok(KeyBlob::Ecc {
                    magic,
                    x: b[8..8 + n].to_vec(),
                    y: b[8 + n..].to_vec(),
                });
            }
        }
        Err(bad(
            "key blob",
            "neither an RSA PUBLICKEYBLOB nor a known ECC blob",
        ))
    }
}

/// A kxc/ksc certificate file: flags (1 = zlib), the DER length, and the
/// payload as stored (the zlib stream, or the DER itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFile {
    pub flags: u16,
    pub der_len: u16,
    pub payload: Vec<u8>,
}

impl CertFile {
    /// The compressed record of a certificate.
    pub fn compress(der: &[u8]) -> Result<CertFile, DecodeError> {
        let der_len = u16::try_from(der.len()).map_err(|_| {
            bad(
                "certificate",
                format!("{} bytes do not fit the 16-bit length field", der.len()),
            )
        })?;
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(der)
            .map_err(|e| bad("certificate", e.to_string()))?;
        let payload = z.finish().map_err(|e| bad("certificate", e.to_string()))?;
        Ok(CertFile {
            flags: 1,
            der_len,
            payload,
        })
    }

    /// The certificate DER, when the payload inflates to the declared length.
    pub fn certificate(&self) -> Option<Vec<u8>> {
        let out = if self.flags == 1 {
            let mut out = Vec::new();
            // Bounded: the declared length is at most 64 KiB.
            ZlibDecoder::new(&self.payload[..])
                .take(u64::from(self.der_len) + 1)
                .read_to_end(&mut out)
                .ok()?;
            out
        } else {
            self.payload.clone()
        };
        (out.len() == usize::from(self.der_len)).then_some(out)
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.payload.len());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.der_len.to_le_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    pub fn decode(v: &[u8]) -> Result<CertFile, DecodeError> {
        if v.len() < 4 {
            return Err(bad("certificate file", format!("{} bytes", v.len())));
        }
        Ok(CertFile {
            flags: le16(v, 0),
            der_len: le16(v, 2),
            payload: v[4..].to_vec(),
        })
    }
}

fn subject_of(der: &[u8]) -> String {
    use der::Decode;
    x509_cert::Certificate::from_der(der)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|e| format!("<unparsable certificate: {e}>"))
}

fn fmt_map(f: &mut fmt::Formatter<'_>, recs: &[ContainerRecord]) -> fmt::Result {
    write!(f, "{} records", recs.len())?;
    for (i, r) in recs.iter().enumerate() {
        write!(
            f,
            "\n    [{i}] name {:?} flags 0x{:02X} sig bits {} keyx bits {}",
            r.name, r.flags, r.sig_bits, r.key_exchange_bits
        )?;
    }
    Ok(())
}

fn fmt_key(f: &mut fmt::Formatter<'_>, which: &str, blob: &[u8]) -> fmt::Result {
    if blob.is_empty() {
        return Ok(());
    }
    match KeyBlob::decode(blob) {
        Ok(KeyBlob::Rsa { exponent, modulus }) => write!(
            f,
            "; {which} RSA{} e={exponent} modulus(BE) {}",
            modulus.len() * 8,
            hex::encode(modulus)
        ),
        Ok(KeyBlob::Ecc { magic, x, y }) => write!(
            f,
            "; {which} ECC {} X {} Y {}",
            magic.tag(),
            hex::encode(x),
            hex::encode(y)
        ),
        Err(e) => write!(f, "; {which} {e}"),
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Counter(c) => write!(f, "counter {c}"),
            Record::RawContainerMap(recs) => {
                write!(f, "(no header) ")?;
                fmt_map(f, recs)
            }
            Record::Unknown(b) => write!(f, "{} bytes, not an item this shim builds", b.len()),
            Record::Headered(CardCf(cf), value) => {
                write!(
                    f,
                    "cardcf v{} pin {} containers {} files {}\n    ",
                    cf[0],
                    cf[1],
                    le16(cf, 2),
                    le16(cf, 4)
                )?;
                match value {
                    Value::Dword(d) => write!(f, "u32 {d}"),
                    Value::Capabilities(w) => write!(
                        f,
                        "CARD_CAPABILITIES {w:?} (version, cert compression, keygen)"
                    ),
                    Value::KeySizes(w) => write!(
                        f,
                        "CARD_KEY_SIZES {w:?} (version, min, default, max, increment)"
                    ),
                    Value::ContainerMap(recs) => fmt_map(f, recs),
                    Value::ContainerInfo(ci) => {
                        write!(
                            f,
                            "version {} sig blob {} keyx blob {}",
                            ci.version,
                            ci.sig_key.len(),
                            ci.key_exchange_key.len()
                        )?;
                        fmt_key(f, "keyx", &ci.key_exchange_key)?;
                        fmt_key(f, "sig", &ci.sig_key)
                    }
                    Value::CertFile(c) => match c.certificate() {
                        Some(der) => write!(
                            f,
                            "certificate {} bytes DER, subject {}",
                            der.len(),
                            subject_of(&der)
                        ),
                        None => write!(
                            f,
                            "certificate record does not inflate to its declared length"
                        ),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding_round_trips() {
        let cf = CardCf([1, 0, 2, 0, 0x0C, 0]);
        let cases: Vec<(&str, Record)> = vec![
            (names::PIN_FRESHNESS, Record::Counter(7)),
            (names::READ_ONLY, Record::Headered(cf, Value::Dword(1))),
            (
                names::CAPABILITIES,
                Record::Headered(cf, Value::Capabilities([1, 0, 1])),
            ),
            (
                names::KEY_SIZES_SIG,
                Record::Headered(cf, Value::KeySizes([1, 1024, 2048, 4096, 1024])),
            ),
            (
                names::CMAPFILE_RAW,
                Record::RawContainerMap(vec![ContainerRecord {
                    name: "abc".into(),
                    flags: 3,
                    sig_bits: 0,
                    key_exchange_bits: 2048,
                }]),
            ),
            (
                "Cached_ContainerInfo_0a",
                Record::Headered(
                    cf,
                    Value::ContainerInfo(ContainerInfo {
                        version: 0,
                        reserved: 0,
                        sig_key: vec![1, 2, 3],
                        key_exchange_key: vec![4, 5],
                    }),
                ),
            ),
            (
                "Cached_GeneralFile/mscp/ksc0a",
                Record::Headered(cf, Value::CertFile(CertFile::compress(b"der").unwrap())),
            ),
        ];
        for (name, rec) in cases {
            let bytes = rec.encode();
            assert_eq!(Record::decode(name, &bytes).unwrap(), rec, "{name}");
        }
        // Bytes encoding cannot produce are refused, not silently fixed.
        let mut b = Record::Headered(cf, Value::Dword(1)).encode();
        b[7] = 1;
        assert!(Record::decode(names::READ_ONLY, &b).is_err());
        let mut b = ContainerRecord {
            name: "x".into(),
            flags: 1,
            sig_bits: 0,
            key_exchange_bits: 0,
        }
        .encode();
        b[10] = 1;
        assert!(Record::decode(names::CMAPFILE_RAW, &b).is_err());
    }

    #[test]
    fn key_blobs_round_trip() {
        for blob in [
            KeyBlob::Rsa {
                exponent: 65537,
                modulus: vec![0xC3; 128],
            },
            KeyBlob::Ecc {
                magic: EccMagic::EcdhP384,
                x: vec![1; 48],
                y: vec![2; 48],
            },
        ] {
            assert_eq!(KeyBlob::decode(&blob.encode()).unwrap(), blob);
        }
        assert!(KeyBlob::decode(b"ECS1\x20\0\0\0short").is_err());
    }
}
