//! Provisioning: direct access for the card's owner (the CLI works on a
//! card file it holds), bypassing PIN and management key. Every change is
//! saved before returning.

use super::command::PinRef;
use super::{put_back, Card, CardError};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::enums::{AlgorithmId, KeyOrigin, KeyRef, ObjectId, PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::sm::{self, CipherSuite, SmKey};
use crate::state::{self, SecureMessaging};
use crate::state::{is_valid_new_pin, CardState, KeySlot, PIN_BLOCK_LEN};
use crate::{tlv, x509};

impl Card {
    /// Generates a key in a slot; returns its SubjectPublicKeyInfo DER.
    pub fn generate_key(
        &mut self,
        slot: Slot,
        alg: AlgorithmId,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<Vec<u8>, CardError> {
        if !alg.is_asymmetric() {
            return Err(CardError::Invalid(format!(
                "{alg:?} is not a key algorithm"
            )));
        }
        let key = KeyMaterial::generate(alg)?;
        let spki = key.public_key_spki_der();
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Generated),
        )
        .map_err(|_| CardError::Invalid("the card file could not be written".into()))?;
        Ok(spki)
    }

    /// Puts a private key in a slot.
    pub fn import_key(
        &mut self,
        slot: Slot,
        key: KeyMaterial,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<(), CardError> {
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported),
        )
        .map_err(|_| CardError::Invalid("the card file could not be written".into()))
    }

    /// Puts a private key and, optionally, its certificate in a slot with
    /// one save: either both are on the card afterwards or neither is.
    pub fn import_key_and_certificate(
        &mut self,
        slot: Slot,
        key: KeyMaterial,
        certificate: Option<&[u8]>,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<(), CardError> {
        let id = slot.certificate_object();
        let ks = KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported);
        let cert = certificate.map(CardState::certificate_object_value);
        if let Some(c) = &cert {
            self.state.check_room(id, c.len())?;
        }
        self.save_or_undo(
            |s| {
                let old_key = s.keys.insert(slot, ks);
                let old_cert = cert.map(|c| s.objects.insert(id, c));
                (old_key, old_cert)
            },
            |s, (old_key, old_cert)| {
                put_back(&mut s.keys, slot, old_key);
                if let Some(old) = old_cert {
                    put_back(&mut s.objects, id, old);
                }
            },
        )?;
        Ok(())
    }

    /// Sets the PIN (6 to 8 bytes) and resets its retry counter.
    pub fn set_pin(&mut self, pin: &[u8]) -> Result<(), CardError> {
        self.set_reference(PinRef::Pin, pin)
    }

    /// Sets the PUK (6 to 8 bytes) and resets its retry counter.
    pub fn set_puk(&mut self, puk: &[u8]) -> Result<(), CardError> {
        self.set_reference(PinRef::Puk, puk)
    }

    fn set_reference(&mut self, reference: PinRef, value: &[u8]) -> Result<(), CardError> {
        let block = crate::state::pad_pin(value);
        if value.len() > PIN_BLOCK_LEN || !is_valid_new_pin(&block) {
            return Err(CardError::Invalid(
                "a PIN or PUK has 6 to 8 characters".into(),
            ));
        }
        let key_ref = KeyRef::from(reference);
        self.save_or_undo(
            |s| s.replace_reference(key_ref, &block),
            |s, previous| *s.reference_mut(key_ref) = previous,
        )?;
        Ok(())
    }

    /// Replaces the management key.
    pub fn set_management_key(&mut self, key: ManagementKey) -> Result<(), CardError> {
        self.save_or_undo(
            |s| std::mem::replace(&mut s.mgmt, key),
            |s, previous| s.mgmt = previous,
        )?;
        Ok(())
    }

    /// A PKCS#10 certificate request signed by a slot's key.
    pub fn certificate_request(&self, slot: Slot, subject: &str) -> Result<Vec<u8>, CardError> {
        let ks = self
            .state
            .keys
            .get(&slot)
            .ok_or_else(|| CardError::Invalid(format!("slot {slot} holds no key")))?;
        Ok(x509::certificate_request(&ks.key, subject)?)
    }

    /// Stores a certificate (DER) in a slot's certificate object.
    pub fn put_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<(), CardError> {
        let id = slot.certificate_object();
        let value = CardState::certificate_object_value(der);
        self.state.check_room(id, value.len())?;
        self.save_or_undo(
            |s| s.objects.insert(id, value),
            |s, previous| put_back(&mut s.objects, id, previous),
        )?;
        Ok(())
    }

    /// The certificate DER in a slot, if any.
    pub fn certificate(&self, slot: Slot) -> Option<Vec<u8>> {
        self.state.certificate(slot)
    }

    /// The public key (SubjectPublicKeyInfo DER) of a slot's key, if any.
    pub fn public_key(&self, slot: Slot) -> Option<Vec<u8>> {
        self.state
            .keys
            .get(&slot)
            .map(|ks| ks.key.public_key_spki_der())
    }

    /// Makes a self-signed certificate for a slot's key, stores it in the
    /// slot and returns it.
    pub fn self_sign(
        &mut self,
        slot: Slot,
        req: &x509::CertRequest<'_>,
    ) -> Result<Vec<u8>, CardError> {
        let ks = self
            .state
            .keys
            .get(&slot)
            .ok_or_else(|| CardError::Invalid(format!("slot {slot} holds no key")))?;
        let der = x509::self_signed(&ks.key, req)?;
        self.put_certificate(slot, &der)?;
        Ok(der)
    }
}

