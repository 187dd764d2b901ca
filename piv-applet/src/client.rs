//! The host side of PIV: what a program talking to a card sends, and how it
//! reads the answers.
//!
//! The shim reads remote cards through it and the tests drive the card
//! with it, so a host and the card it talks to share one definition of
//! every APDU. The answers may come from a hostile peer: nothing here
//! trusts a length, a tag or a status word the card sends, and a card that
//! never stops answering 61xx is cut off.

use core::convert::Infallible;

use rand_core::{OsRng, RngCore};

use crate::apdu::{build_command, Response};
use crate::card::Card;
use crate::enums::{Ins, KeyRef, ObjectId, Slot, StatusWord, PIV_AID, PIV_AID_TRUNCATED_LEN};
use crate::mgmt::ManagementKey;
use crate::state::{decode_certificate_object, pad_pin, CertObjectError};
use crate::tlv;

/// Most GET RESPONSE / Le-correction rounds one exchange may take: no PIV
/// object needs more than a few dozen.
pub const MAX_RESPONSE_ROUNDS: usize = 1024;
/// Most response bytes one exchange may collect.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Command data per APDU when chaining (the most a short APDU carries).
const CHAIN_CHUNK: usize = 255;

/// One APDU to the card and its raw answer (data and status word).
pub trait Transmit {
    type Error;
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Self::Error>;
}

impl<E, F: FnMut(&[u8]) -> Result<Vec<u8>, E>> Transmit for F {
    type Error = E;
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, E> {
        self(apdu)
    }
}

/// An embedded card answers without a transport in between.
impl Transmit for Card {
    type Error = Infallible;
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Infallible> {
        Ok(self.process(apdu))
    }
}

/// A host that keeps its card and lends it to the client per command.
impl Transmit for &mut Card {
    type Error = Infallible;
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Infallible> {
        Ok(self.process(apdu))
    }
}

/// Why a command did not give what was asked; `E` is the transport's error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError<E> {
    #[error("card transport failed: {0}")]
    Transport(E),
    /// An answer without a whole status word.
    #[error("malformed response: {0} bytes")]
    Truncated(usize),
    /// The card kept asking for GET RESPONSE or a new Le past the caps.
    #[error("malformed response: the card kept answering 61xx/6Cxx (more than {MAX_RESPONSE_ROUNDS} rounds or {MAX_RESPONSE_BYTES} bytes)")]
    Endless,
    /// The card refused `what`.
    #[error("card answered {sw} to {what}")]
    Status { what: &'static str, sw: StatusWord },
    /// The card answered success with data that is not what PIV says.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// The card's answer to the management key's challenge was wrong: it
    /// does not hold the key the host authenticated with.
    #[error("the card does not know the management key")]
    CardNotAuthenticated,
    /// Secure messaging failed on the host's side (a response MAC, the
    /// card's key confirmation); the session is closed.
    #[error("secure messaging: {0}")]
    SecureMessaging(crate::sm::SmError),
    #[error("malformed gzip certificate in {:06X}: {source}", .id.0)]
    Certificate {
        id: ObjectId,
        #[source]
        source: CertObjectError,
    },
}

impl<E> ClientError<E> {
    /// The status word of a refusal, if the card refused.
    pub fn status(&self) -> Option<StatusWord> {
        match self {
            ClientError::Status { sw, .. } => Some(*sw),
            _ => None,
        }
    }
}

/// A PIV host over any transport.
pub struct Client<T> {
    transport: T,
    /// The secure messaging session, once opened.
    secure: Option<crate::sm::Channel>,
}

