//! Reading keys and certificates the way users have them: PKCS#12 files
//! exported by Windows / AD CS or `openssl pkcs12`, PEM or DER keys
//! (PKCS#8, PKCS#1, SEC1) and X.509 certificates.

use anyhow::{anyhow, bail, Context};
use der::Decode;
use piv_applet::keys::KeyMaterial;
use std::path::Path;
use zeroize::Zeroizing;

/// A private key and the certificate that goes with it.
pub struct Credential {
    pub key: KeyMaterial,
    pub certificate: Option<Vec<u8>>,
}

/// Reads a PKCS#12 (.pfx/.p12): the first private key and the certificate
/// that belongs to it.
pub fn from_pkcs12(path: &Path, password: &str) -> anyhow::Result<Credential> {
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let parsed = parse_pkcs12(&data, password).map_err(|e| {
        anyhow!(
            "{}: cannot open the PKCS#12 file (wrong password?): {e}",
            path.display()
        )
    })?;
    let pkey = parsed
        .pkey
        .ok_or_else(|| anyhow!("{}: the PKCS#12 file holds no private key", path.display()))?;
    // The only copy of the key outside libcrypto (which clears its own on
    // free) is this buffer.
    let pkcs8 = Zeroizing::new(
        pkey.private_key_to_pkcs8()
            .map_err(|e| anyhow!("{}: unsupported private key: {e}", path.display()))?,
    );
    let key = KeyMaterial::from_pkcs8_der(&pkcs8)
        .map_err(|e| anyhow!("{}: unsupported private key: {e}", path.display()))?;
    // libcrypto's PKCS12_parse picks the first private key and, as `cert`,
    // the first certificate whose public key is that key's; the others go
    // to `ca`.
    let certificate = parsed
        .cert
        .map(|c| c.to_der())
        .transpose()
        .map_err(|e| anyhow!("{}: bad certificate: {e}", path.display()))?;
    Ok(Credential { key, certificate })
}

/// Decrypts a PKCS#12 with libcrypto. OpenSSL 3 keeps the ciphers of
/// older exports (RC2-40, as Windows / AD CS and `openssl pkcs12 -legacy`
/// use for the certificates) in its "legacy" provider: when the default
/// provider cannot open the file, it is loaded for one more try.
fn parse_pkcs12(der: &[u8], password: &str) -> anyhow::Result<openssl::pkcs12::ParsedPkcs12_2> {
    if password.contains('\0') {
        // libcrypto takes a C string (and the openssl crate would panic).
        bail!("the password contains a NUL character");
    }
    let p12 = openssl::pkcs12::Pkcs12::from_der(der).map_err(|e| anyhow!("not PKCS#12: {e}"))?;
    let first = match p12.parse2(password) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    #[cfg(ossl300)]
    {
        // Loaded beside the default provider (fallbacks retained) and
        // unloaded again when `_legacy` drops, after the second parse.
        if let Ok(_legacy) = openssl::provider::Provider::try_load(None, "legacy", true) {
            return p12.parse2(password).map_err(anyhow::Error::from);
        }
    }
    Err(first.into())
}

/// Reads a private key file: PEM (`PRIVATE KEY`, `RSA PRIVATE KEY`,
/// `EC PRIVATE KEY`) or DER (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> anyhow::Result<KeyMaterial> {
    let data = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?,
    );
    private_key_from_bytes(&data)
        .with_context(|| format!("{}: not a supported private key", path.display()))
}

