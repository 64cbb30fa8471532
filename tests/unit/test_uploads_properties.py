"""Properties of the bulk upload reader, over generated files.

Rows written as CSV or JSON Lines, in any of the encodings the reader detects, gzipped or
not, read back exactly; any bytes at all, with any options, either read as rows that can
be stored or are refused with one of the reader's own errors, never anything else.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.uploads import (
    MAX_ID_CHARS,
    UploadInvalid,
    UploadNotReadable,
    UploadRow,
    UploadTooLarge,
    open_upload,
)
from shared.blank import is_blank

MAX_TEXT_CHARS = 200
OPTIONS: dict[str, Any] = {
    "filename": None,
    "declared_format": None,
    "text_column": None,
    "id_column": None,
    "encoding": None,
    "max_text_chars": MAX_TEXT_CHARS,
    "max_decompressed_bytes": 10 * 1024 * 1024,
}
# Deterministic in CI (no flaky reds); a new draw on every local run.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize="CI" in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)

# Any character a database stores: no surrogates (not UTF-8) and no NUL (a row error).
storable = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
# Quotes, delimiters, line breaks of every kind and BOMs: what trips a CSV or JSONL writer.
tricky = st.sampled_from([*"\",;|\t\r\n '\\{}[]:", "\r\n", "\ufeff", "\u2028", "\x85"])
# A text as the reader takes it: not blank, within the limit.
texts = (
    st.lists(st.one_of(storable, tricky), min_size=1, max_size=60)
    .map("".join)
    .filter(lambda text: not is_blank(text) and len(text) <= MAX_TEXT_CHARS)
)
ids = (
    st.lists(st.one_of(storable, tricky), min_size=1, max_size=20)
    .map("".join)
    .filter(lambda custom_id: not is_blank(custom_id))
)
rows = st.lists(st.tuples(ids, texts), min_size=1, max_size=20)
# The encodings the reader tells by their BOM, and plain UTF-8 without one.
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"])


def encode(text: str, encoding: str, compressed: bool) -> bytes:
    data = text.encode(encoding)
    return gzip.compress(data) if compressed else data


def read_all(data: bytes, **options: Any) -> list[UploadRow]:
    return list(open_upload(io.BytesIO(data), **{**OPTIONS, **options})[1])


@PROPERTY
@given(
    rows=rows,
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    line_end=st.sampled_from(["\n", "\r\n"]),
    quote_all=st.booleans(),
    encoding=encodings,
    compressed=st.booleans(),
)
def test_csv_rows_read_back_as_written(
    rows: list[tuple[str, str]],
    delimiter: str,
    line_end: str,
    quote_all: bool,
    encoding: str,
    compressed: bool,
) -> None:
    # csv.writer quotes a field with a lone "\r" only when its own lines end in "\r\n".
    quote_all = quote_all or (line_end == "\n" and any("\r" in t for row in rows for t in row))
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        delimiter=delimiter,
        lineterminator=line_end,
        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
    )
    writer.writerow(["id", "text"])
    writer.writerows(rows)
    data = encode(buffer.getvalue(), encoding, compressed)
    read = read_all(data, id_column="id")
    assert read == [
        UploadRow(index, custom_id, text, None) for index, (custom_id, text) in enumerate(rows)
    ]


@PROPERTY
@given(
    rows=rows,
    numeric_ids=st.booleans(),
    ensure_ascii=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    encoding=encodings,
    compressed=st.booleans(),
)
def test_jsonl_rows_read_back_as_written(
    rows: list[tuple[str, str]],
    numeric_ids: bool,
    ensure_ascii: bool,
    line_end: str,
    encoding: str,
    compressed: bool,
) -> None:
    written = [
        (index * 7 if numeric_ids else custom_id, text)
        for index, (custom_id, text) in enumerate(rows)
    ]
    lines = [
        json.dumps({"custom_id": custom_id, "text": text}, ensure_ascii=ensure_ascii)
        for custom_id, text in written
    ]
    data = encode(line_end.join(lines) + line_end, encoding, compressed)
    read = read_all(data)
    assert read == [
        UploadRow(index, str(custom_id), text, None)
        for index, (custom_id, text) in enumerate(written)
    ]


def assert_storable(read: list[UploadRow]) -> None:
    """Every row is numbered in order and holds either a text a job can take or an error."""
    assert [row.index for row in read] == list(range(len(read)))
    for row in read:
        if row.custom_id is not None:  # None: no id of its own; the index names the row
            assert 0 < len(row.custom_id) <= MAX_ID_CHARS
            row.custom_id.encode("utf-8")
        if row.error is None:
            assert row.text is not None and row.text.strip()
            assert len(row.text) <= MAX_TEXT_CHARS and "\x00" not in row.text
            row.text.encode("utf-8")  # no surrogates: the database can store it
        else:
            assert row.text is None
            assert re.match(rf"index {row.index} \(line [1-9][0-9]* of the file\): ", row.error)


def refused_only_by_its_own_errors(data: bytes, **options: Any) -> None:
    try:
        read = read_all(data, **options)
    except (UploadInvalid, UploadNotReadable, UploadTooLarge) as error:
        assert error.detail
        return
    assert read, "a file with no rows is refused, not read as none"
    assert_storable(read)


# Option values a request may carry: sensible, wrong, and odd.
reader_options = st.fixed_dictionaries(
    {},
    optional={
        "filename": st.sampled_from(["a.csv", "a.tsv", "a.jsonl", "a.json", "a.csv.gz", "a"]),
        "declared_format": st.sampled_from(["csv", "tsv", "jsonl", "json", "ndjson", "xml", ""]),
        "text_column": st.sampled_from(["text", "TEXT ", "body", "", "\x00"]),
        "id_column": st.sampled_from(["id", "custom_id", "text", "missing"]),
        "encoding": st.sampled_from(
            [
                "utf-8",
                "utf-16",
                "utf-16-le",
                "utf-32",
                "latin-1",
                "cp1252",
                "shift_jis",
                "utf-7",
                "idna",
                "punycode",
                "undefined",
                "base64",
                "rot13",
                "no-such-codec",
                "utf-8\x00",
            ]
        ),
        "max_decompressed_bytes": st.integers(min_value=1, max_value=4096),
    },
)


@PROPERTY
@given(data=st.binary(max_size=2000), compressed=st.booleans(), options=reader_options)
# Found by this test: each of these escaped as a UnicodeError or ValueError (an API 500).
@example(data=b"text\nhello\n", compressed=False, options={"encoding": "utf-16"})
@example(data=b"text\nhello\n", compressed=False, options={"encoding": "idna"})
@example(data=b"text\nhello\n", compressed=False, options={"encoding": "punycode"})
@example(data=b"text\nhello\n", compressed=False, options={"encoding": "undefined"})
@example(data=b"text\nhello\n", compressed=False, options={"encoding": "utf-8\x00"})
def test_any_bytes_are_read_or_refused_with_the_readers_own_errors(
    data: bytes, compressed: bool, options: dict[str, Any]
) -> None:
    refused_only_by_its_own_errors(gzip.compress(data) if compressed else data, **options)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """A valid CSV or JSONL file, then cut short, spliced with bytes, or both."""
    written = draw(rows)
    if draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer).writerows([("id", "text"), *written])
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps({"custom_id": i, "text": t}) + "\n" for i, t in written)
    data = text.encode(draw(encodings))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        noise = draw(
            st.one_of(
                st.binary(min_size=1, max_size=8),
                st.sampled_from(
                    [b'"', b"\r", b"\n", b"\x00", b"\xff\xfe", codecs.BOM_UTF8, b"{", b"\\"]
                ),
            )
        )
        data = data[:at] + noise + data[at:]
    if draw(st.booleans()):
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
    return data


@PROPERTY
@given(data=damaged_files(), options=reader_options)
def test_damaged_files_are_read_or_refused_with_the_readers_own_errors(
    data: bytes, options: dict[str, Any]
) -> None:
    refused_only_by_its_own_errors(data, **options)


@settings(PROPERTY, max_examples=30)
@given(rows=rows, limit=st.integers(min_value=16, max_value=256))
def test_a_gzip_that_inflates_past_the_limit_is_refused_as_too_large(
    rows: list[tuple[str, str]], limit: int
) -> None:
    body = "".join(json.dumps({"custom_id": i, "text": t}) + "\n" for i, t in rows)
    data = (body * (limit // len(body) + 2)).encode()
    assert len(data) > limit
    try:
        read_all(gzip.compress(data), max_decompressed_bytes=limit)
    except UploadTooLarge:
        return
    raise AssertionError("read past the decompressed limit")
