"""Observability kernel: JSON logs with service/correlation/trace ids and redaction, isolated metrics, tracing."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from core.observability.context import correlation_scope
from core.observability.logging import configure_logging, get_logger
from core.observability.metrics import build_metrics, render_metrics
from core.observability.tracing import _otlp_exporter, configure_tracing, current_trace_id, get_tracer


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logging configured to a buffer for one test, then pointed back at stdout."""
    stream = io.StringIO()
    configure_logging("test-svc", stream=stream)
    yield stream
    structlog.contextvars.clear_contextvars()
    configure_logging("test")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_under_correlation_scope_carries_service_timestamp_and_correlation_id(log_stream: io.StringIO) -> None:
    with correlation_scope("cid-123", causation_id="evt-9"):
        get_logger("orders").info("order accepted", order_id="o-1")

    [line] = lines(log_stream)
    assert line["event"] == "order accepted"
    assert line["service"] == "test-svc"
    assert line["level"] == "info"
    assert line["logger"] == "orders"
    assert line["correlation_id"] == "cid-123"
    assert line["causation_id"] == "evt-9"
    assert line["order_id"] == "o-1"
    stamp = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)


def test_log_outside_any_scope_has_null_correlation_id_and_no_causation(log_stream: io.StringIO) -> None:
    get_logger("x").info("idle")

    [line] = lines(log_stream)
    assert "correlation_id" in line and line["correlation_id"] is None
    assert "causation_id" not in line


def test_stdlib_logger_line_is_json_with_service_and_correlation_id(log_stream: io.StringIO) -> None:
    with correlation_scope("cid-lib"):
        logging.getLogger("thirdparty.lib").warning("pool %s exhausted", "main", extra={"size": 4})

    [line] = lines(log_stream)
    assert line["event"] == "pool main exhausted"
    assert line["service"] == "test-svc"
    assert line["level"] == "warning"
    assert line["logger"] == "thirdparty.lib"
    assert line["correlation_id"] == "cid-lib"
    assert line["size"] == 4
    assert "timestamp" in line


def test_secret_values_are_redacted_but_masked_keys_kept(log_stream: io.StringIO) -> None:
    get_logger("keys").info(
        "exchange account linked",
        api_secret="abc123secret",
        api_key="AKIA-plain-key",
        Password="hunter2hunter2",
        headers={"Authorization": "Bearer tok-xyz", "accept": "json"},
        accounts=[{"private_key": "pk-0xdeadbeef"}],
        api_key_masked="AKIA…key",
    )

    raw = log_stream.getvalue()
    for secret in ("abc123secret", "AKIA-plain-key", "hunter2hunter2", "tok-xyz", "pk-0xdeadbeef"):
        assert secret not in raw
    [line] = lines(log_stream)
    assert line["api_secret"] == "***"
    assert line["headers"] == {"Authorization": "***", "accept": "json"}
    assert line["api_key_masked"] == "AKIA…key"


def test_secret_bound_to_stdlib_extra_is_redacted(log_stream: io.StringIO) -> None:
    logging.getLogger("thirdparty").info("connect", extra={"master_key": "mk-very-secret"})

    assert "mk-very-secret" not in log_stream.getvalue()
    assert lines(log_stream)[0]["master_key"] == "***"


