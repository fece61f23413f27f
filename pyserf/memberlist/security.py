"""memberlist's AES-GCM message encryption and the keyring that feeds it.

An encrypted blob is ``[version u8][12-byte random nonce][ciphertext || 16-byte tag]``.
Version 0 PKCS#7-pads the plaintext to a multiple of 16 bytes before sealing; version 1
(what serf always sends, since it runs memberlist protocol 2) does not pad. Keys of 16, 24
or 32 bytes select AES-128/192/256.

``cryptography`` is imported on first use only: an agent without a key never needs it, and
loading it costs several MiB of resident memory per process.

Error texts copy memberlist 0.2.2 and serf so that logs and RPC errors read the same as the
Go agent's.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_ENCRYPTION_VERSION",
    "ENCRYPTION_OVERHEAD_V1",
    "KEY_SIZES",
    "DecryptError",
    "Keyring",
    "KeyringError",
    "decrypt",
    "encrypt",
    "encrypted_overhead",
    "generate_key",
    "parse_key_b64",
    "validate_key",
]

KEY_SIZES = (16, 24, 32)
DEFAULT_ENCRYPTION_VERSION = 1
_MAX_VERSION = 1
_VERSION_SIZE = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_BLOCK_SIZE = 16

# Version byte + nonce + tag: the exact growth of a version 1 message.
ENCRYPTION_OVERHEAD_V1 = _VERSION_SIZE + _NONCE_SIZE + _TAG_SIZE
# Version 0 may add up to a whole block of padding on top.
_ENCRYPTION_OVERHEAD_V0 = ENCRYPTION_OVERHEAD_V1 + _BLOCK_SIZE

_KEY_SIZE_ERROR = "key size must be 16, 24 or 32 bytes"


class KeyringError(ValueError):
    """A key has the wrong size or a keyring change is not allowed."""


class DecryptError(ValueError):
    """An encrypted message could not be opened with any installed key."""


def validate_key(key: bytes) -> bytes:
    """Return ``key`` as bytes if it has an AES key size, as memberlist insists."""
    key = bytes(key)
    if len(key) not in KEY_SIZES:
        raise KeyringError(_KEY_SIZE_ERROR)
    return key


class Keyring:
    """Ordered set of keys; index 0 is the primary used for sending.

    Every change installs a fresh list, so a reader that grabbed ``_keys`` (for example a
    decrypt in progress) never sees it change underneath it.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: list[bytes]) -> None:
        self._keys: list[bytes] = []
        for key in keys:
            self.add_key(key)

    @property
    def keys(self) -> list[bytes]:
        """A copy of the installed keys, primary first."""
        return list(self._keys)

    @property
    def primary(self) -> bytes | None:
        """The key messages are encrypted with, or None for an empty keyring."""
        keys = self._keys
        return keys[0] if keys else None

    def add_key(self, key: bytes) -> None:
        """Install ``key`` for decryption; it becomes primary only if the ring was empty."""
        key = validate_key(key)
        if key not in self._keys:
            self._keys = [*self._keys, key]

    def use_key(self, key: bytes) -> None:
        """Make an installed key the primary; peers should already have it."""
        key = bytes(key)
        if key not in self._keys:
            raise KeyringError("Requested key is not in the keyring")
        self._keys = [key, *(k for k in self._keys if k != key)]

    def remove_key(self, key: bytes) -> None:
        """Drop a secondary key; removing an absent key is a no-op like in memberlist."""
        key = bytes(key)
        if self._keys and key == self._keys[0]:
            raise KeyringError("Removing the primary key is not allowed")
        if key in self._keys:
            self._keys = [k for k in self._keys if k != key]

    def __len__(self) -> int:
        # An empty keyring means encryption is off, as in memberlist, so it is falsy.
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __repr__(self) -> str:
        # Never print key material.
        return f"Keyring(<{len(self._keys)} keys>)"


# --- AES-GCM -----------------------------------------------------------------------------

_aesgcm_class: Any = None
_invalid_tag: Any = None
_aead_cache: dict[bytes, AESGCM] = {}
_AEAD_CACHE_LIMIT = 64


def _load_cryptography() -> None:
    """Import the AES-GCM primitives; deferred so unencrypted agents never load them."""
    global _aesgcm_class, _invalid_tag
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _aesgcm_class = AESGCM
    _invalid_tag = InvalidTag


def _aead(key: bytes) -> AESGCM:
    """Return a cached AESGCM for ``key``; building one re-expands the AES key schedule."""
    aead = _aead_cache.get(key)
    if aead is None:
        if _aesgcm_class is None:
            _load_cryptography()
        if len(_aead_cache) >= _AEAD_CACHE_LIMIT:
            # Keys rotate rarely; forgetting everything keeps the cache bounded and simple.
            _aead_cache.clear()
        aead = _aesgcm_class(key)
        _aead_cache[key] = aead
    return aead


def encrypted_overhead(version: int) -> int:
    """Largest number of bytes encryption adds for ``version`` (what size budgets reserve)."""
    if version == 1:
        return ENCRYPTION_OVERHEAD_V1
    if version == 0:
        return _ENCRYPTION_OVERHEAD_V0
    raise ValueError(f"Unsupported encryption version {version}")


