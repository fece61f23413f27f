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
from pyserf.memberlist.codec import MsgType
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
from tests.unit.test_codec import all_parts, datagrams, load_fixture, streams

K16 = bytes(range(16))
K24 = bytes(range(100, 124))
K32 = bytes(range(200, 232))
OTHER = b"\x55" * 32

# The serf 0.9.4 capture encrypted with a fixed throwaway key (tests/fixtures/serf-0.9.4).
ENCRYPTED = "wire-encrypted.json"


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


def test_serf_datagrams_decrypt_with_the_test_key() -> None:
    capture = load_fixture(ENCRYPTED)
    ring = Keyring([parse_key_b64(capture["key"])])
    captured = datagrams(capture)
    assert len(captured) > 50
    for _, wire, plain in captured:
        # [version 1][12-byte nonce][ciphertext][16-byte tag]; serf always sends version 1.
        assert wire[0] == 1 and len(wire) == len(plain) + ENCRYPTION_OVERHEAD_V1
        assert AESGCM(ring.primary).decrypt(wire[1:13], wire[13:], b"") == plain
        assert plain[0] in {m.value for m in MsgType} - {MsgType.ENCRYPT}
        with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
            decrypt(Keyring([OTHER]), wire)
        # Our encryption of the same plaintext has serf's layout and opens again.
        ours = encrypt(ring, plain)
        assert ours[0] == 1 and len(ours) == len(wire) and ours != wire
        assert decrypt(ring, ours) == plain
    # The plaintexts are memberlist messages pyserf decodes (test_codec checks them in full).
    assert {part.kind for part in all_parts(ENCRYPTED)} >= {"ping", "ack", "alive", "user:query"}


def test_serf_streams_decrypt_with_the_header_as_aad() -> None:
    capture = load_fixture(ENCRYPTED)
    ring = Keyring([parse_key_b64(capture["key"])])
    captured = streams(capture)
    assert len(captured) == 4
    for _, wire, plain in captured:
        header, blob = wire[:5], wire[5:]
        assert header[0] == MsgType.ENCRYPT
        assert struct.unpack(">I", header[1:])[0] == len(blob)
        assert blob[0] == 1 and len(plain) == len(blob) - ENCRYPTION_OVERHEAD_V1
        # Inside: a compress message wrapping the push-pull.
        assert plain[0] == MsgType.COMPRESS
        assert lzw.decompress(msgpack.unpackb(plain[1:], raw=True)[b"Buf"])[0] == MsgType.PUSH_PULL
        # The stream header is authenticated: another AAD or key does not open it.
        with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
            decrypt(ring, blob, b"")
        with pytest.raises(DecryptError, match="No installed keys could decrypt the message"):
            decrypt(Keyring([OTHER]), blob, header)
        assert decrypt(ring, encrypt(ring, plain, header), header) == plain


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

def serf_key_errors() -> list[tuple[str, str]]:
    """(key text, message) for every `serf agent -encrypt=<text>` case in errors.json."""
    cases = []
    for case in load_fixture("errors.json")["cases"]:
        if case["id"].startswith("encrypt:"):
            message = case["stdout"].rstrip("\n").rsplit(": ", 1)[-1]
            cases.append((case["id"].removeprefix("encrypt:"), message))
    return cases


@pytest.mark.parametrize(("text", "message"), serf_key_errors())
def test_parse_key_errors_match_serf(text: str, message: str) -> None:
    # serf prints "Invalid encryption key: illegal base64 data at input byte N" for bad base64
    # and memberlist's "...: key size must be 16, 24 or 32 bytes" for a wrong length.
    with pytest.raises(KeyringError) as info:
        parse_key_b64(text)
    assert str(info.value) == message


def test_serf_key_error_cases_were_captured() -> None:
    messages = [m for _, m in serf_key_errors()]
    assert len(messages) >= 20 and "key size must be 16, 24 or 32 bytes" in messages
    assert sum(m.startswith("illegal base64 data at input byte ") for m in messages) >= 20


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
