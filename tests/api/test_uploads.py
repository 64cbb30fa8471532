"""The bulk upload reader: formats, encodings, row errors, limits and memory."""

import codecs
import gzip
import io
import json
import random
import re
import time
import tracemalloc
import zlib
from typing import Any

import pytest

from api.upload_io import UploadInvalid, UploadNotReadable, UploadTooLarge
from api.uploads import HEAD_BYTES, UploadFormat, open_upload
from shared.errors import TextqError
from shared.jobs.files import FileRow

MB = 1024 * 1024
OPTIONS: dict[str, Any] = {
    "filename": None,
    "declared_format": None,
    "text_column": None,
    "id_column": None,
    "encoding": None,
    "max_text_chars": 1000,
    "max_decompressed_bytes": 10 * MB,
}


class CountingBytesIO(io.BytesIO):
    """A file that counts the bytes read from it."""

    consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def read(data: bytes, **options: Any) -> tuple[UploadFormat, list[FileRow]]:
    upload_format, rows = open_upload(io.BytesIO(data), **{**OPTIONS, **options})
    return upload_format, list(rows)


def texts(data: bytes, **options: Any) -> list[str | None]:
    return [row.text for row in read(data, **options)[1]]


def errors(data: bytes, **options: Any) -> list[str | None]:
    return [row.error for row in read(data, **options)[1]]


def test_the_exceptions_are_problems_with_their_status():
    assert issubclass(UploadNotReadable, TextqError)
    assert (UploadNotReadable.status_code, UploadNotReadable.problem_type) == (
        415,
        "unsupported-upload",
    )
    assert (UploadInvalid.status_code, UploadInvalid.problem_type) == (422, "invalid-upload")
    assert (UploadTooLarge.status_code, UploadTooLarge.problem_type) == (413, "upload-too-large")
    assert UploadInvalid().detail == UploadInvalid.__doc__


# --- CSV --------------------------------------------------------------------------------------


def test_a_csv_reads_into_numbered_rows_without_ids_of_their_own():
    upload_format, rows = read(b"text\nI love it\nmeh\n", filename="feedback.csv")
    assert upload_format == UploadFormat("csv", "utf-8", False, ",")
    assert rows == [FileRow(0, None, "I love it", None), FileRow(1, None, "meh", None)]


def test_the_id_column_gives_each_row_its_id():
    rows = read(b"id,text,score\na-1,good,5\na-2,bad,1\n", id_column="id")[1]
    assert [(row.custom_id, row.text) for row in rows] == [("a-1", "good"), ("a-2", "bad")]


def test_a_named_text_column_is_found_whatever_its_case_and_spaces():
    rows = read(b"Id , Review \n7,fine\n", text_column="review", id_column="id")[1]
    assert rows == [FileRow(0, "7", "fine", None)]


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        (b"id;text\n1;hello, world\n", ";"),
        (b"id\ttext\n1\thello, world\n", "\t"),
        (b"id|text\n1|hello, world\n", "|"),
        (b'"a,b";text\n1;hello, world\n', ";"),  # the comma inside quotes does not count
    ],
)
def test_the_delimiter_is_sniffed_from_the_header(data, delimiter):
    upload_format, rows = read(data)
    assert upload_format.delimiter == delimiter
    assert [row.text for row in rows] == ["hello, world"]


def test_a_tsv_name_means_tabs():
    upload_format, rows = read(b"text,x\na,b\n", filename="f.tsv", text_column="text,x")
    assert upload_format.delimiter == "\t"
    assert [row.text for row in rows] == ["a,b"]


def test_quoted_fields_keep_newlines_quotes_and_delimiters():
    data = b'id,text\n1,"line one\nline two, ""quoted"""\n2,plain\n'
    assert texts(data) == ['line one\nline two, "quoted"', "plain"]


def test_crlf_line_endings_are_not_part_of_the_text():
    assert texts(b'id,text\r\n1,first\r\n2,"multi\r\nline"\r\n') == ["first", "multi\r\nline"]


def test_blank_lines_and_spreadsheet_padding_are_not_rows():
    rows = read(b"id,text\n\n1,a\n\r\n,\n,,\n2,b\n\n")[1]
    assert [(row.index, row.custom_id, row.text) for row in rows] == [
        (0, None, "a"),
        (1, None, "b"),
    ]


