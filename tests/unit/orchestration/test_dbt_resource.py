"""The dbt resource's shortcuts: no ``dbt --version`` subprocess and no adapter in the Dagster process before a
build, and the parse state and run directories a build leaves behind."""

from __future__ import annotations

import os
import time
from importlib.metadata import version
from pathlib import Path

import dagster_dbt.core.resource as dagster_dbt_resource
import pytest
from packaging.version import Version

from orchestration.transform_assets import dbt_resource, keep_parse_state


def test_the_local_dbt_version_is_known_without_running_dbt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> bytes:
        raise AssertionError(f"dbt was run to learn its version: {args}")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_subprocess)
    resource = dbt_resource()
    assert resource._cli_version == Version(version("dbt-core"))
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def test_another_dbt_executable_is_still_asked_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def fake_version(command: list[str]) -> bytes:
        asked.append(command)
        return b"Core:\n  - installed: 1.11.2\n"

    monkeypatch.setattr(dagster_dbt_resource, "check_output", fake_version)
    resource = dbt_resource().model_copy(update={"dbt_executable": "/opt/elsewhere/dbt"})
    assert resource._cli_version == Version("1.11.2")
    assert asked == [["/opt/elsewhere/dbt", "--version"]]


def test_a_build_leaves_its_parse_state_and_only_the_newest_run_directories(tmp_path: Path) -> None:
    shared = tmp_path / "target"
    shared.mkdir()
    (shared / "partial_parse.msgpack").write_bytes(b"parsed with the default profile")
    (shared / "manifest.json").write_text("{}")
    runs = []
    for n in range(5):
        run = shared / f"patriot_dbt_models-abc{n}def-{n:07d}"
        run.mkdir()
        (run / "run_results.json").write_text("{}")
        os.utime(run, (time.time() - 100 + n, time.time() - 100 + n))
        runs.append(run)
    (runs[-1] / "partial_parse.msgpack").write_bytes(b"parsed with this deployment's profile")
    other = shared / "postgres"
    other.mkdir()

    keep_parse_state(runs[-1], shared, keep=3)

    assert (shared / "partial_parse.msgpack").read_bytes() == b"parsed with this deployment's profile"
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == sorted([*(r.name for r in runs[-3:]), "postgres"])
    assert (shared / "manifest.json").exists()
    assert not list(shared.glob(".partial_parse.*"))


def test_a_build_without_parse_state_replaces_nothing(tmp_path: Path) -> None:
    shared = tmp_path / "target"
    run = shared / "patriot_dbt_models-abcdefg-1234567"
    run.mkdir(parents=True)
    (shared / "partial_parse.msgpack").write_bytes(b"earlier")
    keep_parse_state(run, shared)
    assert (shared / "partial_parse.msgpack").read_bytes() == b"earlier"
