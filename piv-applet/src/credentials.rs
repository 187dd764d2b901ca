//! Private keys and certificates as users keep them, read in one place for
//! the host-side tools (vreader's `import`, the shim's MsRdpEx variables):
//! PEM, DER or bare base64; PKCS#8, PKCS#1 (RSA) or SEC1 (P-256/P-384)
//! keys; X.509 certificates. Errors name where the bytes came from (a file,
//! or the environment variable that held them or named the file) and what
//! is wrong, never a secret. Pure Rust, so it builds for Windows too.

use std::fmt;
use std::path::{Path, PathBuf};

use der::Decode;
use zeroize::Zeroizing;

use crate::keys::{KeyError, KeyMaterial};

/// Where key or certificate bytes came from, as messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file given by name.
    File(PathBuf),
    /// An environment variable holding the data itself.
    Variable(String),
    /// A file named by an environment variable.
    FileFromVariable { var: String, path: PathBuf },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Variable(v) => f.write_str(v),
            Origin::FileFromVariable { var, path } => write!(f, "{var} ({})", path.display()),
        }
    }
}

/// What is wrong with a key or certificate.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("neither PEM, base64 nor DER: {0}")]
    Base64(String),
    #[error("no supported {wanted} among its PEM blocks (found {})", quoted(.found))]
    NoPemBlock {
        wanted: &'static str,
        found: Vec<String>,
    },
    #[error("the private key is encrypted: decrypt it with `openssl pkey` or use a PKCS#12 file")]
    Encrypted,
    #[error("not a PKCS#8, PKCS#1 (RSA) or SEC1 (P-256/P-384) private key")]
    NotAPrivateKey,
    #[error("not a valid {0}")]
    Malformed(&'static str),
    #[error("unsupported private key: {0}")]
    UnsupportedKey(KeyError),
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(der::Error),
    #[error("the private key does not match the certificate in {certificate} (subject {subject})")]
    Mismatch {
        certificate: Origin,
        subject: String,
    },
}

fn quoted(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key or certificate that cannot be used: where it came from and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct CredentialError {
    pub origin: Origin,
    pub problem: Problem,
}

fn fail<T>(origin: &Origin, problem: Problem) -> Result<T, CredentialError> {
    Err(CredentialError {
        origin: origin.clone(),
        problem,
    })
}

/// A file's bytes, in a buffer cleared on drop (it may hold a key).
pub fn read_file(path: &Path, origin: &Origin) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .or_else(|e| fail(origin, Problem::Read(e)))
}

/// Reads a private key file (see [`private_key`]).
pub fn read_private_key(path: &Path) -> Result<KeyMaterial, CredentialError> {
    let origin = Origin::File(path.to_path_buf());
    private_key(&read_file(path, &origin)?, &origin)
}

/// Reads a certificate file (see [`certificate`]); returns DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, CredentialError> {
    let origin = Origin::File(path.to_path_buf());
    certificate(&read_file(path, &origin)?, &origin)
}

/// A private key: PEM (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`;
/// the first such block, so `openssl ecparam -genkey` output and key +
/// certificate bundles work), bare base64 or DER of PKCS#8, PKCS#1 or SEC1.
pub fn private_key(data: &[u8], origin: &Origin) -> Result<KeyMaterial, CredentialError> {
    let is_key = |label: &str| {
        matches!(
            label,
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY"
        )
    };
    let (label, der) = unarmor(data, origin, "private key", &is_key)?;
    let pkcs8 = |der: &[u8]| {
        KeyMaterial::from_pkcs8_der(der).or_else(|e| fail(origin, Problem::UnsupportedKey(e)))
    };
    match label.as_deref() {
        Some("PRIVATE KEY") => pkcs8(&der),
        Some("RSA PRIVATE KEY") => match pkcs1_to_pkcs8(&der) {
            Some(p8) => pkcs8(&p8),
            None => fail(origin, Problem::Malformed("PKCS#1 RSA private key")),
        },
        Some("EC PRIVATE KEY") => match sec1(&der) {
            Some(key) => Ok(key),
            None => fail(
                origin,
                Problem::Malformed("SEC1 P-256 or P-384 private key"),
            ),
        },
        // `ENCRYPTED PRIVATE KEY` (PKCS#8 PBES2), the only other label
        // `is_key` accepts.
        Some(_) => fail(origin, Problem::Encrypted),
        None if pkcs8::PrivateKeyInfo::from_der(&der).is_ok() => pkcs8(&der),
        None => match pkcs1_to_pkcs8(&der) {
            Some(p8) => pkcs8(&p8),
            None => sec1(&der).map_or_else(|| fail(origin, Problem::NotAPrivateKey), Ok),
        },
    }
}