def test_bad_rows_are_row_errors_and_the_rest_read_on():
    data = b"id,text\n1,ok\n2,\n3,   \n4\n5,a,b\n6,fine\n" + b"7," + b"x" * 1001 + b"\n"
    assert errors(data, id_column="id") == [
        None,
        "index 1 (line 3 of the file): the text is empty",
        "index 2 (line 4 of the file): the text is only whitespace",
        "index 3 (line 5 of the file): 1 field; the header has 2",
        "index 4 (line 6 of the file): 3 fields; the header has 2 "
        "(quote a field that contains ',')",
        None,
        "index 6 (line 8 of the file): the text is 1,001 characters; the limit is 1,000",
    ]


def test_a_row_with_an_error_has_no_text_and_keeps_its_id():
    rows = read(b"id,text\nk1,\n", id_column="id")[1]
    assert rows == [FileRow(0, "k1", None, "index 0 (line 2 of the file): the text is empty")]


def test_a_nul_character_in_the_text_is_a_row_error():
    data = b"text\n" + b"fine\n" * 20_000 + b"a\x00b\nafter\n"  # past the sniffed head
    assert errors(data)[-2:] == [
        "index 20000 (line 20002 of the file): the text contains a NUL character",
        None,
    ]


@pytest.mark.parametrize(
    ("custom_id", "error"),
    [
        (b"", "the id is empty"),
        (b"x" * 513, "the id is 513 characters; the limit is 512"),
    ],
)
def test_a_bad_id_is_a_row_error_under_the_rows_index_and_line(custom_id, error):
    rows = read(b"id,text\n" + custom_id + b",hello\n", id_column="id")[1]
    assert rows == [FileRow(0, None, None, f"index 0 (line 2 of the file): {error}")]
    jsonl = json.dumps({"custom_id": custom_id.decode(), "text": "hello"}).encode()
    assert read(jsonl)[1] == [FileRow(0, None, None, f"index 0 (line 1 of the file): {error}")]


def test_an_id_that_is_not_utf8_is_a_row_error():
    data = b"id,text\n" + b"a,hello\n" * 20_000 + b"\xff,hello\n"  # past the sniffed head
    assert (
        errors(data, id_column="id")[-1]
        == "index 20000 (line 20002 of the file): the id is not valid UTF-8"
    )


def test_an_empty_file_is_refused():
    for data in (b"", b"  \n\n", codecs.BOM_UTF8, gzip.compress(b"")):
        with pytest.raises(UploadInvalid, match="empty"):
            open_upload(io.BytesIO(data), **OPTIONS)


def test_blank_lines_longer_than_the_head_may_come_before_the_header():
    assert texts(b"\n" * (HEAD_BYTES + 10) + b"id,text\n1,a\n") == ["a"]


def test_a_header_without_rows_is_refused_at_once():
    for data in (b"id,text\n", b"id,text\n\n\n,\n"):
        with pytest.raises(UploadInvalid, match="a header but no rows"):
            open_upload(io.BytesIO(data), **OPTIONS)


def test_a_missing_text_column_is_refused_naming_the_columns():
    with pytest.raises(UploadInvalid) as caught:
        open_upload(io.BytesIO(b"id,review\n1,good\n"), **OPTIONS)
    assert "no text column 'text'" in caught.value.detail
    assert "'id', 'review'" in caught.value.detail
    with pytest.raises(UploadInvalid, match="no text column 'body'"):
        open_upload(io.BytesIO(b"id,text\n1,good\n"), **{**OPTIONS, "text_column": "body"})


def test_a_named_id_column_that_is_missing_is_refused():
    with pytest.raises(UploadInvalid, match="no id column 'key'"):
        open_upload(io.BytesIO(b"id,text\n1,good\n"), **{**OPTIONS, "id_column": "key"})


def test_a_column_named_twice_is_refused():
    with pytest.raises(UploadInvalid, match="2 columns named 'text'"):
        open_upload(io.BytesIO(b"text,Text\na,b\n"), **OPTIONS)


def test_an_unterminated_quote_costs_one_row_and_reading_goes_on():
    # The stray quote swallows lines until the field passes the CSV field limit (128 Ki).
    swallowed = (b"y" * 99 + b"\n") * 3000
    rows = read(b'text\nfirst\n"unclosed\n' + swallowed + b"last\n")[1]
    assert rows[0].text == "first"
    assert rows[1].error is not None
    assert rows[1].error.startswith(
        "index 1 (line 3 of the file): a field is over 131,072 characters"
    )
    assert rows[-1].text == "last"
    assert all(row.error is None for row in rows[2:])


def test_an_unterminated_quote_at_the_end_is_one_long_row():
    rows = read(b'text\nfirst\n"unclosed\n' + b"z" * 2000 + b"\n")[1]
    assert [row.error for row in rows] == [
        None,
        "index 1 (line 3 of the file): the text is 2,010 characters; the limit is 1,000",
    ]


