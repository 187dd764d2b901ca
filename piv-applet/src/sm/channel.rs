//! One secure messaging session: the keys, the encryption counter and the
//! two MAC chaining values, and the protection of each command and
//! response (SP 800-73-4 Part 2 §4.3–4.4).
//!
//! A protected command is CLA 0C with the data field
//! `[87 01||E(data)] [97 Le] 8E MAC8`; its response data is
//! `[87 01||E(data)] 99 SW1SW2 8E MAC8`. The MAC of a command is AES-CMAC
//! under SK_MAC over the previous command MAC (16 bytes) || the padded
//! header || the data objects before 8E; of a response, under SK_RMAC over
//! the previous response MAC || the data objects before 8E. Encryption is
//! AES-CBC under SK_ENC with the IV E(SK_ENC, counter) for a command and
//! E(SK_ENC, 80 || counter) for its response; the counter starts at 1 and
//! counts exchanges. The response MAC chain starting from zero of its own
//! is how OpenSC does it.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::cipher::{self, BLOCK};
use super::kdf::SessionKeys;
use super::{CipherSuite, SmError};
use crate::codec::Reader;
use crate::tlv;

/// The keys and chaining state of one session; dropping it wipes the keys.
pub struct Channel {
    suite: CipherSuite,
    mac: Zeroizing<Vec<u8>>,
    enc: Zeroizing<Vec<u8>>,
    rmac: Zeroizing<Vec<u8>>,
    counter: u128,
    command_mcv: [u8; BLOCK],
    response_mcv: [u8; BLOCK],
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("suite", &self.suite)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// A command after its protection was checked and removed.
pub struct OpenedCommand {
    pub data: Zeroizing<Vec<u8>>,
    /// Le from data object 97, if the command had one (0 means 256).
    pub le: Option<usize>,
}

const TAG_DATA: u32 = 0x87;
const TAG_LE: u32 = 0x97;
const TAG_STATUS: u32 = 0x99;
const TAG_MAC: u32 = 0x8E;
/// The padding-content indicator before the cryptogram in 87: 01, ISO
/// padding.
const PADDED: u8 = 0x01;
const MAC_LEN: usize = 8;

impl Channel {
    /// A session from freshly derived keys; the confirmation key is not
    /// kept (it served once, for the cryptogram).
    pub fn new(suite: CipherSuite, keys: SessionKeys) -> Channel {
        Channel {
            suite,
            mac: keys.mac,
            enc: keys.enc,
            rmac: keys.rmac,
            counter: 1,
            command_mcv: [0; BLOCK],
            response_mcv: [0; BLOCK],
        }
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    fn iv(&self, response: bool) -> [u8; BLOCK] {
        let mut block = self.counter.to_be_bytes();
        if response {
            block[0] |= 0x80;
        }
        cipher::encrypt_block(&self.enc, &mut block);
        block
    }

    fn encrypted(&self, data: &[u8], response: bool) -> Vec<u8> {
        let mut body = Zeroizing::new(cipher::pad(data));
        cipher::cbc_encrypt(&self.enc, &self.iv(response), &mut body);
        let mut value = Vec::with_capacity(1 + body.len());
        value.push(PADDED);
        value.extend_from_slice(&body);
        tlv::encode(TAG_DATA, &value)
    }

    fn decrypted(&self, value: &[u8], response: bool) -> Result<Zeroizing<Vec<u8>>, SmError> {
        let Some((&PADDED, cryptogram)) = value.split_first() else {
            return Err(SmError::Incorrect("padding indicator"));
        };
        let mut body = Zeroizing::new(cryptogram.to_vec());
        cipher::cbc_decrypt(&self.enc, &self.iv(response), &mut body)?;
        let len = cipher::unpadded_len(&body)?;
        body.truncate(len);
        Ok(body)
    }

    /// The header as the MAC sees it: CLA 0C INS P1 P2, padded.
    fn header(ins: u8, p1: u8, p2: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..5].copy_from_slice(&[0x0C, ins, p1, p2, 0x80]);
        h
    }

    /// The host's side: the data field of the protected command (sent with
    /// CLA 0C, the same INS P1 P2, and Le 00).
    pub fn protect_command(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<usize>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if !data.is_empty() {
            out = self.encrypted(data, false);
        }
        if let Some(le) = le {
            // One byte as OpenSC sends it; 256 is 00.
            tlv::write(&mut out, TAG_LE, &[le as u8]);
        }
        self.command_mcv = cipher::cmac(
            &self.mac,
            &[&self.command_mcv, &Self::header(ins, p1, p2), &out],
        );
        tlv::write(&mut out, TAG_MAC, &self.command_mcv[..MAC_LEN]);
        out
    }