impl<T: Transmit> Client<T> {
    pub fn new(transport: T) -> Client<T> {
        Client {
            transport,
            secure: None,
        }
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn into_inner(self) -> T {
        self.transport
    }

    /// One APDU, one answer: no GET RESPONSE.
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Response, ClientError<T::Error>> {
        let raw = self
            .transport
            .transmit(apdu)
            .map_err(ClientError::Transport)?;
        Response::parse(&raw).map_err(|_| ClientError::Truncated(raw.len()))
    }

    /// Sends one APDU and collects the whole answer, following 61xx with
    /// GET RESPONSE and 6Cxx with a corrected Le, as a PC/SC host must.
    pub fn exchange(&mut self, apdu: &[u8]) -> Result<Response, ClientError<T::Error>> {
        let mut data = zeroize::Zeroizing::new(Vec::new());
        let mut resp = self.transmit(apdu)?;
        for _ in 0..MAX_RESPONSE_ROUNDS {
            data.extend_from_slice(&resp.data);
            match resp.sw {
                StatusWord::MoreData(n) => {
                    resp = self.transmit(&[0x00, Ins::GetResponse.into(), 0x00, 0x00, n])?
                }
                StatusWord::Unknown(sw) if sw >> 8 == 0x6C => {
                    let mut again = apdu.to_vec();
                    if let Some(last) = again.last_mut() {
                        *last = sw as u8;
                    }
                    data.clear();
                    resp = self.transmit(&again)?;
                }
                sw => return Ok(Response { data, sw }),
            }
            if data.len() > MAX_RESPONSE_BYTES {
                break;
            }
        }
        Err(ClientError::Endless)
    }

    /// One command, extended length when the data needs it, whole answer.
    pub fn send(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Response, ClientError<T::Error>> {
        let le = if data.len() > CHAIN_CHUNK { 65536 } else { 256 };
        self.exchange(&build_command(0, ins.into(), p1, p2, data, Some(le)))
    }

    /// One command with its data in short APDUs linked by command chaining
    /// (as ykman does with readers that are not YubiKeys), whole answer. A
    /// chunk the card refuses ends the command with that refusal.
    pub fn send_chained(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Response, ClientError<T::Error>> {
        self.send_in_chunks(0x00, ins.into(), p1, p2, data, "a chained command")
    }

    /// `data` in short APDUs of class `cla` linked by command chaining (the
    /// chaining bit on all but the last), whole answer to the last. A
    /// chunk the card refuses ends the command with that refusal, named
    /// `what`.
    fn send_in_chunks(
        &mut self,
        cla: u8,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        what: &'static str,
    ) -> Result<Response, ClientError<T::Error>> {
        let mut chunks = data.chunks(CHAIN_CHUNK).peekable();
        let mut last: &[u8] = &[];
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                last = chunk;
                break;
            }
            let r = self.transmit(&build_command(cla | 0x10, ins, p1, p2, chunk, None))?;
            if r.sw != StatusWord::Success {
                return Err(ClientError::Status { what, sw: r.sw });
            }
        }
        self.exchange(&build_command(cla, ins, p1, p2, last, Some(256)))
    }

    /// `send`, with any status but 9000 an error naming `what`.
    fn expect_success(
        &mut self,
        what: &'static str,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Response, ClientError<T::Error>> {
        let r = self.send(ins, p1, p2, data)?;
        match r.sw {
            StatusWord::Success => Ok(r),
            sw => Err(ClientError::Status { what, sw }),
        }
    }

    /// SELECT the PIV application by its right-truncated AID.
    pub fn select(&mut self) -> Result<Response, ClientError<T::Error>> {
        self.expect_success(
            "SELECT PIV",
            Ins::Select,
            0x04,
            0x00,
            &PIV_AID[..PIV_AID_TRUNCATED_LEN],
        )
    }

    /// GET DATA: the object's value (the contents of its tag 53), `None`
    /// when the card has no such object (6A82).
    pub fn get_data(&mut self, id: ObjectId) -> Result<Option<Vec<u8>>, ClientError<T::Error>> {
        let r = self.send(Ins::GetData, 0x3F, 0xFF, &tlv::encode(0x5C, &id.to_bytes()))?;
        match r.sw {
            StatusWord::Success => {}
            StatusWord::FileNotFound => return Ok(None),
            sw => {
                return Err(ClientError::Status {
                    what: "GET DATA",
                    sw,
                })
            }
        }
        let malformed = |detail: String| ClientError::Malformed {
            what: format!("object {:06X}", id.0),
            detail,
        };
        let outer = tlv::parse_one(&r.data).map_err(|e| malformed(format!("{e:?}")))?;
        if outer.tag != 0x53 {
            return Err(malformed(format!("outer tag {:X}, expected 53", outer.tag)));
        }
        Ok(Some(outer.value.to_vec()))
    }

    /// VERIFY the PIV PIN. The PIN goes to the card as given (padded, not
    /// checked): judging it is the card's part. A wrong PIN is
    /// `Status` with 63Cx.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<(), ClientError<T::Error>> {
        self.expect_success(
            "VERIFY",
            Ins::Verify,
            0x00,
            KeyRef::Pin.into(),
            &pad_pin(pin),
        )
        .map(drop)
    }