/// An X.509 certificate in PEM (the first `CERTIFICATE` block), bare
/// base64 or DER; returns DER.
pub fn certificate(data: &[u8], origin: &Origin) -> Result<Vec<u8>, CredentialError> {
    let (_, der) = unarmor(data, origin, "certificate", &|l| l == "CERTIFICATE")?;
    x509_cert::Certificate::from_der(&der)
        .or_else(|e| fail(origin, Problem::NotACertificate(e)))?;
    Ok(der.to_vec())
}

/// Fails unless the certificate certifies this key's public key.
pub fn check_match(
    key: &KeyMaterial,
    key_origin: &Origin,
    cert_der: &[u8],
    cert_origin: &Origin,
) -> Result<(), CredentialError> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .or_else(|e| fail(cert_origin, Problem::NotACertificate(e)))?;
    let theirs = &cert.tbs_certificate.subject_public_key_info;
    let ours = spki::SubjectPublicKeyInfoOwned::from_der(&key.public_key_spki_der())
        .expect("the card encodes its own public keys");
    if theirs.algorithm.oid != ours.algorithm.oid
        || theirs.subject_public_key != ours.subject_public_key
    {
        return fail(
            key_origin,
            Problem::Mismatch {
                certificate: cert_origin.clone(),
                subject: cert.tbs_certificate.subject.to_string(),
            },
        );
    }
    Ok(())
}

/// PEM text of a DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding")
}

/// A certificate's subject, for messages (`?` if it does not parse).
pub fn subject(cert_der: &[u8]) -> String {
    x509_cert::Certificate::from_der(cert_der)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The DER inside `data` and its PEM label: the first PEM block whose
/// label `wanted` accepts, else bare base64 (whitespace allowed), else the
/// bytes themselves.
fn unarmor(
    data: &[u8],
    origin: &Origin,
    what: &'static str,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<(Option<String>, Zeroizing<Vec<u8>>), CredentialError> {
    let Some(text) = std::str::from_utf8(data).ok() else {
        return Ok((None, Zeroizing::new(data.to_vec())));
    };
    if text.contains("-----BEGIN") {
        let blocks = pem_blocks(text).or_else(|e| fail(origin, Problem::Pem(e)))?;
        let Some((label, block)) = blocks.iter().find(|(l, _)| wanted(l)) else {
            return fail(
                origin,
                Problem::NoPemBlock {
                    wanted: what,
                    found: blocks.into_iter().map(|(l, _)| l.to_string()).collect(),
                },
            );
        };
        // RFC 1421 headers: OpenSSL's legacy encrypted key format.
        if block.contains("Proc-Type:") {
            return fail(origin, Problem::Encrypted);
        }
        // Decoded into buffers allocated once (a growing Vec would leave
        // copies of a key behind); the text is longer than what it encodes.
        let mut buf = Zeroizing::new(vec![0u8; block.len()]);
        let (_, der) = der::pem::decode(block.as_bytes(), &mut buf)
            .or_else(|e| fail(origin, Problem::Pem(e.to_string())))?;
        return Ok((Some(label.to_string()), Zeroizing::new(der.to_vec())));
    }
    let t = text.trim();
    if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n\t ".contains(&b))
    {
        let mut compact = Zeroizing::new(Vec::with_capacity(t.len()));
        compact.extend(t.bytes().filter(|b| !b.is_ascii_whitespace()));
        let der = <base64ct::Base64 as base64ct::Encoding>::decode_in_place(&mut compact)
            .or_else(|e| fail(origin, Problem::Base64(e.to_string())))?;
        return Ok((None, Zeroizing::new(der.to_vec())));
    }
    Ok((None, Zeroizing::new(data.to_vec())))
}

/// Every PEM block of a text, with its label, in order (text between
/// blocks, such as `openssl pkcs12` bag attributes, is skipped).
fn pem_blocks(text: &str) -> Result<Vec<(&str, &str)>, String> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let from = &rest[start..];
        let label = from[BEGIN.len()..]
            .split_once("-----")
            .map(|(l, _)| l)
            .filter(|l| !l.contains('\n'))
            .ok_or("a BEGIN line without its closing dashes")?;
        let end_line = format!("-----END {label}-----");
        let end = from
            .find(&end_line)
            .ok_or_else(|| format!("no END line for the {label:?} block"))?
            + end_line.len();
        blocks.push((label, &from[..end]));
        rest = &from[end..];
    }
    if blocks.is_empty() {
        return Err("no BEGIN line".into());
    }
    Ok(blocks)
}

fn pkcs1_to_pkcs8(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    // Both the key and the `SecretDocument` clear themselves on drop.
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der).ok()?;
    let doc = key.to_pkcs8_der().ok()?;
    Some(Zeroizing::new(doc.as_bytes().to_vec()))
}

