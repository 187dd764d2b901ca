//! Certificates the card itself makes: self-signed certificates for a
//! slot, the attestation CA of the F9 key and YubiKey attestation
//! certificates.
//!
//! The TBSCertificate is built with `x509-cert`'s types and signed with the
//! slot's own key, so every key type the card holds (RSA, P-256, P-384,
//! Ed25519) can sign a certificate.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, GeneralizedTime, Ia5String, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use rand_core::{OsRng, RngCore};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::enums::{PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("this key type cannot sign certificates")]
    CannotSign,
    #[error("invalid subject name {0:?}: {1}")]
    BadName(String, String),
    #[error("invalid certificate field: {0}")]
    Field(String),
    #[error("issuer certificate does not parse: {0}")]
    BadIssuer(String),
}

impl From<der::Error> for CertError {
    fn from(e: der::Error) -> Self {
        CertError::Field(e.to_string())
    }
}

/// What a certificate we make says.
pub struct CertRequest<'a> {
    /// RFC 4514 string, e.g. `CN=Virtual PIV,O=Example`.
    pub subject: &'a str,
    /// Serial number bytes (big-endian, at most 20); made positive.
    pub serial: &'a [u8],
    pub not_before: SystemTime,
    pub days: u32,
    pub extensions: Vec<Extension>,
}

/// Yubico's attestation extension OIDs (yubico-piv-tool's attestation
/// documentation): firmware version, serial, PIN/touch policy, form factor.
pub const OID_YUBICO_FIRMWARE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.3");
pub const OID_YUBICO_SERIAL: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.7");
pub const OID_YUBICO_POLICY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.8");
pub const OID_YUBICO_FORM_FACTOR: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.9");
/// Microsoft smart card logon EKU.
pub const OID_MS_SMARTCARD_LOGON: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");
/// Microsoft User Principal Name otherName.
pub const OID_MS_UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");
pub const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Form factor byte of the attestation: USB-A keychain.
const FORM_FACTOR_USB_A_KEYCHAIN: u8 = 0x01;

fn signature_algorithm(key: &KeyMaterial) -> Result<AlgorithmIdentifierOwned, CertError> {
    let (oid, null_params) = match key {
        KeyMaterial::Rsa(_) => (OID_SHA256_RSA, true),
        KeyMaterial::P256(_) => (OID_ECDSA_SHA256, false),
        KeyMaterial::P384(_) => (OID_ECDSA_SHA384, false),
        KeyMaterial::Ed25519(_) => (OID_ED25519, false),
        KeyMaterial::X25519(_) => return Err(CertError::CannotSign),
    };
    Ok(AlgorithmIdentifierOwned {
        oid,
        parameters: null_params.then(|| der::asn1::Null.into()),
    })
}

/// Signs `tbs` the way the signature algorithm of [`signature_algorithm`]
/// says.
fn sign(key: &KeyMaterial, tbs: &[u8]) -> Result<Vec<u8>, CertError> {
    use sha2::Digest;
    use signature::Signer;
    Ok(match key {
        // With blinding (`sign_with_rng`), unlike rsa's `SigningKey`, whose
        // `Signer` implementation signs without it.
        KeyMaterial::Rsa(k) => k
            .sign_with_rng(
                &mut OsRng,
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(tbs),
            )
            .map_err(|e| CertError::Field(format!("RSA signature: {e}")))?,
        KeyMaterial::P256(_) => key
            .sign_or_decrypt(&sha2::Sha256::digest(tbs))
            .map_err(|_| CertError::CannotSign)?
            .to_vec(),
        KeyMaterial::P384(_) => key
            .sign_or_decrypt(&sha2::Sha384::digest(tbs))
            .map_err(|_| CertError::CannotSign)?
            .to_vec(),
        KeyMaterial::Ed25519(k) => k.sign(tbs).to_bytes().to_vec(),
        KeyMaterial::X25519(_) => return Err(CertError::CannotSign),
    })
}

/// UTCTime until 2049, GeneralizedTime after (RFC 5280, 4.1.2.5).
fn time(t: SystemTime) -> Result<Time, CertError> {
    let year_2050 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_524_608_000);
    Ok(if t < year_2050 {
        Time::UtcTime(UtcTime::from_system_time(t)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_system_time(t)?)
    })
}

