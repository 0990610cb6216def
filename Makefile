# PATRIOT: `make up` runs the platform on embedded defaults, `make test` runs every check and test,
# `make bench` installs the benchmarks' extra and runs every benchmark briefly.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

export DBT_SEND_ANONYMOUS_USAGE_STATS := False
export DO_NOT_TRACK := 1

.PHONY: up down test lint install bench clean

up: $(STAMP)
	$(BIN)/patriot up

down: $(STAMP)
	$(BIN)/patriot down

test: $(STAMP) lint
	$(BIN)/pytest -q -p no:cacheprovider
	@# The kernel's crash and exactly-once tests once more on the embedded PostgreSQL (what `make up` runs, a fresh
	@# cluster whose transaction ids are young), so neither server can regress them unseen.
	env -u DATABASE_URL $(BIN)/pytest -q -p no:cacheprovider -m kernel

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

install: $(STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.all

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
