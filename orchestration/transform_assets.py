"""The dbt models as Dagster assets (one ``DbtProject`` pointing at ``dbt_project/``), and the publish step that
hands readers a consistent copy of the warehouse once the marts are built and tested.

Dagster loads dbt assets from dbt's manifest: :func:`ensure_manifest` runs ``dbt parse`` when it is missing
(a fresh checkout), so the definitions load anywhere without a separate preparation step.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    Failure,
    InitResourceContext,
    MaterializeResult,
    asset,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from packaging.version import Version
from pydantic import PrivateAttr

from orchestration.dbt_forked import (
    PARSE_STATES,
    DbtChild,
    Prepared,
    can_fork,
    environment_parse_state,
    forked_invocations,
    scoped_environ,
    shared_parse_state,
)
from orchestration.resources import ROOT, WarehouseResource, dbt_postgres_env, deployment
from warehouse.extract import raw_table_names
from warehouse.store import marts_path_for

RAW_TABLES = raw_table_names()

DBT_DIR = ROOT / "dbt_project"
DBT_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "False", "DO_NOT_TRACK": "1"}


def dbt_target() -> str:
    return "postgres" if deployment() == "prod" else "duckdb"


def dbt_env(warehouse_path: Path | None = None) -> dict[str, str]:
    """dbt's environment; with ``warehouse_path``, the DuckDB working file and the marts file beside it, as
    absolute paths (dbt in a subprocess resolves a relative one from the project directory, dbt in this process
    from this process's working directory)."""
    env = {**os.environ, **DBT_ENV, "PATRIOT_ROOT": str(ROOT)}
    if warehouse_path is not None:
        working = Path(warehouse_path).absolute()
        env["PATRIOT_WAREHOUSE_PATH"] = str(working)
        env["PATRIOT_MARTS_PATH"] = str(marts_path_for(working))
    return env


def dbt_target_path(target: str) -> Path:
    """Each target parses into its own directory: the postgres manifest (without the Python models) must never
    replace the duckdb one in a checkout that has run both."""
    return DBT_DIR / "target" if target == "duckdb" else DBT_DIR / "target" / target


DBT_PROJECT = DbtProject(
    project_dir=DBT_DIR, profiles_dir=DBT_DIR, target=dbt_target(), target_path=dbt_target_path(dbt_target())
)


def dbt_executable() -> str:
    """The dbt installed beside this interpreter (the project's virtualenv), else whatever ``dbt`` is on PATH."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else "dbt"


def _stale(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [p for d in ("models", "macros", "tests") for p in (DBT_DIR / d).rglob("*") if p.is_file()]
    return any(p.stat().st_mtime > built for p in [*sources, DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml"])


def ensure_manifest(project: DbtProject = DBT_PROJECT) -> Path:
    """dbt's manifest, parsed now if this checkout has none yet or the models changed since (``dbt parse`` needs
    no database)."""
    if _stale(project.manifest_path):
        command = [dbt_executable(), "parse", "--project-dir", str(DBT_DIR), "--profiles-dir"]
        command += [str(DBT_DIR), "--target", dbt_target(), "--target-path", str(project.target_path), "--quiet"]
        subprocess.run(command, check=True, env=dbt_env(), cwd=ROOT, capture_output=True, text=True)
    return project.manifest_path


class PatriotDbtTranslator(DagsterDbtTranslator):
    """dbt sources are the extract assets (``raw/<table>``); models are grouped by their folder."""

    def get_asset_key(self, dbt_resource_props: Any) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return AssetKey(["raw", dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Any) -> str | None:
        fqn = dbt_resource_props.get("fqn") or []
        return f"dbt_{fqn[1]}" if len(fqn) > 2 else "dbt"


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=PatriotDbtTranslator())
def patriot_dbt_models(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """``dbt build`` (models and their tests) on the warehouse (the DuckDB working file, or in prod the warehouse
    PostgreSQL database through the ``postgres`` target), refused while any extract's latest data-quality check
    failed (the marts are never rebuilt on rows that failed validation)."""
    failed = failed_raw_checks(context.instance)
    if failed:
        raise Failure(
            description="the marts were not rebuilt: raw data failed validation in "
            + ", ".join(failed)
            + ". Fix the source rows, re-run those extracts (their checks must pass), then refresh the marts."
        )
    # dagster-dbt hands dbt this process's environment; it is this build's only while the build runs (a later
    # build in the same process, or anything else it runs, must not inherit this one's warehouse or test scope)
    env = build_env(warehouse, context.run.tags)
    with scoped_environ(env):
        invocation = dbt.cli(["build"], context=context)
        yield from invocation.stream()
    keep_parse_state(invocation.target_path, DBT_DIR / "target", env=env)


def build_env(warehouse: WarehouseResource, tags: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run's ``dbt build``: this process's, the warehouse the profile connects to and the
    scope of the tests (the run's tags)."""
    if warehouse.is_postgres():
        values = {**dbt_env(), **dbt_postgres_env(warehouse.url())}
    else:
        values = dbt_env(warehouse.store().working_path())
    values["PATRIOT_DBT_TESTS"] = dbt_test_scope(tags)
    return values


