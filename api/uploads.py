"""Read an uploaded bulk file (CSV or JSON Lines, maybe gzipped) as a lazy stream of rows.

Memory stays constant whatever the file's size: bytes are decoded as they are read, and every
line and CSV field has a cap, so an endless line or an unterminated quote costs one error row,
never the whole file in memory. JSONL rows take the text and id from top-level keys only
(`body.input` of the OpenAI Batch shape is not looked into).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from api.upload_io import (
    BoundedLines,
    LineTooLong,
    ReplayStream,
    UploadInvalid,
    UploadNotReadable,
)
from shared.blank import describe_blank, is_blank
from shared.jobs.files import FileRow

if TYPE_CHECKING:
    pass

HEAD_BYTES = 64 * 1024
MAX_ID_CHARS = 512  # job_items.custom_id is a VARCHAR(512); a longer one would fail the COPY
_READ_BUFFER = 256 * 1024
_DELIMITERS = ",;\t|"
_KINDS: dict[str, tuple[Literal["csv", "jsonl"], str | None]] = {
    "csv": ("csv", None),
    "tsv": ("csv", "\t"),
    "jsonl": ("jsonl", None),
    "ndjson": ("jsonl", None),
    "json": ("jsonl", None),  # a JSON array is refused with its own message
}
FORMATS = tuple(_KINDS)  # what a request's `format` may say
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (an .xlsx?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (an .xls?)"),
    (b"%PDF", "a PDF"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "gzip-compressed twice"),
    (b"PAR1", "a Parquet file"),
)
_BOMS = (  # UTF-32's BOMs first: the UTF-16 LE one is their prefix
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True, slots=True)
class UploadFormat:
    """What the file turned out to be."""

    kind: Literal["csv", "jsonl"]
    encoding: str
    compressed: bool  # gzip
    delimiter: str | None  # CSV only


_Parsed = tuple[str | None, str | None, str | None]  # custom_id, text, problem


def open_upload(
    raw: BinaryIO,
    *,
    filename: str | None,
    declared_format: str | None,
    text_column: str | None,
    id_column: str | None,
    encoding: str | None,
    max_text_chars: int,
    max_decompressed_bytes: int,
) -> tuple[UploadFormat, Iterator[FileRow]]:
    """Sniff the file, check its header, and return its format and a lazy iterator of rows."""
    kind, delimiter = _declared_kind(declared_format, filename)
    stream = ReplayStream(raw)
    head = _read_head(stream)
    compressed = head.startswith(b"\x1f\x8b")
    if compressed:
        gzip_file: Any = gzip.GzipFile(fileobj=stream, mode="rb")
        stream = ReplayStream(gzip_file, limit=max_decompressed_bytes)
        head = _read_head(stream)
    chosen = _choose_encoding(head, encoding)
    try:
        sniffed = codecs.getincrementaldecoder(chosen)(errors="replace").decode(head, final=False)
    except UnicodeError as error:  # UTF-16 without a BOM; a codec that takes no error handler
        raise UploadNotReadable(f"The file cannot be read as {chosen}: {error}.") from None
    first = sniffed.lstrip()[:1]
    if not first and len(head) < HEAD_BYTES:
        raise UploadInvalid("The file is empty.")
    if first == "[" and kind != "csv":
        raise UploadInvalid("The file is a JSON array; upload JSON Lines: one object a line.")
    kind = kind or ("jsonl" if first == "{" else "csv")
    text = io.TextIOWrapper(
        io.BufferedReader(stream, _READ_BUFFER), chosen, errors="surrogateescape", newline=""
    )
    label = "UTF-8" if chosen.startswith("utf-8") else chosen
    lines = BoundedLines(text, max(1024 * 1024, 8 * max_text_chars))
    if kind == "csv":
        delimiter = delimiter or _sniff_delimiter(sniffed)
        # The field limit is process-wide; each upload sets the same value from the settings.
        csv.field_size_limit(max(128 * 1024, 4 * max_text_chars))
        rows = _csv_rows(lines, delimiter, text_column or "text", id_column, max_text_chars, label)
    else:
        delimiter = None
        parse = _jsonl_parser(text_column or "text", id_column, max_text_chars, label)
        rows = _rows(lines, parse, label, lines)
    first_row = next(rows, None)
    if first_row is None:
        what = "a header but no rows" if kind == "csv" else "no rows, only blank lines"
        raise UploadInvalid(f"The file has {what}.")
    return UploadFormat(kind, chosen, compressed, delimiter), chain([first_row], rows)


def _declared_kind(
    declared: str | None, filename: str | None
) -> tuple[Literal["csv", "jsonl"] | None, str | None]:
    """Return the format (and CSV delimiter) the request or the file name states, if any."""
    if declared is not None:
        if (stated := _KINDS.get(declared.strip().lower())) is None:
            raise UploadInvalid(f"Unknown format {declared!r}; expected csv or jsonl.")
        return stated
    extension = os.path.splitext((filename or "").lower().removesuffix(".gz"))[1]
    return _KINDS.get(extension.lstrip("."), (None, None))


def _read_head(stream: ReplayStream) -> bytes:
    """Read up to HEAD_BYTES from the start of the stream and leave them to be read again."""
    parts, size = [], 0
    while size < HEAD_BYTES and (part := stream.read(HEAD_BYTES - size)):
        parts.append(part)
        size += len(part)
    head = b"".join(parts)
    stream.unread(head)
    return head


def _choose_encoding(head: bytes, given: str | None) -> str:
    """Return the encoding to read with: the one given, a BOM's, or UTF-8 when it decodes."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise UploadNotReadable(f"The file is {what}; upload CSV or JSONL.")
    if given:
        try:
            name = codecs.lookup(given).name
            io.TextIOWrapper(io.BytesIO(), given).detach()  # refuses base64 and other non-text
        except (LookupError, ValueError):  # ValueError: a name with a NUL in it
            raise UploadInvalid(f"Unknown encoding {given!r}.") from None
        if not name.startswith(("utf-16", "utf-32")):
            _refuse_nul(head)
        return "utf-8-sig" if name == "utf-8" and head.startswith(codecs.BOM_UTF8) else given
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    _refuse_nul(head)
    try:  # final=False: a character cut at the 64 KB edge is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise UploadNotReadable(
            f"The file is not UTF-8: byte 0x{head[error.start]:02x} at offset {error.start}. "
            "Pass encoding=latin-1 (or cp1252, ...), or re-save the file as UTF-8."
        ) from None
    return "utf-8"


