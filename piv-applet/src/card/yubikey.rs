//! The YubiKey extensions of PIV (Yubico's "PIV extensions"): key
//! generation and import with policies, MOVE KEY, SET MANAGEMENT KEY, GET
//! METADATA, ATTEST, RESET and SET PIN RETRIES.

use super::command::{Deferred, KeyMove, KeySpec, MetadataRef, PinRef};
use super::{put_back, Card, Res, Session};
use crate::apdu::Response;
use crate::enums::{AlgorithmId, Ins, KeyOrigin, PinPolicy, Slot, TouchPolicy};
use crate::keys::KeyMaterial;
use crate::mgmt::ManagementKey;
use crate::refusal::Refusal;
use crate::state::{CardState, KeySlot, PinState, DEFAULT_PIN, DEFAULT_PUK};
use crate::{tlv, x509};

impl Card {
    /// Puts a key in a slot and saves; on a failed save the slot is
    /// restored.
    pub(super) fn install_key(&mut self, slot: Slot, ks: KeySlot) -> Result<(), Refusal> {
        self.persist_or_undo(
            |s| s.keys.insert(slot, ks),
            |s, previous| put_back(&mut s.keys, slot, previous),
        )
    }

    pub(super) fn generate(&mut self, slot: Slot, spec: Deferred<KeySpec>) -> Res {
        self.authorize(Ins::GenerateAsymmetricKeyPair)?;
        let spec = spec?;
        let key = KeyMaterial::generate(spec.alg).map_err(|_| Refusal::BadAlgorithm)?;
        let public = key.public_key_tlvs();
        self.install_key(
            slot,
            KeySlot::new(
                slot,
                key,
                spec.pin_policy,
                spec.touch_policy,
                KeyOrigin::Generated,
            ),
        )?;
        Ok(Response::ok(tlv::encode(0x7F49, &public)))
    }

    pub(super) fn import(
        &mut self,
        slot: Slot,
        alg: AlgorithmId,
        policies: Deferred<(PinPolicy, TouchPolicy)>,
        key: &[u8],
    ) -> Res {
        self.authorize(Ins::ImportKey)?;
        let (pin_policy, touch_policy) = policies?;
        let key = KeyMaterial::import(alg, key).map_err(|_| Refusal::BadData)?;
        self.install_key(
            slot,
            KeySlot::new(slot, key, pin_policy, touch_policy, KeyOrigin::Imported),
        )?;
        Ok(Response::ok(Vec::new()))
    }

    pub(super) fn move_key(&mut self, what: KeyMove) -> Res {
        self.authorize(Ins::MoveKey)?;
        let (src, dest) = match what {
            KeyMove::Delete(slot) => (slot, None),
            KeyMove::Move { from, to } => (from, Some(to)),
        };
        if !self.state.keys.contains_key(&src) {
            return Err(Refusal::NoReference);
        }
        if dest.is_some_and(|d| self.state.keys.contains_key(&d)) {
            return Err(Refusal::DestinationOccupied);
        }
        // Returns the deleted key (no destination) or the key the move
        // displaced, so a failed save can put every key back.
        self.persist_or_undo(
            |s| {
                let ks = s.keys.remove(&src).expect("checked above");
                match dest {
                    Some(d) => (None, s.keys.insert(d, ks)),
                    None => (Some(ks), None),
                }
            },
            |s, (deleted, displaced)| {
                let moved = match dest {
                    Some(d) => {
                        let moved = s.keys.remove(&d);
                        put_back(&mut s.keys, d, displaced);
                        moved
                    }
                    None => deleted,
                };
                put_back(&mut s.keys, src, moved);
            },
        )?;
        Ok(Response::ok(Vec::new()))
    }

