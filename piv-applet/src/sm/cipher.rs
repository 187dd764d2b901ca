//! AES for secure messaging at either key size: one block (the IV is the
//! encrypted counter), CBC over whole blocks, and CMAC.

use aes::cipher::{
    block_padding::NoPadding, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit,
};
use cmac::Mac;

use super::SmError;

pub(crate) const BLOCK: usize = 16;

/// Encrypts one block under `key` (16 or 32 bytes).
pub(crate) fn encrypt_block(key: &[u8], block: &mut [u8; BLOCK]) {
    let b = aes::Block::from_mut_slice(block);
    match key.len() {
        16 => aes::Aes128::new_from_slice(key)
            .expect("16-byte key")
            .encrypt_block(b),
        _ => aes::Aes256::new_from_slice(key)
            .expect("32-byte key")
            .encrypt_block(b),
    }
}

/// AES-CBC encryption in place; `buf` is whole blocks (already padded).
pub(crate) fn cbc_encrypt(key: &[u8], iv: &[u8; BLOCK], buf: &mut [u8]) {
    let len = buf.len();
    let done = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .expect("16-byte key")
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .is_ok(),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .expect("32-byte key")
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .is_ok(),
    };
    debug_assert!(done, "callers pass whole blocks");
}

/// AES-CBC decryption in place; `buf` must be whole blocks.
pub(crate) fn cbc_decrypt(key: &[u8], iv: &[u8; BLOCK], buf: &mut [u8]) -> Result<(), SmError> {
    if buf.is_empty() || !buf.len().is_multiple_of(BLOCK) {
        return Err(SmError::Incorrect("encrypted data is not whole blocks"));
    }
    let ok = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .expect("16-byte key")
            .decrypt_padded_mut::<NoPadding>(buf)
            .is_ok(),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .expect("32-byte key")
            .decrypt_padded_mut::<NoPadding>(buf)
            .is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(SmError::Incorrect("encrypted data is not whole blocks"))
    }
}

/// AES-CMAC over the concatenation of `parts`.
pub(crate) fn cmac(key: &[u8], parts: &[&[u8]]) -> [u8; BLOCK] {
    fn run<M: Mac>(mut m: M, parts: &[&[u8]]) -> [u8; BLOCK] {
        for p in parts {
            m.update(p);
        }
        let mut out = [0u8; BLOCK];
        out.copy_from_slice(&m.finalize().into_bytes()[..BLOCK]);
        out
    }
    match key.len() {
        16 => run(
            <cmac::Cmac<aes::Aes128> as KeyInit>::new_from_slice(key).expect("16-byte key"),
            parts,
        ),
        _ => run(
            <cmac::Cmac<aes::Aes256> as KeyInit>::new_from_slice(key).expect("32-byte key"),
            parts,
        ),
    }
}

/// ISO/IEC 7816-4 padding: 80 then zeros up to the next whole block, always
/// at least one byte (SP 800-73-4 Part 2 §4.4: 1 to 16 bytes).
pub(crate) fn pad(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() / BLOCK + 1) * BLOCK);
    out.extend_from_slice(data);
    out.push(0x80);
    while !out.len().is_multiple_of(BLOCK) {
        out.push(0);
    }
    out
}

/// The length of `padded` without its padding, which must sit in the last
/// block.
pub(crate) fn unpadded_len(padded: &[u8]) -> Result<usize, SmError> {
    let floor = padded.len().saturating_sub(BLOCK);
    let mut i = padded.len();
    while i > floor {
        i -= 1;
        match padded[i] {
            0x00 => continue,
            0x80 => return Ok(i),
            _ => break,
        }
    }
    Err(SmError::Incorrect("padding"))
}