/// Parses key bytes in any of the supported encodings.
pub fn private_key_from_bytes(data: &[u8]) -> anyhow::Result<KeyMaterial> {
    let (label, der) = match std::str::from_utf8(data)
        .ok()
        .filter(|t| t.contains("-----BEGIN"))
    {
        Some(text) => {
            let start = text.find("-----BEGIN").expect("checked");
            let (label, der) = der::pem::decode_vec(&text.as_bytes()[start..])
                .map_err(|e| anyhow!("bad PEM: {e}"))?;
            (Some(label.to_string()), Zeroizing::new(der))
        }
        None => (None, Zeroizing::new(data.to_vec())),
    };
    match label.as_deref() {
        Some("ENCRYPTED PRIVATE KEY") => bail!("encrypted PEM keys are not supported: decrypt with `openssl pkey` or use a PKCS#12 file"),
        Some("PRIVATE KEY") => Ok(KeyMaterial::from_pkcs8_der(&der)?),
        Some("RSA PRIVATE KEY") => pkcs1_to_key(&der),
        Some("EC PRIVATE KEY") => sec1_to_key(&der),
        Some(other) => bail!("PEM block {other:?} is not a private key"),
        None => KeyMaterial::from_pkcs8_der(&der)
            .map_err(anyhow::Error::from)
            .or_else(|_| pkcs1_to_key(&der))
            .or_else(|_| sec1_to_key(&der)),
    }
}

fn pkcs1_to_key(der: &[u8]) -> anyhow::Result<KeyMaterial> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    let key =
        rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| anyhow!("bad PKCS#1 RSA key: {e}"))?;
    let pkcs8 = key.to_pkcs8_der().map_err(|e| anyhow!("{e}"))?;
    Ok(KeyMaterial::from_pkcs8_der(pkcs8.as_bytes())?)
}

fn sec1_to_key(der: &[u8]) -> anyhow::Result<KeyMaterial> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Ok(KeyMaterial::from(k));
    }
    if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        return Ok(KeyMaterial::P384(k));
    }
    bail!("not a P-256 or P-384 SEC1 key")
}

/// Reads a certificate, PEM or DER; returns DER.
pub fn read_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let der = match std::str::from_utf8(&data)
        .ok()
        .and_then(|t| t.find("-----BEGIN CERTIFICATE").map(|i| &t[i..]))
    {
        Some(pem) => {
            der::pem::decode_vec(pem.as_bytes())
                .map_err(|e| anyhow!("{}: bad PEM: {e}", path.display()))?
                .1
        }
        None => data,
    };
    x509_cert::Certificate::from_der(&der)
        .map_err(|e| anyhow!("{}: not an X.509 certificate: {e}", path.display()))?;
    Ok(der)
}

/// Fails unless the certificate certifies this key's public key.
pub fn check_match(key: &KeyMaterial, cert_der: &[u8]) -> anyhow::Result<()> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_public_key_info;
    let ours = spki::SubjectPublicKeyInfoOwned::from_der(&key.public_key_spki_der())
        .map_err(|e| anyhow!("{e}"))?;
    if spki.algorithm.oid != ours.algorithm.oid
        || spki.subject_public_key != ours.subject_public_key
    {
        bail!(
            "the private key does not match the certificate (subject {})",
            cert.tbs_certificate.subject
        );
    }
    Ok(())
}

/// PEM text of a DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding")
}

