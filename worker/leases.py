"""Keep a claim's lease alive while its batches run, so no sweeper hands it to another worker."""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

from shared.db import Database
from shared.jobs.claims import renew_lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a claim's lease every third of its length from a background thread."""

    def __init__(self, db: Database, claim_token: uuid.UUID, *, lease_s: float) -> None:
        self.db = db
        self.claim_token = claim_token
        self.lease_s = lease_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name="textq-lease", daemon=True
        )

    def start(self) -> LeaseKeeper:
        """Start renewing; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing, once the renewal in flight (if any) has ended."""
        self._stopped.set()
        self._thread.join()

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _renew_until_stopped(self) -> None:
        while not self._stopped.wait(self.lease_s / 3):
            try:
                with self.db.write() as session:
                    renew_lease(session, claim_token=self.claim_token, lease_s=self.lease_s)
            except Exception as error:  # a missed renewal is retried; the lease has slack
                log.warning("could not renew lease: %s", error, extra={"action": "lease_renew"})
