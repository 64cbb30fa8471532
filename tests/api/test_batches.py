"""Bulk files: good rows become a job, bad rows become row errors, bad files store nothing."""

import gzip
import uuid

import pytest

from shared.jobs.reads import list_item_outcomes
from shared.states import Task
from tests.broker import published


def upload(client, content, *, name="feedback.csv", **fields):
    form = {"task": "sentiment"} | fields
    return client.post("/v1/batches", files={"file": (name, content)}, data=form)


def results(client, job_id):
    """Read rows as stored (the job has not run): pending rows have no outcome yet."""
    db = client.app.state.db
    with db.read() as session:
        return list_item_outcomes(session, job_id=uuid.UUID(job_id), after_index=-1, limit=100)


def test_a_csv_becomes_one_job_with_a_row_per_line(client, api_settings):
    content = b'ticket,comment\nT1,I love it\nT2,"Broke, after a day"\nT3,   \nT1,again\n'
    response = upload(client, content, text_column="comment", id_column="ticket")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert job["input"] == {
        "kind": "file",
        "filename": "feedback.csv",
        "format": "csv",
        "encoding": "utf-8",
        "compressed": False,
        "text_column": "comment",
        "id_column": "ticket",
        "preview": "I love it",
    }
    assert job["progress"]["total"] == 4
    assert job["progress"]["errored"] == 2
    assert job["labels"] == {}
    rows = results(client, job["id"])
    assert [(r.custom_id, r.status) for r in rows] == [
        ("T1", "pending"),
        ("T2", "pending"),
        ("T3", "error"),
        ("T1", "error"),
    ]
    assert "only whitespace" in rows[2].error
    assert rows[3].error == "index 3: custom_id T1 is already used by index 0"
    assert len(published(api_settings, Task.SENTIMENT)) == 1


def test_jsonl_in_batch_style_with_a_line_that_is_not_json(client):
    content = (
        b'{"custom_id": "a", "text": "great"}\nnot json at all\n{"custom_id": "c", "text": "bad"}\n'
    )
    response = upload(client, content, name="feedback.jsonl")
    assert response.status_code == 202, response.text
    rows = results(client, response.json()["id"])
    assert [(r.custom_id, r.status) for r in rows] == [
        ("a", "pending"),
        (None, "error"),
        ("c", "pending"),
    ]
    assert rows[1].error.startswith("index 1 (line 2 of the file): ")
    assert response.json()["input"]["id_column"] == "custom_id", "the key it read ids from"
    named = upload(client, b'{"key": "k", "text": "fine"}\n', name="f.jsonl", id_column="key")
    assert named.json()["input"]["id_column"] == "key"


def test_rows_without_an_id_column_have_no_id_but_their_index(client):
    response = upload(client, b"text\nfirst\nsecond\n")
    assert response.json()["input"]["id_column"] is None
    rows = results(client, response.json()["id"])
    assert [(r.index, r.custom_id) for r in rows] == [(0, None), (1, None)]
    jsonl = upload(client, b'{"text": "a"}\n{"text": "b"}\n', name="f.jsonl")
    assert jsonl.status_code == 202, "rows without ids are not duplicates of each other"
    assert [r.status for r in results(client, jsonl.json()["id"])] == ["pending", "pending"]


def test_a_row_error_names_the_index_its_result_has_and_the_line_it_starts_on(client):
    # A blank line and a quoted line break: index and line part ways, and both are named.
    content = b'text\nfirst\n\n"two\nlines"\n   \n'
    response = upload(client, content)
    rows = results(client, response.json()["id"])
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[2].status == "error"
    assert rows[2].error.startswith("index 2 (line 6 of the file): the text is ")


def test_utf16_and_declared_latin1_files_are_decoded(client):
    utf16 = "text\ncafé crème\n".encode("utf-16")
    assert upload(client, utf16).status_code == 202
    latin1 = "text\nna\u00efve caf\u00e9\n".encode("latin-1")
    response = upload(client, latin1, encoding="latin-1")
    assert response.status_code == 202
    assert response.json()["input"]["encoding"] == "latin-1"


def test_a_gzip_csv_is_read(client):
    response = upload(client, gzip.compress(b"text\nfine\n"), name="feedback.csv.gz")
    assert response.status_code == 202
    assert response.json()["input"]["compressed"] is True


@pytest.mark.parametrize(
    ("content", "fields", "status", "expected"),
    [
        (b"", {}, 422, "empty"),
        (b"text,id\n", {}, 422, "no rows"),
        (b"comment,id\nhello,1\n", {}, 422, "comment"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, {}, 415, "PNG"),
        (b"PK\x03\x04" + b"\x00" * 64, {}, 415, "zip"),
        ("text\nna\u00efve caf\u00e9\n".encode("latin-1"), {}, 415, "latin-1"),
        (gzip.compress(b"text\n" + b"spam\n" * 600_000), {}, 413, "limit"),
        (b"text\nfine\n", {"task": "translate"}, 422, "unknown task"),
        (b"text\nfine\n", {"options": "{not json"}, 400, "options field"),
        (
            b"text\nfine\n",
            {"options": '{"max_length": 5}'},
            422,
            "options.max_length: unknown sentiment option 'max_length'; the sentiment options "
            "are: categories, insights",
        ),
        (b"text\nfine\n", {"webhook_url": "http://10.0.0.1:9/hook"}, 422, "webhook_url"),
    ],
    ids=[
        "empty file",
        "header only",
        "no such column",
        "png",
        "zip",
        "latin-1 undeclared",
        "gzip bomb",
        "unknown task",
        "options not json",
        "options of another task",
        "webhooks not yet",
    ],
)
def test_a_bad_file_is_refused_and_stores_nothing(
    client, stored_rows, content, fields, status, expected
):
    response = upload(client, content, **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert expected in response.json()["detail"]
    assert stored_rows() == (0, 0)


def test_a_request_that_is_not_a_form_or_has_no_file_is_422(client, stored_rows):
    not_form = client.post("/v1/batches", json={"task": "sentiment"})
    assert not_form.status_code == 422
    assert "multipart/form-data" in not_form.json()["detail"]
    no_file = client.post("/v1/batches", data={"task": "sentiment"}, files={"x": ("a", b"b")})
    assert no_file.status_code == 422
    assert "field `file`" in no_file.json()["detail"]
    assert stored_rows() == (0, 0)


def test_an_upload_over_the_size_limit_is_413_before_it_is_read(client, stored_rows):
    limit = client.app.state.settings.max_upload_bytes
    response = client.post(
        "/v1/batches",
        content=b"x" * 16,
        headers={
            "content-type": "multipart/form-data; boundary=b",
            "content-length": str(limit + 1),
        },
    )
    assert response.status_code == 413
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"text_colum": "review"}, "text_colum", "did you mean 'text_column'?"),
        (
            {"webhook_url": "https://example.com/h", "webhook_events": "done"},
            "webhook_events",
            "'completed'",
        ),
    ],
)
def test_a_misnamed_or_invalid_form_field_says_what_would_be_accepted(
    client, stored_rows, fields, field, says
):
    response = upload(client, b"review\nfine\n", **fields)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert says in errors[field], errors
    assert stored_rows() == (0, 0)
