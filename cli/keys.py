"""``patriot keys``: rotate the master key that seals exchange API secrets, and report rotation progress."""

from __future__ import annotations

import typer

from core.observability.logging import configure_logging
from core.runtime.embedded import running_database_url
from core.security.crypto import KeyRing
from core.security.master_key import (
    GENERATE_HINT,
    KeySource,
    KeySourceKind,
    MasterKeyError,
    add_key_version,
    load_keyring,
    resolve_key_source,
)
from core.security.rotation import key_version_counts, rotate
from core.settings import Settings, load_settings

keys_app = typer.Typer(help="Master keys for exchange API secrets: rotation and status.", no_args_is_help=True)


@keys_app.callback()
def _logging() -> None:
    settings = load_settings()
    configure_logging("cli", settings.observability.log_level, json_output=settings.observability.log_json)


def _database_url(settings: Settings) -> str:
    """The database holding ``user_accounts``: DATABASE_URL, or the running embedded server."""
    url = running_database_url(settings)
    if url:
        return url
    typer.secho(
        "error: no database configured. Start the platform with `patriot up` first, "
        "or set DATABASE_URL=postgresql://user@host:port/db.",
        fg="red",
        err=True,
    )
    raise typer.Exit(2)


def _keyring(settings: Settings) -> tuple[KeyRing, KeySource]:
    try:
        source = resolve_key_source(settings.security, settings.runtime)
        return load_keyring(settings.security, settings.runtime), source
    except MasterKeyError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _new_key_instructions(keyring: KeyRing, source: KeySource) -> str:
    current, following = keyring.current_version, keyring.current_version + 1
    return (
        f"Only key version {current} is configured ({source.describe()}); nothing to rotate to.\n"
        f"Add a new key as version {following} next to the old one, e.g. "
        f"{KeySourceKind.ENV.value}='{current}:<old key>,{following}:<new key>' (or the same line in "
        f"{KeySourceKind.FILE.value}), restart or reload the services, "
        "then run `patriot keys rotate` again.\n"
        f"Generate a key with: {GENERATE_HINT.replace('1:', f'{following}:')}"
    )


@keys_app.command("rotate")
def rotate_command(
    batch_size: int = typer.Option(200, min=1, help="Rows re-encrypted and committed per transaction."),
    add_key: bool = typer.Option(
        True, help="Dev key file only: append a fresh key version before rotating (--no-add-key resumes)."
    ),
) -> None:
    """Re-encrypt every stored exchange secret under the newest master key, without stopping the platform."""
    settings = load_settings()
    database_url = _database_url(settings)
    keyring, source = _keyring(settings)
    if source.kind is KeySourceKind.DEV_FILE and add_key:
        assert source.path is not None
        version = add_key_version(source.path)
        typer.echo(f"added master key version {version} to {source.path}")
        keyring, source = _keyring(settings)
    elif len(keyring.versions) == 1 and not _rows_below(database_url, keyring.current_version):
        typer.echo(_new_key_instructions(keyring, source))
        raise typer.Exit(1)
    report = rotate(database_url, keyring, batch_size=batch_size)
    typer.echo(
        f"rotated {report.rotated} account(s) to key version {report.version}; {report.already_current} already current"
    )
    if report.failed:
        typer.secho(
            f"error: {report.failed} account(s) could not be decrypted with the configured keys: "
            + ", ".join(report.failed_account_ids),
            fg="red",
            err=True,
        )
    if report.remaining:
        typer.echo(f"{report.remaining} account(s) remain on older key versions; run `patriot keys rotate` again.")
        raise typer.Exit(1)
    older = [v for v in keyring.versions if v < report.version]
    if older:
        typer.echo(f"All secrets use key version {report.version}; key version(s) {older} can now be removed.")


def _rows_below(database_url: str, version: int) -> int:
    return sum(count for v, count in key_version_counts(database_url).items() if v < version)


@keys_app.command()
def status() -> None:
    """Show the configured key versions and how many accounts each version seals."""
    settings = load_settings()
    database_url = _database_url(settings)
    keyring, source = _keyring(settings)
    counts = key_version_counts(database_url)
    current = keyring.current_version
    typer.echo(f"key source: {source.describe()}")
    typer.echo(f"configured versions: {list(keyring.versions)} (current: {current})")
    if not counts:
        typer.echo("no exchange accounts stored")
    for version, count in counts.items():
        note = "current" if version == current else ("old" if version in keyring.versions else "NO KEY CONFIGURED")
        typer.echo(f"  version {version}: {count} account(s) [{note}]")
    old_rows = sum(count for version, count in counts.items() if version < current)
    unknown = sum(count for version, count in counts.items() if version not in keyring.versions)
    typer.echo(f"accounts on older key versions: {old_rows}")
    if unknown:
        typer.secho(f"warning: {unknown} account(s) use a key version that is not configured", fg="yellow")
    if old_rows == 0 and len(keyring.versions) > 1:
        typer.echo(f"rotation complete: key version(s) {list(keyring.versions[:-1])} can be removed")
