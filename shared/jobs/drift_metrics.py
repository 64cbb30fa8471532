"""The gauge `textq_drift_psi{model,tenant,feature}`, read from the drift counts at scrape."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.db import Database
from shared.drift import Window
from shared.jobs.drift_counts import all_drift
from shared.models import utcnow

log = logging.getLogger(__name__)

CACHE_S = 60.0


class DriftCollector(Collector):
    """PSI of each model, tenant and feature with enough traffic, cached for a minute.

    Hourly counts change slowly and reading every reference window costs a query per model
    and tenant, so a scrape within a minute of the last read answers what that read found.
    """

    def __init__(self, db: Database, *, pinned: Window | None = None) -> None:
        self.db = db
        self.pinned = pinned
        self._lock = threading.Lock()
        self._read_at = -CACHE_S
        self._samples: list[tuple[str, str, str, float]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "textq_drift_psi",
            "Population stability index of the last 24 h against the reference window.",
            labels=["model", "tenant", "feature"],
        )
        for model, tenant, feature, value in self._cached():
            gauge.add_metric([model, tenant, feature], value)
        yield gauge

    def _cached(self) -> list[tuple[str, str, str, float]]:
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_S:
                try:
                    self._samples = self._read()
                except Exception as error:  # a scrape must not fail because the database blinked
                    log.warning("drift metrics unavailable: %s", error, extra={"action": "metrics"})
                self._read_at = time.monotonic()
            return self._samples

    def _read(self) -> list[tuple[str, str, str, float]]:
        with self.db.read() as session:
            found = all_drift(session, now=utcnow(), pinned=self.pinned)
        return [
            (model, tenant, drift.feature, drift.psi)
            for model, tenant, drift in found
            if drift.psi is not None
        ]
