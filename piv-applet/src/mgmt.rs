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
    /// A key of `alg`: 3DES (24 bytes), AES-128 (16), AES-192 (24) or
    /// AES-256 (32). Another algorithm or length is `InvalidKey`.
    pub fn new(alg: AlgorithmId, key: &[u8]) -> Result<ManagementKey, KeyError> {
        match alg.symmetric_key_len() {
            Some(n) if n == key.len() => Ok(ManagementKey {
                alg,
                key: Zeroizing::new(key.to_vec()),
            }),
            Some(_) => Err(KeyError::InvalidKey(
                "management key length does not match its algorithm",
            )),
            None => Err(KeyError::InvalidKey("not a management key algorithm")),
        }
    }

    /// The factory key with 3DES (before firmware 5.7) or AES-192 (5.7+):
    /// `TripleDes` gives 3DES, any other algorithm AES-192 (the only other
    /// algorithm a YubiKey ships its default key with).
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

    /// 8 for 3DES, 16 for AES.
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

    /// One block in ECB mode.
    pub fn decrypt_block(&self, block: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.crypt(block, false)
    }

    /// Constant-time comparison of algorithm and key.
    pub fn ct_eq(&self, other: &ManagementKey) -> bool {
        self.alg == other.alg && bool::from(self.key.ct_eq(&other.key))
    }

    /// Whether this is the factory key (3DES or AES-192 with the default
    /// bytes).
    pub fn is_default(&self) -> bool {
        bool::from(self.key.as_slice().ct_eq(&DEFAULT_KEY[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::openssl_cli::{openssl, Dir};

    fn kat(alg: AlgorithmId, key: &str, plain: &str, cipher: &str) {
        let k = ManagementKey::new(alg, &hex::decode(key).unwrap()).unwrap();
        let p = hex::decode(plain).unwrap();
        let c = k.encrypt_block(&p).unwrap();
        assert_eq!(hex::encode(&c), cipher, "{alg:?}");
        assert_eq!(k.decrypt_block(&c).unwrap(), p, "{alg:?}");
    }

    /// Published known answers: FIPS-197 appendix C (AES) and the classic
    /// DES example "Now is t" (3DES with K1 = K2 = K3 is single DES).
    #[test]
    fn published_known_answers() {
        let plain = "00112233445566778899aabbccddeeff";
        kat(
            AlgorithmId::Aes128,
            "000102030405060708090a0b0c0d0e0f",
            plain,
            "69c4e0d86a7b0430d8cdb78070b4c55a",
        );
        kat(
            AlgorithmId::Aes192,
            "000102030405060708090a0b0c0d0e0f1011121314151617",
            plain,
            "dda97ca4864cdfe06eaf70a0ec0d7191",
        );
        kat(
            AlgorithmId::Aes256,
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            plain,
            "8ea2b7ca516745bfeafc49904b496089",
        );
        kat(
            AlgorithmId::TripleDes,
            "0123456789abcdef0123456789abcdef0123456789abcdef",
            "4e6f772069732074",
            "3fa40e8a984d4815",
        );
    }

    /// The default key, computed once with `openssl enc -nopad -K <key>
    /// -des-ede3 / -aes-128-ecb / -aes-192-ecb / -aes-256-ecb` on the block
    /// 00 01 .. (block size - 1).
    #[test]
    fn default_key_known_answers() {
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
    }

    /// Random keys and blocks, checked against `openssl enc` live.
    #[test]
    fn openssl_agrees_on_every_cipher() {
        use rand_core::{OsRng, RngCore};
        let dir = Dir::new();
        for (alg, cipher) in [
            (AlgorithmId::TripleDes, "-des-ede3"),
            (AlgorithmId::Aes128, "-aes-128-ecb"),
            (AlgorithmId::Aes192, "-aes-192-ecb"),
            (AlgorithmId::Aes256, "-aes-256-ecb"),
        ] {
            for _ in 0..3 {
                let mut key = vec![0u8; alg.symmetric_key_len().unwrap()];
                OsRng.fill_bytes(&mut key);
                let k = ManagementKey::new(alg, &key).unwrap();
                let mut block = vec![0u8; k.block_size()];
                OsRng.fill_bytes(&mut block);
                let input = dir.write("block.bin", &block);
                let key_hex = hex::encode(&key);
                let out = openssl(&["enc", cipher, "-nopad", "-K", &key_hex, "-in", &input]);
                assert_eq!(k.encrypt_block(&block).unwrap(), out.stdout, "{alg:?}");
                let out = openssl(&["enc", "-d", cipher, "-nopad", "-K", &key_hex, "-in", &input]);
                assert_eq!(k.decrypt_block(&block).unwrap(), out.stdout, "{alg:?}");
            }
        }
    }

    #[test]
    fn constructor_and_block_checks() {
        use AlgorithmId::*;
        for (alg, len, block) in [
            (TripleDes, 24, 8),
            (Aes128, 16, 16),
            (Aes192, 24, 16),
            (Aes256, 32, 16),
        ] {
            let k = ManagementKey::new(alg, &vec![7; len]).unwrap();
            assert_eq!(
                (k.algorithm(), k.key_bytes(), k.block_size()),
                (alg, &vec![7; len][..], block)
            );
            for wrong in [0, 8, 16, 24, 32, 33] {
                if wrong != len {
                    assert!(matches!(
                        ManagementKey::new(alg, &vec![7; wrong]),
                        Err(KeyError::InvalidKey(_))
                    ));
                }
            }
            for bad in [0, block - 1, block + 1, 2 * block] {
                assert!(matches!(
                    k.encrypt_block(&vec![0; bad]),
                    Err(KeyError::InvalidInput(_))
                ));
                assert!(matches!(
                    k.decrypt_block(&vec![0; bad]),
                    Err(KeyError::InvalidInput(_))
                ));
            }
        }
        for alg in [Rsa2048, EccP256, PinPuk, Unknown(0x0B)] {
            assert!(matches!(
                ManagementKey::new(alg, &[0; 24]),
                Err(KeyError::InvalidKey(_))
            ));
        }
    }

    #[test]
    fn defaults_equality_and_debug() {
        let tdes = ManagementKey::default_for(AlgorithmId::TripleDes);
        let aes = ManagementKey::default_for(AlgorithmId::Aes192);
        assert_eq!(tdes.algorithm(), AlgorithmId::TripleDes);
        assert_eq!(aes.algorithm(), AlgorithmId::Aes192);
        assert_eq!(
            ManagementKey::default_for(AlgorithmId::Aes256).algorithm(),
            AlgorithmId::Aes192
        );
        assert_eq!(aes.key_bytes(), DEFAULT_KEY);
        assert!(tdes.is_default() && aes.is_default());
        assert!(aes.ct_eq(&aes.clone()));
        assert!(aes.ct_eq(&ManagementKey::new(AlgorithmId::Aes192, &DEFAULT_KEY).unwrap()));
        assert!(!aes.ct_eq(&tdes), "same bytes, other algorithm");
        let mut other = DEFAULT_KEY;
        other[23] ^= 1;
        let changed = ManagementKey::new(AlgorithmId::Aes192, &other).unwrap();
        assert!(!changed.is_default() && !aes.ct_eq(&changed));
        let short = ManagementKey::new(AlgorithmId::Aes128, &DEFAULT_KEY[..16]).unwrap();
        assert!(!short.is_default() && !short.ct_eq(&aes));
        let shown = format!("{aes:?} {aes:#?}");
        assert!(shown.contains("Aes192"));
        assert!(
            !shown.contains("1, 2, 3") && !shown.contains("0102"),
            "{shown}"
        );
    }
}
