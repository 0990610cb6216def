"""Command bus: routes each command to its one handler ``(command, uow, **deps)`` from the tier's table.

Handlers write through the unit of work; events reach other processes only through the outbox and the relay
(never published from a handler: that would be a dual write). A concurrency conflict retries the command on
fresh state; any other failure propagates to the caller, counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from core.domain.messages import Command
from core.eventstore import ConcurrencyError
from core.observability.context import correlation_scope, get_correlation_id
from core.observability.metrics import Metrics
from core.uow import UnitOfWorkFactory

CommandHandler = Callable[..., Awaitable[Any]]

log = structlog.get_logger(__name__)


class UnknownCommand(LookupError):
    pass


class CommandRefused(Exception):
    """The handler refused the command for a reason its sender can act on (a name taken, no such account):
    counted like any failure, but logged as information, not as an error of the platform."""


class MessageBus:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        handlers: Mapping[type[Command], CommandHandler],
        metrics: Metrics,
        dependencies: Mapping[str, object] | None = None,
        max_conflict_retries: int = 3,
    ) -> None:
        self._uow_factory = uow_factory
        self._handlers = dict(handlers)
        self._metrics = metrics
        self._deps = dict(dependencies or {})
        self._retries = max_conflict_retries
        self._failures = metrics.counter(
            "patriot_commands_failed_total", "Commands whose handler raised", ("command", "error")
        )
        self._handled = metrics.counter("patriot_commands_handled_total", "Commands handled", ("command",))

    async def handle(self, command: Command) -> Any:
        """Run the command's handler in a fresh unit of work; returns what the handler returns."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise UnknownCommand(f"no handler registered for {type(command).__name__}")
        name = type(command).__name__
        with correlation_scope(command.correlation_id or get_correlation_id(), str(command.command_id)):
            for attempt in range(self._retries + 1):
                try:
                    async with self._uow_factory() as uow:
                        result = await handler(command, uow, **self._deps)
                    self._handled.labels(command=name).inc()
                    return result
                except ConcurrencyError:
                    if attempt == self._retries:
                        self._failures.labels(command=name, error="ConcurrencyError").inc()
                        raise
                    log.info("concurrency conflict, retrying command", command=name, attempt=attempt + 1)
                except CommandRefused as exc:
                    self._failures.labels(command=name, error=type(exc).__name__).inc()
                    log.info("command refused", command=name, reason=str(exc))
                    raise
                except Exception as exc:
                    self._failures.labels(command=name, error=type(exc).__name__).inc()
                    log.error("command failed", command=name, error=repr(exc))
                    raise
        raise AssertionError("unreachable")