    /// Mutual authentication with the management key (SP 800-73-4 part 2,
    /// appendix A.1, as libykpiv does it): the host decrypts the card's
    /// witness, the card encrypts the host's random challenge.
    pub fn authenticate(&mut self, key: &ManagementKey) -> Result<(), ClientError<T::Error>> {
        let mut challenge = vec![0u8; key.block_size()];
        OsRng.fill_bytes(&mut challenge);
        self.authenticate_with(key, &challenge)
    }

    /// [`Client::authenticate`] with a challenge chosen by the caller.
    pub fn authenticate_with(
        &mut self,
        key: &ManagementKey,
        challenge: &[u8],
    ) -> Result<(), ClientError<T::Error>> {
        const WHAT: &str = "GENERAL AUTHENTICATE";
        let alg: u8 = key.algorithm().into();
        let mgmt: u8 = KeyRef::ManagementKey.into();
        let witness_request = tlv::encode(0x7C, &tlv::encode(0x80, &[]));
        let r = self.expect_success(WHAT, Ins::GeneralAuthenticate, alg, mgmt, &witness_request)?;
        let malformed = |detail: &str| ClientError::Malformed {
            what: "management key witness".into(),
            detail: detail.into(),
        };
        let witness = dynamic_auth_item(&r.data, 0x80).ok_or_else(|| malformed("no 7C/80"))?;
        let witness = key
            .decrypt_block(witness)
            .map_err(|_| malformed("not one cipher block"))?;
        let mut inner = Vec::new();
        tlv::write(&mut inner, 0x80, &witness);
        tlv::write(&mut inner, 0x81, challenge);
        let r = self.expect_success(
            WHAT,
            Ins::GeneralAuthenticate,
            alg,
            mgmt,
            &tlv::encode(0x7C, &inner),
        )?;
        let answer = dynamic_auth_item(&r.data, 0x82).ok_or_else(|| ClientError::Malformed {
            what: "management key response".into(),
            detail: "no 7C/82".into(),
        })?;
        match key.encrypt_block(challenge) {
            Ok(expected) if expected == answer => Ok(()),
            _ => Err(ClientError::CardNotAuthenticated),
        }
    }

    /// The certificate in a slot, decoded as the card itself decodes it;
    /// `None` when the slot has no certificate object or it holds no
    /// certificate: no tag 70, or an empty one (how tools clear a slot,
    /// whatever its CertInfo says).
    pub fn read_certificate(
        &mut self,
        slot: Slot,
    ) -> Result<Option<Vec<u8>>, ClientError<T::Error>> {
        let id = slot.certificate_object();
        let Some(value) = self.get_data(id)? else {
            return Ok(None);
        };
        if tlv::find(&value, 0x70).is_none_or(<[u8]>::is_empty) {
            return Ok(None);
        }
        decode_certificate_object(&value).map_err(|source| ClientError::Certificate { id, source })
    }
}

/// One item of a dynamic authentication template (7C).
fn dynamic_auth_item(data: &[u8], tag: u32) -> Option<&[u8]> {
    tlv::find(tlv::find(data, 0x7C)?, tag)
}

/// Secure messaging (SP 800-73-4 part 2, 4) from the host's side: the key
/// establishment, then commands protected one by one. The project's tests
/// drive the card's secure messaging with it; OpenSC is the other host.
impl<T: Transmit> Client<T> {
    /// Establishes a session with `suite` (in the clear, GENERAL
    /// AUTHENTICATE with key reference 04) and returns the card's CVC,
    /// decoded but not verified: check it with the content signer's
    /// certificate (object 5FC122, or one the host trusts).
    pub fn open_secure_messaging(
        &mut self,
        suite: crate::sm::CipherSuite,
        host_id: [u8; 8],
    ) -> Result<crate::sm::Cvc, ClientError<T::Error>> {
        self.secure = None;
        let initiator = crate::sm::Initiator::new(suite, host_id);
        let r = self.expect_success(
            "secure messaging key establishment",
            Ins::GeneralAuthenticate,
            suite.algorithm(),
            crate::sm::KEY_REFERENCE,
            &initiator.request(),
        )?;
        let (channel, cvc) = initiator
            .finish(&r.data)
            .map_err(ClientError::SecureMessaging)?;
        self.secure = Some(channel);
        Ok(cvc)
    }

