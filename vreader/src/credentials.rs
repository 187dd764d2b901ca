//! Reading keys and certificates the way users have them: PKCS#12 files
//! exported by Windows / AD CS or `openssl pkcs12` (here, through
//! libcrypto); PEM, DER or base64 keys (PKCS#8, PKCS#1, SEC1) and X.509
//! certificates through piv-applet's `credentials`, which the shim uses too.

use anyhow::{anyhow, bail, Context};
use piv_applet::keys::KeyMaterial;
use std::path::Path;
use zeroize::Zeroizing;

pub use piv_applet::credentials::{
    check_match, pem, read_certificate, read_private_key, subject, Origin,
};

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
    if let Some(der) = &certificate {
        let origin = Origin::File(path.to_path_buf());
        check_match(&key, &origin, der, &origin)?;
    }
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
            let origin = Origin::File(path.clone());
            check_match(&cred.key, &origin, cert, &origin)
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
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