def test_an_endless_line_is_one_row_error_not_memory():
    data = b"text\nfirst\n" + b"w" * (3 * MB) + b"\nlast\n"
    rows = read(data)[1]
    assert [row.error for row in rows] == [
        None,
        "index 1 (line 3 of the file): the line is longer than 1,048,576 characters",
        None,
    ]
    assert rows[2].text == "last"


# --- JSONL ------------------------------------------------------------------------------------


def test_a_jsonl_file_reads_text_and_custom_id():
    data = b'{"custom_id": "a", "text": "good"}\n\n{"custom_id": 7, "text": "bad", "x": 1}\n'
    upload_format, rows = read(data, filename="batch.jsonl")
    assert upload_format == UploadFormat("jsonl", "utf-8", False, None)
    assert rows == [FileRow(0, "a", "good", None), FileRow(1, "7", "bad", None)]


def test_jsonl_without_ids_has_rows_without_ids():
    assert [row.custom_id for row in read(b'{"text": "a"}\n{"text": "b"}\n')[1]] == [None, None]


def test_jsonl_with_crlf_line_endings_reads():
    assert texts(b'{"text": "a"}\r\n\r\n{"text": "b"}\r\n') == ["a", "b"]


def test_jsonl_keys_can_be_named():
    data = b'{"key": "k", "review": "fine"}\n'
    rows = read(data, text_column="review", id_column="key")[1]
    assert rows == [FileRow(0, "k", "fine", None)]


def test_bad_jsonl_lines_are_row_errors_and_the_rest_read_on():
    lines = [
        '{"text": "ok"}',
        "not json",
        "[1, 2]",
        '{"custom_id": "x"}',
        '{"text": 5}',
        '{"custom_id": true, "text": "a"}',
        '{"custom_id": 1.5, "text": "a"}',
        '{"text": "  "}',
        '{"text": "a\\u0000b"}',
        '{"text": "\\udc80"}',
        '{"text": "fine"}',
    ]
    assert errors("\n".join(lines).encode()) == [
        None,
        "index 1 (line 2 of the file): not JSON: Expecting value at column 1",
        "index 2 (line 3 of the file): not a JSON object but an array",
        "index 3 (line 4 of the file): 'text' must be a string (missing)",
        "index 4 (line 5 of the file): 'text' must be a string (a number)",
        "index 5 (line 6 of the file): 'custom_id' must be a string or integer (a boolean)",
        "index 6 (line 7 of the file): 'custom_id' must be a string or integer (a number)",
        "index 7 (line 8 of the file): the text is only whitespace",
        "index 8 (line 9 of the file): the text contains a NUL character",
        "index 9 (line 10 of the file): the text is not valid UTF-8",
        None,
    ]


def test_a_named_id_key_missing_from_a_line_is_a_row_error():
    assert errors(b'{"text": "a"}\n', id_column="key") == [
        "index 0 (line 1 of the file): 'key' must be a string or integer (missing)"
    ]


def test_jsonl_only_looks_at_top_level_keys():
    data = json.dumps({"custom_id": "r1", "body": {"input": "hello"}}).encode()
    assert errors(data) == ["index 0 (line 1 of the file): 'text' must be a string (missing)"]


def test_an_endless_jsonl_line_is_one_row_error():
    data = b'{"text": "a"}\n{"text": "' + b"z" * (3 * MB) + b'"}\n{"text": "b"}\n'
    assert errors(data) == [
        None,
        "index 1 (line 2 of the file): the line is longer than 1,048,576 characters",
        None,
    ]


def test_a_json_array_is_refused():
    for name in (None, "data.json"):
        with pytest.raises(UploadInvalid, match="JSON array"):
            open_upload(io.BytesIO(b'[{"text": "a"}]'), **{**OPTIONS, "filename": name})


def test_a_jsonl_file_of_blank_lines_is_refused():
    data = b" \n" * HEAD_BYTES  # more blank lines than the sniffed head holds
    with pytest.raises(UploadInvalid, match="no rows, only blank lines"):
        open_upload(io.BytesIO(data), **{**OPTIONS, "declared_format": "jsonl"})


# --- Format detection ---------------------------------------------------------------------------


JSONL = b'  \n{"text": "hello"}\n'
CSV = b"text\nhello\n"


