"""Structured logs: one processor chain renders structlog events and stdlib records alike, as JSON or for a terminal.

Every line carries ``timestamp`` (UTC), ``level``, ``service``, ``event``, ``logger`` and the ``correlation_id`` of
the work in progress, so one request can be followed through the API, the event store and every consumer.
Values under secret-looking keys are replaced by ``***`` before anything is rendered.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from core.observability.context import get_causation_id, get_correlation_id
from core.observability.tracing import current_trace_id

REDACTED = "***"
# Substring match on purpose: `binance_api_secret`, `refresh_token`, `db_password` must all be caught.
_SECRET_KEY_PATTERN = re.compile(
    r"api_secret|secret|password|passphrase|token|master_key|api_key|authorization|private_key", re.IGNORECASE
)

_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


# Chatty libraries whose INFO lines say nothing an operator needs (Alembic prints one per migration step).
_QUIET_LOGGERS = ("alembic",)


def use_json(json_output: bool | None, stream: IO[str] | None = None) -> bool:
    """JSON when asked for (``PATRIOT_LOG_JSON=1``) or when the stream is not a terminal; readable lines on one."""
    if json_output is not None:
        return json_output
    target = stream if stream is not None else sys.stdout
    try:
        return not target.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def configure_logging(
    service: str, level: str = "INFO", json_output: bool | None = True, stream: IO[str] | None = None
) -> None:
    """Route structlog and stdlib logging through one chain to ``stream`` (stdout by default).

    ``json_output=None`` picks the format from the stream (see ``use_json``). Safe to call again: the previous
    handler is replaced, and loggers obtained earlier write to the new stream.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    json_output = use_json(json_output, stream)

    # The structlog side only gathers call-site data and hands the event dict to stdlib logging. It does not
    # depend on service, stream or format, so loggers cached on first use stay valid across reconfiguration.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_LevelCheckedBoundLogger,
        context_class=dict,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, structlog.stdlib.ExtraAdder()],
        processors=_render_chain(service, json_output),
    )
    handler = _ServiceStreamHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServiceStreamHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None, **initial: object) -> FilteringBoundLogger:
    """A structured logger; ``initial`` key/values are bound to every line it writes."""
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial)
    return logger


def _render_chain(service: str, json_output: bool) -> list[Processor]:
    """The processors shared by structlog events and stdlib records, ending with the renderer."""
    chain: list[Processor] = [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _ServiceAdder(service),
        _add_correlation,
        _add_trace_id,
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    ]
    if json_output:
        chain += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=_dumps)]
    else:
        # Plain tracebacks: rich ones print frame locals, which may hold exchange secrets.
        chain.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
    return chain


class _LevelCheckedBoundLogger(structlog.stdlib.BoundLogger):
    """Checks the stdlib level before any processor runs, so a disabled ``debug`` in a hot path costs ~nothing."""

    def _proxy_to_logger(self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any) -> Any:
        level = _METHOD_LEVELS.get(method_name)
        if level is not None and not self._logger.isEnabledFor(level):
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


class _ServiceStreamHandler(logging.StreamHandler[IO[str]]):
    """Our root handler; without an explicit stream it follows ``sys.stdout`` even when that is swapped."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stdout:
            self.stream = sys.stdout
        super().emit(record)


class _ServiceAdder:
    """Stamps the emitting process's service name on every line."""

    __slots__ = ("_service",)

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        given = event_dict.get("service")
        if given is not None and given != self._service:
            # A caller talking *about* another service (the supervisor) must not hide which process wrote the line.
            event_dict["subject_service"] = given
        event_dict["service"] = self._service
        return event_dict


def _add_correlation(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The correlation id is always present (null outside a request); the causation id only when known."""
    if "correlation_id" not in event_dict:
        event_dict["correlation_id"] = get_correlation_id()
    if "causation_id" not in event_dict:
        causation_id = get_causation_id()
        if causation_id is not None:
            event_dict["causation_id"] = causation_id
    return event_dict


def _add_trace_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace values under secret-looking keys (at any depth of dicts and lists) with ``***``."""
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, dict | list):
            event_dict[key] = _redact_value(value)
    return event_dict


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # `*_masked` values were shortened on purpose (e.g. "abcd…wxyz") so an operator can tell keys apart.
    return not key.lower().endswith("_masked") and _SECRET_KEY_PATTERN.search(key) is not None


def _redact_value(value: Any) -> Any:
    if isinstance(value, MutableMapping):
        return {k: REDACTED if isinstance(k, str) and _is_secret_key(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    return value


def _dumps(obj: Any, **_kw: Any) -> str:
    """orjson for speed; stdlib json for what orjson refuses (ints beyond 64 bits), so a line is never lost."""
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(obj, default=str)
