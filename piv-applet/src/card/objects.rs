//! GET DATA and PUT DATA (SP 800-73-4 part 2, 3.1.2 and 3.3.2): the data
//! objects, each with the read rule of [`crate::access`].

use super::command::Deferred;
use super::{put_back, Card, Res};
use crate::apdu::Response;
use crate::enums::{Ins, ObjectId};
use crate::refusal::Refusal;
use crate::state::NoRoom;
use crate::tlv;

impl Card {
    pub(super) fn get_data(&mut self, id: ObjectId) -> Res {
        if id.pin_protected() && !self.session.pin_verified {
            return Err(Refusal::SecurityStatus);
        }
        let value = if id == ObjectId::KEY_HISTORY {
            self.state.key_history()
        } else {
            self.state.objects.get(&id).cloned()
        };
        let value = value.ok_or(Refusal::NoObject)?;
        if matches!(id, ObjectId::DISCOVERY | ObjectId::BITGT) {
            Ok(Response::ok(value))
        } else {
            Ok(Response::ok(tlv::encode(0x53, &value)))
        }
    }

    /// Stores `value` in the object, or deletes the object when the value
    /// is empty.
    pub(super) fn put_data(&mut self, object: Deferred<(ObjectId, Vec<u8>)>) -> Res {
        self.authorize(Ins::PutData)?;
        let (id, value) = object?;
        self.state
            .check_room(id, value.len())
            .map_err(|e| match e {
                NoRoom::ObjectTooLarge { .. } => Refusal::ObjectTooLarge,
                NoRoom::CardFull { .. } => Refusal::CardFull,
            })?;
        self.persist_or_undo(
            |s| {
                if value.is_empty() {
                    s.objects.remove(&id)
                } else {
                    s.objects.insert(id, value)
                }
            },
            |s, previous| put_back(&mut s.objects, id, previous),
        )?;
        Ok(Response::ok(Vec::new()))
    }
}
