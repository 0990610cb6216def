"""The ``patriot`` command: run the platform (``up`` / ``down``), its processes, and operator tasks."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import typer

from cli.keys import keys_app
from cli.supervisor import ServiceSpec, Supervisor, process_alive, read_state
from core.observability.logging import configure_logging
from core.observability.tracing import configure_tracing
from core.runtime.embedded import (
    Endpoints,
    embedded_addresses,
    running_services,
    start_services,
    stop_services,
)
from core.settings import Settings, load_settings

app = typer.Typer(help="PATRIOT: multi-user crypto hedge-fund platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _settings(service: str) -> Settings:
    settings = load_settings()
    configure_logging(service, settings.observability.log_level, json_output=settings.observability.log_json)
    configure_tracing(service, settings.observability.otlp_endpoint)
    return settings


def _endpoints(settings: Settings) -> Endpoints:
    """The configured servers, or the embedded ones (started, or reused when already running)."""
    try:
        return start_services(settings)
    except Exception as exc:
        typer.secho(f"error: could not start the embedded services: {exc}", fg="red", err=True)
        typer.secho("Set DATABASE_URL and REDIS_URL to use existing servers instead.", err=True)
        raise typer.Exit(2) from exc


def _migrate(database_url: str) -> None:
    from core.db.migrate import upgrade
    from core.db.partitions import run_partition_maintenance

    upgrade(database_url)
    run_partition_maintenance(database_url)


def _check_master_key(settings: Settings) -> None:
    from core.security.master_key import MasterKeyError, load_keyring

    try:
        load_keyring(settings.security, settings.runtime)
    except MasterKeyError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _pidfile(settings: Settings) -> Path:
    return settings.runtime.data_dir / "up.pid"


def _state_file(settings: Settings) -> Path:
    """Each service ``patriot up`` runs, with pid, address and start time (read by ``status`` and ``down``)."""
    return settings.runtime.data_dir / "services.json"


@app.command()
def up() -> None:
    """Start everything: embedded PostgreSQL and Valkey (unless URLs are set), migrations, platform services."""
    settings = _settings("supervisor")
    settings.runtime.data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = _pidfile(settings)
    if pidfile.exists() and process_alive(int(pidfile.read_text() or 0)):
        typer.echo(f"PATRIOT is already running (pid {pidfile.read_text()}); `patriot down` stops it.")
        raise typer.Exit(1)
    _check_master_key(settings)
    endpoints = _endpoints(settings)
    typer.echo("applying migrations ...")
    _migrate(endpoints.database_url)
    env = {**os.environ, "DATABASE_URL": endpoints.database_url, "REDIS_URL": endpoints.redis_url}
    supervisor = Supervisor(env, _platform_services(settings), state_path=_state_file(settings))
    stop_requested = [False]

    def request_stop(_signum: int, _frame: object) -> None:
        stop_requested[0] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    pidfile.write_text(str(os.getpid()))
    try:
        not_ready = supervisor.start(stop_requested=stop_requested)
        if not stop_requested[0]:
            _print_summary(settings, endpoints, supervisor, not_ready)
        supervisor.watch(stop_requested)
    finally:
        typer.echo("stopping ...")
        supervisor.stop()
        if endpoints.embedded:
            stop_services(settings)
        pidfile.unlink(missing_ok=True)
        typer.echo("stopped; nothing left running.")


def _platform_services(settings: Settings) -> list[ServiceSpec]:
    """Every process ``patriot up`` runs, in dependency order; the simulator stands in for the venues when none is
    configured and is ready before the services that connect to it start (migrations ran before any of them)."""
    md = settings.market_data
    services = [ServiceSpec("relay", ["relay"], "outbox -> Redis Streams")]
    if md.uses_simulator:
        where = f"http://{md.simulator_host}:{md.simulator_port} (Binance REST+WS, Bybit WS)"
        services.append(ServiceSpec("simulator", ["simulator"], where, port=md.simulator_port, gate=True))
    venue = "simulator" if md.uses_simulator else str(md.binance_ws_url)
    services.append(ServiceSpec("marketdata", ["marketdata"], f"{', '.join(md.symbols)} from {venue}"))
    services.append(ServiceSpec("accounts", ["accounts"], "a private stream per linked account"))
    services.append(ServiceSpec("orders", ["orders"], "order commands -> risk -> venue; platform-held triggers"))
    services.append(ServiceSpec("lifecycle", ["lifecycle"], "fills, positions, balances; reconciliation"))
    services.append(ServiceSpec("risk", ["risk"], "real-time risk monitor -> risk.alerts; marks, snapshots"))
    api = settings.api
    api_url = f"http://127.0.0.1:{api.port}"
    services.append(
        ServiceSpec("api", ["api"], f"{api_url} (OpenAPI docs at /docs)", port=api.port, health_url=f"{api_url}/ready")
    )
    port = int(os.environ.get("PATRIOT_DAGSTER_PORT", "3000"))
    dagster_url = f"http://127.0.0.1:{port}"
    services.append(
        ServiceSpec(
            "dagster",
            ["analytics"],
            f"{dagster_url} (Dagster UI, schedules, sensors)",
            port=port,
            health_url=f"{dagster_url}/server_info",
        )
    )
    return services


def _print_summary(settings: Settings, endpoints: Endpoints, supervisor: Supervisor, not_ready: list[str]) -> None:
    """Say what runs where, once every service answers its health check (or name those that do not)."""
    embedded = set(endpoints.embedded)
    db = endpoints.database_url.split("@")[-1]
    rows = [
        ("postgres", f"{db}", "embedded" if "postgres" in embedded else "DATABASE_URL"),
        ("redis", endpoints.redis_url.split("@")[-1], "embedded" if "valkey" in embedded else "REDIS_URL"),
    ]
    rows += [
        (name, spec, f"pid {pid}" + (" (NOT READY)" if name in not_ready else ""))
        for (name, pid), spec in zip(supervisor.pids().items(), (s.listens for s in supervisor.specs), strict=True)
    ]
    if not_ready:
        typer.secho(f"\nPATRIOT started, but not ready: {', '.join(not_ready)} (see the log above)", fg="yellow")
    else:
        typer.echo("\nPATRIOT is up: every service answers")
    typer.echo(f"data dir: {settings.runtime.data_dir.resolve()}")
    for name, where, how in rows:
        typer.echo(f"  {name:<10} {where:<45} {how}")
    typer.echo("Ctrl-C or `patriot down` stops everything.\n")


@app.command()
def down(timeout_s: float = 30.0) -> None:
    """Stop a running `patriot up` and the embedded servers of this data directory; say what was stopped."""
    settings = _settings("supervisor")
    pidfile = _pidfile(settings)
    services = read_state(_state_file(settings))
    running_children = [name for name, entry in services.items() if _service_alive(entry)]
    embedded_before = [name for name, running in running_services(settings).items() if running]
    stopped: list[str] = []
    if pidfile.exists():
        pid = int(pidfile.read_text() or 0)
        if pid and process_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            stopped.append(f"supervisor (pid {pid})")
        pidfile.unlink(missing_ok=True)
    _stop_orphans(services, settings.runtime.data_dir, timeout_s)
    stopped += running_children
    now_stopped = stop_services(settings)
    stopped += [name for name in ("valkey", "postgres") if name in embedded_before or name in now_stopped]
    _state_file(settings).unlink(missing_ok=True)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _service_alive(entry: dict[str, object]) -> bool:
    """Whether a recorded service's pid is still that service (a ``cli.main`` process), not a reused pid."""
    import psutil

    pid = entry.get("pid")
    if not isinstance(pid, int) or not process_alive(pid):
        return False
    try:
        return "cli.main" in " ".join(psutil.Process(pid).cmdline()) or "dagster" in psutil.Process(pid).name()
    except psutil.Error:
        return False


