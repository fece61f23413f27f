"""Tests for memberlist-compatible AES-GCM encryption, the keyring and key parsing."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyserf.memberlist import lzw
from pyserf.memberlist.security import (
    ENCRYPTION_OVERHEAD_V1,
    DecryptError,
    Keyring,
    KeyringError,
    decrypt,
    encrypt,
    encrypted_overhead,
    generate_key,
    parse_key_b64,
    validate_key,
)

K16 = bytes(range(16))
K24 = bytes(range(100, 124))
K32 = bytes(range(200, 232))
OTHER = b"\x55" * 32

# A TCP stream the real serf agent (Go memberlist) sent back, encrypted with GO_KEY, for a
# push-pull we opened: [0x0a][u32 length][blob], with the 5 header bytes as AAD. The key
# is a throwaway generated for this capture.
GO_KEY = "jTGyxbQz2LRoBBDu4FGElo89K/xcS0vBtYpI68T8Eio="
GO_STREAM = base64.b64decode(
    "CgAAAPYBqbb8u0+vrWmRy3/8tifiRmutccoPI0SRw2yCzF8YlJjO+uPnqX+5shY5hsgMq5EwBO4IC+KJsiS059pk"
    "CW+CX0FNMwenj/DrmabVD/CMQPsVz2cnzMneOOdYHdlCQzp8eFD0otRyC2Ju1bVZNWzivIx86VfBww351vGKTboy"
    "DHNHB3WtNr0smrDtPZOlw9tRzEZ1y1F3GuR5MHbr1I0MkNPHBuTmwRxQAYtSJH3CJJuou9fHnqJHfveDTMQ76y75"
    "9UGFyRxegeE/8QQ1RrIkkJHtYfL8NCX+lwXw/WmNMvcoFGtl+GSwJU/hLhbjYUV8qPz5ehc="
)


# --- Blob layout and round trips ----------------------------------------------------------


@pytest.mark.parametrize("key", [K16, K24, K32], ids=["aes128", "aes192", "aes256"])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 1000, 70_000])
def test_round_trip_v1(key: bytes, size: int) -> None:
    plain = os.urandom(size)
    blob = encrypt(Keyring([key]), plain)
    assert blob[0] == 1
    assert len(blob) == size + ENCRYPTION_OVERHEAD_V1 == size + 29
    assert decrypt(Keyring([key]), blob) == plain


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 1000])
def test_round_trip_v0_pads_to_block(size: int) -> None:
    plain = os.urandom(size)
    blob = encrypt(K32, plain, version=0)
    assert blob[0] == 0
    # Version 0 always adds 1..16 bytes of padding.
    assert len(blob) == 1 + 12 + size + (16 - size % 16) + 16
    assert len(blob) - size <= encrypted_overhead(0) == 45
    assert decrypt(K32, blob) == plain


def test_default_version_is_1_and_nonces_are_random() -> None:
    a = encrypt(K16, b"same")
    b = encrypt(K16, b"same")
    assert a[0] == b[0] == 1
    assert a[1:13] != b[1:13]
    assert a != b


def test_overheads() -> None:
    assert ENCRYPTION_OVERHEAD_V1 == 29
    assert encrypted_overhead(1) == 29
    assert encrypted_overhead(0) == 45
    with pytest.raises(ValueError, match="Unsupported encryption version 2"):
        encrypted_overhead(2)


def test_blob_built_directly_with_aesgcm_decrypts() -> None:
    # Layout done by hand with the primitive: [version][nonce][ciphertext||tag].
    nonce = os.urandom(12)
    aad = b"\x0a\x00\x00\x00\x30"
    plain = b"hello memberlist"
    v1 = bytes([1]) + nonce + AESGCM(K24).encrypt(nonce, plain, aad)
    assert decrypt(Keyring([K24]), v1, aad) == plain
    padded = plain + bytes([16]) * 16  # 16 bytes of plaintext get a whole block of padding
    v0 = bytes([0]) + nonce + AESGCM(K24).encrypt(nonce, padded, aad)
    assert decrypt(Keyring([K24]), v0, aad) == plain


def test_our_blob_opens_with_aesgcm_directly() -> None:
    plain = b"x" * 21
    blob = encrypt(K32, plain, b"aad")
    assert AESGCM(K32).decrypt(blob[1:13], blob[13:], b"aad") == plain
    blob0 = encrypt(K32, plain, b"aad", version=0)
    assert AESGCM(K32).decrypt(blob0[1:13], blob0[13:], b"aad") == plain + bytes([11]) * 11


def test_go_produced_stream_decrypts() -> None:
    header, blob = GO_STREAM[:5], GO_STREAM[5:]
    assert header[0] == 0x0A
    assert struct.unpack(">I", header[1:])[0] == len(blob)
    assert blob[0] == 1  # serf always sends version 1
    plain = decrypt(Keyring([parse_key_b64(GO_KEY)]), blob, header)
    assert len(plain) == len(blob) - 29
    # Inside: a compress message wrapping the push-pull reply.
    assert plain[0] == 9
    body = msgpack.unpackb(plain[1:], raw=True)
    assert body[b"Algo"] == 0
    push_pull = lzw.decompress(body[b"Buf"])
    assert push_pull[0] == 6
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(push_pull[1:])
    header_map = next(unpacker)
    assert header_map[b"Nodes"] == 1
    assert next(unpacker)[b"Name"] == b"vec"
    # The stream header is authenticated: another AAD or key does not open it.
    with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
        decrypt(Keyring([parse_key_b64(GO_KEY)]), blob, b"")
    with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
        decrypt(Keyring([OTHER]), blob, header)


# --- Failures -----------------------------------------------------------------------------


def test_wrong_key() -> None:
    blob = encrypt(K16, b"secret")
    with pytest.raises(DecryptError) as info:
        decrypt(Keyring([K32, OTHER]), blob)
    assert str(info.value) == "No installed keys could decrypt the message"
    with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
        decrypt(Keyring([]), blob)


@pytest.mark.parametrize("version", [0, 1])
def test_tampering_is_detected(version: int) -> None:
    blob = encrypt(K32, b"payload that matters", version=version)
    for index in [1, 6, 12, 13, 20, len(blob) - 17, len(blob) - 1]:
        bad = bytearray(blob)
        bad[index] ^= 0x01
        with pytest.raises(DecryptError, match="No installed keys"):
            decrypt(K32, bytes(bad))
    with pytest.raises(DecryptError):
        decrypt(K32, blob[:-1])


def test_aad_mismatch_fails() -> None:
    blob = encrypt(K16, b"stream body", b"\x0a\x00\x00\x00\x28")
    assert decrypt(K16, blob, b"\x0a\x00\x00\x00\x28") == b"stream body"
    for aad in (b"", b"\x0a\x00\x00\x00\x29"):
        with pytest.raises(DecryptError, match="No installed keys"):
            decrypt(K16, blob, aad)
    # Empty AAD (UDP) is the same as no AAD.
    blob = encrypt(K16, b"packet")
    assert AESGCM(K16).decrypt(blob[1:13], blob[13:], None) == b"packet"


def test_short_and_unknown_inputs() -> None:
    with pytest.raises(DecryptError, match="^Cannot decrypt empty payload$"):
        decrypt(K16, b"")
    with pytest.raises(DecryptError, match="^Unsupported encryption version 2$"):
        decrypt(K16, bytes([2]) + bytes(40))
    with pytest.raises(DecryptError, match="^Unsupported encryption version 255$"):
        decrypt(K16, b"\xff")
    with pytest.raises(DecryptError, match="^Payload is too small to decrypt: 28$"):
        decrypt(K16, bytes([1]) + bytes(27))
    with pytest.raises(DecryptError, match="^Payload is too small to decrypt: 1$"):
        decrypt(K16, b"\x01")
    with pytest.raises(DecryptError, match="^Payload is too small to decrypt: 44$"):
        decrypt(K16, bytes([0]) + bytes(43))
    # The minimum sizes themselves get as far as trying the keys.
    with pytest.raises(DecryptError, match="No installed keys"):
        decrypt(K16, bytes([1]) + bytes(28))
    with pytest.raises(DecryptError, match="No installed keys"):
        decrypt(K16, bytes([0]) + bytes(44))


def test_bad_v0_padding_is_rejected() -> None:
    nonce = os.urandom(12)
    for padded in (b"abc" + bytes(13), b"x" * 15 + b"\x11", b"x" * 14 + b"\x01\x02"):
        blob = bytes([0]) + nonce + AESGCM(K16).encrypt(nonce, padded, None)
        with pytest.raises(DecryptError, match="padding"):
            decrypt(K16, blob)


def test_encrypt_argument_errors() -> None:
    with pytest.raises(KeyringError, match="^key size must be 16, 24 or 32 bytes$"):
        encrypt(b"short", b"x")
    with pytest.raises(KeyringError):
        encrypt(Keyring([]), b"x")
    with pytest.raises(ValueError, match="Unsupported encryption version 3"):
        encrypt(K16, b"x", version=3)
    assert issubclass(KeyringError, ValueError)
    assert issubclass(DecryptError, ValueError)


# --- Keyring ------------------------------------------------------------------------------


def test_keyring_validates_sizes() -> None:
    for bad in (b"", b"x" * 15, b"x" * 20, b"x" * 33):
        with pytest.raises(KeyringError) as info:
            Keyring([K16, bad])
        assert str(info.value) == "key size must be 16, 24 or 32 bytes"
    ring = Keyring([K16])
    with pytest.raises(KeyringError, match="key size must be 16, 24 or 32 bytes"):
        ring.add_key(b"x" * 20)
    assert ring.keys == [K16]
    assert validate_key(bytearray(K24)) == K24


def test_keyring_order_and_rotation() -> None:
    ring = Keyring([K16, K24, K16])
    assert ring.keys == [K16, K24]
    assert ring.primary == K16
    assert len(ring) == 2 and K24 in ring and K32 not in ring

    ring.add_key(K32)
    ring.add_key(K24)  # already installed: no change
    assert ring.keys == [K16, K24, K32]

    ring.use_key(K32)
    assert ring.keys == [K32, K16, K24]
    assert ring.primary == K32
    with pytest.raises(KeyringError) as info:
        ring.use_key(OTHER)
    assert str(info.value) == "Requested key is not in the keyring"

    with pytest.raises(KeyringError) as info:
        ring.remove_key(K32)
    assert str(info.value) == "Removing the primary key is not allowed"
    ring.remove_key(OTHER)  # absent: no-op
    ring.remove_key(K16)
    assert ring.keys == [K32, K24]

    # .keys is a copy.
    ring.keys.append(OTHER)
    assert ring.keys == [K32, K24]


def test_encrypt_uses_primary_and_decrypt_tries_all() -> None:
    ring = Keyring([K16, K24])
    blob = encrypt(ring, b"m1")
    assert decrypt(Keyring([K16]), blob) == b"m1"
    with pytest.raises(DecryptError):
        decrypt(Keyring([K24]), blob)

    ring.use_key(K24)
    blob = encrypt(ring, b"m2")
    assert decrypt(Keyring([K24]), blob) == b"m2"
    # A secondary key still opens messages from peers that have not switched yet.
    assert decrypt(ring, encrypt(K16, b"old")) == b"old"
    ring.remove_key(K16)
    with pytest.raises(DecryptError):
        decrypt(ring, encrypt(K16, b"old"))


def test_empty_keyring() -> None:
    ring = Keyring([])
    assert ring.primary is None and ring.keys == [] and not ring
    ring.remove_key(K16)
    ring.add_key(K16)
    assert ring.primary == K16


def test_repr_hides_keys() -> None:
    text = repr(Keyring([K16, K32]))
    assert "2 keys" in text
    assert K16.hex() not in text and repr(K16) not in text


# --- Key text -----------------------------------------------------------------------------

# Offsets as the real serf binary reports them for `serf agent -encrypt=<text>`.
SERF_BASE64_ERRORS = [
    ("abc", 0),
    ("ab=c", 2),
    ("AAAA=AAA", 4),
    ("AA=", 3),
    ("AA=A", 2),
    ("A===", 1),
    ("AAA*", 3),
    ("!AAA", 0),
    ("A" * 22 + "==x", 24),
    ("A" * 22 + "=", 23),
    ("AA==AA==", 4),
    ("\u00e9", 0),
    ("AAAA AAA", 4),
    ("AA\n=", 4),
    ("AA=\nx", 3),
    ("AAA=\nx", 5),
]


@pytest.mark.parametrize(("text", "offset"), SERF_BASE64_ERRORS)
def test_parse_key_base64_errors_match_serf(text: str, offset: int) -> None:
    with pytest.raises(KeyringError) as info:
        parse_key_b64(text)
    assert str(info.value) == f"illegal base64 data at input byte {offset}"


@pytest.mark.parametrize(
    "text", ["", "A" * 28, "A" * 23 + "=", "AAAA\nAA==", "AA=\n=", "AAA=\n", "AAAA"]
)
def test_parse_key_size_errors(text: str) -> None:
    # These decode fine (newlines are skipped like Go does) but are not AES key sizes.
    with pytest.raises(KeyringError) as info:
        parse_key_b64(text)
    assert str(info.value) == "key size must be 16, 24 or 32 bytes"


@pytest.mark.parametrize("key", [K16, K24, K32])
def test_parse_key_valid(key: bytes) -> None:
    text = base64.b64encode(key).decode()
    assert parse_key_b64(text) == key
    assert parse_key_b64(text[:10] + "\r\n" + text[10:] + "\n") == key


def test_parse_key_ignores_unused_trailing_bits() -> None:
    # Go's standard decoder is not strict: the spare bits of the last sextet may be set.
    assert parse_key_b64("A" * 21 + "B==") == bytes(16)
    assert parse_key_b64("A" * 42 + "B=") == bytes(32)


def test_generate_key() -> None:
    text = generate_key()
    key = parse_key_b64(text)
    assert len(key) == 32 and len(text) == 44
    assert base64.b64decode(text, validate=True) == key
    assert generate_key() != text


def test_cryptography_is_imported_lazily() -> None:
    code = (
        "import sys\n"
        "from pyserf.memberlist import security\n"
        "assert 'cryptography' not in sys.modules, 'imported eagerly'\n"
        "ring = security.Keyring([bytes(16)])\n"
        "security.parse_key_b64(security.generate_key())\n"
        "assert 'cryptography' not in sys.modules, 'imported by keyring/key parsing'\n"
        "assert security.decrypt(ring, security.encrypt(ring, b'x')) == b'x'\n"
        "assert 'cryptography' in sys.modules\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