def _refuse_nul(head: bytes) -> None:
    if (offset := head.find(b"\x00")) >= 0:
        raise UploadNotReadable(
            f"The file has a NUL byte at offset {offset}: it is binary, or UTF-16 without a BOM "
            "(then pass encoding=utf-16-le or utf-16-be). Upload CSV or JSONL."
        )


def _sniff_delimiter(head: str) -> str:
    """Return the candidate delimiter the header line uses most, outside quotes."""
    unquoted = re.sub(r'"[^"]*"', "", re.split("[\r\n]", head.lstrip("\r\n"), maxsplit=1)[0])
    return max(_DELIMITERS, key=unquoted.count)  # max keeps the first of a tie: ","


def _csv_rows(
    lines: BoundedLines,
    delimiter: str,
    text_column: str,
    id_column: str | None,
    max_chars: int,
    label: str,
) -> Iterator[FileRow]:
    """Check the CSV header, and return the rows under it."""
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next((row for row in reader if any(field.strip() for field in row)), None)
    except (csv.Error, LineTooLong, UnicodeError) as error:
        raise UploadInvalid(f"The header row cannot be read: {error}.") from None
    if header is None:
        raise UploadInvalid("The file is empty.")
    names = [name.replace("\ufeff", "").strip().casefold() for name in header]
    text_at = _column(header, names, text_column, "text", delimiter)
    id_at = None if id_column is None else _column(header, names, id_column, "id", delimiter)
    width, need = len(header), max(text_at, id_at or 0) + 1

    def parse(fields: list[str], index: int) -> _Parsed | None:
        if not need <= len(fields) <= width:
            if not any(fields):  # a blank line, or the ",,," a spreadsheet pads with
                return None
            mismatch = f"{len(fields)} field{'s' * (len(fields) != 1)}; the header has {width}"
            if len(fields) > width:
                mismatch += f" (quote a field that contains {delimiter!r})"
            return None, None, mismatch
        text = fields[text_at]
        problem = _check(text, max_chars, label)
        if problem and not text and not any(fields):
            return None
        if id_at is None:
            return None, text, problem
        if id_problem := _check(fields[id_at], MAX_ID_CHARS, label, "id"):
            return None, None, id_problem  # a bad id cannot be stored either
        return fields[id_at], text, problem

    return _rows(reader, parse, label, lines)