    /// The card's side: checks the MAC of a protected command (its data
    /// field `data`, reassembled if it came chained) and decrypts it.
    pub fn open_command(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<OpenedCommand, SmError> {
        let objects = Objects::parse(data, &[TAG_DATA, TAG_LE])?;
        let mac = cipher::cmac(
            &self.mac,
            &[
                &self.command_mcv,
                &Self::header(ins, p1, p2),
                objects.covered,
            ],
        );
        if !bool::from(mac[..MAC_LEN].ct_eq(objects.mac)) {
            return Err(SmError::Incorrect("command MAC"));
        }
        self.command_mcv = mac;
        let le = match objects.get(TAG_LE) {
            None => None,
            Some([0]) => Some(256),
            Some([n]) => Some(usize::from(*n)),
            Some([0, 0]) => Some(65536),
            Some([h, l]) => Some(usize::from(u16::from_be_bytes([*h, *l]))),
            Some(_) => return Err(SmError::Incorrect("Le object length")),
        };
        let data = match objects.get(TAG_DATA) {
            Some(value) => self.decrypted(value, false)?,
            None => Zeroizing::new(Vec::new()),
        };
        Ok(OpenedCommand { data, le })
    }

    /// The card's side: the response data carrying `data` and the status
    /// word `sw` (the response itself then ends 9000, or 61xx while it is
    /// fetched with GET RESPONSE).
    pub fn protect_response(&mut self, data: &[u8], sw: u16) -> Vec<u8> {
        let mut out = Vec::new();
        if !data.is_empty() {
            out = self.encrypted(data, true);
        }
        tlv::write(&mut out, TAG_STATUS, &sw.to_be_bytes());
        self.response_mcv = cipher::cmac(&self.rmac, &[&self.response_mcv, &out]);
        tlv::write(&mut out, TAG_MAC, &self.response_mcv[..MAC_LEN]);
        self.counter += 1;
        out
    }

    /// The host's side: checks the MAC of a protected response's data and
    /// decrypts it; the data and the status word of the command.
    pub fn open_response(&mut self, data: &[u8]) -> Result<(Zeroizing<Vec<u8>>, u16), SmError> {
        let objects = Objects::parse(data, &[TAG_DATA, TAG_STATUS])?;
        let mac = cipher::cmac(&self.rmac, &[&self.response_mcv, objects.covered]);
        if !bool::from(mac[..MAC_LEN].ct_eq(objects.mac)) {
            return Err(SmError::Incorrect("response MAC"));
        }
        self.response_mcv = mac;
        let sw = match objects.get(TAG_STATUS) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            Some(_) => return Err(SmError::Incorrect("status object length")),
            None => return Err(SmError::Missing("status (99)")),
        };
        let plain = match objects.get(TAG_DATA) {
            Some(value) => self.decrypted(value, true)?,
            None => Zeroizing::new(Vec::new()),
        };
        self.counter += 1;
        Ok((plain, sw))
    }
}

/// The data objects of a protected message: those in `allowed`, each at
/// most once and in that order, then the MAC last.
struct Objects<'a> {
    found: Vec<(u32, &'a [u8])>,
    /// Everything before the MAC object: what the MAC covers.
    covered: &'a [u8],
    mac: &'a [u8],
}

impl<'a> Objects<'a> {
    fn parse(data: &'a [u8], allowed: &[u32]) -> Result<Objects<'a>, SmError> {
        let mut r = Reader::new(data);
        let mut found = Vec::new();
        let mut next = 0;
        loop {
            let start = data.len() - r.left();
            if r.left() == 0 {
                return Err(SmError::Missing("MAC (8E)"));
            }
            let t =
                tlv::read_tlv(&mut r).map_err(|_| SmError::Incorrect("data object encoding"))?;
            if t.tag == TAG_MAC {
                if t.value.len() != MAC_LEN || r.left() != 0 {
                    return Err(SmError::Incorrect("MAC object"));
                }
                return Ok(Objects {
                    found,
                    covered: &data[..start],
                    mac: t.value,
                });
            }
            match allowed[next..].iter().position(|&a| a == t.tag) {
                Some(i) => next += i + 1,
                None => return Err(SmError::Incorrect("unexpected data object")),
            }
            found.push((t.tag, t.value));
        }
    }

    fn get(&self, tag: u32) -> Option<&'a [u8]> {
        self.found.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }
}
