"""Where the master keys come from: ``PATRIOT_MASTER_KEY``, then ``PATRIOT_MASTER_KEY_FILE``, then (dev only)
a key file generated once under the data directory. Outside dev mode a missing key stops the platform.

Source format: ``"<version>:<urlsafe-b64 key>[,<version>:<key>...]"``; a bare key is version 1.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from core.security.crypto import KEY_LENGTH, KeyRing
from core.settings import RuntimeSettings, SecuritySettings

GENERATE_HINT = "python -c \"import base64, os; print('1:' + base64.urlsafe_b64encode(os.urandom(32)).decode())\""


class MasterKeyError(Exception):
    """The master key configuration is unusable; the message says what to fix, never echoing key material."""


class MasterKeyMissing(MasterKeyError):
    """No master key is configured outside dev mode."""


class KeySourceKind(StrEnum):
    ENV = "PATRIOT_MASTER_KEY"
    FILE = "PATRIOT_MASTER_KEY_FILE"
    DEV_FILE = "dev key file"


@dataclass(frozen=True, slots=True)
class KeySource:
    """Which configured source the keys came from (and its file, if any)."""

    kind: KeySourceKind
    path: Path | None = None

    def describe(self) -> str:
        return f"{self.kind.value} ({self.path})" if self.path else self.kind.value


def generate_key() -> bytes:
    """Fresh key material for one master-key version."""
    return os.urandom(KEY_LENGTH)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def format_keyring_source(keys: Mapping[int, bytes]) -> str:
    """The inverse of :func:`parse_keyring_source`, oldest version first."""
    return ",".join(f"{version}:{encode_key(keys[version])}" for version in sorted(keys))


def _decode_key(text: str, version: int) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"master key version {version} is not valid base64") from None
    if len(key) != KEY_LENGTH:
        raise MasterKeyError(
            f"master key version {version} decodes to {len(key)} bytes; "
            f"it must be {KEY_LENGTH} random bytes, "
            f"base64-encoded (generate one with: {GENERATE_HINT})"
        )
    return key


def parse_keyring_source(source: str) -> dict[int, bytes]:
    """Parse ``"1:<key>,2:<key>"`` (commas or newlines between entries); a lone bare key is version 1."""
    entries = [entry for entry in re.split(r"[,\s]+", source.strip()) if entry]
    if not entries:
        raise MasterKeyError("the master key setting is empty")
    keys: dict[int, bytes] = {}
    for position, entry in enumerate(entries, start=1):
        version_text, sep, key_text = entry.partition(":")
        if not sep:
            if len(entries) > 1:
                raise MasterKeyError(
                    f"entry {position} has no version; with several keys write each as <version>:<key>"
                )
            version_text, key_text = "1", entry
        if not version_text.isdigit() or not 1 <= int(version_text) <= 0xFFFFFFFF:
            raise MasterKeyError(f"entry {position} has an invalid version; use a positive integer like 1:<key>")
        version = int(version_text)
        if version in keys:
            raise MasterKeyError(f"master key version {version} appears more than once")
        keys[version] = _decode_key(key_text, version)
    return keys


def read_key_file(path: Path) -> dict[int, bytes]:
    """Keys from a secrets file; a missing or unreadable file is a configuration error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(f"master key file {path} cannot be read: {exc.strerror}") from None
    try:
        return parse_keyring_source(text)
    except MasterKeyError as exc:
        raise MasterKeyError(f"master key file {path}: {exc}") from None


def dev_key_file(runtime: RuntimeSettings) -> Path:
    """Where dev mode keeps its generated master keys."""
    return runtime.data_dir / "secrets" / "master.keys"


def _warn_if_loose(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        structlog.get_logger(__name__).warning(
            "master_key.file_permissions_too_open", path=str(path), mode=oct(mode), expected="0o600"
        )


def _write_private(path: Path, content: str) -> Path:
    """Write ``content`` to a fresh 0600 temp file next to ``path`` and return the temp path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it, never widened; be exact anyway
        os.write(fd, content.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def ensure_dev_key_file(path: Path) -> bool:
    """Create the dev key file with one fresh key unless it exists; True when it was created.

    Never regenerates: a new key would orphan every secret already stored under the old one.
    """
    if path.exists():
        return False
    _private_dir(path.parent)
    tmp = _write_private(path, format_keyring_source({1: generate_key()}) + "\n")
    try:
        # link() fails if another process created the file first, so two starters agree on one key.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    structlog.get_logger(__name__).info("master_key.dev_key_generated", path=str(path), version=1)
    return True


def add_key_version(path: Path) -> int:
    """Append a fresh key as the next version to a key file, keeping the older ones; returns the new version."""
    keys = read_key_file(path)
    version = max(keys) + 1
    keys[version] = generate_key()
    tmp = _write_private(path, format_keyring_source(keys) + "\n")
    os.replace(tmp, path)
    structlog.get_logger(__name__).info("master_key.version_added", path=str(path), version=version)
    return version


def resolve_key_source(security: SecuritySettings, runtime: RuntimeSettings) -> KeySource:
    """Pick the configured source: env, then file, then the dev key file; refuse outside dev mode."""
    if security.master_key and security.master_key.strip():
        return KeySource(KeySourceKind.ENV)
    if security.master_key_file is not None:
        return KeySource(KeySourceKind.FILE, security.master_key_file)
    if runtime.is_dev:
        return KeySource(KeySourceKind.DEV_FILE, dev_key_file(runtime))
    raise MasterKeyMissing(
        f"no master key configured and PATRIOT_ENV={runtime.env.value}: set PATRIOT_MASTER_KEY to "
        "'1:<32 random bytes, urlsafe base64>' or PATRIOT_MASTER_KEY_FILE to a file (mode 0600) holding it. "
        f"Generate one with: {GENERATE_HINT}"
    )


def load_keyring(security: SecuritySettings, runtime: RuntimeSettings) -> KeyRing:
    """The keyring for this process; file-backed keyrings re-read their file when a newer version shows up."""
    source = resolve_key_source(security, runtime)
    if source.kind is KeySourceKind.ENV:
        assert security.master_key is not None
        # Environment keys cannot change under a running process, so there is nothing to reload.
        try:
            return KeyRing(parse_keyring_source(security.master_key))
        except MasterKeyError as exc:
            raise MasterKeyError(f"PATRIOT_MASTER_KEY: {exc}") from None
    path = source.path
    assert path is not None
    if source.kind is KeySourceKind.DEV_FILE:
        ensure_dev_key_file(path)
    keys = read_key_file(path)
    _warn_if_loose(path)
    return KeyRing(keys, reloader=lambda: read_key_file(path))
