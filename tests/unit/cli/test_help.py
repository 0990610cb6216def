"""The CLI's help tells the truth: ``patriot simulator --help`` gives the simulator's real demo keys and how to open
accounts (a made-up key only gets -2015), and ``patriot api --help`` names the server that actually serves."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.main import app
from realtime.exchanges.simulator.app import demo_accounts

WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def test_simulator_help_gives_the_demo_accounts_keys_and_the_account_endpoint() -> None:
    text = help_text("simulator")
    for account in demo_accounts():  # the keys the simulator really accepts, not a copy that can drift
        assert account.api_key in text and account.secret in text and f'"{account.account_id}"' in text
    assert "POST /admin/accounts" in text and "POST /admin/deposit" in text and "-2015" in text


def test_api_help_names_granian_not_uvicorn() -> None:
    text = help_text("api")
    assert "granian" in text and "uvicorn" not in text