/// A positive serial number of at most 20 bytes: leading zero bytes are
/// dropped, a 00 byte is prepended when the high bit is set (or, for 20
/// bytes, the high bit is cleared), and zero becomes 1.
fn serial(bytes: &[u8]) -> Result<SerialNumber, CertError> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut v = if trimmed.is_empty() { vec![1] } else { trimmed };
    if v[0] & 0x80 != 0 {
        if v.len() >= 20 {
            v[0] &= 0x7F;
        } else {
            v.insert(0, 0);
        }
    }
    SerialNumber::new(&v).map_err(|e| CertError::Field(format!("serial: {e}")))
}

fn random_serial() -> [u8; 16] {
    let mut s = [0u8; 16];
    OsRng.fill_bytes(&mut s);
    s[0] &= 0x7F;
    s[0] |= 0x01;
    s
}

fn name(text: &str) -> Result<Name, CertError> {
    Name::from_str(text).map_err(|e| CertError::BadName(text.into(), e.to_string()))
}

/// An extension from its OID and the DER of its value.
pub fn extension(
    oid: ObjectIdentifier,
    critical: bool,
    value_der: Vec<u8>,
) -> Result<Extension, CertError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value_der)?,
    })
}

pub fn basic_constraints(ca: bool) -> Result<Extension, CertError> {
    extension(
        ObjectIdentifier::new_unwrap("2.5.29.19"),
        true,
        BasicConstraints {
            ca,
            path_len_constraint: None,
        }
        .to_der()?,
    )
}

pub fn key_usage(
    usages: impl Into<der::flagset::FlagSet<KeyUsages>>,
) -> Result<Extension, CertError> {
    extension(
        ObjectIdentifier::new_unwrap("2.5.29.15"),
        true,
        KeyUsage(usages.into()).to_der()?,
    )
}

pub fn extended_key_usage(oids: &[ObjectIdentifier]) -> Result<Extension, CertError> {
    extension(
        ObjectIdentifier::new_unwrap("2.5.29.37"),
        false,
        ExtendedKeyUsage(oids.to_vec()).to_der()?,
    )
}

/// Subject alternative name with a Microsoft UPN otherName (UTF8String),
/// as Windows smart card logon maps certificates to accounts.
pub fn upn_subject_alt_name(upn: &str) -> Result<Extension, CertError> {
    let value = der::asn1::Utf8StringRef::new(upn)?;
    let other = OtherName {
        type_id: OID_MS_UPN,
        value: der::Any::encode_from(&value)?,
    };
    extension(
        ObjectIdentifier::new_unwrap("2.5.29.17"),
        false,
        SubjectAltName(vec![GeneralName::OtherName(other)]).to_der()?,
    )
}

/// Subject alternative name with an rfc822 (e-mail) name.
pub fn email_subject_alt_name(email: &str) -> Result<Extension, CertError> {
    let value = Ia5String::new(email)?;
    extension(
        ObjectIdentifier::new_unwrap("2.5.29.17"),
        false,
        SubjectAltName(vec![GeneralName::Rfc822Name(value)]).to_der()?,
    )
}

/// The Microsoft smart card logon profile: EKUs smart card logon + client
/// authentication, digitalSignature + keyEncipherment, UPN in the SAN.
pub fn smart_card_logon_extensions(upn: &str) -> Result<Vec<Extension>, CertError> {
    Ok(vec![
        basic_constraints(false)?,
        key_usage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)?,
        extended_key_usage(&[OID_MS_SMARTCARD_LOGON, OID_CLIENT_AUTH])?,
        upn_subject_alt_name(upn)?,
    ])
}

fn build(
    signer: &KeyMaterial,
    issuer: Name,
    subject: Name,
    spki_der: &[u8],
    serial_number: SerialNumber,
    validity: Validity,
    extensions: Vec<Extension>,
) -> Result<Vec<u8>, CertError> {
    let algorithm = signature_algorithm(signer)?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number,
        signature: algorithm.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    };
    let signature = sign(signer, &tbs.to_der()?)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_der()?)
}

fn validity(req: &CertRequest<'_>) -> Result<Validity, CertError> {
    let not_after = req.not_before + Duration::from_secs(u64::from(req.days) * 86_400);
    Ok(Validity {
        not_before: time(req.not_before)?,
        not_after: time(not_after)?,
    })
}

