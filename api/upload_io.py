"""The bytes of an upload as lines: sniffed bytes served again, gzip output capped, lines capped.

Also the errors an upload is refused with (api/uploads.py reads the rows).
"""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING, BinaryIO

from shared.errors import TextqError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class UploadNotReadable(TextqError):
    """The file is not text this server can read; upload CSV or JSONL."""

    status_code = 415
    problem_type = "unsupported-upload"
    title = "Unsupported upload"


class UploadInvalid(TextqError):
    """The file is not a CSV or JSONL file of texts this server can process."""

    status_code = 422
    problem_type = "invalid-upload"
    title = "Invalid upload"


class UploadTooLarge(TextqError):
    """The file decompresses to more than this server accepts."""

    status_code = 413
    problem_type = "upload-too-large"
    title = "Upload too large"


class LineTooLong(Exception):
    """A line longer than the reader takes (the rest of it was skipped)."""


class ReplayStream(io.RawIOBase):
    """Serve bytes already sniffed again, then the rest; stop gzip output at a limit."""

    def __init__(self, inner: BinaryIO, *, limit: int | None = None) -> None:
        self._inner, self._limit, self._pending, self._total = inner, limit, b"", 0

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._pending:
            size = min(len(view), len(self._pending))
            view[:size], self._pending = self._pending[:size], self._pending[size:]
            return size
        if self._limit is None:
            data = self._inner.read(len(view))
        else:
            try:
                data = self._inner.read(len(view))
            except (OSError, EOFError, zlib.error) as error:
                raise UploadInvalid(f"The gzip data is corrupt or truncated: {error}.") from None
            self._total += len(data)
            if self._total > self._limit:
                raise UploadTooLarge(
                    f"The file decompresses to more than {self._limit:,} bytes, the limit."
                )
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._limit is not None:  # the GzipFile is ours; the caller's file is not
            self._inner.close()
        super().close()


class BoundedLines:
    """Iterate lines of at most `limit` characters; a longer one raises LineTooLong.

    `count` is how many lines of the file were read so far (a too-long one counts once).
    """

    def __init__(self, text: io.TextIOWrapper, limit: int) -> None:
        self._readline, self._limit = text.readline, limit
        self.count = 0

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        line = self._readline(self._limit)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) == self._limit and line[-1] not in "\r\n":
            rest = line
            while len(rest) == self._limit and rest[-1] not in "\r\n":  # skip the rest of it
                rest = self._readline(self._limit)
            raise LineTooLong(f"the line is longer than {self._limit:,} characters")
        return line
