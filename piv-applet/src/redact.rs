//! Log lines for APDUs that never carry secrets.
//!
//! PINs, PUKs, management keys, authentication witnesses and imported
//! private keys travel in command data; decrypted blocks, ECDH secrets and
//! PIN-protected objects travel in responses, possibly split over GET
//! RESPONSE; PIN-protected objects (YubiKey tools keep a management key in
//! printed information, 5FC109) also travel in PUT DATA, possibly chained
//! so that only the first chunk names the object. A [`Redactor`] follows
//! one card's exchange the way the card does and hides those bytes while
//! keeping headers, lengths and status words, which is what debugging needs.
//!
//! It decides by allow-list: data is printed only for commands and
//! responses known to be public, so an INS it does not know is hidden.

use crate::apdu::Command;
use crate::enums::{Ins, ObjectId};
use crate::tlv;

/// A command chain in progress: the header every chunk repeats and
/// whether its first chunk made the whole chain secret.
#[derive(Debug, Clone, Copy)]
struct Chain {
    header: (Ins, u8, u8),
    secret: bool,
}

/// Follows one card's command/response stream to redact it.
#[derive(Default, Debug)]
pub struct Redactor {
    /// The response stream in progress carries secrets (continues across
    /// GET RESPONSE).
    secret_response: bool,
    /// The command chain in progress, as the card tracks it (same header
    /// continues it, anything else ends it).
    chain: Option<Chain>,
}

fn hex_upper(b: &[u8]) -> String {
    hex::encode_upper(b)
}

/// Objects whose contents are secret: the PIN-protected ones and the
/// pairing code reference data (a shared secret with a virtual contact
/// interface, SP 800-73-4 part 1, 3.3.3).
fn object_is_secret(id: ObjectId) -> bool {
    id.pin_protected() || id == ObjectId::PAIRING_CODE_REF || !id.is_known()
}

/// Whether PUT DATA data starts by naming a public object. Discovery (7E)
/// and the BIT group template (7F61) are written as bare TLVs; every other
/// object as `5C <id> 53 <value>`.
fn put_data_is_public(data: &[u8]) -> bool {
    let mut r = crate::codec::Reader::new(data);
    match tlv::read_tag(&mut r) {
        Ok(0x7E) | Ok(0x7F61) => true,
        Ok(0x5C) => tlv::read_len(&mut r)
            .ok()
            .and_then(|n| r.take(n).ok())
            .and_then(ObjectId::from_bytes)
            .is_some_and(|id| !object_is_secret(id)),
        _ => false,
    }
}

/// Whether a GET DATA asks for a secret object (or one it cannot name).
fn get_data_is_secret(data: &[u8]) -> bool {
    tlv::parse_one(data)
        .ok()
        .filter(|t| t.tag == 0x5C)
        .and_then(|t| ObjectId::from_bytes(t.value))
        .is_none_or(object_is_secret)
}

/// Whether the data field of a (first or only) command chunk is secret.
fn command_is_secret(cmd: &Command<'_>) -> bool {
    match cmd.ins {
        Ins::Select
        | Ins::GetData
        | Ins::GetResponse
        | Ins::GenerateAsymmetricKeyPair
        | Ins::MoveKey
        | Ins::GetMetadata
        | Ins::GetSerial
        | Ins::Attest
        | Ins::SetPinRetries
        | Ins::Reset
        | Ins::GetVersion => false,
        Ins::PutData => !put_data_is_public(cmd.data),
        // VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER (PIN, PUK),
        // GENERAL AUTHENTICATE (witnesses, challenge answers, ciphertexts),
        // IMPORT KEY, SET MANAGEMENT KEY and anything unknown.
        Ins::Verify
        | Ins::ChangeReferenceData
        | Ins::ResetRetryCounter
        | Ins::GeneralAuthenticate
        | Ins::ImportKey
        | Ins::SetManagementKey
        | Ins::Unknown(_) => true,
    }
}

/// Whether the answer to a complete command is secret.
fn response_is_secret(ins: Ins, data: &[u8], chained: bool) -> bool {
    match ins {
        // Signatures are public, but the same INS decrypts, derives ECDH
        // secrets and answers management key challenges; the card cannot
        // tell which from the outside.
        Ins::GeneralAuthenticate | Ins::Unknown(_) => true,
        // A chained GET DATA names its object across chunks: hide it.
        Ins::GetData => chained || get_data_is_secret(data),
        _ => false,
    }
}

