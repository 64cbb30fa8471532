"""`POST /v1/batches` with `input_url` (form or JSON), `output_url` and `expires_after_s`."""

import gzip

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared import api_keys
from shared.models import DEFAULT_TENANT_ID
from tests.file_server import Served

CSV = b"id,text\n1,I love it\n2,meh\n3,awful\n"
SIGNED = "?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=900"


@pytest.fixture
def url_client(api_settings):
    """A client whose settings allow loopback, where the tests' file server listens."""
    allowed = api_settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8"})
    with TestClient(create_app(allowed), base_url="http://127.0.0.1") as client:
        yield client


def test_a_gzip_csv_at_a_presigned_url_becomes_a_job(url_client, files):
    files.files["/in/feedback.csv.gz"] = Served(gzip.compress(CSV))
    response = url_client.post(
        "/v1/batches",
        data={"task": "sentiment", "input_url": files.url("/in/feedback.csv.gz" + SIGNED)},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["progress"]["total"] == 3
    assert job["input"]["filename"] == "feedback.csv.gz" and job["input"]["compressed"]
    assert job["input"]["url_host"] == f"127.0.0.1:{files.server.server_address[1]}"
    assert "Signature" not in response.text
    [get] = files.received
    assert get.path == "/in/feedback.csv.gz" + SIGNED, "the query string is sent verbatim"
    assert "authorization" not in get.headers


def test_the_json_body_takes_the_same_fields_typed(url_client, files):
    # A body gzipped in transit (Content-Encoding) and streamed without a length.
    files.files["/in/rows"] = Served(
        gzip.compress(b'{"custom_id": "x", "review": "fine"}\n'),
        headers={"content-encoding": "gzip"},
        content_length=False,
    )
    body = {
        "task": "sentiment",
        "input_url": files.url("/in/rows"),
        "text_column": "review",
        "format": "jsonl",
        "priority": 7,
        "expires_after_s": 3600,
    }
    response = url_client.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["progress"]["total"], job["priority"]) == (1, 7)
    assert (job["expires_after_s"], job["expires_at"]) == (3600, None)


def test_an_output_url_is_shown_by_its_host_only(url_client, files):
    files.files["/in/f.csv"] = Served(CSV)
    response = url_client.post(
        "/v1/batches",
        data={
            "task": "sentiment",
            "input_url": files.url("/in/f.csv"),
            "output_url": files.url("/out/r.jsonl.gz" + SIGNED),
            "output_gzip": "true",
        },
    )
    assert response.status_code == 202, response.text
    output = response.json()["output"]
    assert output == {
        "url_host": f"127.0.0.1:{files.server.server_address[1]}",
        "gzip": True,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
    }
    assert "Signature" not in response.text


