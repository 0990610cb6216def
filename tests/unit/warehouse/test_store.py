"""The safe-read file scheme: published copies, the ``current`` pointer, readers that never block the writer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from warehouse.store import NothingPublishedError, WarehouseStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(tmp_path: Path) -> WarehouseStore:
    return WarehouseStore(tmp_path / "warehouse")


@pytest.fixture
def writer(store: WarehouseStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """The pipeline's connection to the working file (the marts file attached as ``marts``), holding one model
    table ``marts.nav`` at version 1."""
    with store.connect_working() as conn:
        conn.execute("CREATE TABLE marts.nav (version INTEGER, nav DECIMAL(38,18))")
        conn.execute("INSERT INTO marts.nav VALUES (1, 100.5)")
        yield conn


def rebuild(writer: duckdb.DuckDBPyConnection, version: int) -> None:
    """What a dbt run does to a model: replace its rows."""
    writer.execute("DELETE FROM marts.nav")
    writer.execute("INSERT INTO marts.nav VALUES (?, ?)", [version, 100 + version])


def version_seen(conn: duckdb.DuckDBPyConnection) -> int:
    row = conn.execute("SELECT max(version) FROM marts.nav").fetchone()
    assert row is not None
    return int(row[0])


def test_nothing_published_reader_gets_error_telling_to_run_pipeline(store: WarehouseStore) -> None:
    assert store.current_path() is None
    with pytest.raises(NothingPublishedError, match="run the warehouse pipeline"):
        store.connect_reader()


def test_publish_without_working_file_is_refused(store: WarehouseStore) -> None:
    with pytest.raises(FileNotFoundError, match="no working warehouse file"):
        store.publish()


def test_reader_opened_before_publish_keeps_old_data_and_later_reader_sees_new(
    store: WarehouseStore, writer: duckdb.DuckDBPyConnection
) -> None:
    first = store.publish(writer)
    before = store.connect_reader()
    rebuild(writer, 2)  # the writer is not blocked by an open reader
    second = store.publish(writer)
    after = store.connect_reader()
    rebuild(writer, 3)  # and keeps writing its working file after publishing

    assert (version_seen(before), version_seen(after)) == (1, 2)
    assert store.current_path() == second != first
    assert version_seen(writer) == 3
    with pytest.raises(duckdb.Error):  # a reader cannot change what it reads
        after.execute("DELETE FROM marts.nav")
    before.close()
    after.close()


def test_uncommitted_writes_are_not_published(store: WarehouseStore, writer: duckdb.DuckDBPyConnection) -> None:
    build = writer.cursor()
    build.begin()
    build.execute("INSERT INTO marts.nav VALUES (2, 102)")  # a model half-way through its build

    store.publish(writer)
    build.rollback()

    with store.connect_reader() as reader:
        assert reader.execute("SELECT version FROM marts.nav").fetchall() == [(1,)]


def test_publish_keeps_last_two_files_and_an_open_reader_of_a_removed_one(
    store: WarehouseStore, writer: duckdb.DuckDBPyConnection
) -> None:
    store.publish(writer)
    oldest_reader = store.connect_reader()
    published = []
    for version in (2, 3, 4):
        rebuild(writer, version)
        published.append(store.publish(writer))

    assert store.published_paths() == published[-2:]
    assert store.current_path() == published[-1]
    assert version_seen(oldest_reader) == 1  # its file is unlinked, its data still readable
    oldest_reader.close()
    assert not [p for p in store.root.iterdir() if "partial" in p.name]
    assert (store.root / "current").read_text().strip() == published[-1].name


def test_publish_opens_the_marts_file_itself_when_no_writer_is_given(store: WarehouseStore) -> None:
    with store.connect_working() as conn:
        conn.execute("CREATE TABLE marts.t AS SELECT 42 AS answer")

    store.publish()

    with store.connect_reader() as reader:
        assert reader.execute("SELECT answer FROM marts.t").fetchall() == [(42,)]


def test_only_the_marts_are_published(store: WarehouseStore) -> None:
    with store.connect_working() as conn:
        conn.execute("CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.fills AS SELECT range AS id FROM range(100000)")  # what readers never read
        conn.execute("CREATE TABLE marts.nav AS SELECT 1 AS version")

    published = store.publish()

    assert published.stat().st_size == store.marts_path().stat().st_size < store.working_path().stat().st_size
    with store.connect_reader() as reader:
        assert reader.execute("SELECT version FROM marts.nav").fetchall() == [(1,)]
        with pytest.raises(duckdb.CatalogException):
            reader.execute("SELECT count(*) FROM raw.fills")


def test_reader_in_another_process_never_blocks_writer_and_keeps_its_snapshot(
    store: WarehouseStore, writer: duckdb.DuckDBPyConnection
) -> None:
    store.publish(writer)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from warehouse.store import WarehouseStore
        reader = WarehouseStore(Path({str(store.root)!r})).connect_reader()
        read = lambda: reader.execute("SELECT max(version) FROM marts.nav").fetchone()[0]
        print(read(), flush=True)
        sys.stdin.readline()
        print(read(), flush=True)
        """
    )
    dashboard = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert dashboard.stdout is not None and dashboard.stdin is not None
        assert dashboard.stdout.readline().strip() == "1"
        rebuild(writer, 2)  # another process's open reader holds no lock on the working file
        store.publish(writer)
        with store.connect_reader() as fresh:
            assert version_seen(fresh) == 2
        out, _ = dashboard.communicate("go\n", timeout=30)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
    assert out.strip() == "1"
    assert dashboard.returncode == 0
