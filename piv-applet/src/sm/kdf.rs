//! Session keys from the shared secret: the single-step KDF of SP 800-56A
//! §5.8.1 with the OtherInfo layout of SP 800-73-4 Part 2 §4.1.6, and the
//! key confirmation of §4.1.7.

use sha2::Digest;
use zeroize::Zeroizing;

use super::cipher;
use super::CipherSuite;

/// Everything both parties know after the key establishment exchange that
/// goes into OtherInfo, in the order it goes there.
pub struct OtherInfo<'a> {
    /// ID_sH: the host's 8-byte identifier.
    pub host_id: [u8; 8],
    /// CB_H: the host's control byte (0 = no persistent binding).
    pub host_control: u8,
    /// The host's ephemeral public point as `x || y` (no 04); OtherInfo
    /// takes its first 16 bytes (T16(Q_eH)).
    pub host_point: &'a [u8],
    /// ID_sICC: the first 8 bytes of SHA-256 of the card's CVC.
    pub card_id: [u8; 8],
    /// N_ICC: the card's nonce.
    pub nonce: &'a [u8],
    /// CB_ICC: the card's control byte.
    pub card_control: u8,
}

impl OtherInfo<'_> {
    /// Each field as length byte then value, after the algorithm
    /// identifier (four times 09 for CS2, 0D for CS7), as OpenSC builds it.
    pub fn encode(&self, suite: CipherSuite) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        let mut field = |v: &[u8]| {
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        };
        field(&[suite.kdf_algorithm_byte(); 4]);
        field(&self.host_id);
        field(&[self.host_control]);
        field(&self.host_point[..16.min(self.host_point.len())]);
        field(&self.card_id);
        field(self.nonce);
        field(&[self.card_control]);
        out
    }
}

/// The four AES keys of one session. Dropping them wipes them.
pub struct SessionKeys {
    /// SK_CFRM: only for the key confirmation cryptogram.
    pub confirm: Zeroizing<Vec<u8>>,
    /// SK_MAC: command MACs.
    pub mac: Zeroizing<Vec<u8>>,
    /// SK_ENC: command and response encryption.
    pub enc: Zeroizing<Vec<u8>>,
    /// SK_RMAC: response MACs.
    pub rmac: Zeroizing<Vec<u8>>,
}

/// Derives the session keys: Hash(counter || Z || OtherInfo) for counter
/// 1, 2, ... until four keys' worth of bytes, split in order.
pub fn derive(suite: CipherSuite, z: &[u8], other_info: &[u8]) -> SessionKeys {
    let n = suite.key_len();
    let mut material = Zeroizing::new(Vec::with_capacity(4 * n + 48));
    let mut counter: u32 = 1;
    while material.len() < 4 * n {
        let block = match suite {
            CipherSuite::Cs2 => hash::<sha2::Sha256>(counter, z, other_info),
            CipherSuite::Cs7 => hash::<sha2::Sha384>(counter, z, other_info),
        };
        material.extend_from_slice(&block);
        counter += 1;
    }
    let key = |i: usize| Zeroizing::new(material[i * n..(i + 1) * n].to_vec());
    SessionKeys {
        confirm: key(0),
        mac: key(1),
        enc: key(2),
        rmac: key(3),
    }
}

fn hash<D: Digest>(counter: u32, z: &[u8], other_info: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut d = D::new();
    d.update(counter.to_be_bytes());
    d.update(z);
    d.update(other_info);
    Zeroizing::new(d.finalize().to_vec())
}

/// The card's key confirmation: AES-CMAC under SK_CFRM of "KC_1_V" ||
/// ID_sICC || ID_sH || Q_eH (x || y). SP 800-56A's unilateral confirmation
/// by party V; OpenSC checks all 16 bytes.
pub fn auth_cryptogram(
    confirm_key: &[u8],
    card_id: &[u8; 8],
    host_id: &[u8; 8],
    host_point: &[u8],
) -> [u8; 16] {
    cipher::cmac(confirm_key, &[b"KC_1_V", card_id, host_id, host_point])
}

/// ID_sICC: the first 8 bytes of SHA-256 over the whole CVC.
pub fn card_id(cvc_der: &[u8]) -> [u8; 8] {
    let h = sha2::Sha256::digest(cvc_der);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}