impl Redactor {
    /// A printable command: header and Lc/Le always, data only when it is
    /// not secret.
    pub fn command(&mut self, apdu: &[u8]) -> String {
        let Ok(cmd) = Command::parse(apdu) else {
            // The card drops its chain and pending response too.
            self.chain = None;
            self.secret_response = true;
            return format!("malformed {} bytes", apdu.len());
        };
        let secret = if cmd.ins == Ins::GetResponse {
            // GET RESPONSE ends a command chain and continues the response.
            self.chain = None;
            false
        } else {
            let header = (cmd.ins, cmd.p1, cmd.p2);
            let continued = self.chain.take().filter(|c| c.header == header);
            let secret = continued.map_or_else(|| command_is_secret(&cmd), |c| c.secret);
            if cmd.is_chained() {
                self.chain = Some(Chain { header, secret });
                self.secret_response = false;
            } else {
                self.secret_response = response_is_secret(cmd.ins, cmd.data, continued.is_some());
            }
            secret
        };
        let header = hex_upper(&apdu[..4]);
        let data = if cmd.data.is_empty() {
            String::new()
        } else if secret {
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
    use crate::apdu::build_command;

    /// A recognisable secret: found in a log line in hex or ASCII means a
    /// leak.
    const MARK: &[u8] = b"\x5e\xc7\xe7SECRET\x5e\xc7\xe7";

    fn assert_hidden(line: &str) {
        let upper = hex::encode_upper(MARK);
        assert!(
            !line.contains(&upper) && !line.contains("SECRET") && !line.contains("5EC7E7"),
            "secret in {line:?}"
        );
    }

    fn marked(len: usize) -> Vec<u8> {
        MARK.iter().copied().cycle().take(len).collect()
    }

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

    #[test]
    fn every_secret_command_is_hidden_chained_or_not() {
        let secret_objects: [&[u8]; 5] = [
            &[0x5F, 0xC1, 0x09],
            &[0x5F, 0xC1, 0x03],
            &[0x5F, 0xC1, 0x08],
            &[0x5F, 0xC1, 0x21],
            &[0x5F, 0xC1, 0x23],
        ];
        let mut commands: Vec<(u8, u8, u8, Vec<u8>)> = vec![
            (0x20, 0x00, 0x80, marked(8)),
            (0x24, 0x00, 0x80, marked(16)),
            (0x2C, 0x00, 0x80, marked(16)),
            (0x87, 0x03, 0x9B, marked(40)),
            (0x87, 0x07, 0x9D, marked(300)),
            (0xFE, 0x11, 0x9A, marked(600)),
            (0xFF, 0xFF, 0xFF, marked(27)),
            (0x42, 0x00, 0x00, marked(12)),
        ];
        for id in secret_objects {
            // ykman's PIN-protected management key: 88 { 89 <key> }.
            let mut data = vec![0x5C, 3];
            data.extend_from_slice(id);
            data.extend_from_slice(&[0x53, 0x82, 0x01, 0x00]);
            data.extend(marked(256));
            commands.push((0xDB, 0x3F, 0xFF, data));
        }
        for (ins, p1, p2, data) in commands {
            // Whole, and in chunks of 5 bytes of which only the first can
            // name an object.
            let mut r = Redactor::default();
            assert_hidden(&r.command(&build_command(0, ins, p1, p2, &data, None)));
            let chunks: Vec<&[u8]> = data.chunks(5).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
                assert_hidden(&r.command(&build_command(cla, ins, p1, p2, chunk, None)));
                assert_hidden(&r.response(&[0x90, 0x00]));
            }
        }
    }

    #[test]
    fn secret_answers_are_hidden_through_get_response() {
        for (ins, p1, p2, data) in [
            (0xCB, 0x3F, 0xFF, vec![0x5C, 3, 0x5F, 0xC1, 0x09]),
            (0xCB, 0x3F, 0xFF, vec![0x5C, 3, 0x5F, 0xC1, 0x23]),
            (0x87, 0x07, 0x9D, vec![0x7C, 2, 0x82, 0]),
        ] {
            let mut r = Redactor::default();
            r.command(&build_command(0, ins, p1, p2, &data, Some(256)));
            let mut first = marked(256);
            first.extend_from_slice(&[0x61, 0x20]);
            assert_hidden(&r.response(&first));
            r.command(&[0, 0xC0, 0, 0, 0]);
            let mut rest = marked(32);
            rest.extend_from_slice(&[0x90, 0x00]);
            assert_hidden(&r.response(&rest));
        }
    }

    #[test]
    fn public_traffic_stays_readable() {
        let mut r = Redactor::default();
        // A certificate written in two chunks: both shown.
        let mut data = vec![0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 4];
        data.extend_from_slice(b"CERT");
        let line = r.command(&build_command(0x10, 0xDB, 0x3F, 0xFF, &data[..7], None));
        assert!(line.ends_with("5C035FC1055304"), "{line}");
        let line = r.command(&build_command(0, 0xDB, 0x3F, 0xFF, &data[7..], None));
        assert!(line.ends_with(&hex::encode_upper(b"CERT")), "{line}");
        // A certificate read over GET RESPONSE.
        r.command(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
        assert_eq!(r.response(&[0x53, 0x01, 0x61, 0x01]), "5301 6101");
        r.command(&[0, 0xC0, 0, 0, 1]);
        assert_eq!(r.response(&[0x30, 0x90, 0x00]), "30 9000");
        // A chunk that does not start a known public object is hidden, even
        // if a chain was interrupted in between.
        r.command(&build_command(
            0x10,
            0xDB,
            0x3F,
            0xFF,
            &[0x5C, 3, 0x5F, 0xC1, 0x09],
            None,
        ));
        r.command(&[0, 0xFD, 0, 0]);
        let line = r.command(&build_command(0, 0xDB, 0x3F, 0xFF, &marked(20), None));
        assert_hidden(&line);
        assert_eq!(r.command(&[0, 0x20]), "malformed 2 bytes");
    }
}
