//! GENERAL AUTHENTICATE (SP 800-73-4 part 2, 3.2.4): the slots' private
//! keys, and the management key's challenge-response (mutual or external).

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::command::{Authenticate, Deferred, MgmtStep, Operation};
use super::{Card, Res};
use crate::access::{self, KeyUseRule};
use crate::apdu::Response;
use crate::enums::{AlgorithmId, Slot};
use crate::refusal::Refusal;
use crate::sm::{CipherSuite, Responder};
use crate::tlv;

/// A management-key challenge waiting for the host's answer.
pub(super) enum Challenge {
    /// Mutual authentication: the card sent E(K, witness).
    Witness(Zeroizing<Vec<u8>>),
    /// External authentication: the card sent this challenge.
    External(Zeroizing<Vec<u8>>),
}

impl Card {
    pub(super) fn general_authenticate(
        &mut self,
        what: Authenticate<'_>,
        pin_just_verified: bool,
        secure: bool,
    ) -> Res {
        match what {
            Authenticate::Random => {
                let mut random = vec![0u8; self.state.mgmt.block_size()];
                OsRng.fill_bytes(&mut random);
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &random))))
            }
            Authenticate::Management { alg, step } => self.authenticate_management(alg, step),
            Authenticate::Key {
                slot,
                alg,
                operation,
            } => self.use_key(slot, alg, operation, pin_just_verified),
            Authenticate::SecureMessaging { algorithm, request } => {
                self.establish_secure_messaging(algorithm, request, secure)
            }
        }
    }

    /// The card's side of secure messaging key establishment: a new
    /// session (with the VCI closed) replaces any old one. A card without
    /// secure messaging answers as for any key reference it does not
    /// have; a session is established in the clear only.
    fn establish_secure_messaging(&mut self, algorithm: u8, request: &[u8], secure: bool) -> Res {
        let Some(sm) = &self.state.secure_messaging else {
            return Err(Refusal::BadP1P2);
        };
        if CipherSuite::from_algorithm(algorithm) != Some(sm.suite()) {
            return Err(Refusal::AlgorithmMismatch);
        }
        if secure {
            return Err(Refusal::OutOfOrder);
        }
        let responder = Responder {
            key: &sm.key,
            cvc: &sm.cvc,
        };
        let answer = responder.respond(request);
        self.end_secure_session();
        let (answer, channel) = answer.map_err(|e| e.refusal())?;
        self.session.sm = Some(channel);
        Ok(Response::ok(answer))
    }

    fn use_key(
        &mut self,
        slot: Slot,
        alg: AlgorithmId,
        operation: Deferred<Operation<'_>>,
        pin_just_verified: bool,
    ) -> Res {
        let Some(ks) = self.state.keys.get(&slot) else {
            return Err(Refusal::EmptySlot);
        };
        // A YubiKey answers 6A80 when P1 is not the slot key's algorithm;
        // ykman's `check_key` counts on it (yubikit piv.py).
        if alg != ks.key.algorithm() {
            return Err(Refusal::AlgorithmMismatch);
        }
        let operation = operation?;
        let allowed = match access::key_use_rule(slot, ks.pin_policy) {
            KeyUseRule::Free => true,
            KeyUseRule::PinVerified => self.session.pin_verified,
            KeyUseRule::PinJustVerified => self.session.pin_verified && pin_just_verified,
        };
        if !allowed {
            return Err(Refusal::SecurityStatus);
        }
        self.touch(ks.touch_policy)?;
        let result = match operation {
            Operation::Sign(c) => ks.key.sign_or_decrypt(c),
            Operation::Ecdh(p) => ks.key.ecdh(p),
        }
        .map_err(|_| Refusal::BadData)?;
        // 7C { 82 { result } }, built in wiped buffers: the result may be a
        // decrypted block or a shared secret.
        let mut inner = Zeroizing::new(Vec::with_capacity(result.len() + 4));
        tlv::write(&mut inner, 0x82, &result);
        let mut outer = Zeroizing::new(Vec::with_capacity(inner.len() + 4));
        tlv::write(&mut outer, 0x7C, &inner);
        Ok(Response::secret(outer))
    }

    fn authenticate_management(&mut self, alg: AlgorithmId, step: Deferred<MgmtStep<'_>>) -> Res {
        let key = &self.state.mgmt;
        let block = key.block_size();
        // 6A80 as for the asymmetric keys: a YubiKey 5.7 answers a 3DES
        // witness request against its AES-192 key so (found by
        // yubikey-manager's device tests).
        if alg != key.algorithm() {
            return Err(Refusal::AlgorithmMismatch);
        }
        // Any step, even a malformed one, ends what came before.
        let pending = self.session.challenge.take();
        self.session.mgmt_authenticated = false;
        match step? {
            MgmtStep::RequestWitness => {
                let mut plain = Zeroizing::new(vec![0u8; block]);
                OsRng.fill_bytes(&mut plain);
                let sent = key.encrypt_block(&plain).map_err(|_| Refusal::Internal)?;
                self.session.challenge = Some(Challenge::Witness(plain));
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x80, &sent))))
            }
            // The host proves it decrypted the witness and sends its own
            // challenge.
            MgmtStep::AnswerWitness {
                decrypted,
                challenge,
            } => {
                let Some(Challenge::Witness(expected)) = pending else {
                    return Err(Refusal::OutOfOrder);
                };
                if decrypted.len() != block || challenge.len() != block {
                    return Err(Refusal::BadData);
                }
                if !bool::from(expected.ct_eq(decrypted)) {
                    return Err(Refusal::SecurityStatus);
                }
                self.touch(self.state.mgmt_touch)?;
                let answer = key.encrypt_block(challenge).map_err(|_| Refusal::BadData)?;
                self.session.mgmt_authenticated = true;
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &answer))))
            }
            MgmtStep::RequestChallenge => {
                let mut plain = Zeroizing::new(vec![0u8; block]);
                OsRng.fill_bytes(&mut plain);
                let sent = plain.to_vec();
                self.session.challenge = Some(Challenge::External(plain));
                Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &sent))))
            }
            // The host sends E(K, challenge).
            MgmtStep::AnswerChallenge(answer) => {
                let Some(Challenge::External(plain)) = pending else {
                    return Err(Refusal::OutOfOrder);
                };
                let expected =
                    Zeroizing::new(key.encrypt_block(&plain).map_err(|_| Refusal::Internal)?);
                if answer.len() != block || !bool::from(expected.ct_eq(answer)) {
                    return Err(Refusal::SecurityStatus);
                }
                self.touch(self.state.mgmt_touch)?;
                self.session.mgmt_authenticated = true;
                Ok(Response::ok(Vec::new()))
            }
        }
    }
}