def _column(header: list[str], names: list[str], wanted: str, what: str, delimiter: str) -> int:
    """Return the index of the named column (case and spaces aside), or raise UploadInvalid."""
    found = [at for at, name in enumerate(names) if name == wanted.strip().casefold()]
    if len(found) == 1:
        return found[0]
    if found:
        raise UploadInvalid(f"The CSV has {len(found)} columns named {wanted!r}.")
    shown = ", ".join(repr(name[:40]) for name in header[:20]) + (", ..." * (len(header) > 20))
    raise UploadInvalid(
        f"The CSV has no {what} column {wanted!r}; its columns are {shown} "
        f"(read with delimiter {delimiter!r})."
    )


def _rows(
    items: Iterator[Any],
    parse: Callable[[Any, int], _Parsed | None],
    label: str,
    lines: BoundedLines,
) -> Iterator[FileRow]:
    """Number the parsed rows, skip blank ones, and turn a bad line into an error row.

    A row's error names it the way everything else does, by the `index` its result has,
    and adds the line of the file where it starts, to find it in an editor.
    """
    index = 0
    while True:
        line = lines.count + 1  # rows start on the line after the last one read
        try:
            item = next(items)
        except StopIteration:
            return
        except UnicodeError as error:  # what surrogateescape cannot carry: UTF-16 cut short
            raise UploadNotReadable(f"The file is not valid {label}: {error}.") from None
        except LineTooLong as error:
            parsed: _Parsed = None, None, str(error)
        except csv.Error as error:
            message = f"not valid CSV: {error}"
            if "field limit" in str(error):
                message = f"a field is over {csv.field_size_limit():,} characters (a stray quote?)"
            parsed = None, None, message
        else:
            if (result := parse(item, index)) is None:
                continue
            parsed = result
        custom_id, text, problem = parsed
        if problem:
            yield FileRow(
                index, custom_id, None, f"index {index} (line {line} of the file): {problem}"
            )
        else:
            yield FileRow(index, custom_id, text, None)
        index += 1


def _jsonl_parser(
    text_key: str, id_key: str | None, max_chars: int, label: str
) -> Callable[[str, int], _Parsed | None]:
    """Return the parser of one JSONL line: its custom_id, text and problem."""

    def parse(line: str, index: int) -> _Parsed | None:
        custom_id: str | None = None
        if line.isspace():
            return None
        if not line.isascii() and _SURROGATE.search(line):
            return custom_id, None, f"the line is not valid {label}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            return custom_id, None, f"not JSON: {error.msg} at column {error.colno}"
        except (ValueError, RecursionError) as error:  # 5,000-digit numbers; nesting 10,000 deep
            return custom_id, None, f"not JSON this server accepts: {error}"
        if not isinstance(item, dict):
            return custom_id, None, f"not a JSON object but {_json_type(item)}"
        raw_id = item.get(id_key or "custom_id")
        if isinstance(raw_id, str) or (isinstance(raw_id, int) and not isinstance(raw_id, bool)):
            if id_problem := _check(str(raw_id), MAX_ID_CHARS, label, "id"):
                return custom_id, None, id_problem  # a bad id cannot be stored either
            custom_id = str(raw_id)
        elif raw_id is not None or id_key is not None:
            got = "missing" if raw_id is None else _json_type(raw_id)
            return custom_id, None, f"{id_key or 'custom_id'!r} must be a string or integer ({got})"
        text = item.get(text_key)
        if not isinstance(text, str):
            got = "missing" if text is None else _json_type(text)
            return custom_id, None, f"{text_key!r} must be a string ({got})"
        return custom_id, text, _check(text, max_chars, label)

    return parse


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else "a number")


def _check(value: str, max_chars: int, label: str, what: str = "text") -> str | None:
    """Return what is wrong with a row's text (or id), or None."""
    if not value.isascii() and _SURROGATE.search(value):
        return f"the {what} is not valid {label}"
    if is_blank(value):
        return f"the {what} is {describe_blank(value)}"
    if len(value) > max_chars:
        return f"the {what} is {len(value):,} characters; the limit is {max_chars:,}"
    if "\x00" in value:
        return f"the {what} contains a NUL character"
    return None
