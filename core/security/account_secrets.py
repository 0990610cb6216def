"""Exchange API credentials in ``user_accounts``: stored sealed, read only in memory, shown only masked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg.rows import tuple_row

from core.security.crypto import KeyRing

API_KEY_FIELD = "api_key"
API_SECRET_FIELD = "api_secret"


class AccountNotFound(LookupError):
    """No ``user_accounts`` row has the requested id."""


@dataclass(frozen=True, slots=True)
class ExchangeCredentials:
    """Decrypted credentials for one exchange account; ``repr`` shows only the masked key."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ExchangeCredentials(api_key={mask_api_key(self.api_key)!r}, api_secret='****')"

    __str__ = __repr__


def mask_api_key(api_key: str) -> str:
    """``abcd…wxyz``: at most 4 leading and 4 trailing characters, and never more than half of a short key."""
    shown = min(4, len(api_key) // 4)
    if shown == 0:
        return "****"
    return f"{api_key[:shown]}…{api_key[-shown:]}"


def canonical_account_id(account_id: uuid.UUID | str) -> str:
    """One spelling per account id, so the AAD computed at write and at read always match."""
    return str(account_id if isinstance(account_id, uuid.UUID) else uuid.UUID(str(account_id)))


def secret_aad(account_id: uuid.UUID | str, field_name: str) -> bytes:
    """Associated data binding a ciphertext to its row and column: moved elsewhere, it fails to decrypt."""
    return f"{canonical_account_id(account_id)}:{field_name}".encode()


def seal_credentials(
    keyring: KeyRing, account_id: uuid.UUID | str, api_key: str, api_secret: str
) -> tuple[bytes, bytes]:
    """Both fields sealed under the keyring's current version."""
    return (
        keyring.encrypt(api_key, secret_aad(account_id, API_KEY_FIELD)),
        keyring.encrypt(api_secret, secret_aad(account_id, API_SECRET_FIELD)),
    )


def open_credentials(
    keyring: KeyRing, account_id: uuid.UUID | str, key_blob: bytes, secret_blob: bytes
) -> ExchangeCredentials:
    """Decrypt both fields of one row; raises ``SecretDecryptionError`` on any mismatch."""
    return ExchangeCredentials(
        api_key=keyring.decrypt(key_blob, secret_aad(account_id, API_KEY_FIELD)),
        api_secret=keyring.decrypt(secret_blob, secret_aad(account_id, API_SECRET_FIELD)),
    )


# a new account row: id, user_id, exchange, label, then the SealedAccount's four fields in their order
INSERT_ACCOUNT = (
    "INSERT INTO user_accounts (id, user_id, exchange, label, api_key_encrypted, api_secret_encrypted,"
    " key_version, api_key_masked) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class SealedAccount:
    """An account's credentials as stored: both fields sealed under ``key_version``, and the masked key."""

    api_key_encrypted: bytes = field(repr=False)
    api_secret_encrypted: bytes = field(repr=False)
    key_version: int
    api_key_masked: str


def seal_account(keyring: KeyRing, account_id: uuid.UUID | str, api_key: str, api_secret: str) -> SealedAccount:
    """What ``user_accounts`` stores of a new account's credentials (and ``LinkExchangeAccount`` carries)."""
    if not api_key or not api_secret:
        raise ValueError("api_key and api_secret must both be non-empty")
    key_blob, secret_blob = seal_credentials(keyring, canonical_account_id(account_id), api_key, api_secret)
    return SealedAccount(key_blob, secret_blob, keyring.current_version, mask_api_key(api_key))


def store_account(
    conn: psycopg.Connection[Any],
    keyring: KeyRing,
    *,
    account_id: uuid.UUID | str,
    user_id: uuid.UUID | str,
    exchange: str,
    label: str,
    api_key: str,
    api_secret: str,
) -> None:
    """Insert an exchange account with its credentials sealed; the caller owns the transaction."""
    account = canonical_account_id(account_id)
    sealed = seal_account(keyring, account, api_key, api_secret)
    conn.execute(
        INSERT_ACCOUNT,
        (
            account,
            str(user_id),
            exchange,
            label,
            sealed.api_key_encrypted,
            sealed.api_secret_encrypted,
            sealed.key_version,
            sealed.api_key_masked,
        ),
    )
    structlog.get_logger(__name__).info(
        "account_secrets.stored", account_id=account, exchange=exchange, key_version=keyring.current_version
    )


def read_account_secrets(
    conn: psycopg.Connection[Any], keyring: KeyRing, account_id: uuid.UUID | str
) -> ExchangeCredentials:
    """Decrypt one account's credentials for use in memory (never log or return them to a client)."""
    account = canonical_account_id(account_id)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT api_key_encrypted, api_secret_encrypted FROM user_accounts WHERE id = %s", (account,)
        ).fetchone()
    if row is None:
        raise AccountNotFound(f"no exchange account {account}")
    return open_credentials(keyring, account, bytes(row[0]), bytes(row[1]))