/// A self-signed certificate for `key`.
pub fn self_signed(key: &KeyMaterial, req: &CertRequest<'_>) -> Result<Vec<u8>, CertError> {
    let subject = name(req.subject)?;
    build(
        key,
        subject.clone(),
        subject,
        &key.public_key_spki_der(),
        serial(req.serial)?,
        validity(req)?,
        req.extensions.clone(),
    )
}

/// A certificate for `subject_spki_der` issued by the holder of
/// `issuer_key`, whose certificate is `issuer_cert_der`.
pub fn issue(
    issuer_key: &KeyMaterial,
    issuer_cert_der: &[u8],
    subject_spki_der: &[u8],
    req: &CertRequest<'_>,
) -> Result<Vec<u8>, CertError> {
    let issuer =
        Certificate::from_der(issuer_cert_der).map_err(|e| CertError::BadIssuer(e.to_string()))?;
    build(
        issuer_key,
        issuer.tbs_certificate.subject,
        name(req.subject)?,
        subject_spki_der,
        serial(req.serial)?,
        validity(req)?,
        req.extensions.clone(),
    )
}

/// A PKCS#10 certificate request for `key`, signed by it (RFC 2986).
pub fn certificate_request(key: &KeyMaterial, subject: &str) -> Result<Vec<u8>, CertError> {
    use x509_cert::request::{CertReq, CertReqInfo, Version as ReqVersion};
    let algorithm = signature_algorithm(key)?;
    let info = CertReqInfo {
        version: ReqVersion::V1,
        subject: name(subject)?,
        public_key: SubjectPublicKeyInfoOwned::from_der(&key.public_key_spki_der())?,
        attributes: Default::default(),
    };
    let signature = sign(key, &info.to_der()?)?;
    let req = CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(req.to_der()?)
}

/// The self-signed CA certificate of a new card's attestation key (object
/// 5FFF01): subject `CN=Virtual PIV Attestation <card serial>,O=virtual-piv`
/// (the card serial keeps cards apart), a random 16-byte serial number,
/// basicConstraints CA (critical), keyUsage keyCertSign + cRLSign
/// (critical), valid from now for 20 years (7305 days).
pub fn attestation_ca(f9_key: &KeyMaterial, serial_number: u32) -> Result<Vec<u8>, CertError> {
    let subject = format!("CN=Virtual PIV Attestation {serial_number},O=virtual-piv");
    let req = CertRequest {
        subject: &subject,
        serial: &random_serial(),
        not_before: SystemTime::now(),
        days: 7305,
        extensions: vec![
            basic_constraints(true)?,
            key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
        ],
    };
    self_signed(f9_key, &req)
}

/// What an attestation certificate states about the attested key.
pub struct Attested<'a> {
    pub slot: Slot,
    pub spki_der: &'a [u8],
    pub firmware: [u8; 3],
    pub serial: u32,
    pub pin_policy: PinPolicy,
    pub touch_policy: TouchPolicy,
}

