#!/usr/bin/env python3
"""Known answers for piv-applet's secure messaging steps, computed with
pyca/cryptography (ConcatKDFHash, CMAC, AES-CBC/ECB), an implementation this
project did not write. The layouts (OtherInfo, the padded header, the data
objects) follow SP 800-73-4 Part 2 §4 as OpenSC's card-piv.c builds them.
Run: python3 sm-kat.py  (prints the values the Rust tests hold)."""
from cryptography.hazmat.primitives import hashes, cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash


def aes_cmac(key, data):
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def ecb(key, block):
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def cbc(key, iv, data):
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(data) + e.finalize()


def pad(data):
    out = data + b"\x80"
    while len(out) % 16:
        out += b"\x00"
    return out


def tlv(tag, value):
    assert len(value) < 128 and tag < 256
    return bytes([tag, len(value)]) + value


def lv(v):
    return bytes([len(v)]) + v


for name, alg_byte, hash_alg, klen, nlen, flen in [
    ("CS2", 0x09, hashes.SHA256(), 16, 16, 32),
    ("CS7", 0x0D, hashes.SHA384(), 32, 24, 48),
]:
    z = bytes(range(1, flen + 1))
    host_id = b"host-id1"
    host_point = bytes((0xA0 + i) & 0xFF for i in range(2 * flen))  # x || y
    card_id = bytes.fromhex("0102030405060708")
    nonce = bytes((0x30 + i) for i in range(nlen))
    other = (lv(bytes([alg_byte] * 4)) + lv(host_id) + lv(b"\x00")
             + lv(host_point[:16]) + lv(card_id) + lv(nonce) + lv(b"\x00"))
    keys = ConcatKDFHash(algorithm=hash_alg, length=4 * klen, otherinfo=other).derive(z)
    cfrm, smac, senc, srmac = (keys[i * klen:(i + 1) * klen] for i in range(4))
    crypt = aes_cmac(cfrm, b"KC_1_V" + card_id + host_id + host_point)
    print(name, "keys", keys.hex())
    print(name, "cryptogram", crypt.hex())

    # First exchange: GET DATA Discovery (5C 01 7E) with Le 256, answered
    # with 7E 03 01 02 03 and 9000.
    counter = (1).to_bytes(16, "big")
    iv = ecb(senc, counter)
    enc = b"\x01" + cbc(senc, iv, pad(bytes.fromhex("5C017E")))
    objects = tlv(0x87, enc) + tlv(0x97, b"\x00")
    header = pad(bytes.fromhex("0CCB3FFF"))
    mcv = aes_cmac(smac, bytes(16) + header + objects)
    print(name, "command", (objects + tlv(0x8E, mcv[:8])).hex())
    riv = ecb(senc, bytes([0x80]) + counter[1:])
    renc = b"\x01" + cbc(senc, riv, pad(bytes.fromhex("7E03010203")))
    robjects = tlv(0x87, renc) + tlv(0x99, bytes.fromhex("9000"))
    rmcv = aes_cmac(srmac, bytes(16) + robjects)
    print(name, "response", (robjects + tlv(0x8E, rmcv[:8])).hex())
    # Second exchange: VERIFY (no Le), answered 63C2 with no data; the MAC
    # chains from the first exchange's full 16-byte values.
    counter = (2).to_bytes(16, "big")
    iv = ecb(senc, counter)
    enc = b"\x01" + cbc(senc, iv, pad(b"123456\xff\xff"))
    objects = tlv(0x87, enc)
    header = pad(bytes.fromhex("0C200080"))
    mcv = aes_cmac(smac, mcv + header + objects)
    print(name, "command2", (objects + tlv(0x8E, mcv[:8])).hex())
    robjects = tlv(0x99, bytes.fromhex("63C2"))
    rmcv = aes_cmac(srmac, rmcv + robjects)
    print(name, "response2", (robjects + tlv(0x8E, rmcv[:8])).hex())
