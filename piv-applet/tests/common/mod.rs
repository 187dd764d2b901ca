//! A minimal PIV host for tests: sends APDUs, collects 61xx chains, and
//! authenticates with the management key the way libykpiv does.
#![allow(dead_code)]

use piv_applet::apdu::Response;
use piv_applet::client::{Client, ClientError};
use piv_applet::mgmt::ManagementKey;
use piv_applet::{AlgorithmId, Card, CardOptions, StatusWord};

pub const DEFAULT_MGMT: [u8; 24] = piv_applet::mgmt::DEFAULT_KEY;

pub fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("test hex")
}

pub fn new_card() -> Card {
    Card::ephemeral(&CardOptions {
        serial: Some(12345678),
        guid: Some([0x11; 16]),
        ..CardOptions::default()
    })
    .expect("card")
}

/// The status word of a command that either succeeded or was refused;
/// anything else (a malformed answer, a card that does not prove it knows
/// the management key) fails the test.
fn refusal(r: Result<(), ClientError<core::convert::Infallible>>) -> StatusWord {
    match r {
        Ok(()) => StatusWord::Success,
        Err(ClientError::Status { sw, .. }) => sw,
        Err(e) => panic!("card proves it knows the key / answers well: {e}"),
    }
}

pub struct Host {
    pub card: Card,
}

impl Host {
    pub fn new() -> Host {
        Host { card: new_card() }
    }

    /// One raw exchange.
    pub fn raw(&mut self, apdu: &[u8]) -> Response {
        let out = self.card.process(apdu);
        Response::parse(&out).expect("a response always has a status word")
    }

    /// The card behind the PIV host client.
    fn client(&mut self) -> Client<&mut Card> {
        Client::new(&mut self.card)
    }

    /// One command with short/extended length as needed, following 61xx.
    pub fn send(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Response {
        self.client()
            .send(ins.into(), p1, p2, data)
            .expect("the card answers")
    }

    /// Sends `data` with command chaining in chunks of 255 bytes, short APDUs
    /// only (as ykman does with non-YubiKey readers), following 61xx.
    pub fn send_chained(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Response {
        self.client()
            .send_chained(ins.into(), p1, p2, data)
            .expect("chained chunk")
    }

    pub fn ok(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let r = self.send(ins, p1, p2, data);
        assert_eq!(r.sw, StatusWord::Success, "INS {ins:02X} {p1:02X} {p2:02X}");
        r.data.to_vec()
    }

    pub fn verify_pin(&mut self, pin: &[u8]) -> StatusWord {
        refusal(self.client().verify_pin(pin))
    }

    /// Mutual authentication with the management key, with a fixed
    /// challenge so that every run sends the same APDUs.
    pub fn auth(&mut self, alg: AlgorithmId, key: &[u8]) -> StatusWord {
        let k = ManagementKey::new(alg, key).unwrap();
        let challenge = vec![0x5A; k.block_size()];
        refusal(self.client().authenticate_with(&k, &challenge))
    }

    pub fn auth_default(&mut self) {
        assert_eq!(
            self.auth(AlgorithmId::Aes192, &DEFAULT_MGMT),
            StatusWord::Success
        );
    }

    /// GENERATE in a slot; returns the 7F49 template contents.
    pub fn generate(&mut self, slot: u8, alg: AlgorithmId, policies: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x80, 1, alg.into()];
        inner.extend_from_slice(policies);
        let r = self.send(0x47, 0, slot, &piv_applet::tlv::encode(0xAC, &inner));
        assert_eq!(r.sw, StatusWord::Success, "generate {alg:?} in {slot:02X}");
        piv_applet::tlv::find(&r.data, 0x7F49)
            .expect("7F49")
            .to_vec()
    }

    /// GENERAL AUTHENTICATE with `82 00` and one input TLV (81 challenge
    /// or 85 exponentiation), sent with command chaining; returns the 82
    /// value of the answer.
    fn general_authenticate(
        &mut self,
        slot: u8,
        alg: AlgorithmId,
        input_tag: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, StatusWord> {
        let mut inner = Vec::new();
        piv_applet::tlv::write(&mut inner, 0x82, &[]);
        piv_applet::tlv::write(&mut inner, input_tag, input);
        let r = self.send_chained(
            0x87,
            alg.into(),
            slot,
            &piv_applet::tlv::encode(0x7C, &inner),
        );
        if r.sw != StatusWord::Success {
            return Err(r.sw);
        }
        Ok(
            piv_applet::tlv::find(piv_applet::tlv::find(&r.data, 0x7C).unwrap(), 0x82)
                .unwrap()
                .to_vec(),
        )
    }

    /// Sign or decrypt; returns the 82 value.
    pub fn sign(
        &mut self,
        slot: u8,
        alg: AlgorithmId,
        input: &[u8],
    ) -> Result<Vec<u8>, StatusWord> {
        self.general_authenticate(slot, alg, 0x81, input)
    }

    /// Key agreement with a peer point; returns the shared secret.
    pub fn ecdh(
        &mut self,
        slot: u8,
        alg: AlgorithmId,
        point: &[u8],
    ) -> Result<Vec<u8>, StatusWord> {
        self.general_authenticate(slot, alg, 0x85, point)
    }

    pub fn put_data(&mut self, tag: &[u8], value: &[u8]) -> StatusWord {
        let mut d = piv_applet::tlv::encode(0x5C, tag);
        piv_applet::tlv::write(&mut d, 0x53, value);
        self.send(0xDB, 0x3F, 0xFF, &d).sw
    }

    pub fn get_data(&mut self, tag: &[u8]) -> Response {
        self.send(0xCB, 0x3F, 0xFF, &piv_applet::tlv::encode(0x5C, tag))
    }
}