def encrypt(
    keyring_or_key: Keyring | bytes,
    plaintext: bytes,
    aad: bytes = b"",
    version: int = DEFAULT_ENCRYPTION_VERSION,
) -> bytes:
    """Seal ``plaintext`` with the primary key into memberlist's versioned blob."""
    if isinstance(keyring_or_key, Keyring):
        key = keyring_or_key.primary
        if key is None:
            raise KeyringError("No primary key is installed")
    else:
        key = validate_key(keyring_or_key)
    if version == 0:
        pad = _BLOCK_SIZE - len(plaintext) % _BLOCK_SIZE
        plaintext = bytes(plaintext) + bytes((pad,)) * pad
    elif version != 1:
        raise ValueError(f"Unsupported encryption version {version}")
    nonce = os.urandom(_NONCE_SIZE)
    sealed = _aead(key).encrypt(nonce, plaintext, aad)
    return bytes((version,)) + nonce + sealed


def decrypt(keyring: Keyring | bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Open a blob with each installed key in turn, primary first."""
    if not blob:
        raise DecryptError("Cannot decrypt empty payload")
    version = blob[0]
    if version > _MAX_VERSION:
        raise DecryptError(f"Unsupported encryption version {version}")
    # Smallest valid blob: version 1 with an empty plaintext, or version 0 with a full
    # block of padding.
    minimum = ENCRYPTION_OVERHEAD_V1 if version == 1 else _ENCRYPTION_OVERHEAD_V0
    if len(blob) < minimum:
        raise DecryptError(f"Payload is too small to decrypt: {len(blob)}")
    keys = keyring._keys if isinstance(keyring, Keyring) else [validate_key(keyring)]
    nonce = bytes(blob[_VERSION_SIZE : _VERSION_SIZE + _NONCE_SIZE])
    sealed = bytes(blob[_VERSION_SIZE + _NONCE_SIZE :])
    for key in keys:
        aead = _aead(key)
        try:
            plain = aead.decrypt(nonce, sealed, aad)
        except _invalid_tag:
            continue
        return _unpad(plain) if version == 0 else plain
    raise DecryptError("No installed keys could decrypt the message")


def _unpad(plain: bytes) -> bytes:
    """Strip version 0's PKCS#7 padding, refusing padding a correct sender cannot produce."""
    pad = plain[-1] if plain else 0
    valid = (
        1 <= pad <= _BLOCK_SIZE
        and len(plain) % _BLOCK_SIZE == 0
        and plain[-pad:] == bytes((pad,)) * pad
    )
    if not valid:
        raise DecryptError("Invalid PKCS#7 padding in decrypted message")
    return plain[:-pad]


# --- Key text ----------------------------------------------------------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES = {c: i for i, c in enumerate(_B64_ALPHABET)}
_NEWLINES = (0x0A, 0x0D)
_PAD = 0x3D  # "="


def _corrupt(offset: int) -> KeyringError:
    return KeyringError(f"illegal base64 data at input byte {offset}")


def go_std_b64decode(src: bytes) -> bytes:
    """Decode padded standard base64 exactly as Go's ``StdEncoding.DecodeString`` does.

    Python's decoder accepts and rejects different inputs and reports no offsets; serf users
    see Go's ``illegal base64 data at input byte N``, so the same walk is reproduced here:
    4-character groups, CR/LF skipped anywhere, padding only at the end, non-strict
    (unused trailing bits are ignored).
    """
    out = bytearray()
    size = len(src)
    si = 0
    while si < size:
        quad = [0, 0, 0, 0]
        count = 0  # sextets collected in this group
        trailing: int | None = None
        while count < 4:
            if si == size:
                if count == 0:
                    return bytes(out)
                # Standard encoding requires padding, so a short final group is an error.
                raise _corrupt(si - count)
            c = src[si]
            si += 1
            value = _B64_VALUES.get(c)
            if value is not None:
                quad[count] = value
                count += 1
                continue
            if c in _NEWLINES:
                continue
            if c != _PAD or count < 2:
                raise _corrupt(si - 1)
            if count == 2:
                # A second "=" must follow (newlines may sit between them).
                while si < size and src[si] in _NEWLINES:
                    si += 1
                if si == size:
                    raise _corrupt(size)
                if src[si] != _PAD:
                    raise _corrupt(si - 1)
                si += 1
            while si < size and src[si] in _NEWLINES:
                si += 1
            if si < size:
                trailing = si
            break
        value = (quad[0] << 18) | (quad[1] << 12) | (quad[2] << 6) | quad[3]
        out += value.to_bytes(3, "big")[: count - 1 if count < 4 else 3]
        if trailing is not None:
            raise _corrupt(trailing)
        if count < 4:
            break
    return bytes(out)


def parse_key_b64(text: str) -> bytes:
    """Turn a configured base64 key into key bytes, failing with serf's wording."""
    return validate_key(go_std_b64decode(text.encode("utf-8")))


def generate_key() -> str:
    """A fresh 32-byte (AES-256) key in the base64 form ``serf keygen`` prints."""
    return base64.b64encode(os.urandom(32)).decode("ascii")