impl Card {
    /// Gives the card secure messaging with `suite`, or a new key and CVC
    /// if it had it: a fresh key (reference 04), its CVC signed by
    /// `signer`, whose certificate goes in the Secure Messaging Certificate
    /// Signer object, and the Discovery object that tells hosts about the
    /// virtual contact interface. `contactless`: the card behaves as on the
    /// contactless interface (contact-only commands need the VCI);
    /// `pairing_code`: eight digits that open the VCI, or none.
    pub fn enable_secure_messaging(
        &mut self,
        suite: CipherSuite,
        signer: &KeyMaterial,
        signer_certificate: &[u8],
        contactless: bool,
        pairing_code: Option<&str>,
    ) -> Result<(), CardError> {
        use der::{Decode, Encode};
        let cert = x509_cert::Certificate::from_der(signer_certificate)
            .map_err(|e| CardError::Invalid(format!("the signer's certificate: {e}")))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CardError::Invalid(format!("the signer's certificate: {e}")))?;
        if spki != signer.public_key_spki_der() {
            return Err(CardError::Invalid(
                "the signer's certificate is for another key than the signer key".into(),
            ));
        }
        let pairing_code = pairing_code
            .map(|c| sm::parse_pairing_code(c).map(Zeroizing::new))
            .transpose()
            .map_err(|e| CardError::Invalid(e.into()))?;
        let key = SmKey::generate(suite)?;
        let issuer_id: [u8; 8] = sha2::Sha256::digest(signer_certificate)[..8]
            .try_into()
            .expect("8 bytes");
        let cvc = sm::cvc::issue(
            suite,
            issuer_id,
            &self.state.identity.guid,
            &key.public_point(),
            sm::cvc::ROLE_CARD,
            signer,
        )
        .map_err(|e| CardError::Invalid(e.to_string()))?;
        let config = SecureMessaging {
            key,
            cvc,
            contactless,
            pairing_code,
        };
        let discovery = state::discovery(Some(&config));
        let signer_object = CardState::certificate_object_value(signer_certificate);
        // The Pairing Code Reference Data Container (SP 800-73-4 part 1,
        // 3.3.5): the code (99) and an empty error detection code, for the
        // cardholder to read behind the PIN through the VCI.
        let pairing_object = config.pairing_code.as_ref().map(|code| {
            let mut v = tlv::encode(0x99, &code[..]);
            tlv::write(&mut v, 0xFE, &[]);
            v
        });
        self.replace_secure_messaging(
            Some(config),
            [Some(signer_object), pairing_object],
            discovery,
        )
    }

    /// Takes secure messaging away: the card answers as one that never had
    /// it.
    pub fn disable_secure_messaging(&mut self) -> Result<(), CardError> {
        self.replace_secure_messaging(None, [None, None], state::default_discovery())
    }

    /// Swaps in a secure messaging set-up with its objects (the signer's
    /// certificate and the pairing code container; `None` removes one)
    /// and Discovery, in one save.
    fn replace_secure_messaging(
        &mut self,
        config: Option<SecureMessaging>,
        objects: [Option<Vec<u8>>; 2],
        discovery: Vec<u8>,
    ) -> Result<(), CardError> {
        const IDS: [ObjectId; 2] = [ObjectId::SM_CERT_SIGNER, ObjectId::PAIRING_CODE_REF];
        self.end_secure_session();
        self.save_or_undo(
            |s| {
                let old = IDS.into_iter().zip(objects).map(|(id, new)| match new {
                    Some(v) => s.objects.insert(id, v),
                    None => s.objects.remove(&id),
                });
                let old: Vec<_> = old.collect();
                (
                    std::mem::replace(&mut s.secure_messaging, config),
                    old,
                    s.objects.insert(ObjectId::DISCOVERY, discovery),
                )
            },
            |s, (config, old, discovery)| {
                s.secure_messaging = config;
                for (id, previous) in IDS.into_iter().zip(old) {
                    put_back(&mut s.objects, id, previous);
                }
                put_back(&mut s.objects, ObjectId::DISCOVERY, discovery);
            },
        )?;
        Ok(())
    }
}
