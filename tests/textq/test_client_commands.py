"""The CLI's pure decisions: what is a file, what the texts are, and what its help says."""

import re

import pytest
import typer
from typer.testing import CliRunner

from textq.cli import app
from textq.client_commands import _text_or_document


@pytest.mark.parametrize(
    "text",
    ["I love it", "great!", "U.S.", "3.14", "wow...", "see notes.txt please", "x" * 5000],
)
def test_words_that_name_no_file_are_the_text(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _text_or_document(text, []) == ([text], None)


@pytest.mark.parametrize("name", ["nosuch.txt", "report.md", "docs/q3", "./q3", "a/b.txt"])
def test_a_missing_file_that_looks_like_one_is_an_error(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(typer.Exit) as ended:
        _text_or_document(name, [])
    assert ended.value.exit_code == 1
    assert capsys.readouterr().err == (
        f"textq: {name}: no such file; to send it as the text itself, use --text {name}\n"
    )


def test_a_file_is_a_document_and_text_is_sent_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.txt").write_text("Sales rose. Costs fell.")
    assert _text_or_document("report.txt", []) == (None, "Sales rose. Costs fell.")
    assert _text_or_document(None, ["report.txt"]) == (["report.txt"], None)


def test_each_text_option_is_a_text_of_the_job_in_order():
    assert _text_or_document(None, ["b", "a", "b"]) == (["b", "a", "b"], None)


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
            _text_or_document(argument, [])
        assert capsys.readouterr().err == said


def test_a_text_comes_one_way(capsys):
    for argument, texts in (("two", ["ways"]), (None, [])):
        with pytest.raises(typer.Exit):
            _text_or_document(argument, texts)
    assert capsys.readouterr().err == (
        "textq: give the text as an argument or with --text, not both\n"
        "textq: give a text, a file to read it from, or --text TEXT (repeat for more)\n"
    )


CLIENT_COMMANDS = ["submit", "bulk", "status", "results", "cancel", "jobs"]


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_help_reads_as_written(command):
    """No markup eats a bracketed phrase, usage shows each argument once bracketed, and a
    paragraph is never broken mid-sentence (a terminal wide enough shows it on one line)."""
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert " ." not in shown.output and "[[" not in shown.output, shown.output
    assert "[default: http://TEXTQ_API_HOST:TEXTQ_API_PORT" in shown.output
    description = shown.output.split("Usage:")[1].split("╭")[0]
    lines = [line.strip() for line in description.splitlines()[1:] if line.strip()]
    assert lines and all(line.endswith(".") for line in lines), lines


def test_jobs_help_says_json_prints_the_list():
    shown = CliRunner().invoke(app, ["jobs", "--help"], env={"COLUMNS": "400"})
    assert re.search(r"--json\s.*the jobs", shown.output), shown.output
