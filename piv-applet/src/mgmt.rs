//! The card management key (reference 9B): a block cipher key the host
//! proves knowledge of before administrative commands.

use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::enums::AlgorithmId;
use crate::keys::KeyError;

/// YubiKey factory management key.
pub const DEFAULT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// The 9B key; Debug shows only the algorithm.
#[derive(Clone)]
pub struct ManagementKey {
    alg: AlgorithmId,
    key: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ManagementKey")
            .field("algorithm", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ManagementKey {
    pub fn new(alg: AlgorithmId, key: &[u8]) -> Result<ManagementKey, KeyError> {
        match alg.symmetric_key_len() {
            Some(n) if n == key.len() => Ok(ManagementKey {
                alg,
                key: Zeroizing::new(key.to_vec()),
            }),
            Some(_) => Err(KeyError::InvalidKey(
                "management key length does not match its algorithm",
            )),
            None => Err(KeyError::UnsupportedAlgorithm),
        }
    }

    /// The factory key with 3DES (before firmware 5.7) or AES-192 (5.7+).
    pub fn default_for(alg: AlgorithmId) -> ManagementKey {
        let alg = if alg == AlgorithmId::TripleDes {
            alg
        } else {
            AlgorithmId::Aes192
        };
        ManagementKey {
            alg,
            key: Zeroizing::new(DEFAULT_KEY.to_vec()),
        }
    }

    pub fn algorithm(&self) -> AlgorithmId {
        self.alg
    }

    /// Raw key bytes, for the card file only.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    pub fn block_size(&self) -> usize {
        if self.alg == AlgorithmId::TripleDes {
            8
        } else {
            16
        }
    }

    fn crypt(&self, block: &[u8], encrypt: bool) -> Result<Vec<u8>, KeyError> {
        if block.len() != self.block_size() {
            return Err(KeyError::InvalidInput("not one cipher block"));
        }
        fn run<C: KeyInit + BlockEncrypt + BlockDecrypt>(
            key: &[u8],
            block: &[u8],
            encrypt: bool,
        ) -> Result<Vec<u8>, KeyError> {
            let c = C::new_from_slice(key).map_err(|_| KeyError::InvalidKey("key length"))?;
            let mut b = cipher::generic_array::GenericArray::clone_from_slice(block);
            if encrypt {
                c.encrypt_block(&mut b);
            } else {
                c.decrypt_block(&mut b);
            }
            Ok(b.to_vec())
        }
        match self.alg {
            AlgorithmId::TripleDes => run::<des::TdesEde3>(&self.key, block, encrypt),
            AlgorithmId::Aes128 => run::<aes::Aes128>(&self.key, block, encrypt),
            AlgorithmId::Aes192 => run::<aes::Aes192>(&self.key, block, encrypt),
            AlgorithmId::Aes256 => run::<aes::Aes256>(&self.key, block, encrypt),
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }

    /// One block in ECB mode, as GENERAL AUTHENTICATE uses it.
    pub fn encrypt_block(&self, block: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.crypt(block, true)
    }

    pub fn decrypt_block(&self, block: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.crypt(block, false)
    }

    /// Constant-time comparison of algorithm and key.
    pub fn ct_eq(&self, other: &ManagementKey) -> bool {
        self.alg == other.alg && bool::from(self.key.ct_eq(&other.key))
    }

    pub fn is_default(&self) -> bool {
        bool::from(self.key.as_slice().ct_eq(&DEFAULT_KEY[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers from `openssl enc -nopad -K <key> -<cipher>` on the
    /// block 00 01 .. (block size - 1).
    #[test]
    fn known_answers() {
        let aes256_key: Vec<u8> = DEFAULT_KEY
            .iter()
            .chain(&DEFAULT_KEY[..8])
            .copied()
            .collect();
        let cases = [
            (
                ManagementKey::default_for(AlgorithmId::TripleDes),
                "90152a4c1cf42780",
            ),
            (
                ManagementKey::default_for(AlgorithmId::Aes192),
                "3f92e2fce73f9d83187c140d035f7edc",
            ),
            (
                ManagementKey::new(AlgorithmId::Aes128, &DEFAULT_KEY[..16]).unwrap(),
                "eabb4337bb24e6b5fd696f8e857a4213",
            ),
            (
                ManagementKey::new(AlgorithmId::Aes256, &aes256_key).unwrap(),
                "98ea3764f97c45faa70de40fe3c72b56",
            ),
        ];
        for (key, expected) in cases {
            let block: Vec<u8> = (0..key.block_size() as u8).collect();
            let enc = key.encrypt_block(&block).unwrap();
            assert_eq!(hex::encode(&enc), expected, "{:?}", key.algorithm());
            assert_eq!(key.decrypt_block(&enc).unwrap(), block);
        }
        let aes = ManagementKey::default_for(AlgorithmId::Aes192);
        assert!(aes.encrypt_block(&[0; 8]).is_err());
        assert!(ManagementKey::new(AlgorithmId::Aes128, &[0; 24]).is_err());
        assert!(ManagementKey::new(AlgorithmId::Rsa2048, &[0; 24]).is_err());
        assert!(aes.is_default());
        assert!(format!("{aes:?}").contains("Aes192") && !format!("{aes:?}").contains("1, 2, 3"));
    }
}