    /// SET MANAGEMENT KEY: the new key and the touch its use needs.
    pub(super) fn change_management_key(
        &mut self,
        touch: TouchPolicy,
        key: Deferred<ManagementKey>,
    ) -> Res {
        self.authorize(Ins::SetManagementKey)?;
        let new = key?;
        self.persist_or_undo(
            |s| {
                (
                    std::mem::replace(&mut s.mgmt, new),
                    std::mem::replace(&mut s.mgmt_touch, touch),
                )
            },
            |s, previous| (s.mgmt, s.mgmt_touch) = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }

    pub(super) fn get_metadata(&mut self, what: MetadataRef) -> Res {
        let mut out = Vec::new();
        match what {
            MetadataRef::Reference(reference) => {
                let (pin, default) = match reference {
                    PinRef::Pin => (&self.state.pin, DEFAULT_PIN),
                    PinRef::Puk => (&self.state.puk, DEFAULT_PUK),
                };
                tlv::write(&mut out, 0x01, &[AlgorithmId::PinPuk.into()]);
                tlv::write(&mut out, 0x05, &[u8::from(pin.is_default(default))]);
                tlv::write(&mut out, 0x06, &[pin.max_tries, pin.tries_left]);
            }
            MetadataRef::ManagementKey => {
                let key = &self.state.mgmt;
                tlv::write(&mut out, 0x01, &[key.algorithm().into()]);
                // The PIN policy byte does not apply to the management key.
                tlv::write(
                    &mut out,
                    0x02,
                    &[PinPolicy::Default.into(), self.state.mgmt_touch.into()],
                );
                tlv::write(&mut out, 0x05, &[u8::from(key.is_default())]);
            }
            MetadataRef::Key(slot) => {
                let ks = self.state.keys.get(&slot).ok_or(Refusal::NoReference)?;
                tlv::write(&mut out, 0x01, &[ks.key.algorithm().into()]);
                tlv::write(
                    &mut out,
                    0x02,
                    &[ks.pin_policy.into(), ks.touch_policy.into()],
                );
                tlv::write(&mut out, 0x03, &[ks.origin.into()]);
                tlv::write(&mut out, 0x04, &ks.key.public_key_tlvs());
            }
        }
        Ok(Response::ok(out))
    }

    pub(super) fn attest(&mut self, slot: Slot) -> Res {
        let ks = self.state.keys.get(&slot).ok_or(Refusal::EmptySlot)?;
        if ks.origin != KeyOrigin::Generated {
            return Err(Refusal::NotGenerated);
        }
        let f9 = self
            .state
            .keys
            .get(&Slot::ATTESTATION)
            .ok_or(Refusal::NoReference)?;
        let f9_cert = self
            .state
            .certificate(Slot::ATTESTATION)
            .ok_or(Refusal::NoReference)?;
        let id = &self.state.identity;
        let spki = ks.key.public_key_spki_der();
        let what = x509::Attested {
            slot,
            spki_der: &spki,
            firmware: id.firmware,
            serial: id.serial,
            pin_policy: ks.pin_policy,
            touch_policy: ks.touch_policy,
        };
        let cert = x509::attestation(&f9.key, &f9_cert, &what).map_err(|e| {
            tracing::error!("attestation failed: {e}");
            Refusal::Internal
        })?;
        Ok(Response::ok(cert))
    }

    pub(super) fn yubikey_reset(&mut self) -> Res {
        if !(self.state.pin.is_blocked() && self.state.puk.is_blocked()) {
            return Err(Refusal::NotBlocked);
        }
        let alg = self.state.mgmt.algorithm();
        let alg = if self.state.identity.firmware >= [5, 7, 0] {
            AlgorithmId::Aes192
        } else {
            alg
        };
        let alg = if alg.is_symmetric() {
            alg
        } else {
            AlgorithmId::TripleDes
        };
        self.persist_or_undo(|s| s.reset_to_factory(alg), CardState::undo_reset)?;
        self.session = Session::new();
        Ok(Response::ok(Vec::new()))
    }

    pub(super) fn set_pin_retries(&mut self, pin_tries: u8, puk_tries: u8) -> Res {
        self.authorize(Ins::SetPinRetries)?;
        self.persist_or_undo(
            |s| {
                (
                    std::mem::replace(&mut s.pin, PinState::new(DEFAULT_PIN, pin_tries)),
                    std::mem::replace(&mut s.puk, PinState::new(DEFAULT_PUK, puk_tries)),
                )
            },
            |s, previous| (s.pin, s.puk) = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }
}