@pytest.mark.parametrize("field", ["input_url", "output_url"])
def test_a_url_to_an_address_not_allowed_is_refused_at_submit(
    api_settings, db, files, stored_rows, field
):
    files.files["/in/f.csv"] = Served(CSV)
    # Only 127.0.0.2 is allowed (keys required: the embedded default opens all of loopback).
    narrow = api_settings.model_copy(
        update={"webhook_allowed_networks": "127.0.0.2/32", "auth": "required"}
    )
    with db.write() as session:
        key = api_keys.create_key(session, tenant_id=DEFAULT_TENANT_ID).key
    port = files.server.server_address[1]
    fields = {
        "task": "sentiment",
        "input_url": files.url("/in/f.csv", host="127.0.0.2"),
        field: f"http://127.0.0.3:{port}/in/f.csv",
    }
    with TestClient(create_app(narrow), base_url="http://127.0.0.1") as client:
        response = client.post(
            "/v1/batches", data=fields, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/unsafe-webhook-url"
    assert f"{field} host '127.0.0.3' resolves to 127.0.0.3" in response.json()["detail"]
    assert files.received == [], "nothing was fetched"
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_413_and_nothing_is_written(
    url_client, files, stored_rows, declared
):
    limit = url_client.app.state.settings.max_upload_bytes
    files.files["/in/big.csv"] = Served(
        b"id,text\n" + b"1,x\n" * (limit // 4 + 1), content_length=declared
    )
    response = url_client.post(
        "/v1/batches", data={"task": "sentiment", "input_url": files.url("/in/big.csv")}
    )
    assert response.status_code == 413, response.text
    assert "TEXTQ_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert f"127.0.0.1:{files.server.server_address[1]}" in response.json()["detail"]
    assert stored_rows() == (0, 0)


def test_a_fetch_that_fails_is_422_naming_the_host_and_why(url_client, files, stored_rows):
    missing = url_client.post(
        "/v1/batches",
        json={"task": "sentiment", "input_url": files.url("/in/gone.csv" + SIGNED)},
    )
    assert missing.status_code == 422
    problem = missing.json()
    assert problem["type"] == "/problems/input-fetch-failed"
    assert "answered HTTP 404" in problem["detail"]
    assert f"127.0.0.1:{files.server.server_address[1]}" in problem["detail"]
    assert "Signature" not in missing.text
    port = files.server.server_address[1]
    files.stop()
    refused = url_client.post(
        "/v1/batches", json={"task": "sentiment", "input_url": f"http://127.0.0.1:{port}/x.csv"}
    )
    assert refused.status_code == 422
    assert "refused or failed" in refused.json()["detail"]
    assert stored_rows() == (0, 0)


def test_a_fetched_file_gets_the_upload_s_row_errors(url_client, files):
    files.files["/in/f.csv"] = Served(b"id,text\n1,fine\n2,\n")
    response = url_client.post(
        "/v1/batches", data={"task": "sentiment", "input_url": files.url("/in/f.csv")}
    )
    assert response.status_code == 202
    assert response.json()["progress"]["errored"] == 1
    files.files["/in/sheet.csv"] = Served(b"PK\x03\x04 a spreadsheet")
    sheet = url_client.post(
        "/v1/batches", data={"task": "sentiment", "input_url": files.url("/in/sheet.csv")}
    )
    assert sheet.status_code == 415


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"file": None}, "not both"),
        ({"output_gzip": "true"}, "output_gzip needs an output_url"),
        ({"expires_after_s": "0"}, "positive whole number"),
        ({"expires_after_s": str(30 * 86400 + 1)}, "the most is 2592000"),
    ],
)
def test_bad_fields_are_422_and_nothing_is_written(url_client, files, stored_rows, fields, message):
    files.files["/in/f.csv"] = Served(CSV)
    data = {"task": "sentiment", "input_url": files.url("/in/f.csv")}
    upload = None
    if "file" in fields:
        upload = {"file": ("f.csv", CSV)}
    data |= {k: v for k, v in fields.items() if k != "file"}
    response = url_client.post("/v1/batches", data=data, files=upload)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert stored_rows() == (0, 0)


def test_expires_after_s_on_a_texts_job_is_checked_against_retention(client, stored_rows):
    texts = {"task": "sentiment", "input": {"texts": ["ok"]}}
    too_long = client.post("/v1/jobs", json=texts | {"expires_after_s": 31 * 86400})
    assert too_long.status_code == 422
    assert "the most is 2592000" in too_long.json()["detail"]
    assert stored_rows() == (0, 0)
    zero = client.post("/v1/jobs", json=texts | {"expires_after_s": 0})
    assert zero.status_code == 422
    assert "positive whole number of seconds" in zero.json()["detail"]
    job = client.post("/v1/jobs", json=texts | {"expires_after_s": 60}).json()
    assert (job["expires_after_s"], job["expires_at"]) == (60, None)


@pytest.mark.parametrize("field", ["input_url", "output_url"])
def test_a_url_that_is_not_http_says_what_would_be_accepted(url_client, stored_rows, field):
    body = {"task": "sentiment", "input_url": "https://127.0.0.1:9/f.csv"}
    body[field] = "ftp://127.0.0.1:9/f.csv"
    response = url_client.post("/v1/batches", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "http:// or https:// URL" in detail and "pattern" not in detail
    assert stored_rows() == (0, 0)
