"""The warehouse's DuckDB files and the safe-read scheme of docs/warehouse.md ("Files and safe reads").

The pipeline alone opens ``working.duckdb`` (raw, staging and intermediate tables) and ``working.marts.duckdb``
(the marts, attached to it as ``marts``) read-write. ``publish`` checkpoints the marts file and copies it under
a new name, then switches the ``current`` pointer file with ``os.replace``, which is atomic: a reader attaches
whichever published file ``current`` names, read-only and as ``marts``, so it never sees a half-built model,
never takes the writer's lock, and keeps its old (consistent) file open while newer ones are published. Only the
marts are copied (about a third of the working data), because readers query nothing else.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

__all__ = [
    "MARTS_ALIAS",
    "NothingPublishedError",
    "WarehouseStore",
    "attach_marts",
    "connect_working_file",
    "marts_path_for",
]

_WORKING = "working.duckdb"
MARTS_ALIAS = "marts"
"""The name the marts file is attached under, by the pipeline and by readers: its tables are marts.<name>."""
_POINTER = "current"
_PREFIX = "published-"
_SUFFIX = ".duckdb"
_KEEP = 2


class NothingPublishedError(FileNotFoundError):
    """No published warehouse yet: the pipeline has not completed a build."""


class WarehouseStore:
    """The files under ``root`` (``<data dir>/warehouse/``): the working file, published copies, ``current``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.last_publish_seconds: dict[str, float] = {}
        """How long the last ``publish`` of this store took: checkpoint, copy, fsync and pointer switch."""

    def working_path(self) -> Path:
        """The pipeline's read-write DuckDB file (its directory is created on demand)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / _WORKING

    def marts_path(self) -> Path:
        """The pipeline's read-write marts file, attached to the working file as ``marts``."""
        return marts_path_for(self.working_path())

    def connect_working(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """The working file with the marts file attached as ``marts``, as dbt sees them (for the pipeline and
        tests; readers use :meth:`connect_reader`)."""
        return connect_working_file(self.working_path(), read_only=read_only)

    def publish(self, writer: duckdb.DuckDBPyConnection | None = None) -> Path:
        """Publish the marts file's committed state as a new read-only copy and make it ``current``.

        Pass the pipeline's open connection (the marts file attached as ``marts``) as ``writer``: another
        process could not open the locked file; the pipeline must not write while the copy is taken. Keeps the
        last two published files.
        """
        marts = self.marts_path()
        if not marts.exists():
            raise FileNotFoundError(
                f"no working warehouse file at {marts} (the marts): run the pipeline (extract, then dbt build) first"
            )
        started = time.perf_counter()
        if writer is not None:
            writer.execute(f"CHECKPOINT {MARTS_ALIAS}")
        else:
            with duckdb.connect(str(marts)) as own:
                own.execute("CHECKPOINT")
        # a checkpoint folds the WAL into the main file; committed data still in a WAL means the checkpoint
        # did not run (an open transaction), and copying the main file alone would publish stale data
        wal = marts.with_name(marts.name + ".wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise RuntimeError(f"checkpoint of {marts} left a non-empty WAL: close open transactions, then publish")

        checkpointed = time.perf_counter()
        target = self._new_published_path()
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(marts, partial)
        copied = time.perf_counter()
        _fsync(partial)
        os.replace(partial, target)
        self._point_to(target)
        self._remove_old()
        done = time.perf_counter()
        self.last_publish_seconds = {
            "checkpoint": round(checkpointed - started, 3),
            "copy": round(copied - checkpointed, 3),
            "fsync_and_switch": round(done - copied, 3),
        }
        return target

    def current_path(self) -> Path | None:
        """The published file readers should open, or None when nothing has been published."""
        try:
            name = (self.root / _POINTER).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self.root / name if name else None

    def connect_reader(self) -> duckdb.DuckDBPyConnection:
        """A connection with the current published file attached read-only as ``marts`` (its tables are
        marts.<name>); it keeps that file's data until closed."""
        last_error: Exception | None = None
        for _ in range(3):  # two publishes between reading ``current`` and opening it may remove the file
            path = self.current_path()
            if path is None:
                break
            conn = duckdb.connect()
            try:
                attach_marts(conn, path, read_only=True)
                return conn
            except duckdb.IOException as exc:
                conn.close()
                if path.exists():
                    raise
                last_error = exc
        raise NothingPublishedError(
            f"no published warehouse under {self.root}: run the warehouse pipeline (extract, dbt build, publish) "
            "before reading"
        ) from last_error

    def published_paths(self) -> list[Path]:
        """Published files, oldest first (their names sort by publication time)."""
        return sorted(p for p in self.root.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file())

    def _new_published_path(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for sequence in range(1000):  # same-length names sort by time; a clock step back never overwrites
            path = self.root / f"{_PREFIX}{stamp}-{sequence:03d}{_SUFFIX}"
            if not path.exists():
                return path
        raise RuntimeError(f"cannot name a new published file under {self.root}")

    def _point_to(self, target: Path) -> None:
        pointer = self.root / _POINTER
        partial = self.root / f".{_POINTER}.{os.getpid()}.partial"
        partial.write_text(target.name + "\n", encoding="utf-8")
        _fsync(partial)
        os.replace(partial, pointer)
        _fsync_directory(self.root)

    def _remove_old(self) -> None:
        current = self.current_path()
        for path in self.published_paths()[:-_KEEP]:
            if path == current:
                continue
            # an open reader keeps its file's data (POSIX); where removal is refused, the next publish retries
            for leftover in (path, path.with_name(path.name + ".wal")):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_directory(path: Path) -> None:
    """Make a rename durable; some platforms cannot open a directory, and there it is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def marts_path_for(working: Path) -> Path:
    """The marts file beside a working file: ``working.duckdb`` -> ``working.marts.duckdb``."""
    stem = working.name[: -len(_SUFFIX)] if working.name.endswith(_SUFFIX) else working.name
    return working.with_name(f"{stem}.marts{_SUFFIX}")


def connect_working_file(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A working file (``working.duckdb``, or a copy of it) with its marts file attached as ``marts``."""
    conn = duckdb.connect(str(path), read_only=read_only)
    try:
        attach_marts(conn, marts_path_for(Path(path)), read_only=read_only)
    except BaseException:
        conn.close()
        raise
    return conn


def attach_marts(conn: duckdb.DuckDBPyConnection, path: Path, read_only: bool = False) -> None:
    """Attach a marts file to ``conn`` as ``marts`` (read-only for readers of a published copy)."""
    escaped = str(path).replace("'", "''")
    conn.execute(f"ATTACH '{escaped}' AS {MARTS_ALIAS}" + (" (READ_ONLY)" if read_only else ""))
