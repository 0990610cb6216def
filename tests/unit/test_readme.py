"""The README documents what a new user needs and gets it right: the embedded servers' port variables with the
defaults the settings really use, and the simulator's real demo keys and account endpoints."""

from __future__ import annotations

from pathlib import Path

from core.settings import DatabaseSettings, RedisSettings
from realtime.exchanges.simulator.app import demo_accounts

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _config_row(variable: str) -> str:
    """The row of the README's configuration table that names ``variable``."""
    rows = [line for line in README.splitlines() if line.startswith("|") and f"`{variable}`" in line]
    assert rows, f"{variable} is missing from the README's configuration table"
    return rows[0]


def test_the_embedded_servers_ports_are_in_the_configuration_table_with_their_defaults() -> None:
    ports = {"PATRIOT_EMBEDDED_PG_PORT": DatabaseSettings, "PATRIOT_EMBEDDED_REDIS_PORT": RedisSettings}
    for variable, area in ports.items():
        field = area.model_fields["embedded_port"]
        assert field.validation_alias == variable  # the name the settings read
        assert f"`{field.default}`" in _config_row(variable)


def test_the_readme_gives_the_simulators_demo_keys_and_account_endpoints() -> None:
    for account in demo_accounts():
        assert account.api_key in README and account.secret in README
    assert "/admin/accounts" in README and "/admin/deposit" in README and "-2015" in README