@pytest.mark.parametrize(
    ("filename", "declared", "data", "kind"),
    [
        ("a.csv", None, CSV, "csv"),
        ("A.JSONL", None, JSONL, "jsonl"),
        ("a.ndjson.gz", None, JSONL, "jsonl"),
        ("a.json", None, JSONL, "jsonl"),
        ("a.jsonl", None, b'"a string"\n', "jsonl"),  # the name wins over the content
        ("a.csv", "jsonl", JSONL, "jsonl"),  # the declaration wins over the name
        ("a.jsonl", "CSV", CSV, "csv"),
        ("a.txt", "tsv", CSV, "csv"),
        ("notes.txt", None, JSONL, "jsonl"),  # otherwise the first character: "{"
        (None, None, JSONL, "jsonl"),
        (None, None, CSV, "csv"),
    ],
)
def test_the_format_comes_from_the_declaration_then_the_name_then_the_content(
    filename, declared, data, kind
):
    upload_format, _ = open_upload(
        io.BytesIO(data), **{**OPTIONS, "filename": filename, "declared_format": declared}
    )
    assert upload_format.kind == kind


def test_an_unknown_declared_format_is_refused():
    with pytest.raises(UploadInvalid, match="Unknown format 'xlsx'"):
        open_upload(io.BytesIO(b"text\na\n"), **{**OPTIONS, "declared_format": "xlsx"})


# --- Binary files and encodings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"PK\x03\x04\x14\x00\x06\x00xl/workbook.xml", "a zip archive (an .xlsx?)"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "a PDF"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (gzip.compress(b"PK\x03\x04 zipped then gzipped", mtime=0), "a zip archive (an .xlsx?)"),
    ],
)
def test_a_known_binary_file_is_refused_by_name(data, what):
    with pytest.raises(UploadNotReadable, match=re.escape(f"The file is {what};")):
        open_upload(io.BytesIO(data), **{**OPTIONS, "filename": "feedback.csv"})


def test_random_bytes_with_nuls_are_refused():
    data = b"text\n" + random.Random(7).randbytes(4096) + b"\x00"
    with pytest.raises(UploadNotReadable, match="NUL byte at offset"):
        open_upload(io.BytesIO(data), **OPTIONS)


def test_a_given_encoding_does_not_let_a_png_through():
    with pytest.raises(UploadNotReadable, match="PNG"):
        open_upload(io.BytesIO(b"\x89PNG\r\n\x1a\n..."), **{**OPTIONS, "encoding": "latin-1"})


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_decoded(encoding):
    body = "id,text\n1,café ☕\n2,naïve\n"
    data = body.encode(encoding)
    if encoding != "utf-16":
        data = (codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) + data
    upload_format, rows = read(data, id_column="id")
    assert upload_format.encoding == "utf-16"
    assert [row.text for row in rows] == ["café ☕", "naïve"]


def test_utf16_jsonl_is_decoded():
    assert texts('{"text": "ça va"}\n'.encode("utf-16")) == ["ça va"]


def test_a_utf8_bom_is_not_part_of_the_first_column():
    upload_format, rows = read(codecs.BOM_UTF8 + b"text,id\nhi,1\n", id_column="id")
    assert upload_format.encoding == "utf-8-sig"
    assert rows == [FileRow(0, "1", "hi", None)]
    assert read(codecs.BOM_UTF8 + b"text\nhi\n", encoding="UTF-8")[0].encoding == "utf-8-sig"


def test_utf16_cut_short_is_refused_when_reached():
    _, rows = open_upload(io.BytesIO("text\nab\n".encode("utf-16") + b"A"), **OPTIONS)
    with pytest.raises(UploadNotReadable, match="not valid utf-16"):
        list(rows)


def test_latin1_without_an_encoding_is_refused_saying_how_to_fix_it():
    data = "text\ncafé crème\n".encode("latin-1")
    with pytest.raises(UploadNotReadable) as caught:
        open_upload(io.BytesIO(data), **OPTIONS)
    assert "not UTF-8: byte 0xe9 at offset 8" in caught.value.detail
    assert "encoding=latin-1" in caught.value.detail
    assert "re-save the file as UTF-8" in caught.value.detail


def test_latin1_with_its_encoding_is_decoded():
    upload_format, rows = read("text\ncafé crème\n".encode("latin-1"), encoding="latin-1")
    assert upload_format.encoding == "latin-1"
    assert [row.text for row in rows] == ["café crème"]


@pytest.mark.parametrize("encoding", ["klingon", "base64", "rot13"])
def test_an_unknown_or_binary_encoding_is_refused(encoding):
    with pytest.raises(UploadInvalid, match="Unknown encoding"):
        open_upload(io.BytesIO(b"text\na\n"), **{**OPTIONS, "encoding": encoding})


