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
    let store = p12_keystore::KeyStore::from_pkcs12(
        &data,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| {
        anyhow!(
            "{}: cannot open the PKCS#12 file (wrong password?): {e}",
            path.display()
        )
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| anyhow!("{}: the PKCS#12 file holds no private key", path.display()))?;
    let key = KeyMaterial::from_pkcs8_der(chain.key().as_der())
        .map_err(|e| anyhow!("{}: unsupported private key: {e}", path.display()))?;
    let certificate = chain.certs().first().map(|c| c.as_der().to_vec());
    Ok(Credential { key, certificate })
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
