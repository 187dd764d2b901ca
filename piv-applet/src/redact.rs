//! Log lines for APDUs that never carry secrets.
//!
//! PINs, PUKs, management keys and imported private keys travel in command
//! data; decrypted blocks, ECDH secrets and PIN-protected objects travel in
//! responses, possibly split over GET RESPONSE. A [`Redactor`] follows one
//! card's exchange and hides those bytes while keeping headers, lengths and
//! status words, which is what debugging needs.

use crate::apdu::Command;
use crate::enums::{Ins, ObjectId};
use crate::tlv;

/// Follows one card's command/response stream to redact it.
#[derive(Default, Debug)]
pub struct Redactor {
    /// The response stream in progress carries secrets (continues across
    /// GET RESPONSE).
    secret_response: bool,
}

fn hex_upper(b: &[u8]) -> String {
    hex::encode_upper(b)
}

/// Whether a command's data field carries secrets.
fn command_is_secret(ins: Ins) -> bool {
    matches!(
        ins,
        Ins::Verify
            | Ins::ChangeReferenceData
            | Ins::ResetRetryCounter
            | Ins::ImportKey
            | Ins::SetManagementKey
            | Ins::GeneralAuthenticate
    )
}

impl Redactor {
    /// A printable command: header and Lc/Le always, data only when it is
    /// not secret.
    pub fn command(&mut self, apdu: &[u8]) -> String {
        let Ok(cmd) = Command::parse(apdu) else {
            return format!("malformed {} bytes", apdu.len());
        };
        let response_secret = match cmd.ins {
            // Signatures are public, but the same INS decrypts and derives
            // ECDH secrets; the card cannot tell which from the outside.
            Ins::GeneralAuthenticate => true,
            Ins::GetData => tlv::parse_one(cmd.data)
                .ok()
                .and_then(|t| ObjectId::from_bytes(t.value))
                .is_some_and(|id| id.pin_protected()),
            Ins::GetResponse => self.secret_response,
            _ => false,
        };
        self.secret_response = response_secret;
        let header = hex_upper(&apdu[..4]);
        let data = if cmd.data.is_empty() {
            String::new()
        } else if command_is_secret(cmd.ins) {
            format!(" [{} bytes redacted]", cmd.data.len())
        } else {
            format!(" {}", hex_upper(cmd.data))
        };
        match cmd.le {
            Some(le) => format!("{header}{data} Le={le}"),
            None => format!("{header}{data}"),
        }
    }

    /// A printable response to the command last passed to [`Self::command`].
    pub fn response(&mut self, resp: &[u8]) -> String {
        if resp.len() < 2 {
            return format!("malformed {} bytes", resp.len());
        }
        let (data, sw) = resp.split_at(resp.len() - 2);
        let sw = hex_upper(sw);
        if data.is_empty() {
            sw
        } else if self.secret_response {
            format!("[{} bytes redacted] {sw}", data.len())
        } else {
            format!("{} {sw}", hex_upper(data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_decryptions_are_hidden() {
        let mut r = Redactor::default();
        let line = r.command(&[
            0, 0x20, 0, 0x80, 8, b'1', b'2', b'3', b'4', b'5', b'6', 0xFF, 0xFF,
        ]);
        assert_eq!(line, "00200080 [8 bytes redacted]");
        assert!(!line.contains("313233"));
        r.command(&[0, 0x87, 7, 0x9A, 4, 0x7C, 2, 0x81, 0]);
        assert_eq!(
            r.response(&[0xAA, 0xBB, 0x61, 0x10]),
            "[2 bytes redacted] 6110"
        );
        r.command(&[0, 0xC0, 0, 0, 0x10]);
        assert_eq!(r.response(&[0xCC, 0x90, 0x00]), "[1 bytes redacted] 9000");
        r.command(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x02]);
        assert_eq!(r.response(&[0x53, 0x00, 0x90, 0x00]), "5300 9000");
        r.command(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x09]);
        assert_eq!(
            r.response(&[0x53, 0x00, 0x90, 0x00]),
            "[2 bytes redacted] 9000"
        );
    }
}
