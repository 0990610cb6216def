"""Settings: one pydantic-settings class per area, built once by :func:`load_settings`.

Production configuration comes from the environment (``DATABASE_URL``, ``REDIS_URL``, ``PATRIOT_MASTER_KEY``...).
With no database or Redis URL the runtime starts embedded servers under the data directory instead.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class RuntimeSettings(BaseSettings):
    """Where the platform keeps its local state and which mode it runs in."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_", extra="ignore")

    env: Environment = Environment.DEV
    data_dir: Path = Path(".patriot")
    service_name: str = "patriot"

    @property
    def is_dev(self) -> bool:
        return self.env in (Environment.DEV, Environment.TEST)


class DatabaseSettings(BaseSettings):
    """PostgreSQL. ``url`` unset means: start the embedded server."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    pool_min_size: int = Field(default=2, validation_alias="PATRIOT_DB_POOL_MIN")
    pool_max_size: int = Field(default=16, validation_alias="PATRIOT_DB_POOL_MAX")
    embedded_port: int = Field(default=55432, validation_alias="PATRIOT_EMBEDDED_PG_PORT")
    embedded_database: str = Field(default="patriot", validation_alias="PATRIOT_EMBEDDED_PG_DATABASE")


class RedisSettings(BaseSettings):
    """Redis / Valkey. ``url`` unset means: start the embedded Valkey."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    url: str | None = Field(default=None, validation_alias="REDIS_URL")
    key_prefix: str = Field(default="patriot:", validation_alias="PATRIOT_REDIS_PREFIX")
    embedded_port: int = Field(default=56379, validation_alias="PATRIOT_EMBEDDED_REDIS_PORT")


class SecuritySettings(BaseSettings):
    """Master key for exchange-secret encryption: from the environment or a secrets file."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_", extra="ignore")

    master_key: str | None = None
    master_key_file: Path | None = None


class ObservabilitySettings(BaseSettings):
    """Logs, metrics and traces. Exporters are set up only when configured."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_", extra="ignore")

    log_level: str = "INFO"
    # unset: JSON unless stdout is a terminal (human-readable lines there)
    log_json: bool | None = None
    metrics_port: int | None = None
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")


class BusSettings(BaseSettings):
    """Redis Streams bus tuning."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_BUS_", extra="ignore")

    partitions: int = 8
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    stream_maxlen: int = 1_000_000
    relay_batch_size: int = 1_000
    relay_poll_interval_s: float = 0.01


class MarketDataSettings(BaseSettings):
    """Venues and symbols. No URLs configured means: run the local exchange simulator and use it."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_MD_", extra="ignore")

    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    streams: list[str] = Field(default_factory=lambda: ["trade", "bookTicker", "kline_1m"])
    binance_ws_url: str | None = None
    binance_rest_url: str | None = None
    binance_api_key: str | None = None
    bybit_private_ws_url: str | None = None  # e.g. wss://stream.bybit.com; unset: the simulator's /v5/private
    simulator_host: str = "127.0.0.1"
    simulator_port: int = 58080
    simulator_speed: str = "10"
    simulator_weight_limit: int = 6000  # request weight per minute, Binance spot's; raise it for load tests

    @property
    def uses_simulator(self) -> bool:
        return self.binance_ws_url is None


class ApiSettings(BaseSettings):
    """The HTTP API: where it listens, its tokens and its protections. ``jwt_secret`` unset means: a key file
    generated once under the data directory in dev; outside dev the API refuses to start without it."""

    model_config = SettingsConfigDict(env_prefix="PATRIOT_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    jwt_secret: SecretStr | None = Field(default=None, validation_alias="PATRIOT_JWT_SECRET")
    jwt_issuer: str = "patriot"
    access_ttl_s: int = 900
    refresh_ttl_s: int = 14 * 24 * 3600
    service_token_ttl_s: int = 365 * 24 * 3600
    link_code_ttl_s: int = 600
    max_body_bytes: int = 64 * 1024
    rate_limit_user_per_min: int = 1200
    rate_limit_ip_per_min: int = 2400
    rate_limit_login_per_min: int = 10  # per (username, address): nobody locks a user out from elsewhere
    rate_limit_login_ip_per_min: int = 30  # per address: a password check costs ~0.5 s of CPU by design
    # service tokens (the Telegram bot speaks for many users) get limits of their own, generous but finite
    rate_limit_service_per_min: int = 12000  # per service token
    rate_limit_service_ip_per_min: int = 12000  # per address, requests with service tokens
    rate_limit_link_per_min: int = 300  # link-code redemptions per service token (bounds guessing codes)
    rate_limit_link_ip_per_min: int = 300  # link-code redemptions per address
    idempotency_ttl_s: int = 24 * 3600
    order_reply_timeout_s: float = 10.0
    # how long a request waits for a PostgreSQL connection before answering 503 (the pool's default is 30 s)
    db_wait_s: float = 5.0
    # how often an open /stream socket re-reads its user's token cut-off (a suspension ends it within this)
    stream_auth_check_s: float = 1.0


class Settings(BaseSettings):
    """All areas together; built once per process in bootstrap and passed in, never imported as a global."""

    model_config = SettingsConfigDict(extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    market_data: MarketDataSettings = Field(default_factory=MarketDataSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)


def load_settings() -> Settings:
    """Read every area from the environment (and ``.env`` is deliberately not read: secrets stay out of files)."""
    return Settings(
        runtime=RuntimeSettings(),
        database=DatabaseSettings(),
        redis=RedisSettings(),
        security=SecuritySettings(),
        observability=ObservabilitySettings(),
        bus=BusSettings(),
        market_data=MarketDataSettings(),
        api=ApiSettings(),
    )
