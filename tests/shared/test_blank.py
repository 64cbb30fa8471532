"""What counts as a blank text, everywhere a text is checked (bodies, files, categories)."""

import io

import pytest

from api.uploads import open_upload
from shared.blank import is_blank

INVISIBLE = ["", " \t\n", "\u200b\u200b\u200b", "\ufeff", "\u00ad", "\u2060\u200d", "\u3164"]
VISIBLE = ["a", "\u200ba", "\ufeffok", "é", "\u0301e", "日本", "🙂", "\u200b.\u200b"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_text_of_only_invisible_characters_is_blank(text):
    assert is_blank(text)


@pytest.mark.parametrize("text", VISIBLE)
def test_one_visible_character_is_enough(text):
    assert not is_blank(text)


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        ("text\nfine\n\u200b\u200b\u200b\n".encode(), "rows.csv"),
        (b'{"text": "fine"}\n{"text": "\\ufeff \\u200b"}\n', "rows.jsonl"),
    ],
)
def test_an_uploaded_row_of_invisible_characters_is_a_row_error(data, filename):
    _format, rows_read = open_upload(
        io.BytesIO(data),
        filename=filename,
        declared_format=None,
        text_column=None,
        id_column=None,
        encoding=None,
        max_text_chars=1000,
        max_decompressed_bytes=1 << 20,
    )
    first, second = list(rows_read)
    assert first.error is None
    assert second.text is None
    assert "invisible characters" in second.error
