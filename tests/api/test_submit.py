import json

import pytest

from shared.states import Task
from tests.broker import published

SENTIMENT = {"task": "sentiment", "input": {"texts": ["I love it", "meh"]}}


def test_a_job_is_accepted_with_its_location(client, api_settings):
    response = client.post("/v1/jobs", json=SENTIMENT)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert job["progress"] == {
        "total": 2,
        "done": 0,
        "errored": 0,
        "cached": 0,
        "chunks": {"total": 0, "done": 0},
    }
    assert job["model"] == api_settings.sentiment_model
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert client.get(response.headers["location"]).json()["id"] == job["id"]


def test_the_doorbell_rings_for_the_jobs_model_with_its_id_and_never_the_texts(
    client, api_settings
):
    job = client.post("/v1/jobs", json=SENTIMENT).json()
    messages = published(api_settings, Task.SENTIMENT)
    assert len(messages) == 1
    # Only workers serving the job's model take its doorbell.
    assert messages[0]["queue"] == api_settings.queue_for(Task.SENTIMENT, job["model_name"])
    _args, kwargs, _embed = messages[0]["body"]
    assert kwargs == {"task": "sentiment", "model": job["model_name"], "job_id": job["id"]}
    assert "I love it" not in messages[0]["raw"]


def test_curl_without_a_content_type_header_works(client):
    body = json.dumps(SENTIMENT)
    response = client.post(
        "/v1/jobs",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202


def test_summarization_options_are_kept(client):
    response = client.post(
        "/v1/jobs",
        json={
            "task": "summarize",
            "input": {"text": "A long story."},
            "options": {"max_length": 40, "min_length": 5, "num_beams": 2},
        },
    )
    assert response.status_code == 202
    assert response.json()["options"] == {"max_length": 40, "min_length": 5, "num_beams": 2}


def problem(response, status, kind):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if kind:
        assert body["type"] == f"/problems/{kind}"
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("payload", "status", "kind", "says"),
    [
        (b'{"task": "sentiment", "input": ', 400, "malformed-json", "not valid JSON"),
        (b"", 400, "malformed-json", "empty"),
        (b'{"task": "sentiment", "input": {"texts": ["caf\xe9"]}}', 400, "body-not-utf8", "0xe9"),
        ({"task": "translate", "input": {"texts": ["a"]}}, 422, "invalid-request", "unknown task"),
        ({"task": "sentiment"}, 422, "invalid-request", "input"),
        ({"task": "sentiment", "input": {}}, 422, "invalid-request", "exactly one"),
        ({"task": "sentiment", "input": {"texts": []}}, 422, "invalid-request", "at least one"),
        ({"task": "sentiment", "input": {"texts": ["ok", ""]}}, 422, "invalid-request", "texts[1]"),
        ({"task": "sentiment", "input": {"texts": ["x" * 101]}}, 422, "invalid-request", "101"),
        ({"task": "sentiment", "input": {"texts": ["a"] * 6}}, 422, "invalid-request", "limit"),
        (
            {"task": "summarize", "input": {"text": "a"}, "options": {"beams": 4}},
            422,
            "invalid-request",
            "unknown summarize option 'beams' (did you mean 'num_beams'?)",
        ),
        (
            {"task": "summarize", "input": {"text": "a"}, "options": {"num_beams": "4"}},
            422,
            "invalid-request",
            "num_beams",
        ),
        ({"task": "sentiment", "input": {"texts": "not a list"}}, 422, "invalid-request", "texts"),
        (
            {"task": "summarize", "input": {"text": "a"}, "options": {"max_length": 1}},
            422,
            "invalid-request",
            "options.max_length: Input should be greater than or equal to 2",
        ),
        ([1, 2], 422, "invalid-request", "object"),
        (
            {"task": "sentiment", "input": {"texts": ["a" * 90] * 5}, "pad": "x" * 20000},
            413,
            None,
            "",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    client, stored_rows, api_settings, payload, status, kind, says
):
    if isinstance(payload, bytes):
        response = client.post(
            "/v1/jobs", content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = client.post("/v1/jobs", json=payload)
    body = problem(response, status, kind)
    assert says in body["detail"]
    assert stored_rows() == (0, 0)
    assert published(api_settings, Task.SENTIMENT) == []


def test_validation_problems_name_each_field(client):
    body = problem(
        client.post("/v1/jobs", json={"task": "nope", "input": {"texts": [""]}}),
        422,
        "invalid-request",
    )
    fields = {error["field"] for error in body["errors"]}
    assert {"task", "input.texts"} <= fields


def test_a_body_that_is_not_json_at_all_is_unsupported(client, stored_rows):
    response = client.post(
        "/v1/jobs", content=b"<xml/>", headers={"content-type": "application/xml"}
    )
    problem(response, 415, "unsupported-media-type")
    assert stored_rows() == (0, 0)


def test_problem_types_are_documented(client):
    assert client.get("/problems/malformed-json").json()["status"] == 400
    assert client.get("/problems/no-such-thing").status_code == 404


def test_each_problem_types_document_names_the_type_its_errors_carry(client):
    from api.routes.problems import all_errors

    refused = client.post("/v1/jobs", json={"task": "sentiment"}).json()
    assert (
        client.get(refused["type"]).json()["type"] == refused["type"] == "/problems/invalid-request"
    )
    errors = all_errors()
    assert len(errors) > 10
    for error in errors:
        uri = f"/problems/{error.problem_type}"
        document = client.get(uri)
        assert document.status_code == 200, uri
        # RFC 9457: `type` is the URI that identifies the problem type, here and in errors.
        assert document.json()["type"] == uri
        assert (document.json()["title"], document.json()["status"]) == (
            error.title,
            error.status_code,
        ), uri


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"task": "sentiment", "input": {"texts": [' + b"9" * 5000 + b"]}}", "accepts"),
        (b"[" * 5000 + b"]" * 5000, "accepts"),
    ],
)
def test_json_no_parser_should_take_is_malformed_not_an_error(client, stored_rows, payload, says):
    response = client.post("/v1/jobs", content=payload)
    body = problem(response, 400, "malformed-json")
    assert says in body["detail"]
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize(
    ("text", "says"),
    [("bad \ud800 surrogate", "unpaired surrogate"), ("nul \x00 byte", "NUL")],
)
def test_texts_no_database_can_store_are_refused(client, stored_rows, text, says):
    for path, body in (
        ("/v1/jobs", {"task": "sentiment", "input": {"texts": ["fine", text]}}),
        ("/analyze", {"text": text}),
    ):
        response = client.post(path, content=json.dumps(body))
        assert says in problem(response, 422, "invalid-request")["detail"]
    assert stored_rows() == (0, 0)


# Characters a tokenizer drops: alone, or among whitespace, they leave the model nothing.
INVISIBLE_TEXTS = ["\u200b\u200b\u200b", "\ufeff", " \u200d\n\u2060\u00ad "]


@pytest.mark.parametrize("text", INVISIBLE_TEXTS)
def test_a_text_with_no_visible_character_is_empty(client, stored_rows, api_settings, text):
    for path, body in (
        ("/v1/jobs", {"task": "sentiment", "input": {"texts": ["fine", text]}}),
        ("/v1/jobs", {"task": "summarize", "input": {"text": text}}),
        ("/v1/jobs", {"task": "summarize", "input": {"document": text}}),
        ("/analyze", {"text": text}),
        ("/summarize", {"text": text}),
    ):
        detail = problem(client.post(path, json=body), 422, "invalid-request")["detail"]
        assert "invisible" in detail, (path, detail)
    plain = client.post(
        "/v1/jobs?task=summarize",
        content=text.encode(),
        headers={"content-type": "text/plain"},
    )
    assert "invisible" in problem(plain, 422, "invalid-request")["detail"]
    assert stored_rows() == (0, 0)
    assert published(api_settings, Task.SENTIMENT) == []


def test_a_text_with_one_visible_character_among_invisible_ones_is_accepted(client):
    body = {"task": "sentiment", "input": {"text": "\u200bok\ufeff"}}
    assert client.post("/v1/jobs", json=body).status_code == 202


@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        # An option of another task: the path keeps `options.` and the task's options are named.
        (
            {"task": "sentiment", "input": {"text": "a"}, "options": {"max_length": 3}},
            "options.max_length",
            ["sentiment", "categories", "insights"],
        ),
        (
            {"task": "summarize", "input": {"text": "a"}, "options": {"maxlength": 3}},
            "options.maxlength",
            ["max_length", "min_length", "num_beams", "do_sample"],
        ),
        (
            {"task": "summarize", "input": {"text": "a"}, "options": {"max_length": "3"}},
            "options.max_length",
            ["integer"],
        ),
        # The input's fields sent at the top level: say where they go.
        ({"task": "sentiment", "text": "a"}, "text", ["input.text", '{"input": {"text"']),
        ({"task": "sentiment", "texts": ["a"]}, "texts", ["input.texts"]),
        ({"task": "summarize", "document": "a"}, "document", ["input.document"]),
        # Any other unknown field: the fields that would be accepted.
        (
            {"task": "sentiment", "input": {"text": "a"}, "callback": "x"},
            "callback",
            ["task", "input", "model", "options", "webhook_url", "priority"],
        ),
        ({"task": "sentiment", "input": {"txt": "a"}}, "input.txt", ["text", "texts", "document"]),
        ({"task": "sentiment", "input": "a"}, "input", ["texts", "text", "document"]),
    ],
)
def test_an_unknown_or_invalid_field_says_what_would_be_accepted(
    client, stored_rows, payload, field, says
):
    body = problem(client.post("/v1/jobs", json=payload), 422, "invalid-request")
    messages = {error["field"]: error["message"] for error in body["errors"]}
    assert field in messages, body
    for fragment in says:
        assert fragment in messages[field], messages[field]
        assert fragment in body["detail"], body["detail"]
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize(
    ("path", "payload", "field", "says"),
    [
        ("/analyze", {"texts": ["a"]}, "texts", ["the fields are: text"]),
        ("/summarize", {"text": "a", "num_beams": 2}, "num_beams", ["max_length", "do_sample"]),
    ],
)
def test_the_classic_endpoints_name_their_fields(client, path, payload, field, says):
    body = problem(client.post(path, json=payload), 422, "invalid-request")
    messages = {error["field"]: error["message"] for error in body["errors"]}
    for fragment in says:
        assert fragment in messages[field], messages


STORY = "The parcel arrived late and the box was damaged."


def register_summarizer(db, settings, *, last_seen_s_ago=0.0, max_output_tokens=1024):
    """List a worker serving the summarizer with the limits a worker records at load."""
    from datetime import timedelta

    from shared import worker_registry
    from shared.model_limits import ModelLimits
    from shared.models import Worker

    entry = {
        "model": settings.summarization_model,
        "revision": "sha256:test",
        "limits": ModelLimits(512, max_output_tokens).as_json(),
    }
    with db.write() as session:
        worker_registry.register_worker(
            session, name="w1", device="cpu", dtype="float32", models={"summarize": entry}
        )
    if last_seen_s_ago:
        with db.write() as session:
            row = session.get(Worker, "w1")
            row.last_seen_at -= timedelta(seconds=last_seen_s_ago)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/jobs",
            {
                "task": "summarize",
                "input": {"text": STORY},
                "options": {"min_length": 1100, "max_length": 1200},
            },
            "options.min_length",
        ),
        (
            "/v1/jobs",
            {"task": "summarize", "input": {"document": STORY}, "options": {"max_length": 2000}},
            "options.max_length",
        ),
        ("/summarize", {"text": STORY, "max_length": 2000}, "max_length"),
    ],
)
def test_lengths_past_what_the_live_workers_model_can_generate_are_refused(
    client, db, api_settings, stored_rows, path, body, field
):
    register_summarizer(db, api_settings)
    response = problem(client.post(path, json=body), 422, "invalid-request")
    messages = {error["field"]: error["message"] for error in response["errors"]}
    assert "at most 1,024" in messages[field], messages
    assert "1,024 positions" in response["detail"]
    assert stored_rows() == (0, 0)
    assert published(api_settings, Task.SUMMARIZE) == []