/// DER of a certificate's subject, for messages.
pub fn subject(cert_der: &[u8]) -> String {
    x509_cert::Certificate::from_der(cert_der)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use piv_applet::enums::AlgorithmId;
    use std::process::Command;

    fn openssl(args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command line tool");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A key and its self-signed certificate (PEM files `NAME.key`,
    /// `NAME.pem`); returns the certificate's DER.
    fn self_signed(dir: &Path, name: &str, newkey: &[&str]) -> Vec<u8> {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj"];
        let subj = format!("/CN={name}");
        args.push(&subj);
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-keyout", key.to_str().unwrap()]);
        args.extend_from_slice(&["-out", cert.to_str().unwrap()]);
        openssl(&args);
        read_certificate(&cert).unwrap()
    }

    fn export(dir: &Path, name: &str, out: &str, extra: &[&str]) -> std::path::PathBuf {
        let path = dir.join(out);
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            key.to_str().unwrap(),
            "-in",
            cert.to_str().unwrap(),
            "-out",
            path.to_str().unwrap(),
            "-passout",
            "pass:s3cret pass",
        ];
        args.extend_from_slice(extra);
        openssl(&args);
        path
    }

    /// Every PKCS#12 check in one test: the fallback to OpenSSL 3's legacy
    /// provider loads it process-wide for a moment, so the check that the
    /// default provider alone cannot open an RC2 file must not run beside
    /// another import.
    #[test]
    fn pkcs12_files_of_every_encryption_import() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let rsa_cert = self_signed(dir, "rsa", &["-newkey", "rsa:2048"]);
        let ec_cert = self_signed(
            dir,
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let ca = dir.join("other.pem");
        self_signed(
            dir,
            "other",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        );
        let ca_arg = ca.to_str().unwrap();

        let cases: Vec<(&str, std::path::PathBuf, AlgorithmId, &Vec<u8>)> = vec![
            // What Windows / AD CS long exported: RC2-40 certificates,
            // 3DES key, SHA-1 MAC (-legacy is this set).
            (
                "legacy RC2-40 + 3DES",
                export(
                    dir,
                    "rsa",
                    "legacy.p12",
                    &[
                        "-legacy",
                        "-certpbe",
                        "PBE-SHA1-RC2-40",
                        "-keypbe",
                        "PBE-SHA1-3DES",
                        "-macalg",
                        "sha1",
                    ],
                ),
                AlgorithmId::Rsa2048,
                &rsa_cert,
            ),
            (
                "3DES only",
                export(
                    dir,
                    "rsa",
                    "3des.p12",
                    &[
                        "-certpbe",
                        "PBE-SHA1-3DES",
                        "-keypbe",
                        "PBE-SHA1-3DES",
                        "-macalg",
                        "sha1",
                    ],
                ),
                AlgorithmId::Rsa2048,
                &rsa_cert,
            ),
            // OpenSSL 3's default: PBES2 with AES-256-CBC and PBKDF2,
            // SHA-256 MAC; another certificate in the file as a CA.
            (
                "AES-256 (OpenSSL 3 default) with a CA certificate",
                export(dir, "ec", "aes.p12", &["-certfile", ca_arg]),
                AlgorithmId::EccP256,
                &ec_cert,
            ),
        ];
        for (what, path, alg, cert) in &cases {
            let cred = from_pkcs12(path, "s3cret pass").unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(cred.key.algorithm(), *alg, "{what}");
            assert_eq!(
                cred.certificate.as_ref(),
                Some(*cert),
                "{what}: the key's certificate"
            );
            check_match(&cred.key, cert).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        }

        // The legacy file really needed the fallback (on a libcrypto whose
        // openssl.cnf does not activate the legacy provider itself).
        #[cfg(ossl300)]
        {
            let der = std::fs::read(&cases[0].1).unwrap();
            let p12 = openssl::pkcs12::Pkcs12::from_der(&der).unwrap();
            assert!(
                p12.parse2("s3cret pass").is_err(),
                "the default provider opened an RC2-40 file: is the legacy provider \
                 activated in openssl.cnf? The fallback went untested"
            );
        }

        let e = format!("{:#}", from_pkcs12(&cases[0].1, "wrong").err().unwrap());
        assert!(e.contains("wrong password?"), "{e}");
        let e = format!("{:#}", from_pkcs12(&cases[2].1, "wrong").err().unwrap());
        assert!(e.contains("wrong password?"), "{e}");
        let e = format!(
            "{:#}",
            from_pkcs12(&cases[2].1, "s3cret\0pass").err().unwrap()
        );
        assert!(e.contains("NUL"), "{e}");
        let e = format!("{:#}", from_pkcs12(&ca, "").err().unwrap());
        assert!(e.contains("cannot open the PKCS#12 file"), "{e}");

        // A file with certificates only.
        let certs_only = dir.join("certs.p12");
        openssl(&[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            dir.join("rsa.pem").to_str().unwrap(),
            "-out",
            certs_only.to_str().unwrap(),
            "-passout",
            "pass:s3cret pass",
        ]);
        let e = format!(
            "{:#}",
            from_pkcs12(&certs_only, "s3cret pass").err().unwrap()
        );
        assert!(e.contains("holds no private key"), "{e}");
    }
}
