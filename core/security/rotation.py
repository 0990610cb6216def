"""Re-encrypt every stored exchange secret under the keyring's newest master key, online.

Batches lock their rows with ``FOR UPDATE SKIP LOCKED`` and commit one by one, so the job can be killed and
re-run (it only picks rows still below the current version) and readers keep working: until rotation has
finished and the old key is removed, the keyring decrypts both versions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
import structlog
from psycopg.rows import TupleRow, tuple_row

from core.db.urls import libpq_url
from core.security.account_secrets import open_credentials, seal_credentials
from core.security.crypto import KeyRing, SecretDecryptionError


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What one rotation run did. ``remaining`` counts rows still below ``version`` (locked or failed)."""

    rotated: int
    already_current: int
    version: int
    failed: int = 0
    remaining: int = 0
    failed_account_ids: tuple[str, ...] = field(default=())


def key_version_counts(database_url: str) -> dict[int, int]:
    """How many account rows are sealed under each key version (tells the operator when an old key can go)."""
    with (
        psycopg.connect(libpq_url(database_url), autocommit=True) as conn,
        conn.cursor(row_factory=tuple_row) as cur,
    ):
        rows = cur.execute(
            "SELECT key_version, count(*) FROM user_accounts GROUP BY key_version ORDER BY key_version"
        ).fetchall()
    return {int(version): int(count) for version, count in rows}


def _count(conn: psycopg.Connection[TupleRow], where: str, version: int) -> int:
    row = conn.execute(f"SELECT count(*) FROM user_accounts WHERE key_version {where} %s", (version,)).fetchone()
    return int(row[0]) if row else 0


def rotate(database_url: str, keyring: KeyRing, batch_size: int = 200) -> RotationReport:
    """Move every row sealed under an older key version to ``keyring.current_version``; idempotent."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    log = structlog.get_logger(__name__)
    target = keyring.current_version
    rotated = 0
    failed: list[uuid.UUID] = []
    with psycopg.connect(libpq_url(database_url), autocommit=True, row_factory=tuple_row) as conn:
        already_current = _count(conn, ">=", target)
        log.info(
            "key_rotation.started",
            target_version=target,
            keyring_versions=list(keyring.versions),
            already_current=already_current,
            pending=_count(conn, "<", target),
        )
        while True:
            with conn.transaction():
                batch = conn.execute(
                    "SELECT id, key_version, api_key_encrypted, api_secret_encrypted FROM user_accounts"
                    " WHERE key_version < %s AND NOT (id = ANY(%s))"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (target, failed, batch_size),
                ).fetchall()
                if not batch:
                    break
                updates: list[tuple[bytes, bytes, int, uuid.UUID]] = []
                for account_id, old_version, key_blob, secret_blob in batch:
                    try:
                        credentials = open_credentials(keyring, account_id, bytes(key_blob), bytes(secret_blob))
                    except SecretDecryptionError as exc:
                        # Skip, don't abort: one bad row must not block rotating the rest.
                        failed.append(account_id)
                        log.error(
                            "key_rotation.row_failed",
                            account_id=str(account_id),
                            key_version=old_version,
                            error=str(exc),
                        )
                        continue
                    key_blob, secret_blob = seal_credentials(
                        keyring, account_id, credentials.api_key, credentials.api_secret
                    )
                    updates.append((key_blob, secret_blob, target, account_id))
                if updates:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "UPDATE user_accounts SET api_key_encrypted = %s, api_secret_encrypted = %s,"
                            " key_version = %s, updated_at = now() WHERE id = %s",
                            updates,
                        )
            rotated += len(updates)
            log.info(
                "key_rotation.batch_committed",
                rows=len(updates),
                rotated_total=rotated,
                target_version=target,
            )
        remaining = _count(conn, "<", target)
    report = RotationReport(
        rotated=rotated,
        already_current=already_current,
        version=target,
        failed=len(failed),
        remaining=remaining,
        failed_account_ids=tuple(str(account_id) for account_id in failed),
    )
    log.info(
        "key_rotation.finished",
        target_version=target,
        rotated=rotated,
        already_current=already_current,
        failed=len(failed),
        remaining=remaining,
    )
    return report