def test_lengths_the_model_can_generate_are_accepted(client, db, api_settings):
    register_summarizer(db, api_settings)
    body = {"task": "summarize", "input": {"text": STORY}, "options": {"max_length": 1024}}
    assert client.post("/v1/jobs", json=body).status_code == 202


def test_the_limits_of_a_worker_no_longer_seen_do_not_count(client, db, api_settings):
    register_summarizer(db, api_settings, last_seen_s_ago=3600, max_output_tokens=10)
    body = {"task": "summarize", "input": {"text": STORY}, "options": {"max_length": 20}}
    assert client.post("/v1/jobs", json=body).status_code == 202


def test_an_uploaded_files_options_are_checked_against_the_model_too(
    client, db, api_settings, stored_rows
):
    from tests.api.test_batches import upload

    register_summarizer(db, api_settings)
    response = upload(client, b"text\nfine\n", task="summarize", options='{"max_length": 2000}')
    body = problem(response, 422, "invalid-request")
    assert body["errors"][0]["field"] == "options.max_length"
    assert "at most 1,024" in body["detail"]
    assert stored_rows() == (0, 0)


def test_a_length_the_worker_refuses_is_a_422_on_the_classic_endpoint(client, api_settings):
    # No worker has recorded the model's limits yet, so the submit goes through; the worker
    # refuses the length, and the classic call answers that as the client's mistake.
    import threading
    import time

    from worker.runtime import WorkerRuntime
    from worker.tasks import drain_queue

    runtime = WorkerRuntime.start(api_settings.model_copy(update={"worker_tasks": "summarize"}))
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set() and not drain_queue(runtime, Task.SUMMARIZE):
            time.sleep(0.05)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        response = client.post("/summarize", json={"text": STORY, "max_length": 2000})
    finally:
        stop.set()
        worker.join()
        runtime.stop()
    body = problem(response, 422, "invalid-request")
    assert "max_length 2,000" in body["detail"] and "at most 1,024" in body["detail"]