def test_invalid_utf8_after_the_head_is_an_error_of_its_row_only():
    good = b"text\n" + b"".join(b"row %d\n" % n for n in range(12_000))
    assert len(good) > HEAD_BYTES
    data = good + b"caf\xe9 bad\n" + "café good\n".encode()
    rows = read(data)[1]
    assert rows[12_000].error == "index 12000 (line 12002 of the file): the text is not valid UTF-8"
    assert rows[12_001].text == "café good"
    assert all(row.error is None for row in rows[:12_000])


def test_a_character_cut_at_the_end_of_the_head_is_not_an_error():
    pad = HEAD_BYTES - len(b"text\n") - 1  # "é" starts on the head's last byte
    data = b"text\n" + b"a" * pad + "é\nnext\n".encode()
    assert texts(data, max_text_chars=HEAD_BYTES) == ["a" * pad + "é", "next"]


# --- gzip ---------------------------------------------------------------------------------------


def test_a_gzipped_csv_is_read_whatever_its_name():
    data = gzip.compress(b"id,text\n1,hello\n2,world\n")
    for name in ("feedback.csv.gz", "feedback.csv", None):
        upload_format, rows = read(data, filename=name)
        assert upload_format == UploadFormat("csv", "utf-8", True, ",")
        assert [row.text for row in rows] == ["hello", "world"]


def test_a_corrupt_gzip_is_refused():
    data = gzip.compress(b"text\n" + b"hello there\n" * 50_000)
    with pytest.raises(UploadInvalid, match="gzip"):
        open_upload(io.BytesIO(data[:20] + b"garbage" * 10), **OPTIONS)
    _, rows = open_upload(io.BytesIO(data[: len(data) // 2]), **OPTIONS)  # truncated
    with pytest.raises(UploadInvalid, match="gzip data is corrupt or truncated"):
        list(rows)


def gzip_bomb(decompressed_mb: int) -> bytes:
    """Return a gzipped CSV of `decompressed_mb` MB: one header, then the same row over and over."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"this row is here to fill memory\n" * (MB // 32)
    parts = [compressor.compress(b"text\n")]
    parts += [compressor.compress(chunk) for _ in range(decompressed_mb)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_stops_at_the_decompressed_limit():
    bomb = gzip_bomb(50)
    started = time.perf_counter()
    _, rows = open_upload(io.BytesIO(bomb), **{**OPTIONS, "max_decompressed_bytes": MB})
    count = 0
    with pytest.raises(UploadTooLarge, match="more than 1,048,576 bytes"):
        for _ in rows:
            count += 1
    assert time.perf_counter() - started < 2  # 50 MB of rows would take several times longer
    assert count < MB // 32  # fewer rows than 1 MB holds: it stopped before reading on


def test_a_gzip_bomb_is_not_read_to_its_end():
    # 200 members of 10 MB each: 2 GB once decompressed, about 2 MB compressed.
    member = gzip.compress(b"this row is here to fill memory\n" * (10 * MB // 32), 9)
    bomb = CountingBytesIO(gzip.compress(b"text\n") + member * 200)
    _, rows = open_upload(bomb, **{**OPTIONS, "max_decompressed_bytes": 5 * MB})
    with pytest.raises(UploadTooLarge):
        for _ in rows:
            pass
    assert bomb.consumed < len(bomb.getvalue()) / 20


# --- Streaming ----------------------------------------------------------------------------------


def test_opening_reads_only_the_head():
    raw = CountingBytesIO(b"text\n" + b"some feedback text\n" * 500_000)
    open_upload(raw, **OPTIONS)
    assert raw.consumed < MB


@pytest.mark.parametrize("compressed", [False, True])
def test_a_50_mb_file_is_read_in_constant_memory(tmp_path, compressed):
    path = tmp_path / ("big.csv.gz" if compressed else "big.csv")
    text = ("The delivery was late but the support team sorted it out quickly. " * 8)[:500]
    lines = "".join(f"{n},{text}\n" for n in range(1000))
    with gzip.open(path, "wt", compresslevel=1) if compressed else path.open("w") as out:
        out.write("id,text\n")
        for _ in range(100):  # 100,000 rows, about 50 MB of text
            out.write(lines)
    tracemalloc.start()
    try:
        with path.open("rb") as raw:
            _, rows = open_upload(
                raw,
                **{
                    **OPTIONS,
                    "filename": path.name,
                    "id_column": "id",
                    "max_decompressed_bytes": 100 * MB,
                },
            )
            count = sum(row.error is None for row in rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 4 * MB
