//! The PIN and PUK: VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER
//! (SP 800-73-4 part 2, 3.2.1-3.2.3).

use super::command::{PinRef, Verify};
use super::{Card, Res};
use crate::apdu::Response;
use crate::enums::KeyRef;
use crate::refusal::Refusal;
use crate::state::is_valid_new_pin;
use subtle::ConstantTimeEq;

impl Card {
    /// The VCI pairing code (SP 800-73-4 part 2, 4.2), taken only within
    /// secure messaging. It has no retry counter in the specification: a
    /// wrong code ends the secure messaging session instead, so each guess
    /// costs the host a new key establishment.
    fn verify_pairing_code(&mut self, code: &[u8], secure: bool) -> Res {
        let Some(expected) = self
            .state
            .secure_messaging
            .as_ref()
            .and_then(|sm| sm.pairing_code.as_ref())
        else {
            return Err(Refusal::NoReference);
        };
        if !secure {
            return Err(Refusal::SecurityStatus);
        }
        if code.len() != expected.len() {
            return Err(Refusal::BadData);
        }
        if bool::from(code.ct_eq(&expected[..])) {
            self.session.vci = true;
            Ok(Response::ok(Vec::new()))
        } else {
            self.session.sm_ends = true;
            Err(Refusal::SecurityStatus)
        }
    }

    /// Checks `candidate` against a PIN or PUK. The retry counter is
    /// decremented and saved before the comparison, so pulling the power
    /// mid-check cannot grant a free try.
    fn check_reference(&mut self, reference: PinRef, candidate: &[u8]) -> Result<(), Refusal> {
        let key_ref = KeyRef::from(reference);
        if self.state.reference_mut(key_ref).is_blocked() {
            return Err(Refusal::Blocked);
        }
        // Nothing recorded, nothing compared: a failed save undoes the count.
        self.persist_or_undo(
            |s| s.reference_mut(key_ref).tries_left -= 1,
            |s, ()| s.reference_mut(key_ref).tries_left += 1,
        )?;
        let pin = self.state.reference_mut(key_ref);
        if !pin.matches(candidate) {
            return Err(Refusal::WrongReference(pin.tries_left));
        }
        // If the restored count cannot be saved, the try stays counted (in
        // memory as on disk) and the host sees 6581.
        self.persist_or_undo(
            |s| {
                let pin = s.reference_mut(key_ref);
                std::mem::replace(&mut pin.tries_left, pin.max_tries)
            },
            |s, left| s.reference_mut(key_ref).tries_left = left,
        )
    }

    pub(super) fn verify(&mut self, step: Verify<'_>, secure: bool) -> Res {
        match step {
            Verify::PairingCode(code) => self.verify_pairing_code(code, secure),
            Verify::Forget => {
                self.session.pin_verified = false;
                Ok(Response::ok(Vec::new()))
            }
            Verify::Status => {
                if self.session.pin_verified {
                    Ok(Response::ok(Vec::new()))
                } else if self.state.pin.is_blocked() {
                    Err(Refusal::Blocked)
                } else {
                    Err(Refusal::WrongReference(self.state.pin.tries_left))
                }
            }
            Verify::Check(pin) => {
                self.session.pin_verified = false;
                self.check_reference(PinRef::Pin, pin)?;
                self.session.pin_verified = true;
                self.session.pin_fresh = true;
                Ok(Response::ok(Vec::new()))
            }
        }
    }

    pub(super) fn change_reference_data(
        &mut self,
        reference: PinRef,
        old: &[u8],
        new: &[u8],
    ) -> Res {
        // The old value is checked (and counted) before the new one's
        // format: a reset tool blocking the PIN with junk must see 63Cx.
        self.check_reference(reference, old)?;
        if !is_valid_new_pin(new) {
            return Err(Refusal::BadNewReference);
        }
        let key_ref = KeyRef::from(reference);
        self.persist_or_undo(
            |s| s.replace_reference(key_ref, new),
            |s, previous| *s.reference_mut(key_ref) = previous,
        )?;
        if reference == PinRef::Pin {
            self.session.pin_verified = true;
        }
        Ok(Response::ok(Vec::new()))
    }

    pub(super) fn reset_retry_counter(&mut self, puk: &[u8], new: &[u8]) -> Res {
        self.check_reference(PinRef::Puk, puk)?;
        if !is_valid_new_pin(new) {
            return Err(Refusal::BadNewReference);
        }
        self.persist_or_undo(
            |s| s.replace_reference(KeyRef::Pin, new),
            |s, previous| s.pin = previous,
        )?;
        Ok(Response::ok(Vec::new()))
    }
}
