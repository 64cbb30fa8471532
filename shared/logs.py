"""Log set-up shared by the API, the worker and the CLI."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send every textq and library log line to stderr at `level`."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    # The hub client and transformers are chatty at INFO about things users cannot act on.
    for noisy in ("httpx", "huggingface_hub", "transformers", "filelock", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
