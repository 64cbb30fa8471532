"""The CLI's pure decisions: what is a file."""

import pytest
import typer

from textq.client_commands import _text_or_document


@pytest.mark.parametrize(
    "text",
    ["I love it", "great!", "U.S.", "3.14", "wow...", "see notes.txt please", "x" * 5000],
)
def test_words_that_name_no_file_are_the_text(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _text_or_document(text, None) == (text, None)


@pytest.mark.parametrize("name", ["nosuch.txt", "report.md", "docs/q3", "./q3", "a/b.txt"])
def test_a_missing_file_that_looks_like_one_is_an_error(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(typer.Exit) as ended:
        _text_or_document(name, None)
    assert ended.value.exit_code == 1
    assert capsys.readouterr().err == (
        f"textq: {name}: no such file; to send it as the text itself, use --text {name}\n"
    )


def test_a_file_is_a_document_and_text_is_sent_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.txt").write_text("Sales rose. Costs fell.")
    assert _text_or_document("report.txt", None) == (None, "Sales rose. Costs fell.")
    assert _text_or_document(None, "report.txt") == ("report.txt", None)


def test_a_file_that_is_not_text_or_not_a_file_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.7 \xff\xfe\x00")
    (tmp_path / "notes").mkdir()
    for argument, said in (
        ("scan.pdf", "textq: scan.pdf is not UTF-8 text (byte 9); give a plain-text file\n"),
        (
            "notes",
            "textq: notes is a directory, not a file; to send it as the text itself, "
            "use --text notes\n",
        ),
    ):
        with pytest.raises(typer.Exit):
            _text_or_document(argument, None)
        assert capsys.readouterr().err == said


def test_a_text_comes_one_way(capsys):
    for argument, text in (("two", "ways"), (None, None)):
        with pytest.raises(typer.Exit):
            _text_or_document(argument, text)
    assert capsys.readouterr().err == (
        "textq: give the text as an argument or with --text, not both\n"
        "textq: give a text, a file to read it from, or --text TEXT\n"
    )