def test_logged_exception_is_rendered_as_exception_string(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("boom-structlog")
    except ValueError:
        get_logger("x").exception("handler failed")
    try:
        raise KeyError("boom-stdlib")
    except KeyError:
        logging.getLogger("y").exception("lib failed")

    first, second = lines(log_stream)
    assert first["level"] == "error"
    assert isinstance(first["exception"], str) and "ValueError: boom-structlog" in first["exception"]
    assert isinstance(second["exception"], str) and "KeyError: 'boom-stdlib'" in second["exception"]


def test_logger_created_before_reconfigure_writes_to_the_new_stream(log_stream: io.StringIO) -> None:
    early = get_logger("early")
    early.info("first")
    module_level_style = structlog.get_logger("module")
    module_level_style.info("first")

    second = io.StringIO()
    configure_logging("other-svc", stream=second)
    early.info("second")
    module_level_style.info("second")

    assert [line["event"] for line in lines(log_stream)] == ["first", "first"]
    assert [(line["event"], line["service"]) for line in lines(second)] == [
        ("second", "other-svc"),
        ("second", "other-svc"),
    ]


def test_level_below_configured_is_dropped_and_reconfigure_changes_it(log_stream: io.StringIO) -> None:
    log = get_logger("lvl")
    log.debug("hidden")
    configure_logging("test-svc", level="DEBUG", stream=log_stream)
    log.debug("shown")

    assert [line["event"] for line in lines(log_stream)] == ["shown"]


def test_bound_values_and_contextvars_appear_on_the_line(log_stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(user_id="u-7")
    get_logger("ctx", account="acc-1").bind(symbol="BTCUSDT").info("tick")

    [line] = lines(log_stream)
    assert (line["user_id"], line["account"], line["symbol"]) == ("u-7", "acc-1", "BTCUSDT")


def test_service_given_by_caller_does_not_replace_the_process_service(log_stream: io.StringIO) -> None:
    get_logger("sup").info("service started", service="relay")

    [line] = lines(log_stream)
    assert (line["service"], line["subject_service"]) == ("test-svc", "relay")


def test_console_output_is_human_readable_with_the_same_fields_and_no_locals() -> None:
    stream = io.StringIO()
    try:
        configure_logging("console-svc", json_output=False, stream=stream)
        with correlation_scope("cid-console"):
            get_logger("con").info("hello", api_secret="s3cr3t-value")
        api_secret_in_frame = "frame-local-secret"
        try:
            raise RuntimeError(f"signing failed ({len(api_secret_in_frame)})")
        except RuntimeError:
            get_logger("con").exception("sign failed")
    finally:
        configure_logging("test")

    text = stream.getvalue()
    assert not text.lstrip().startswith("{")
    for expected in ("hello", "service=console-svc", "correlation_id=cid-console", "api_secret=***"):
        assert expected in text
    assert "s3cr3t-value" not in text
    assert "RuntimeError: signing failed" in text
    assert "frame-local-secret" not in text  # tracebacks must not print frame locals


def test_unknown_log_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("x", level="LOUD", stream=io.StringIO())


def test_two_metric_builds_do_not_clash_and_increments_render() -> None:
    first, second = build_metrics("a"), build_metrics("b")
    first.outbox_published.labels(stream="orders").inc(3)
    first.bus_dead_lettered.labels(stream="orders", consumer="risk", reason="max_deliveries").inc()

    body, content_type = render_metrics(first)
    other, _ = render_metrics(second)
    assert 'patriot_outbox_published_total{stream="orders"} 3.0' in body.decode()
    assert "patriot_bus_dead_lettered_total{" in body.decode()
    assert 'patriot_outbox_published_total{stream="orders"}' not in other.decode()
    assert content_type.startswith("text/plain")


def test_extra_metric_requested_twice_is_the_same_object() -> None:
    metrics = build_metrics("api")
    handled = metrics.counter("patriot_commands_handled_total", "Commands handled", ("command",))
    assert metrics.counter("patriot_commands_handled", "Commands handled", ("command",)) is handled
    latency = metrics.histogram("patriot_api_seconds", "API latency", ("route",), buckets=(0.01, 0.1))
    assert metrics.histogram("patriot_api_seconds", "API latency", ("route",)) is latency
    gauge = metrics.gauge("patriot_open_orders", "Open orders")
    gauge.set(5)

    handled.labels(command="PlaceOrder").inc()
    body = render_metrics(metrics)[0].decode()
    assert 'patriot_commands_handled_total{command="PlaceOrder"} 1.0' in body
    assert "patriot_open_orders 5.0" in body
    assert metrics.counter("patriot_bus_messages_consumed_total", "x", ("stream", "consumer")) is metrics.bus_consumed


def test_extra_metric_with_other_kind_or_labels_is_rejected() -> None:
    metrics = build_metrics("api")
    metrics.counter("patriot_things", "Things", ("kind",))
    with pytest.raises(ValueError, match="Counter"):
        metrics.gauge("patriot_things", "Things", ("kind",))
    with pytest.raises(ValueError, match="labels"):
        metrics.counter("patriot_things", "Things", ("other",))


def test_configure_tracing_twice_returns_one_provider_without_exporter() -> None:
    provider = configure_tracing("test-svc")
    again = configure_tracing("other-svc", otlp_endpoint="http://collector:4317")

    assert isinstance(provider, TracerProvider) and again is provider
    # No endpoint on the first call: nothing may be exporting spans anywhere.
    assert provider._active_span_processor._span_processors == ()


def test_log_inside_span_carries_its_trace_id(log_stream: io.StringIO) -> None:
    configure_tracing("test-svc")
    with get_tracer("tests").start_as_current_span("place-order"):
        trace_id = current_trace_id()
        get_logger("traced").info("in span")
    get_logger("traced").info("after span")

    inside, after = lines(log_stream)
    assert trace_id is not None and len(trace_id) == 32
    assert inside["trace_id"] == trace_id
    assert "trace_id" not in after


def test_otlp_endpoint_without_exporter_package_raises_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ):
        monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(RuntimeError, match="pip install opentelemetry-exporter-otlp"):
        _otlp_exporter("http://collector:4317")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as stdout does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def test_format_is_readable_on_a_terminal_and_json_otherwise_or_when_asked() -> None:
    from core.observability.logging import use_json

    assert use_json(None, _Terminal()) is False
    assert use_json(None, io.StringIO()) is True
    assert use_json(True, _Terminal()) is True  # PATRIOT_LOG_JSON=1 wins on a terminal
    assert use_json(False, io.StringIO()) is False


def test_unset_log_json_renders_human_lines_on_a_terminal_and_json_on_a_pipe() -> None:
    from core.settings import ObservabilitySettings

    unset = ObservabilitySettings.model_validate({}).log_json
    terminal, pipe = _Terminal(), io.StringIO()
    try:
        configure_logging("tty-svc", json_output=unset, stream=terminal)
        get_logger("t").info("hello terminal", n=1)
        configure_logging("pipe-svc", json_output=unset, stream=pipe)
        get_logger("t").info("hello pipe", n=2)
    finally:
        configure_logging("test")
    line = terminal.getvalue().strip()
    assert "hello terminal" in line and not line.startswith("{")
    assert lines(pipe)[0]["event"] == "hello pipe"


def test_alembic_info_lines_are_quiet_but_its_warnings_are_shown() -> None:
    stream = io.StringIO()
    try:
        configure_logging("cli", stream=stream)
        logging.getLogger("alembic.runtime.migration").info("Running upgrade 0001 -> 0002")
        logging.getLogger("alembic.runtime.migration").warning("something odd")
    finally:
        configure_logging("test")
    assert [line["event"] for line in lines(stream)] == ["something odd"]
