"""Log set-up shared by the API, the worker and the CLI: JSON lines, or text for people.

Each line carries the fields bound to the work it belongs to (the request's tenant and job,
a drain's jobs), so a log search for one job or one tenant finds all of its lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "process", "message"]
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}

# One dict per unit of work, mutated in place by `bind`: a request's dependencies run in
# threads with copies of the context, and what they bind must still reach the access line.
_bound: ContextVar[dict[str, Any] | None] = ContextVar("textq_log_fields", default=None)


@contextmanager
def log_scope(**fields: Any) -> Iterator[None]:
    """Start a unit of work whose log lines all carry `fields` (and whatever is bound later)."""
    token = _bound.set(dict(fields))
    try:
        yield
    finally:
        _bound.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to every later log line of the current unit of work."""
    current = _bound.get()
    if current is None:
        current = {}
        _bound.set(current)
    current.update(fields)


class _BoundFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_bound.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure_logging(level: str, log_format: str = "auto") -> None:
    """Send every textq and library log line to stderr at `level`.

    `json` writes one JSON object per line; `text` a line for people; `auto` is text on a
    terminal and JSON otherwise (containers, files, log shippers).
    """
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, json_ensure_ascii=False)
        if use_json
        else logging.Formatter(LOG_FORMAT)
    )
    handler.addFilter(_BoundFields())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # The hub client and transformers are chatty at INFO about things users cannot act on.
    for noisy in ("httpx", "huggingface_hub", "transformers", "filelock", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
