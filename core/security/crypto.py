"""AES-256-GCM for secrets at rest, every ciphertext tagged with the master-key version that sealed it.

Blob layout: ``b"PK1"`` + key version (uint32 big-endian) + 12-byte random nonce + ciphertext || 16-byte tag.
The header is authenticated too, so a version byte cannot be swapped without the tag failing.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PK1"
KEY_LENGTH = 32
NONCE_LENGTH = 12
TAG_LENGTH = 16
_HEADER = struct.Struct(">3sI")

KeyReloader = Callable[[], dict[int, bytes]]


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted; the message never contains plaintext or key material."""


class KeyRingError(ValueError):
    """A keyring was built from invalid key material (wrong length, bad version)."""


def _validated(keys: Mapping[int, bytes]) -> dict[int, bytes]:
    if not keys:
        raise KeyRingError("a keyring needs at least one master key")
    for version, key in keys.items():
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 0xFFFFFFFF:
            raise KeyRingError(f"master key version must be an integer from 1 to 2^32-1, got {version!r}")
        if len(key) != KEY_LENGTH:
            raise KeyRingError(f"master key version {version} is {len(key)} bytes; AES-256 needs {KEY_LENGTH}")
    return dict(keys)


class KeyRing:
    """Master keys by version: the highest encrypts, every version decrypts what it sealed.

    ``reloader`` re-reads the key source when a blob names a version this process has not seen, so a running
    service keeps reading secrets while ``patriot keys rotate`` moves them under a newly added key.
    """

    def __init__(self, keys: Mapping[int, bytes], reloader: KeyReloader | None = None) -> None:
        self._keys = _validated(keys)
        self._ciphers: dict[int, AESGCM] = {}
        self._reloader = reloader
        # Readers on several threads may hit an unknown version at once; one reload is enough.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyRing(versions={list(self.versions)}, current={self.current_version})"

    @property
    def current_version(self) -> int:
        """The version new ciphertexts are sealed with."""
        return max(self._keys)

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version this keyring can decrypt, ascending."""
        return tuple(sorted(self._keys))

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        """Seal ``plaintext`` under the current key; ``aad`` binds it to its row and field."""
        version = self.current_version
        header = _HEADER.pack(MAGIC, version)
        nonce = os.urandom(NONCE_LENGTH)
        sealed = self._cipher(version).encrypt(nonce, plaintext.encode("utf-8"), header + aad)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, aad: bytes) -> str:
        """Open a blob sealed by :meth:`encrypt` with the same ``aad``; any mismatch raises."""
        version = self.version_of(blob)
        if version not in self._keys:
            self.reload()
        if version not in self._keys:
            raise SecretDecryptionError(f"no master key with version {version} is configured")
        header_end = _HEADER.size + NONCE_LENGTH
        nonce = bytes(blob[_HEADER.size : header_end])
        try:
            plaintext = self._cipher(version).decrypt(
                nonce, bytes(blob[header_end:]), bytes(blob[: _HEADER.size]) + aad
            )
        except InvalidTag:
            raise SecretDecryptionError(
                f"secret sealed with key version {version} failed authentication "
                "(tampered, moved to another row or field, or the key for that version is wrong)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretDecryptionError("decrypted secret is not valid UTF-8") from None

    @staticmethod
    def version_of(blob: bytes) -> int:
        """The key version a blob was sealed with, read from its header without decrypting."""
        if len(blob) < _HEADER.size + NONCE_LENGTH + TAG_LENGTH:
            raise SecretDecryptionError("ciphertext is too short to be a sealed secret")
        magic, version = _HEADER.unpack_from(bytes(blob[: _HEADER.size]))
        if magic != MAGIC:
            raise SecretDecryptionError("ciphertext does not start with the PK1 header")
        return int(version)

    def reload(self) -> bool:
        """Re-read the key source (if any); True when the set of versions changed."""
        if self._reloader is None:
            return False
        with self._lock:
            try:
                fresh = _validated(self._reloader())
            except Exception as exc:
                # The reloader's own errors name files and versions, never key bytes.
                raise SecretDecryptionError(f"reloading master keys failed: {exc}") from None
            changed = fresh.keys() != self._keys.keys()
            # Replace rather than merge: the configured source is the truth, and a key that changed
            # under the same version must not keep decrypting from a stale cache.
            if fresh != self._keys:
                self._keys = fresh
                self._ciphers = {}
            return changed

    def _cipher(self, version: int) -> AESGCM:
        cipher = self._ciphers.get(version)
        if cipher is None:
            cipher = self._ciphers[version] = AESGCM(self._keys[version])
        return cipher
