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
use crate::oid;

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

/// How far into the past a certificate made "now" starts. A verifier whose
/// clock runs behind ours (a domain controller checking a logon
/// certificate, `openssl verify` right after an NTP step) would otherwise
/// reject a brand-new certificate as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// The notBefore for a certificate made now: see [`CLOCK_SKEW_ALLOWANCE`].
pub fn valid_from_now() -> SystemTime {
    SystemTime::now() - CLOCK_SKEW_ALLOWANCE
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

/// Form factor byte of the attestation: USB-A keychain.
const FORM_FACTOR_USB_A_KEYCHAIN: u8 = 0x01;

fn signature_algorithm(key: &KeyMaterial) -> Result<AlgorithmIdentifierOwned, CertError> {
    let (oid, null_params) = match key {
        KeyMaterial::Rsa(_) => (oid::SHA256_WITH_RSA, true),
        KeyMaterial::P256(_) => (oid::ECDSA_WITH_SHA256, false),
        KeyMaterial::P384(_) => (oid::ECDSA_WITH_SHA384, false),
        KeyMaterial::Ed25519(_) => (oid::ED25519, false),
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
        type_id: oid::MS_UPN,
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
        extended_key_usage(&[oid::MS_SMARTCARD_LOGON, oid::CLIENT_AUTH])?,
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
/// (critical), valid for 20 years (7305 days) from [`valid_from_now`].
pub fn attestation_ca(f9_key: &KeyMaterial, serial_number: u32) -> Result<Vec<u8>, CertError> {
    let subject = format!("CN=Virtual PIV Attestation {serial_number},O=virtual-piv");
    let req = CertRequest {
        subject: &subject,
        serial: &random_serial(),
        not_before: valid_from_now(),
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
    let (pin_policy, touch_policy) =
        crate::access::resolve_policies(what.slot, what.pin_policy, what.touch_policy);
    let extensions = vec![
        extension(oid::YUBICO_FIRMWARE, false, what.firmware.to_vec())?,
        extension(oid::YUBICO_SERIAL, false, what.serial.to_der()?)?,
        extension(
            oid::YUBICO_POLICY,
            false,
            vec![pin_policy.into(), touch_policy.into()],
        )?,
        extension(
            oid::YUBICO_FORM_FACTOR,
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
    use crate::keys::openssl_cli::{openssl, pem, Dir};

    const SIGNING: [AlgorithmId; 5] = [
        AlgorithmId::Rsa1024,
        AlgorithmId::Rsa2048,
        AlgorithmId::EccP256,
        AlgorithmId::EccP384,
        AlgorithmId::Ed25519,
    ];

    fn req(subject: &str) -> CertRequest<'_> {
        CertRequest {
            subject,
            serial: &[0x80, 1],
            not_before: valid_from_now(),
            days: 30,
            extensions: vec![],
        }
    }

    /// Checks a signature with the RustCrypto verifier of the signer's
    /// SubjectPublicKeyInfo (not with the private key that made it).
    fn verify_signature(
        signed: &[u8],
        algorithm: &AlgorithmIdentifierOwned,
        sig: &[u8],
        signer_spki_der: &[u8],
    ) {
        use pkcs8::DecodePublicKey;
        use signature::Verifier;
        let oid = algorithm.oid;
        if oid == oid::SHA256_WITH_RSA {
            assert_eq!(algorithm.parameters, Some(der::asn1::Null.into()));
            let public = rsa::RsaPublicKey::from_public_key_der(signer_spki_der).unwrap();
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public)
                .verify(signed, &rsa::pkcs1v15::Signature::try_from(sig).unwrap())
                .expect("sha256WithRSAEncryption verifies");
            return;
        }
        assert_eq!(algorithm.parameters, None, "ECDSA and Ed25519: absent");
        if oid == oid::ECDSA_WITH_SHA256 {
            p256::ecdsa::VerifyingKey::from_public_key_der(signer_spki_der)
                .unwrap()
                .verify(signed, &p256::ecdsa::Signature::from_der(sig).unwrap())
                .expect("ecdsa-with-SHA256 verifies");
        } else if oid == oid::ECDSA_WITH_SHA384 {
            p384::ecdsa::VerifyingKey::from_public_key_der(signer_spki_der)
                .unwrap()
                .verify(signed, &p384::ecdsa::Signature::from_der(sig).unwrap())
                .expect("ecdsa-with-SHA384 verifies");
        } else if oid == oid::ED25519 {
            ed25519_dalek::VerifyingKey::from_public_key_der(signer_spki_der)
                .unwrap()
                .verify_strict(signed, &ed25519_dalek::Signature::from_slice(sig).unwrap())
                .expect("Ed25519 verifies");
        } else {
            panic!("unexpected signature algorithm {oid}");
        }
    }

    /// Parses a certificate and checks its signature against the issuer's
    /// public key.
    fn verified(cert_der: &[u8], issuer_spki_der: &[u8]) -> Certificate {
        let cert = Certificate::from_der(cert_der).expect("certificate parses");
        assert_eq!(cert.to_der().unwrap(), cert_der, "DER round trip");
        assert_eq!(cert.signature_algorithm, cert.tbs_certificate.signature);
        assert_eq!(cert.tbs_certificate.version, Version::V3);
        verify_signature(
            &cert.tbs_certificate.to_der().unwrap(),
            &cert.signature_algorithm,
            cert.signature.as_bytes().expect("whole bytes"),
            issuer_spki_der,
        );
        cert
    }

    fn expected_signature_oid(alg: AlgorithmId) -> ObjectIdentifier {
        match alg {
            AlgorithmId::EccP256 => oid::ECDSA_WITH_SHA256,
            AlgorithmId::EccP384 => oid::ECDSA_WITH_SHA384,
            AlgorithmId::Ed25519 => oid::ED25519,
            _ => oid::SHA256_WITH_RSA,
        }
    }

    fn extension_value(cert: &Certificate, oid: ObjectIdentifier) -> Vec<u8> {
        let ext = cert
            .tbs_certificate
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == oid)
            .unwrap_or_else(|| panic!("extension {oid}"));
        assert!(!ext.critical, "{oid} is not critical");
        ext.extn_value.as_bytes().to_vec()
    }

    /// `Time::to_system_time` without x509-cert's `std` feature (which
    /// would put its unused tls_codec dependency in Cargo.lock).
    fn system_time(t: Time) -> SystemTime {
        SystemTime::UNIX_EPOCH + t.to_unix_duration()
    }

    fn duration(cert: &Certificate) -> Duration {
        let v = &cert.tbs_certificate.validity;
        system_time(v.not_after)
            .duration_since(system_time(v.not_before))
            .unwrap()
    }

    #[test]
    fn new_certificates_are_valid_for_a_verifier_whose_clock_is_behind() {
        let dir = Dir::new();
        let key = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let der = self_signed(&key, &req("CN=Skew")).unwrap();
        let not_before = system_time(
            Certificate::from_der(&der)
                .unwrap()
                .tbs_certificate
                .validity
                .not_before,
        );
        // Already CLOCK_SKEW_ALLOWANCE old when made.
        assert!(not_before + CLOCK_SKEW_ALLOWANCE <= SystemTime::now());
        let path = dir.write("skew.pem", pem("CERTIFICATE", &der));
        // openssl at a given instant: a verifier four and a half minutes
        // behind accepts it, one further behind than notBefore does not.
        let verify_at = |t: SystemTime| {
            let at = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            std::process::Command::new("openssl")
                .args([
                    "verify",
                    "-attime",
                    &at.to_string(),
                    "-CAfile",
                    &path,
                    &path,
                ])
                .output()
                .unwrap()
        };
        let out = verify_at(not_before + Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = verify_at(not_before - Duration::from_secs(60));
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn self_signed_for_every_signing_key() {
        for alg in SIGNING {
            let key = KeyMaterial::generate(alg).unwrap();
            let spki = key.public_key_spki_der();
            let der = self_signed(&key, &req("CN=Test,O=Example")).unwrap();
            let cert = verified(&der, &spki);
            assert_eq!(cert.signature_algorithm.oid, expected_signature_oid(alg));
            let tbs = &cert.tbs_certificate;
            assert_eq!(tbs.subject.to_string(), "CN=Test,O=Example");
            assert_eq!(tbs.issuer, tbs.subject);
            assert_eq!(tbs.serial_number.as_bytes(), &[0, 0x80, 1], "made positive");
            assert_eq!(tbs.subject_public_key_info.to_der().unwrap(), spki);
            assert_eq!(tbs.extensions, None);
            assert_eq!(duration(&cert), Duration::from_secs(30 * 86_400));
        }
        let x = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        assert!(matches!(
            self_signed(&x, &req("CN=x")),
            Err(CertError::CannotSign)
        ));
        let k = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let err = self_signed(&k, &req("not a name")).unwrap_err();
        assert!(matches!(err, CertError::BadName(..)));
        assert!(err.to_string().contains("not a name"), "{err}");
    }

    #[test]
    fn extensions_and_validity_are_carried() {
        let key = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let request = CertRequest {
            subject: "CN=Alice,O=Example,C=SE",
            serial: &[0x12, 0x34],
            not_before,
            days: 365 * 40,
            extensions: smart_card_logon_extensions("alice@example.test").unwrap(),
        };
        let cert = verified(
            &self_signed(&key, &request).unwrap(),
            &key.public_key_spki_der(),
        );
        let v = &cert.tbs_certificate.validity;
        assert_eq!(system_time(v.not_before), not_before);
        assert!(matches!(v.not_before, Time::UtcTime(_)));
        assert!(
            matches!(v.not_after, Time::GeneralTime(_)),
            "after 2049: GeneralizedTime"
        );
        assert_eq!(duration(&cert), Duration::from_secs(365 * 40 * 86_400));
        assert_eq!(cert.tbs_certificate.extensions.unwrap(), request.extensions);
    }

    #[test]
    fn serial_numbers_are_positive_and_short() {
        let cases: [(&[u8], &[u8]); 6] = [
            (&[0x80, 1], &[0, 0x80, 1]),
            (&[0, 0, 5], &[5]),
            (&[0x7F, 0xFF], &[0x7F, 0xFF]),
            (&[], &[1]),
            (&[0, 0], &[1]),
            (&[0, 0xC0], &[0, 0xC0]),
        ];
        for (input, want) in cases {
            assert_eq!(serial(input).unwrap().as_bytes(), want, "{input:02x?}");
        }
        let twenty = [0xFFu8; 20];
        let s = serial(&twenty).unwrap();
        assert_eq!(s.as_bytes().len(), 20);
        assert_eq!(s.as_bytes()[0], 0x7F);
        assert!(matches!(serial(&[0x11; 21]), Err(CertError::Field(_))));
        let mut padded = vec![0u8; 5];
        padded.extend_from_slice(&[0x11; 20]);
        assert_eq!(serial(&padded).unwrap().as_bytes(), &[0x11; 20]);
        for _ in 0..100 {
            let r = random_serial();
            assert!(r[0] != 0 && r[0] & 0x80 == 0);
            assert_eq!(serial(&r).unwrap().as_bytes(), r);
        }
    }

    #[test]
    fn issue_signs_with_the_issuer_key() {
        let ca_key = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        let ca_req = CertRequest {
            extensions: vec![basic_constraints(true).unwrap()],
            ..req("CN=Test CA")
        };
        let ca = self_signed(&ca_key, &ca_req).unwrap();
        let ca_cert = Certificate::from_der(&ca).unwrap();
        for alg in [
            AlgorithmId::Rsa1024,
            AlgorithmId::EccP256,
            AlgorithmId::Ed25519,
            AlgorithmId::X25519,
        ] {
            let leaf_key = KeyMaterial::generate(alg).unwrap();
            let leaf_spki = leaf_key.public_key_spki_der();
            let der = issue(&ca_key, &ca, &leaf_spki, &req("CN=Leaf")).unwrap();
            let cert = verified(&der, &ca_key.public_key_spki_der());
            assert_eq!(cert.signature_algorithm.oid, oid::ECDSA_WITH_SHA384);
            assert_eq!(cert.tbs_certificate.issuer, ca_cert.tbs_certificate.subject);
            assert_eq!(cert.tbs_certificate.subject.to_string(), "CN=Leaf");
            assert_eq!(
                cert.tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .unwrap(),
                leaf_spki
            );
        }
        let spki = ca_key.public_key_spki_der();
        assert!(matches!(
            issue(&ca_key, b"junk", &spki, &req("CN=Leaf")),
            Err(CertError::BadIssuer(_))
        ));
        assert!(issue(&ca_key, &ca, b"junk", &req("CN=Leaf")).is_err());
        let x = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        assert!(matches!(
            issue(&x, &ca, &spki, &req("CN=Leaf")),
            Err(CertError::CannotSign)
        ));
    }

    #[test]
    fn certificate_requests_are_self_signed() {
        use x509_cert::request::CertReq;
        for alg in SIGNING {
            let key = KeyMaterial::generate(alg).unwrap();
            let der = certificate_request(&key, "CN=Request,O=Example").unwrap();
            let csr = CertReq::from_der(&der).unwrap();
            assert_eq!(csr.info.subject.to_string(), "CN=Request,O=Example");
            assert_eq!(
                csr.info.public_key.to_der().unwrap(),
                key.public_key_spki_der()
            );
            assert_eq!(csr.algorithm.oid, expected_signature_oid(alg));
            verify_signature(
                &csr.info.to_der().unwrap(),
                &csr.algorithm,
                csr.signature.as_bytes().unwrap(),
                &key.public_key_spki_der(),
            );
        }
        let x = KeyMaterial::generate(AlgorithmId::X25519).unwrap();
        assert!(matches!(
            certificate_request(&x, "CN=x"),
            Err(CertError::CannotSign)
        ));
    }

    #[test]
    fn attestation_ca_is_a_twenty_year_ca() {
        for alg in [AlgorithmId::Rsa2048, AlgorithmId::EccP256] {
            let f9 = KeyMaterial::generate(alg).unwrap();
            let der = attestation_ca(&f9, 0x8000_0001).unwrap();
            let cert = verified(&der, &f9.public_key_spki_der());
            let tbs = &cert.tbs_certificate;
            assert_eq!(
                tbs.subject.to_string(),
                "CN=Virtual PIV Attestation 2147483649,O=virtual-piv"
            );
            assert_eq!(tbs.issuer, tbs.subject);
            assert_eq!(duration(&cert), Duration::from_secs(7305 * 86_400));
            let serial = tbs.serial_number.as_bytes();
            assert!(serial.len() == 16 && serial[0] & 0x80 == 0);
            let exts = tbs.extensions.as_ref().unwrap();
            let bc = exts
                .iter()
                .find(|e| e.extn_id.to_string() == "2.5.29.19")
                .unwrap();
            assert!(bc.critical);
            let bc = BasicConstraints::from_der(bc.extn_value.as_bytes()).unwrap();
            assert!(bc.ca);
            let ku = exts
                .iter()
                .find(|e| e.extn_id.to_string() == "2.5.29.15")
                .unwrap();
            let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
            assert!(ku.key_cert_sign() && ku.crl_sign());
        }
    }

    fn attested(slot: Slot, spki_der: &[u8], serial: u32) -> Attested<'_> {
        Attested {
            slot,
            spki_der,
            firmware: [5, 7, 1],
            serial,
            pin_policy: PinPolicy::Once,
            touch_policy: TouchPolicy::Always,
        }
    }

    #[test]
    fn attestation_carries_yubico_extensions() {
        let f9 = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
        let ca = attestation_ca(&f9, 42).unwrap();
        let issuer = Certificate::from_der(&ca).unwrap();
        let key = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        let spki = key.public_key_spki_der();
        let der = attestation(&f9, &ca, &attested(Slot::AUTHENTICATION, &spki, 42)).unwrap();
        let cert = verified(&der, &f9.public_key_spki_der());
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.issuer, issuer.tbs_certificate.subject);
        assert_eq!(tbs.subject.to_string(), "CN=YubiKey PIV Attestation 9a");
        assert_eq!(tbs.validity, issuer.tbs_certificate.validity);
        assert_eq!(tbs.subject_public_key_info.to_der().unwrap(), spki);
        let serial = tbs.serial_number.as_bytes();
        assert!(serial.len() == 16 && serial[0] & 0x80 == 0 && serial[0] != 0);
        assert_eq!(tbs.extensions.as_ref().unwrap().len(), 4);
        assert_eq!(extension_value(&cert, oid::YUBICO_FIRMWARE), [5, 7, 1]);
        assert_eq!(extension_value(&cert, oid::YUBICO_SERIAL), [0x02, 0x01, 42]);
        assert_eq!(extension_value(&cert, oid::YUBICO_POLICY), [2, 2]);
        assert_eq!(extension_value(&cert, oid::YUBICO_FORM_FACTOR), [1]);

        // A serial with the high bit set stays a positive INTEGER; retired
        // slots are named in lowercase hex too.
        let slot = Slot::new(0x8A).unwrap();
        let der = attestation(&f9, &ca, &attested(slot, &spki, 0x8000_0000)).unwrap();
        let cert = verified(&der, &f9.public_key_spki_der());
        assert_eq!(
            cert.tbs_certificate.subject.to_string(),
            "CN=YubiKey PIV Attestation 8a"
        );
        assert_eq!(
            extension_value(&cert, oid::YUBICO_SERIAL),
            [0x02, 0x05, 0x00, 0x80, 0, 0, 0]
        );
        assert_eq!(
            u32::from_der(&extension_value(&cert, oid::YUBICO_SERIAL)).unwrap(),
            0x8000_0000
        );

        // Default policies are resolved: never a 0 byte.
        for (slot, pin) in [
            (Slot::SIGNATURE, 3),
            (Slot::CARD_AUTHENTICATION, 1),
            (Slot::KEY_MANAGEMENT, 2),
        ] {
            let what = Attested {
                pin_policy: PinPolicy::Default,
                touch_policy: TouchPolicy::Default,
                ..attested(slot, &spki, 7)
            };
            let cert = Certificate::from_der(&attestation(&f9, &ca, &what).unwrap()).unwrap();
            assert_eq!(
                extension_value(&cert, oid::YUBICO_POLICY),
                [pin, 1],
                "{slot}"
            );
        }
        let what = Attested {
            pin_policy: PinPolicy::Never,
            touch_policy: TouchPolicy::Cached,
            ..attested(Slot::AUTHENTICATION, &spki, 7)
        };
        let cert = Certificate::from_der(&attestation(&f9, &ca, &what).unwrap()).unwrap();
        assert_eq!(extension_value(&cert, oid::YUBICO_POLICY), [1, 3]);

        assert!(matches!(
            attestation(&f9, b"junk", &attested(Slot::AUTHENTICATION, &spki, 1)),
            Err(CertError::BadIssuer(_))
        ));
    }

    #[test]
    fn smart_card_logon_profile() {
        let exts = smart_card_logon_extensions("alice@example.test").unwrap();
        let ids: Vec<_> = exts.iter().map(|e| e.extn_id.to_string()).collect();
        assert_eq!(ids, ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"]);
        let san = exts[3].extn_value.as_bytes();
        assert!(san.windows(18).any(|w| w == b"alice@example.test"));
        let eku = ExtendedKeyUsage::from_der(exts[2].extn_value.as_bytes()).unwrap();
        assert_eq!(eku.0, [oid::MS_SMARTCARD_LOGON, oid::CLIENT_AUTH]);
    }

    // ---- the same certificates checked by the openssl command line ----

    #[test]
    fn openssl_verifies_attestation_chains() {
        let dir = Dir::new();
        let subjects = [
            AlgorithmId::Rsa1024,
            AlgorithmId::EccP256,
            AlgorithmId::Ed25519,
            AlgorithmId::X25519,
        ]
        .map(|alg| KeyMaterial::generate(alg).unwrap());
        for f9_alg in [
            AlgorithmId::Rsa2048,
            AlgorithmId::EccP256,
            AlgorithmId::EccP384,
            AlgorithmId::Ed25519,
        ] {
            let f9 = KeyMaterial::generate(f9_alg).unwrap();
            let ca = attestation_ca(&f9, 12345678).unwrap();
            let ca_path = dir.write("ca.pem", pem("CERTIFICATE", &ca));
            for key in &subjects {
                let spki = key.public_key_spki_der();
                let leaf = attestation(&f9, &ca, &attested(Slot::AUTHENTICATION, &spki, 12345678))
                    .unwrap();
                let leaf_path = dir.write("leaf.pem", pem("CERTIFICATE", &leaf));
                let out = openssl(&["verify", "-CAfile", &ca_path, &leaf_path]);
                assert!(
                    String::from_utf8_lossy(&out.stdout).contains(": OK"),
                    "{f9_alg:?} → {:?}",
                    key.algorithm()
                );
                let text = openssl(&["x509", "-in", &leaf_path, "-noout", "-text"]);
                let text = String::from_utf8_lossy(&text.stdout);
                assert!(text.contains("CN = YubiKey PIV Attestation 9a"), "{text}");
                assert!(
                    text.contains("CN = Virtual PIV Attestation 12345678"),
                    "{text}"
                );
                for oid in ["3.3", "3.7", "3.8", "3.9"] {
                    assert!(text.contains(&format!("1.3.6.1.4.1.41482.{oid}")), "{text}");
                }
                // openssl's public key is the attested key.
                let spki_path = dir.path("leaf-spki.der");
                let pubkey = openssl(&["x509", "-in", &leaf_path, "-noout", "-pubkey"]);
                let pub_pem = dir.write("leaf-pub.pem", &pubkey.stdout);
                openssl(&[
                    "pkey", "-pubin", "-in", &pub_pem, "-outform", "DER", "-out", &spki_path,
                ]);
                assert_eq!(dir.read("leaf-spki.der"), spki);
            }
            let text = openssl(&["x509", "-in", &ca_path, "-noout", "-text"]);
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("CA:TRUE"), "{text}");
        }
    }

    #[test]
    fn openssl_verifies_self_signed_and_issued_certificates() {
        let dir = Dir::new();
        for alg in [
            AlgorithmId::Rsa2048,
            AlgorithmId::EccP256,
            AlgorithmId::EccP384,
            AlgorithmId::Ed25519,
        ] {
            let key = KeyMaterial::generate(alg).unwrap();
            // A CA certificate, and a leaf it issues for another key.
            let ca_req = CertRequest {
                extensions: vec![
                    basic_constraints(true).unwrap(),
                    key_usage(KeyUsages::KeyCertSign | KeyUsages::DigitalSignature).unwrap(),
                ],
                ..req("CN=Self CA,O=Example")
            };
            let ca = self_signed(&key, &ca_req).unwrap();
            let ca_path = dir.write("self.pem", pem("CERTIFICATE", &ca));
            let out = openssl(&["verify", "-CAfile", &ca_path, &ca_path]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(": OK"),
                "{alg:?}"
            );
            let leaf_key = KeyMaterial::generate(AlgorithmId::EccP256).unwrap();
            let leaf_req = CertRequest {
                extensions: smart_card_logon_extensions("user@example.test").unwrap(),
                ..req("CN=User")
            };
            let leaf = issue(&key, &ca, &leaf_key.public_key_spki_der(), &leaf_req).unwrap();
            let leaf_path = dir.write("leaf.pem", pem("CERTIFICATE", &leaf));
            let out = openssl(&["verify", "-CAfile", &ca_path, &leaf_path]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(": OK"),
                "{alg:?}"
            );
            let text = openssl(&["x509", "-in", &leaf_path, "-noout", "-text"]);
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("Microsoft Smartcard Login"), "{text}");
            assert!(text.contains("Serial Number: 32769 (0x8001)"), "{text}");
            // The PKCS#10 request verifies too.
            let csr = certificate_request(&key, "CN=Request").unwrap();
            let csr_path = dir.write("req.pem", pem("CERTIFICATE REQUEST", &csr));
            let out = openssl(&["req", "-in", &csr_path, "-verify", "-noout"]);
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(said.contains("verify OK"), "{alg:?}: {said}");
        }
    }
}