    /// Whether a session is open.
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// One command under secure messaging (CLA 0C, chained in short APDUs
    /// when long, its answer collected with GET RESPONSE): the command's
    /// own data and status word. A card that answers in the clear (6987,
    /// 6988, no session) or a response that fails its MAC closes the
    /// session.
    pub fn send_secure(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<usize>,
    ) -> Result<Response, ClientError<T::Error>> {
        // Out of the client while the command runs: every way out but a
        // checked response leaves the session closed.
        let Some(mut channel) = self.secure.take() else {
            return Err(ClientError::Status {
                what: "a command under secure messaging (no session)",
                sw: StatusWord::SecurityStatusNotSatisfied,
            });
        };
        let ins_byte: u8 = ins.into();
        let body = channel.protect_command(ins_byte, p1, p2, data, le);
        let r = self.send_in_chunks(
            0x0C,
            ins_byte,
            p1,
            p2,
            &body,
            "a chained command under secure messaging",
        )?;
        if r.sw != StatusWord::Success {
            return Err(ClientError::Status {
                what: "a command under secure messaging",
                sw: r.sw,
            });
        }
        let (data, sw) = channel
            .open_response(&r.data)
            .map_err(ClientError::SecureMessaging)?;
        self.secure = Some(channel);
        Ok(Response {
            data,
            sw: StatusWord::from(sw),
        })
    }

