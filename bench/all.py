"""Every benchmark once, with short durations: ``make bench`` (or ``python -m bench.all``).

Each benchmark runs as its own process, as it does alone, with its progress on stderr; this prints each one's
last line (its JSON object) prefixed by its name as it finishes, then a summary. A benchmark that fails is
reported with its exit status and the rest still run; the exit status is then 1. ``--only orders,outbox`` runs
a subset. The short durations are for a first look: docs/benchmarks.md gives the commands behind its figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

# name -> module arguments; short runs of the figures in docs/benchmarks.md
SHORT_RUNS: dict[str, list[str]] = {
    "ingest": ["bench.ingest", "--min-messages", "50000", "--repeats", "1", "--rows", "50000"],
    "triggers": ["bench.triggers", "--orders", "100000", "--updates", "30000", "--naive-updates", "5"],
    "orders": ["bench.orders", "--rate", "500", "--seconds", "5"],
    "outbox": ["bench.outbox", "--rate", "2500", "--seconds", "4"],
    "outbox_saturation": ["bench.outbox", "--rate", "10000", "--seconds", "3"],
    "api": ["bench.api", "--seconds", "5"],
    "pipeline": ["bench.pipeline", "--users", "10", "--days", "30", "--fills", "20000"],
}


def run_one(name: str, args: list[str]) -> tuple[dict[str, object] | None, str | None]:
    """Run one benchmark; its JSON figures, or why there are none."""
    print(f"--- {name}: python -m {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], stdout=subprocess.PIPE, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0:
        return None, f"exited with status {done.returncode} after {time.monotonic() - started:.0f}s"
    try:
        figures = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures = None
    if not isinstance(figures, dict):
        return None, "its last line is not a JSON object"
    return figures, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(SHORT_RUNS)}")
    chosen = parser.parse_args().only
    names = [n.strip() for n in chosen.split(",")] if chosen else list(SHORT_RUNS)
    unknown = [n for n in names if n not in SHORT_RUNS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SHORT_RUNS)}")
    failed: list[str] = []
    for name in names:
        figures, error = run_one(name, SHORT_RUNS[name])
        if figures is None:
            failed.append(f"{name}: {error}")
            print(f"{name}: FAILED ({error})", flush=True)
        else:
            print(f"{name}: {json.dumps(figures)}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(names)} benchmarks failed: {'; '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
