"""Schemathesis runs the API's own OpenAPI schema against the live server (real PostgreSQL, Redis, simulator and
order service, and a published warehouse built by dbt from empty raw tables, so the analytics routes answer from
real marts), unauthenticated, as a plain user and as an admin (a user's routes scope every query by the user and
refuse staff routes, an admin's reach every route: both sides must hold): no response may be a 5xx, and every
status must be one the schema documents for that operation."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import duckdb
import pytest

from orchestration.transform_assets import DBT_DIR, dbt_env, dbt_executable
from tests.integration.api.conftest import ApiHarness
from warehouse.extract import ensure_raw_schema
from warehouse.store import WarehouseStore

pytestmark = pytest.mark.integration

ST = str(Path(sys.executable).with_name("st"))
CHECKS = "not_a_server_error,status_code_conformance"


async def _schemathesis(base_url: str, tmp: Path, *headers: str) -> tuple[int, str]:
    command = [ST, "run", f"{base_url}/openapi.json", "--checks", CHECKS, "--max-examples", "12", "--seed", "7"]
    command += ["--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--no-color"]
    command += ["--generation-database", "none", "--report-dir", str(tmp)]
    for header in headers:
        command += ["-H", header]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp
    )
    out, _ = await asyncio.wait_for(process.communicate(), 600)
    return process.returncode or 0, out.decode(errors="replace")


async def _publish_empty_warehouse(store: WarehouseStore) -> None:
    with duckdb.connect(str(store.working_path())) as duck:
        ensure_raw_schema(duck)
    command = [dbt_executable(), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR), "--quiet"]
    process = await asyncio.create_subprocess_exec(
        *command, env=dbt_env(store.working_path()), cwd=DBT_DIR, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()[-3000:]
    store.publish()


@pytest.mark.timeout(900)  # three schemathesis runs of a few minutes each on a loaded machine
async def test_schema_holds_unauthenticated_as_a_user_and_as_admin(api: ApiHarness, tmp_path: Path) -> None:
    await _publish_empty_warehouse(api.state.warehouse)
    admin = await api.new_user("admin", with_account=True)
    user = await api.new_user("user", with_account=True)
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    for who in (None, user, admin):
        headers = () if who is None else (f"Authorization: Bearer {api.token(who)}",)
        code, output = await _schemathesis(api.base_url, tmp_path, *headers)
        assert code == 0, f"as {who.role if who else 'nobody'}: {output[-6000:]}"
        assert f"Tested: {operations}" in output, output[-3000:]  # every operation was exercised