    /// Ends the session on the host's side (its keys are wiped).
    pub fn close_secure_messaging(&mut self) {
        self.secure = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardOptions;
    use crate::mgmt::DEFAULT_KEY;
    use crate::state::{CardState, DEFAULT_PIN};
    use crate::AlgorithmId;

    fn card() -> Card {
        Card::ephemeral(&CardOptions {
            guid: Some([0x11; 16]),
            ..CardOptions::default()
        })
        .unwrap()
    }

    fn default_key() -> ManagementKey {
        ManagementKey::new(AlgorithmId::Aes192, &DEFAULT_KEY).unwrap()
    }

    /// A transport that answers every APDU with `answer` and counts them.
    fn canned(
        answer: Vec<u8>,
        calls: &mut usize,
    ) -> impl FnMut(&[u8]) -> Result<Vec<u8>, &'static str> + '_ {
        move |_| {
            *calls += 1;
            Ok(answer.clone())
        }
    }

    fn put_object(c: &mut Client<Card>, id: ObjectId, value: &[u8]) {
        let mut d = tlv::encode(0x5C, &id.to_bytes());
        tlv::write(&mut d, 0x53, value);
        let r = c.send(Ins::PutData, 0x3F, 0xFF, &d).unwrap();
        assert_eq!(r.sw, StatusWord::Success);
    }

    #[test]
    fn selects_and_reads_the_chuid_and_misses_absent_objects() {
        let mut c = Client::new(card());
        let r = c.select().unwrap();
        assert_eq!(tlv::find(&r.data, 0x61).map(|t| t.is_empty()), Some(false));
        let chuid = c.get_data(ObjectId::CHUID).unwrap().expect("a CHUID");
        assert_eq!(tlv::find(&chuid, 0x34), Some(&[0x11; 16][..]));
        assert_eq!(c.get_data(ObjectId::CERT_SIGNATURE).unwrap(), None);
        assert_eq!(c.read_certificate(Slot::SIGNATURE).unwrap(), None);
    }

    #[test]
    fn pin_and_management_key_are_accepted_and_refused() {
        let mut c = Client::new(card());
        let wrong = c.verify_pin(b"654321").unwrap_err();
        assert_eq!(wrong.status(), Some(StatusWord::VerifyFail(2)));
        c.verify_pin(DEFAULT_PIN).unwrap();

        let other = ManagementKey::new(AlgorithmId::Aes192, &[7; 24]).unwrap();
        let refused = c.authenticate(&other).unwrap_err();
        assert!(refused.status().is_some(), "{refused}");
        let wrong_alg = ManagementKey::new(AlgorithmId::Aes128, &[1; 16]).unwrap();
        assert!(c.authenticate(&wrong_alg).unwrap_err().status().is_some());
        // Unauthenticated, PUT DATA is refused; authenticated, it is not.
        let cert = CardState::certificate_object_value(&[0x30, 0x00]);
        let mut d = tlv::encode(0x5C, &ObjectId::CERT_SIGNATURE.to_bytes());
        tlv::write(&mut d, 0x53, &cert);
        let r = c.send(Ins::PutData, 0x3F, 0xFF, &d).unwrap();
        assert_eq!(r.sw, StatusWord::SecurityStatusNotSatisfied);
        c.authenticate(&default_key()).unwrap();
        put_object(&mut c, ObjectId::CERT_SIGNATURE, &cert);
        assert_eq!(
            c.read_certificate(Slot::SIGNATURE).unwrap(),
            Some(vec![0x30, 0x00])
        );
    }

    /// A certificate larger than one response and than one short command:
    /// chaining out, GET RESPONSE back, gzip inflated.
    #[test]
    fn long_objects_chain_and_gzip_inflates() {
        use std::io::Write;
        let der: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&der).unwrap();
        let gz = gz.finish().unwrap();
        let mut c = Client::new(card());
        c.authenticate(&default_key()).unwrap();

        let plain = CardState::certificate_object_value(&der);
        let mut d = tlv::encode(0x5C, &ObjectId::CERT_PIV_AUTH.to_bytes());
        tlv::write(&mut d, 0x53, &plain);
        let r = c.send_chained(Ins::PutData, 0x3F, 0xFF, &d).unwrap();
        assert_eq!(r.sw, StatusWord::Success);
        assert_eq!(
            c.read_certificate(Slot::AUTHENTICATION).unwrap(),
            Some(der.clone())
        );

        let mut zipped = Vec::new();
        tlv::write(&mut zipped, 0x70, &gz);
        tlv::write(&mut zipped, 0x71, &[0x01]);
        put_object(&mut c, ObjectId::CERT_KEY_MANAGEMENT, &zipped);
        assert_eq!(
            c.read_certificate(Slot::KEY_MANAGEMENT).unwrap(),
            Some(der.clone())
        );
        assert_eq!(
            c.transport().certificate(Slot::KEY_MANAGEMENT),
            Some(der),
            "host and card decode alike"
        );

        let mut cleared = Vec::new();
        tlv::write(&mut cleared, 0x70, &[]);
        tlv::write(&mut cleared, 0x71, &[0x01]);
        put_object(&mut c, ObjectId::CERT_SIGNATURE, &cleared);
        assert_eq!(c.read_certificate(Slot::SIGNATURE).unwrap(), None);

        let mut broken = Vec::new();
        tlv::write(&mut broken, 0x70, &gz[..gz.len() / 2]);
        tlv::write(&mut broken, 0x71, &[0x01]);
        put_object(&mut c, ObjectId::CERT_CARD_AUTH, &broken);
        let e = c.read_certificate(Slot::CARD_AUTHENTICATION).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed gzip certificate in 5FC101: "),
            "{e}"
        );
        assert_eq!(c.transport().certificate(Slot::CARD_AUTHENTICATION), None);
    }

    #[test]
    fn a_refused_chunk_ends_a_chained_command() {
        let mut sent = Vec::new();
        let e = Client::new(|apdu: &[u8]| -> Result<Vec<u8>, &str> {
            sent.push(apdu.to_vec());
            Ok(if apdu[0] & 0x10 != 0 {
                vec![0x6A, 0x80]
            } else {
                vec![0x90, 0x00]
            })
        })
        .send_chained(Ins::PutData, 0x3F, 0xFF, &[0x5C; 600])
        .unwrap_err();
        assert_eq!(e.status(), Some(StatusWord::IncorrectData));
        assert_eq!(sent.len(), 1, "nothing follows the refused chunk");
        assert_eq!(&sent[0][..5], &[0x10, 0xDB, 0x3F, 0xFF, 0xFF]);
    }

    #[test]
    fn endless_get_response_chains_are_cut_off() {
        for answer in [
            [vec![0xAA; 200], vec![0x61, 0x00]].concat(),
            vec![0x61, 0x10],
            vec![0x6C, 0x10],
        ] {
            let mut calls = 0usize;
            let mut c = Client::new(canned(answer, &mut calls));
            assert!(matches!(
                c.exchange(&[0x00, 0xCB, 0x3F, 0xFF]),
                Err(ClientError::Endless)
            ));
            drop(c);
            assert!(calls <= MAX_RESPONSE_ROUNDS + 1, "{calls} calls");
        }
    }

    #[test]
    fn oversize_answers_are_cut_off_by_bytes() {
        let mut calls = 0usize;
        let answer = [vec![0x55; 65536], vec![0x61, 0x00]].concat();
        let mut c = Client::new(canned(answer, &mut calls));
        assert!(matches!(
            c.get_data(ObjectId::CHUID),
            Err(ClientError::Endless)
        ));
        drop(c);
        // The first answer and 16 GET RESPONSEs reach the cap; one more passes it.
        assert_eq!(calls, MAX_RESPONSE_BYTES / 65536 + 2);
    }

    #[test]
    fn short_and_malformed_answers_are_errors() {
        for short in [vec![], vec![0x90]] {
            let mut calls = 0;
            let mut c = Client::new(canned(short, &mut calls));
            assert!(matches!(c.select(), Err(ClientError::Truncated(_))));
        }
        let malformed = [
            vec![0x90, 0x00],                                     // no 53
            vec![0x54, 0x00, 0x90, 0x00],                         // not 53
            vec![0x53, 0x05, 0x01, 0x90, 0x00],                   // 53 longer than the data
            vec![0x53, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x90, 0x00], // absurd length
        ];
        for answer in malformed {
            let mut calls = 0;
            let mut c = Client::new(canned(answer.clone(), &mut calls));
            assert!(
                matches!(
                    c.get_data(ObjectId::CHUID),
                    Err(ClientError::Malformed { .. })
                ),
                "{answer:02X?}"
            );
        }
        let mut calls = 0;
        let mut c = Client::new(canned(vec![0x6A, 0x82], &mut calls));
        assert_eq!(c.get_data(ObjectId::CHUID).unwrap(), None);
        let mut calls = 0;
        let mut c = Client::new(|_: &[u8]| -> Result<Vec<u8>, &str> { Err("gone") });
        assert_eq!(
            c.select().unwrap_err().to_string(),
            "card transport failed: gone"
        );
        let mut c = Client::new(canned(vec![0x6A, 0x81], &mut calls));
        assert_eq!(
            c.select().unwrap_err().to_string(),
            "card answered 6A81 to SELECT PIV"
        );
    }

    /// A peer that answers GENERAL AUTHENTICATE with garbage, or with a
    /// proof of another key, does not pass for the card.
    #[test]
    fn hostile_management_key_answers_are_refused() {
        let key = default_key();
        let witness = tlv::encode(0x7C, &tlv::encode(0x80, &[0x42; 16]));
        let answers: [(Vec<u8>, Vec<u8>); 4] = [
            (vec![0x7C, 0x00], vec![]),
            (tlv::encode(0x7C, &tlv::encode(0x80, &[0x42; 3])), vec![]),
            (witness.clone(), vec![0x7C, 0x02, 0x82, 0x00]),
            (
                witness.clone(),
                tlv::encode(0x7C, &tlv::encode(0x82, &[0x42; 16])),
            ),
        ];
        for (first, second) in answers {
            let mut round = 0;
            let mut c = Client::new(|_: &[u8]| -> Result<Vec<u8>, &str> {
                round += 1;
                let data = if round == 1 { &first } else { &second };
                Ok([data.as_slice(), &[0x90, 0x00]].concat())
            });
            let e = c.authenticate(&key).unwrap_err();
            assert!(
                matches!(
                    e,
                    ClientError::Malformed { .. } | ClientError::CardNotAuthenticated
                ),
                "{e}"
            );
        }
    }
}
