"""Analytics pipeline benchmark: a year of a 100-user fund through the Dagster assets, as the platform runs them.

    python -m bench.pipeline [--users 100] [--days 365] [--fills 1000000]

A generated fund goes into a scratch PostgreSQL database (not timed): a year of it is priced by the shipped
Bitstamp daily bars (BTC and ETH, the last 365 days of the file), a shorter one by the 2025 one-minute candles. Then:
``full_rebuild_s`` = every extract partition in one run (PostgreSQL -> DuckDB through Arrow, with the Great
Expectations checks) + the dimensions and snapshots + ``dbt build`` of every model and test + publishing;
``incremental_s`` = the next hour of trading appended (1,000 fills in the hour after the latest one), then the
hourly path as a deployment runs it: one run of the ``hourly_refresh`` job (that day's extract partition, the
dimensions, the marts with their dbt tests on the rows the build changed, publishing; the job with its asset
checks and the tags its schedule gives it) in a fresh process, as Dagster's run worker starts one per run: the
process loads the code location and resolves the job first (not timed, as Dagster's own run duration starts
after it) and everything the run itself does is timed, imports it makes on the way included (Great
Expectations, in the process the run forks for its checks; the rest of dbt); ``incremental_late_s`` = the same
with 1,000 late fills instead (recorded now, happened earlier in the last day: books are matched again from
their first fill, the day's hours restated); ``incremental_warm_s`` = another hour in this process, which has
already run everything once; ``extract_rows_per_s`` = rows moved by the full extract / its time. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from dagster import DagsterInstance, Definitions, JobDefinition, in_process_executor, materialize

from bench.common import resolve_servers, scratch_database
from orchestration.automation import FRESHNESS_CHECKS, HOURLY_TAGS, hourly_refresh
from orchestration.extract_assets import EXTRACT_ASSETS, PARTITIONED, RAW_CHECKS
from orchestration.quality import QualityResource
from orchestration.resources import PostgresResource, WarehouseResource
from orchestration.transform_assets import dbt_resource, patriot_dbt_models, published_warehouse
from warehouse.demo import FundSpec, generate_fund

ALL = [*EXTRACT_ASSETS, *RAW_CHECKS, patriot_dbt_models, published_warehouse]
PARTITIONED_KEYS = [a.key for a in EXTRACT_ASSETS if a.key.path[-1] in PARTITIONED]  # with their checks
REST_KEYS = [k for a in ALL for k in a.keys if k not in PARTITIONED_KEYS]


def _rows(result: object) -> int:
    """Rows moved per asset (a run over a range of partitions reports the same figure once per partition)."""
    by_asset: dict[str, int] = {}
    for event in result.get_asset_materialization_events():  # type: ignore[attr-defined]
        materialization = event.event_specific_data.materialization
        if "rows" in materialization.metadata:
            by_asset[materialization.asset_key.to_user_string()] = int(materialization.metadata["rows"].value)
    return sum(by_asset.values())


def run(users: int, days: int, fills: int) -> dict[str, object]:
    servers = resolve_servers()
    with TemporaryDirectory() as tmp, scratch_database(servers) as database_url:
        started = time.perf_counter()
        print(f"generating {users} users, {days} days, {fills:,} fills ...", file=sys.stderr, flush=True)
        # a year needs the daily bars (the shipped 1-minute windows span about 35 days each)
        window = "daily" if days > 35 else "2025"
        fund = generate_fund(database_url, FundSpec(users=users, days=days, fills=fills, window=window), progress=True)
        print(f"generated in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
        resources = _resources(database_url, str(Path(tmp) / "warehouse"))
        with DagsterInstance.ephemeral() as instance:
            tags = {
                # from the day before trading starts: the candles that first mark the book (daily bars) are there
                "dagster/asset_partition_range_start": (fund.start - timedelta(days=1)).date().isoformat(),
                "dagster/asset_partition_range_end": fund.end.date().isoformat(),
            }
            print("full rebuild: extracting every partition ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            extract = materialize(ALL, selection=PARTITIONED_KEYS, resources=resources, instance=instance, tags=tags)
            extract_s = time.perf_counter() - t0
            print(f"  extract {extract_s:.1f}s; dbt build + publish ...", file=sys.stderr, flush=True)
            materialize(ALL, selection=REST_KEYS, resources=resources, instance=instance)
            full_s = time.perf_counter() - t0
            moved = _rows(extract)

            last_day = fund.end.date().isoformat()
            root = str(Path(tmp) / "warehouse")
            print("incremental: the hourly run in a fresh process ...", file=sys.stderr, flush=True)
            incremental_s = _run_in_fresh_process(database_url, root, _append_an_hour_of_fills(database_url, "next"))
            print("incremental with late fills, in a fresh process ...", file=sys.stderr, flush=True)
            _append_late_fills(database_url, last_day, "late")
            incremental_late_s = _run_in_fresh_process(database_url, root, last_day)
            print("incremental again in this process ...", file=sys.stderr, flush=True)
            day = _append_an_hour_of_fills(database_url, "again")
            job = _hourly_job(resources)
            t1 = time.perf_counter()
            _hourly_run(job, instance, day)
            incremental_warm_s = time.perf_counter() - t1
    return {
        "users": users,
        "days": days,
        "fills": fund.fills,
        "first_day": fund.start.date().isoformat(),
        "last_day": fund.end.date().isoformat(),
        "full_rebuild_s": round(full_s, 1),
        "extract_s": round(extract_s, 1),
        "extract_rows": moved,
        "extract_rows_per_s": round(moved / extract_s),
        "incremental_s": round(incremental_s, 1),
        "incremental_late_s": round(incremental_late_s, 1),
        "incremental_warm_s": round(incremental_warm_s, 1),
    }


def _append_an_hour_of_fills(database_url: str, suffix: str) -> str:
    """The next hour of trading: 1,000 fills (copies of the latest ones: same accounts, symbols, sides, sizes and
    prices) spread over the hour after the latest fill and recorded as they happen. Returns their UTC day, the
    partition the hourly run extracts."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity,"
            " price, fee, fee_asset, liquidity, filled_at, exchange_ts_ms, created_at)"
            " SELECT gen_random_uuid(), order_id, account_id, user_id, exchange, symbol, side, trade_id || %s,"
            " quantity, price, fee, fee_asset, liquidity, at, (extract(epoch FROM at) * 1000)::bigint, at"
            " FROM (SELECT f.*, t.latest + n * interval '3.6 seconds' AS at FROM"
            " (SELECT *, row_number() OVER (ORDER BY filled_at DESC, id) AS n FROM fills) AS f,"
            " (SELECT max(filled_at) AS latest FROM fills) AS t WHERE n <= 1000) AS hour",
            (f"-{suffix}",),
        )
        (day,) = conn.execute("SELECT max(created_at AT TIME ZONE 'UTC')::date FROM fills").fetchone()  # type: ignore[misc]
        conn.commit()
    return str(day)