TEST_SCOPE_TAG = "patriot/dbt_tests"
CHANGED_ROWS = "changed_rows"


def dbt_test_scope(tags: Mapping[str, str]) -> str:
    """``changed_rows`` when the run asks for it (the hourly refresh after an extract): the generic tests of the
    incremental models then read only the rows this build changed (``dbt_project/macros/changed_rows.sql``).
    Anything else, a run from the UI or the nightly ``full_tests`` run, tests every row."""
    return CHANGED_ROWS if tags.get(TEST_SCOPE_TAG) == CHANGED_ROWS else "all"


KEPT_RUN_DIRS = 24


KEPT_PARSE_STATES = 8


def keep_parse_state(
    run_target: Path, shared: Path, keep: int = KEPT_RUN_DIRS, env: Mapping[str, str] | None = None
) -> None:
    """After a build: its ``partial_parse.msgpack`` becomes the one the next build in the same environment
    (``env``) starts from, and the one any build starts from that has none of its own; only the newest ``keep``
    per-run target directories stay.

    dagster-dbt gives each invocation a target directory of its own and seeds it with ``target/``'s parse state,
    which ``dbt parse`` wrote with the checkout's default profile: with the warehouse file of this deployment
    the profile differs, dbt refuses that state and parses the whole project again (about 3 s here) on every
    run. The state a build leaves matches its profile; it is kept per environment (``target/parse_states/``,
    the newest ``KEPT_PARSE_STATES``), so a build with another warehouse (the tests, another deployment in the
    same checkout) does not cost the next hourly build a whole parse. dbt still checks every file's checksum
    against the state, so an edited model is re-parsed. Each run's directory (compiled SQL, run_results.json) is
    kept for inspection, the newest ``keep`` of them, instead of one more per run for ever.
    """
    state = run_target / "partial_parse.msgpack"
    if state.exists():
        targets = [shared / "partial_parse.msgpack"]
        if env is not None:
            targets.append(environment_parse_state(shared, env))
            targets[-1].parent.mkdir(parents=True, exist_ok=True)
        for target in targets:
            staged = target.with_name(f".partial_parse.{os.getpid()}.msgpack")
            shutil.copyfile(state, staged)
            os.replace(staged, target)
        kept = sorted((shared / PARSE_STATES).glob("*.msgpack"), key=lambda p: p.stat().st_mtime)
        for old_state in kept[:-KEPT_PARSE_STATES]:
            old_state.unlink(missing_ok=True)
    runs = sorted(
        (p for p in run_target.parent.glob(f"{run_target.name.rsplit('-', 2)[0]}-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def failed_raw_checks(instance: DagsterInstance) -> list[str]:
    """Raw tables whose latest Great Expectations check did not pass."""
    failed = []
    for table in RAW_TABLES:
        record = instance.get_latest_asset_check_evaluation_record(
            AssetCheckKey(AssetKey(["raw", table]), "great_expectations")
        )
        event = record.event.dagster_event if record is not None and record.event is not None else None
        evaluation = getattr(event.event_specific_data, "passed", True) if event is not None else True
        if not evaluation:
            failed.append(f"raw.{table}")
    return failed


def mart_keys() -> list[AssetKey]:
    return [key for key in patriot_dbt_models.keys if "marts" in key.path or key.path[-1].startswith(("fct_", "dim_"))]


@asset(
    key=AssetKey(["warehouse", "published"]),
    group_name="publish",
    deps=list(patriot_dbt_models.keys),
    kinds={"duckdb"},
    description="A consistent, read-only copy of the warehouse for the API and dashboards (docs/warehouse.md);"
    " in prod nothing to copy: PostgreSQL readers see committed tables, which dbt replaces atomically",
)
def published_warehouse(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    if warehouse.is_postgres():
        context.log.info("prod: the marts are read in place in the warehouse database; nothing to publish")
        return MaterializeResult(metadata={"deployment": "prod", "published": "in place (PostgreSQL)"})
    store = warehouse.store()
    path = store.publish()
    seconds = store.last_publish_seconds
    context.log.info(f"published {path} ({', '.join(f'{step} {s:.2f}s' for step, s in seconds.items())})")
    return MaterializeResult(metadata={"path": str(path), **{f"{step}_s": s for step, s in seconds.items()}})


class PatriotDbtResource(DbtCliResource):
    """dagster-dbt's CLI resource without three costs it pays for every ``dbt build``, about 8 s of the hourly
    run on this 2-core machine:

    - ``dbt --version`` in a subprocess (a whole dbt start-up, about 3 s) to learn the version: the dbt run here
      is the dbt-core installed beside this interpreter (:func:`dbt_executable`), whose version is known;
    - a dbt adapter opened in the Dagster process, which dagster-dbt needs only for ``fetch_row_counts()`` and
      ``fetch_column_metadata()``: the assets here call neither (row counts are in dbt's own results);
    - the imports of a new dbt process (dbt, its adapter, pandas, numpy, polars), which the Dagster run process
      has made already: dbt runs in a child forked from the run process (``orchestration/dbt_forked.py``), read
      by dagster-dbt's own code as if it were the CLI's output.
    """

    # the run's warehouse (the same resource as the run's ``warehouse``): with it, dbt parses while the run's
    # extracts load (``setup_for_execution``), and the build skips its parse
    warehouse: WarehouseResource | None = None
    _prepared: DbtChild | None = PrivateAttr(default=None)

    @cached_property
    def _cli_version(self) -> Version:
        if self._local():
            return Version(version("dbt-core"))
        return super()._cli_version

    def _local(self) -> bool:
        return Path(self.dbt_executable) == Path(sys.executable).with_name("dbt")

    def _forks(self) -> bool:
        """dbt runs in a forked child: the local dbt on a platform that can fork (else dagster-dbt's subprocess)."""
        return self._local() and can_fork()

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """At the start of a run that builds with dbt: a child forked now parses the project (about 1 s of dbt's
        start) on the other core while the extracts and their checks run; the run's build runs in that child."""
        super().setup_for_execution(context)
        if self.warehouse is None or not self._forks():
            return
        tags = context.run.tags if context.run is not None else {}
        prepare_env = build_env(self.warehouse, tags)
        prepare = Prepared(
            env=prepare_env,
            profiles_dir=str(self.profiles_dir or self.project_dir),
            target=self.target,
            profile=self.profile,
            state=shared_parse_state(Path(self.project_dir), prepare_env),
        )
        self._prepared = DbtChild(Path(self.project_dir), prepare)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """A run that ended before its build (a failed check, say) ends the child that was waiting for it."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.discard()

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None

    def cli(self, args: Sequence[str], **kwargs: Any) -> Any:
        """dbt runs in a forked child (``orchestration/dbt_forked.py``) when it is the dbt installed beside this
        interpreter and the platform can fork; otherwise as dagster-dbt's subprocess."""
        if not self._forks():
            return super().cli(args, **kwargs)
        prepared, self._prepared = self._prepared, None
        with forked_invocations(prepared):
            return super().cli(args, **kwargs)


def dbt_resource(target: str | None = None, warehouse: WarehouseResource | None = None) -> DbtCliResource:
    """dbt on this deployment's target (or ``target``: a test runs the postgres target from a local process);
    ``warehouse``, the run's warehouse resource, lets a run parse the dbt project while its extracts load."""
    return PatriotDbtResource(
        project_dir=DBT_PROJECT,
        profiles_dir=str(DBT_DIR),
        target=target or dbt_target(),
        dbt_executable=dbt_executable(),
        warehouse=warehouse,
    )