def _stop_orphans(services: dict[str, dict[str, object]], data_dir: Path, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL, recorded services still alive after the supervisor went (e.g. it was killed), and
    the Dagster code servers of this data dir (they otherwise linger until their heartbeat times out)."""
    import psutil

    left = [psutil.Process(int(str(e["pid"]))) for e in services.values() if _service_alive(e)]
    marker = f"base_dir: {data_dir.resolve()}/dagster"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "dagster" in cmdline and (f"{marker}/" in cmdline or f"{marker}\\n" in cmdline):
            left.append(proc)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _gone, alive = psutil.wait_procs(left, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@app.command()
def status() -> None:
    """Every platform service with its state, pid, address and uptime; the embedded servers; the API's URLs."""
    settings = _settings("cli")
    pidfile = _pidfile(settings)
    pid = int(pidfile.read_text() or 0) if pidfile.exists() else 0
    up_running = bool(pid and process_alive(pid))
    typer.echo(f"supervisor: {f'running (pid {pid})' if up_running else 'not running'}")
    addresses = embedded_addresses(settings)
    for name, running in running_services(settings).items():
        typer.echo(f"  {name:<10} {'running' if running else 'stopped':<8} {'-':>7}  {addresses[name]}")
    services = read_state(_state_file(settings)) if up_running else {}
    urls: dict[str, str] = {}
    for name, entry in services.items():
        alive = _service_alive(entry)
        started = entry.get("started_at")
        uptime = _uptime(time.time() - started) if alive and isinstance(started, int | float) else "-"
        address = str(entry.get("address") or "-")
        typer.echo(
            f"  {name:<10} {'running' if alive else 'stopped':<8} {entry.get('pid')!s:>7}  {address:<28} {uptime}"
        )
        if name in ("api", "dagster") and address != "-":
            urls[name] = address
    if "api" in urls:
        typer.echo(f"API:     {urls['api']}  (docs: {urls['api']}/docs)")
    if "dagster" in urls:
        typer.echo(f"Dagster: {urls['dagster']}")


@app.command()
def relay() -> None:
    """Run the outbox relay in the foreground (``patriot up`` runs it for you)."""
    from core.runtime.processes import run_relay

    settings = _settings("relay")
    endpoints = _endpoints(settings)
    from core.runtime.processes import run_service

    run_service(run_relay(settings, endpoints.database_url, endpoints.redis_url))


@app.command()
def simulator(
    capture: list[Path] = typer.Option(None, help="replay these Binance WebSocket captures message for message"),
    candles: list[Path] = typer.Option(None, help="replay these 1-minute candle files (SYMBOL_1m.csv.gz)"),
    speed: str = typer.Option(None, help="1 (real time), 10, ... or max"),
    port: int = typer.Option(None, help="listen port (default PATRIOT_MD_SIMULATOR_PORT)"),
) -> None:
    """Run the local exchange simulator (Binance spot REST + WebSocket, Bybit v5 public WebSocket).

    \b
    Its demo account "demo" (100000 USDT, 1 BTC, 10 ETH) signs with
      API key  simDemoApiKey0000000000000000000000000000000000000000000000000001
      secret   simDemoSecret000000000000000000000000000000000000000000000000001
    More accounts, each with its own key (any other key is refused with -2015):
      POST /admin/accounts {"account_id", "api_key", "secret", "balances"}
      POST /admin/deposit {"account_id", "asset", "amount"}
    Link one on the API: POST /accounts {"exchange": "simulator", "api_key", "api_secret"}
    """
    from realtime.exchanges.simulator.app import SimulatorConfig, default_candle_files, parse_speed, run

    settings = _settings("simulator")
    md = settings.market_data
    candle_files = {p.name.split("_")[0].upper(): p for p in candles} if candles else {}
    if not capture and not candle_files:
        candle_files = default_candle_files(_data_dir(), "2025", md.symbols)
    for path in [*(capture or []), *candle_files.values()]:
        if not path.exists():
            typer.secho(f"error: {path} does not exist", fg="red", err=True)
            raise typer.Exit(2)
    run(
        SimulatorConfig(
            host=md.simulator_host,
            port=port if port is not None else md.simulator_port,
            candle_files=candle_files,
            capture_files=tuple(capture or ()),
            speed=parse_speed(speed or md.simulator_speed),
            weight_limit=md.simulator_weight_limit,
        )
    )


def _data_dir() -> Path:
    """The real market data shipped with the project (``data/`` at the repository root)."""
    import realtime

    return Path(realtime.__file__).resolve().parent.parent / "data"


@app.command()
def marketdata() -> None:
    """Run the market-data service: shared venue connections -> market streams and PostgreSQL."""
    from core.runtime.processes import run_service, stop_on_signals, tune_gc
    from realtime.marketdata.service import run_market_data

    settings = _settings("marketdata")
    endpoints = _endpoints(settings)

    async def main() -> None:
        stop = stop_on_signals()
        tune_gc()
        await run_market_data(settings, endpoints.database_url, endpoints.redis_url, stop)

    run_service(main())


@app.command()
def accounts() -> None:
    """Run the account data service: one private stream per active linked account -> account.events."""
    from core.runtime.processes import run_service, stop_on_signals
    from realtime.accounts.service import run_account_streams

    settings = _settings("accounts")
    _check_master_key(settings)
    endpoints = _endpoints(settings)

    async def main() -> None:
        await run_account_streams(settings, endpoints.database_url, endpoints.redis_url, stop_on_signals())

    run_service(main())


def _run_service(name: str, runner_path: str) -> None:
    """Run one platform service in the foreground with its own settings, master key and servers."""
    import importlib

    from core.runtime.processes import run_service, stop_on_signals, tune_gc

    settings = _settings(name)
    _check_master_key(settings)
    endpoints = _endpoints(settings)
    module, _, attr = runner_path.rpartition(".")
    runner = getattr(importlib.import_module(module), attr)

    async def main() -> None:
        stop = stop_on_signals()
        tune_gc()
        await runner(settings, endpoints.database_url, endpoints.redis_url, stop)

    run_service(main())


@app.command()
def orders() -> None:
    """Run the order service: order commands, pre-trade risk, venue submission, stops/take-profits/trailing."""
    _run_service("orders", "realtime.orders.service.run_order_service")


@app.command()
def lifecycle() -> None:
    """Run the order lifecycle: venue reports -> orders, fills, positions, balances; reconciliation."""
    _run_service("lifecycle", "realtime.orders.lifecycle_service.run_lifecycle")


@app.command()
def risk() -> None:
    """Run the real-time risk monitor: exposure, leverage, drawdown, limit usage -> risk.alerts."""
    _run_service("risk", "realtime.risk.monitor.run_risk_monitor")


@app.command("api")
def api_server() -> None:
    """Serve the HTTP API (commands and queries, OpenAPI docs at /docs) with granian (api/serve.py)."""
    from api.serve import serve

    settings = _settings("api")
    typer.echo(f"API on http://{settings.api.host}:{settings.api.port} (docs: /docs)")
    serve(settings)


@app.command()
def analytics(
    port: int = typer.Option(None, help="Dagster UI port (default PATRIOT_DAGSTER_PORT or 3000)"),
) -> None:
    """Serve the Dagster UI with the analytics pipeline's schedules and sensors running (``dagster dev``)."""
    import shutil

    settings = _settings("analytics")
    endpoints = _endpoints(settings)
    home = settings.runtime.data_dir.resolve() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    # one run at a time: the DuckDB warehouse has a single writing process
    (home / "dagster.yaml").write_text(
        "concurrency:\n  runs:\n    max_concurrent_runs: 1\ntelemetry:\n  enabled: false\n"
    )
    root = Path(__file__).resolve().parent.parent
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": endpoints.database_url,
        "PATRIOT_DATA_DIR": str(settings.runtime.data_dir.resolve()),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GX_ANALYTICS_ENABLED": "False",
    }
    chosen = str(port or os.environ.get("PATRIOT_DAGSTER_PORT", "3000"))
    typer.echo(f"Dagster UI on http://127.0.0.1:{chosen}")
    os.chdir(root)
    # exec: the supervisor's SIGTERM reaches dagster itself, which stops its webserver and daemon
    os.execvpe(dagster, [dagster, "dev", "-h", "127.0.0.1", "-p", chosen, "-w", str(root / "workspace.yaml")], env)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply every pending migration (also done by ``patriot up``)."""
    settings = _settings("cli")
    endpoints = _endpoints(settings)
    _migrate(endpoints.database_url)
    from core.db.migrate import current_revision

    typer.echo(f"database at revision {current_revision(endpoints.database_url)}")


@db_app.command("partitions")
def db_partitions(days_ahead: int = typer.Option(7, help="create partitions this many days ahead")) -> None:
    """Create the time-series partitions ahead of time (run daily; ``patriot up`` runs it at start)."""
    from core.db.partitions import run_partition_maintenance

    settings = _settings("cli")
    endpoints = _endpoints(settings)
    created = run_partition_maintenance(endpoints.database_url, days_ahead=days_ahead)
    typer.echo(f"created {len(created)} partitions" + (": " + ", ".join(created) if created else ""))


def main() -> None:
    app()


@app.command("create-admin")
def create_admin(
    username: str = typer.Argument(..., help="the admin's login name"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, envvar="PATRIOT_ADMIN_PASSWORD"
    ),
) -> None:
    """Create the first admin (or reset an admin's password): staff log in to the API with it."""
    import uuid

    import psycopg

    from api.passwords import hash_password

    if len(password) < 12:
        typer.secho("error: the password must be at least 12 characters", fg="red", err=True)
        raise typer.Exit(2)
    settings = _settings("cli")
    endpoints = _endpoints(settings)
    _migrate(endpoints.database_url)
    with psycopg.connect(endpoints.database_url) as conn:
        conn.execute(
            "INSERT INTO users (id, username, role, password_hash) VALUES (%s, %s, 'admin', %s) "
            "ON CONFLICT (username) DO UPDATE SET role = 'admin', password_hash = EXCLUDED.password_hash, "
            "status = 'active'",
            (uuid.uuid4(), username, hash_password(password)),
        )
    typer.echo(f"admin {username!r} ready: POST /auth/login with this username and password")


if __name__ == "__main__":
    sys.exit(app())