/// The attestation certificate of a generated key, as ATTEST (F9) returns
/// it: issued by the F9 key under the 5FFF01 certificate's subject, valid
/// as long as that certificate, with a random positive 16-byte serial
/// number and subject `CN=YubiKey PIV Attestation <slot>` (slot in
/// lowercase hex, e.g. `9a`, as a YubiKey writes it).
///
/// Yubico's extensions, all non-critical, as a YubiKey encodes them (the
/// extnValue OCTET STRING holds raw bytes, except for the serial):
/// - 1.3.6.1.4.1.41482.3.3 firmware: 3 bytes major, minor, patch;
/// - 1.3.6.1.4.1.41482.3.7 serial: a DER INTEGER;
/// - 1.3.6.1.4.1.41482.3.8 policies: 2 bytes PIN policy, touch policy (wire
///   values; `Default` is resolved to the slot's default PIN policy and to
///   touch never, so neither byte is 0);
/// - 1.3.6.1.4.1.41482.3.9 form factor: 1 byte, 01 (USB-A keychain).
pub fn attestation(
    f9_key: &KeyMaterial,
    f9_cert_der: &[u8],
    what: &Attested<'_>,
) -> Result<Vec<u8>, CertError> {
    let issuer =
        Certificate::from_der(f9_cert_der).map_err(|e| CertError::BadIssuer(e.to_string()))?;
    let subject = name(&format!(
        "CN=YubiKey PIV Attestation {:02x}",
        what.slot.key_ref()
    ))?;
    let pin_policy = match what.pin_policy {
        PinPolicy::Default => what.slot.default_pin_policy(),
        p => p,
    };
    let touch_policy = match what.touch_policy {
        TouchPolicy::Default => TouchPolicy::Never,
        t => t,
    };
    let extensions = vec![
        extension(OID_YUBICO_FIRMWARE, false, what.firmware.to_vec())?,
        extension(OID_YUBICO_SERIAL, false, what.serial.to_der()?)?,
        extension(
            OID_YUBICO_POLICY,
            false,
            vec![pin_policy.into(), touch_policy.into()],
        )?,
        extension(
            OID_YUBICO_FORM_FACTOR,
            false,
            vec![FORM_FACTOR_USB_A_KEYCHAIN],
        )?,
    ];
    build(
        f9_key,
        issuer.tbs_certificate.subject,
        subject,
        what.spki_der,
        serial(&random_serial())?,
        issuer.tbs_certificate.validity,
        extensions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enums::AlgorithmId;

    fn req(subject: &str) -> CertRequest<'_> {
        CertRequest {
            subject,
            serial: &[0x80, 1],
            not_before: SystemTime::now(),
            days: 30,
            extensions: vec![],
        }
    }

    #[test]
    fn self_signed_for_every_signing_key() {
        for alg in [
            AlgorithmId::Rsa1024,
            AlgorithmId::EccP256,
            AlgorithmId::EccP384,
            AlgorithmId::Ed25519,
        ] {
            let key = KeyMaterial::generate(alg).unwrap();
            let der = self_signed(&key, &req("CN=Test,O=Example")).unwrap();
            let cert = Certificate::from_der(&der).unwrap();
            assert_eq!(
                cert.tbs_certificate.subject.to_string(),
                "CN=Test,O=Example"
            );
            assert_eq!(
                cert.tbs_certificate.serial_number.as_bytes(),
                &[0, 0x80, 1],
                "serial made positive"
            );
            assert_eq!(
                cert.tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .unwrap(),
                key.public_key_spki_der()
            );
        }
        let x = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        assert!(matches!(
            self_signed(&x, &req("CN=x")),
            Err(CertError::CannotSign)
        ));
        let k = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        assert!(matches!(
            self_signed(&k, &req("not a name")),
            Err(CertError::BadName(..))
        ));
    }

    #[test]
    fn attestation_carries_yubico_extensions() {
        let f9 = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let ca = attestation_ca(&f9, 42).unwrap();
        let key = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let spki = key.public_key_spki_der();
        let what = Attested {
            slot: Slot::AUTHENTICATION,
            spki_der: &spki,
            firmware: [5, 7, 1],
            serial: 42,
            pin_policy: PinPolicy::Once,
            touch_policy: TouchPolicy::Always,
        };
        let der = attestation(&f9, &ca, &what).unwrap();
        let cert = Certificate::from_der(&der).unwrap();
        let issuer = Certificate::from_der(&ca).unwrap();
        assert_eq!(cert.tbs_certificate.issuer, issuer.tbs_certificate.subject);
        assert_eq!(
            cert.tbs_certificate.subject.to_string(),
            "CN=YubiKey PIV Attestation 9A"
        );
        let exts = cert.tbs_certificate.extensions.unwrap();
        let value = |oid| {
            exts.iter()
                .find(|e| e.extn_id == oid)
                .unwrap()
                .extn_value
                .as_bytes()
                .to_vec()
        };
        assert_eq!(value(OID_YUBICO_FIRMWARE), vec![5, 7, 1]);
        assert_eq!(value(OID_YUBICO_SERIAL), vec![0x02, 0x01, 42]);
        assert_eq!(value(OID_YUBICO_POLICY), vec![2, 2]);
        assert_eq!(value(OID_YUBICO_FORM_FACTOR), vec![1]);
    }

    #[test]
    fn smart_card_logon_profile() {
        let exts = smart_card_logon_extensions("alice@example.test").unwrap();
        let ids: Vec<_> = exts.iter().map(|e| e.extn_id.to_string()).collect();
        assert_eq!(ids, ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"]);
        let san = exts[3].extn_value.as_bytes();
        assert!(san.windows(18).any(|w| w == b"alice@example.test"));
    }
}