def _append_late_fills(database_url: str, day: str, suffix: str) -> None:
    """1,000 fills recorded now that happened earlier on ``day`` (a reconciliation found them): copies of the
    day's fills, a minute later. Every book they touch is matched again from its first fill, and the hourly
    models restate from the day's first hour."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity,"
            " price, fee, fee_asset, liquidity, filled_at, exchange_ts_ms, created_at)"
            " SELECT gen_random_uuid(), order_id, account_id, user_id, exchange, symbol, side,"
            " trade_id || %s, quantity, price, fee, fee_asset, liquidity, filled_at + %s,"
            " exchange_ts_ms, created_at + %s FROM fills WHERE created_at::date = %s AND trade_id NOT LIKE '%%-next'"
            " LIMIT 1000",
            (f"-{suffix}", timedelta(minutes=1), timedelta(minutes=1), day),
        )
        conn.commit()


def _resources(database_url: str, root: str) -> dict[str, object]:
    warehouse = WarehouseResource(root=root)
    return {
        "postgres": PostgresResource(database_url=database_url),
        "warehouse": warehouse,
        "dbt": dbt_resource(warehouse=warehouse),
        "quality": QualityResource(),
    }


def _hourly_job(resources: dict[str, object]) -> JobDefinition:
    """The ``hourly_refresh`` job as a deployment's code location resolves it (its assets and executor), with this
    benchmark's resources: resolving it is the code location's work, done before a run starts."""
    defs = Definitions(
        assets=ALL,
        asset_checks=FRESHNESS_CHECKS,
        jobs=[hourly_refresh],
        resources=resources,
        executor=in_process_executor,
    )
    return defs.resolve_job_def(hourly_refresh.name)


def _hourly_run(job: JobDefinition, instance: DagsterInstance, day: str) -> None:
    """One run of the hourly_refresh job, with the tags its schedule and sensor give it: the day's partition of
    every partitioned extract, the dimensions and snapshots, dbt (its tests on the changed rows), publishing."""
    result = job.execute_in_process(instance=instance, partition_key=day, tags=HOURLY_TAGS)
    if not result.success:
        raise RuntimeError(f"the hourly run failed (run {result.run_id})")


def _run_in_fresh_process(database_url: str, root: str, day: str) -> float:
    """Seconds the hourly run takes in a new process that has loaded the code location (``--run``)."""
    command = [sys.executable, "-m", "bench.pipeline", "--run", database_url, root, day]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the hourly run failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def _run(database_url: str, root: str, day: str) -> None:
    """One hourly run in this (new) process; the code location is already loaded by this module's imports."""
    job = _hourly_job(_resources(database_url, root))
    with DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        _hourly_run(job, instance, day)
        print(json.dumps({"seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--run", nargs=3, metavar=("DATABASE_URL", "ROOT", "DAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _run(*args.run)
        return
    print(json.dumps(run(args.users, args.days, args.fills)))


if __name__ == "__main__":
    main()