fn sec1(der: &[u8]) -> Option<KeyMaterial> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Some(KeyMaterial::from(k));
    }
    p384::SecretKey::from_sec1_der(der)
        .ok()
        .map(KeyMaterial::P384)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enums::AlgorithmId;
    use crate::x509::{self_signed, valid_from_now, CertRequest};
    use pkcs8::DecodePrivateKey;

    fn b64(bytes: &[u8]) -> String {
        <base64ct::Base64 as base64ct::Encoding>::encode_string(bytes)
    }

    fn var(name: &str) -> Origin {
        Origin::Variable(name.into())
    }

    fn cert_of(key: &KeyMaterial) -> Vec<u8> {
        let req = CertRequest {
            subject: "CN=Alice",
            serial: &[1],
            not_before: valid_from_now(),
            days: 2,
            extensions: vec![],
        };
        self_signed(key, &req).unwrap()
    }

    #[test]
    fn keys_in_every_encoding() {
        let ec = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let spki = ec.public_key_spki_der();
        let pk8 = ec.to_storage();
        let KeyMaterial::P256(_) = &ec else { panic!() };
        let sec1_der = p256::SecretKey::from_pkcs8_der(&pk8)
            .unwrap()
            .to_sec1_der()
            .unwrap();
        let o = var("K");
        let forms: Vec<Vec<u8>> = vec![
            pk8.to_vec(),
            b64(&pk8).into_bytes(),
            pem("PRIVATE KEY", &pk8).into_bytes(),
            sec1_der.to_vec(),
            // As `openssl ecparam -genkey` writes it: parameters first.
            format!(
                "{}{}",
                pem("EC PARAMETERS", &[6, 8, 42, 134, 72, 206, 61, 3, 1, 7]),
                pem("EC PRIVATE KEY", &sec1_der)
            )
            .into_bytes(),
        ];
        for (i, f) in forms.iter().enumerate() {
            let k = private_key(f, &o).unwrap_or_else(|e| panic!("form {i}: {e}"));
            assert_eq!(k.public_key_spki_der(), spki, "form {i}");
        }

        let rsa = KeyMaterial::generate(AlgorithmId::Rsa1024).unwrap();
        let pkcs1 = {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            rsa::RsaPrivateKey::from_pkcs8_der(&rsa.to_storage())
                .unwrap()
                .to_pkcs1_der()
                .unwrap()
        };
        let cert = cert_of(&rsa);
        for f in [
            pkcs1.as_bytes().to_vec(),
            pem("RSA PRIVATE KEY", pkcs1.as_bytes()).into_bytes(),
        ] {
            let k = private_key(&f, &o).unwrap();
            check_match(&k, &o, &cert, &var("C")).unwrap();
        }
    }

    #[test]
    fn certificates_in_every_encoding() {
        let key = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let cert = cert_of(&key);
        let o = var("C");
        let bundle = format!(
            "{}{}",
            pem("PRIVATE KEY", &key.to_storage()),
            pem("CERTIFICATE", &cert)
        );
        for f in [
            cert.clone(),
            b64(&cert).into_bytes(),
            pem("CERTIFICATE", &cert).into_bytes(),
            bundle.clone().into_bytes(),
        ] {
            assert_eq!(certificate(&f, &o).unwrap(), cert);
        }
        // The bundle's key is found too.
        check_match(&private_key(bundle.as_bytes(), &o).unwrap(), &o, &cert, &o).unwrap();
        let e = certificate(b"not a certificate", &o)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("C: "), "{e}");
    }

    #[test]
    fn errors_name_the_origin_and_the_problem() {
        let o = var("WINSCARD_PRIVATE_KEY_FILE_DATA");
        let e = private_key(b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", &o)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "WINSCARD_PRIVATE_KEY_FILE_DATA: no supported private key among its PEM blocks (found \"FOO\")"
        );
        let e = private_key(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            &o,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("encrypted"), "{e}");
        let e = private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad PEM") && e.contains("END"), "{e}");
        let e = private_key(&[0x30, 3, 2, 1, 0], &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PKCS#8, PKCS#1"), "{e}");

        let missing = Path::new("/nonexistent/key.pem");
        let e = read_private_key(missing).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/key.pem: cannot read"), "{e}");
        let from_var = Origin::FileFromVariable {
            var: "V".into(),
            path: missing.into(),
        };
        assert_eq!(from_var.to_string(), "V (/nonexistent/key.pem)");

        let a = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let b = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let e = check_match(
            &a,
            &Origin::File("a.key".into()),
            &cert_of(&b),
            &Origin::File("b.pem".into()),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "a.key: the private key does not match the certificate in b.pem (subject CN=Alice)"
        );
    }
}
