"""The warehouse's DuckDB files and the safe-read scheme of docs/warehouse.md ("Files and safe reads").

The pipeline alone opens ``working.duckdb`` read-write. ``publish`` checkpoints it and copies it under a new
name, then switches the ``current`` pointer file with ``os.replace``, which is atomic: a reader opens whichever
published file ``current`` names, read-only, so it never sees a half-built model, never takes the writer's lock,
and keeps its old (consistent) file open while newer ones are published.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb

__all__ = ["NothingPublishedError", "WarehouseStore"]

_WORKING = "working.duckdb"
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

    def working_path(self) -> Path:
        """The pipeline's read-write DuckDB file (its directory is created on demand)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / _WORKING

    def publish(self, writer: duckdb.DuckDBPyConnection | None = None) -> Path:
        """Publish the working file's committed state as a new read-only copy and make it ``current``.

        Pass the pipeline's open connection as ``writer`` (another process could not open the locked file); the
        pipeline must not write while the copy is taken. Keeps the last two published files.
        """
        working = self.working_path()
        if not working.exists():
            raise FileNotFoundError(f"no working warehouse file at {working}: run the pipeline's extract first")
        if writer is not None:
            writer.execute("CHECKPOINT")
        else:
            with duckdb.connect(str(working)) as own:
                own.execute("CHECKPOINT")
        # a checkpoint folds the WAL into the main file; committed data still in a WAL means the checkpoint
        # did not run (an open transaction), and copying the main file alone would publish stale data
        wal = working.with_name(working.name + ".wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise RuntimeError(f"checkpoint of {working} left a non-empty WAL: close open transactions, then publish")

        target = self._new_published_path()
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(working, partial)
        _fsync(partial)
        os.replace(partial, target)
        self._point_to(target)
        self._remove_old()
        return target

    def current_path(self) -> Path | None:
        """The published file readers should open, or None when nothing has been published."""
        try:
            name = (self.root / _POINTER).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self.root / name if name else None

    def connect_reader(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the current published file; it keeps that file's data until closed."""
        last_error: Exception | None = None
        for _ in range(3):  # two publishes between reading ``current`` and opening it may remove the file
            path = self.current_path()
            if path is None:
                break
            try:
                return duckdb.connect(str(path), read_only=True)
            except duckdb.IOException as exc:
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
