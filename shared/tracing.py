"""Optional OpenTelemetry tracing (the `otel` extra, TEXTQ_TRACING=true).

One trace follows a job: the API request, the doorbell it publishes, the worker's drain
that the doorbell woke, and each claim and model batch in it. Spans go to the OTLP/HTTP
endpoint the standard OTEL_EXPORTER_OTLP_* variables name. Without the extra, or with
tracing off, `span` costs nothing and no OpenTelemetry code is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.config import Settings

log = logging.getLogger(__name__)

_tracer: Any = None


def setup_tracing(settings: Settings, service_name: str) -> bool:
    """Start exporting spans of this process if tracing is on; return whether it is."""
    global _tracer
    if not settings.tracing or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "TEXTQ_TRACING is on but the otel extra is not installed "
            "(pip install 'textq[otel]'); tracing stays off",
            extra={"action": "tracing_off"},
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()  # carries the trace from the doorbell to the drain
    _tracer = trace.get_tracer("textq")
    log.info("tracing to OTLP as %s", service_name, extra={"action": "tracing_on"})
    return True


def instrument_api(app: Any) -> None:
    """Trace each request of the API, if tracing is on."""
    if _tracer is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """Time a step as a child of the current span (nothing when tracing is off)."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield
