"""The embedded broker: kombu's file-system transport, made safe for concurrent writers and readers.

kombu's own `filesystem` transport (5.7) creates a message file empty, then locks and writes it,
while a consumer moves and reads files without a lock; a consumer that gets there between the
two reads `b''`, and the JSON error it raises stops the Celery worker. Its exchange tables are
rewritten in place the same way. Here every file a reader may see is complete when it appears:
a message is written under a name the reader's pattern does not match and renamed into place,
and a table is replaced whole. A reader that still finds an unreadable message (left by a writer
that crashed, or one that publishes in place) does not die on it: it leaves a file a writer may
still be filling for a later poll, and sets an old one aside in the `unreadable` folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# A message file this young that does not parse may still be being written by a client that
# publishes in place (kombu's own transport writes within microseconds); older ones never will.
WRITER_GRACE_S = 10.0
# Suffix of a message or table being written: the reader only takes names ending `.<queue>.msg`.
PARTIAL_SUFFIX = ".part"


def _replace_with(path: Path | str, data: bytes) -> None:
    """Write `data` to a sibling temporary file, then rename it over `path` (atomic on POSIX).

    Raises OSError if the folder cannot be written; the temporary file is removed then.
    """
    temporary = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class Channel(filesystem.Channel):
    """A file-system channel whose files are whole whenever another process can see them."""

    # kombu's two base classes name the message differently (`message`, `payload`).
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Publish `payload` on `queue` as one file that appears complete or not at all."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            _replace_with(path, str_to_bytes(dumps(payload)))
        except OSError as error:
            raise ChannelError(f"Cannot add file {path!r} to directory") from error

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """Take the oldest readable message of `queue`; raise `queue.Empty` if there is none.

        A consumer claims a file by renaming it into the processed folder (on the same file
        system, so exactly one consumer wins and a writer still holding it open keeps writing
        into the same file). A file that does not parse is never fatal (see `_unreadable`).
        """
        wanted = f"{queue}.msg"
        claims = Path(self.processed_folder)
        claims.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            waiting = os.path.join(self.data_folder_in, name)
            claimed = claims / name
            try:
                os.rename(waiting, claimed)
            except OSError:
                continue  # another consumer took it first
            try:
                payload = claimed.read_bytes()
            except OSError as error:
                raise ChannelError(f"Cannot read file {str(claimed)!r} from queue.") from error
            try:
                message = loads(bytes_to_str(payload))
            except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
                self._unreadable(claimed, waiting, len(payload))
                continue
            if not self.store_processed:
                claimed.unlink(missing_ok=True)
            return message
        raise Empty()

    def _unreadable(self, claimed: Path, waiting: str, size: int) -> None:
        """Put a young unreadable file back for a later poll; set an old one aside, logged."""
        try:
            age_s = time.time() - claimed.stat().st_mtime
            if age_s < WRITER_GRACE_S:
                # Renaming keeps the file's identity: bytes a slow writer adds still land in it.
                os.rename(claimed, waiting)
                return
            aside = Path(self.unreadable_folder)
            aside.mkdir(parents=True, exist_ok=True)
            os.rename(claimed, aside / claimed.name)
        except OSError as error:
            log.warning(
                "could not move the unreadable message file %s: %s",
                claimed,
                error,
                extra={"action": "broker_unreadable"},
            )
            return
        log.warning(
            "set aside the unreadable message file %s (%d bytes, %.0f s old) in %s; "
            "the sweeper rings again for any work it announced",
            claimed.name,
            size,
            age_s,
            aside,
            extra={"action": "broker_unreadable"},
        )

    def get_table(self, exchange: str) -> list[Any]:
        """Return the bindings of `exchange`; a table that does not parse counts as empty."""
        file = self._exchange_file(exchange)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise ChannelError(f"Cannot open {file}") from error
        try:
            return [filesystem.exchange_queue_t(*row) for row in loads(bytes_to_str(raw))]
        except (ValueError, TypeError):
            # Only a writer of kombu's own transport that died mid-write leaves this; the next
            # bind (every worker binds its queues when it starts) writes the table whole again.
            log.warning("ignoring the unreadable exchange table %s", file)
            return []

    def _queue_bind(
        self, exchange: str, routing_key: str, pattern: str, queue: str, *args: Any
    ) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda rows: rows if binding in rows else [binding, *rows])

    def _delete(
        self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any
    ) -> None:
        # kombu's virtual channel forgets the queue; the file channel's own table rewrite is
        # replaced by an atomic one.
        super(filesystem.Channel, self)._delete(
            queue, exchange, routing_key, pattern, *args, **kwargs
        )
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda rows: [row for row in rows if row != binding])

    def _update_table(self, exchange: str, change: Any) -> None:
        """Apply `change` (rows -> rows) to an exchange's table, one writer at a time.

        Writers serialise on a lock file beside the table; readers need no lock because the
        table is only ever replaced whole.
        """
        file = self._exchange_file(exchange)
        try:
            self.control_folder.mkdir(parents=True, exist_ok=True)
            with open(f"{file}.lock", "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                rows = self.get_table(exchange)
                changed = change(rows)
                if changed != rows:
                    _replace_with(file, str_to_bytes(dumps(changed)))
        except OSError as error:
            raise ChannelError(f"Cannot update {file}") from error

    @property
    def unreadable_folder(self) -> str:
        """Where message files that never became readable are kept for a look."""
        default = os.path.join(os.path.dirname(self.processed_folder), "unreadable")
        return str(self.transport_options.get("unreadable_folder", default))


class Transport(filesystem.Transport):
    """kombu's file-system transport with the atomic channel above (`broker_transport`)."""

    Channel = Channel
