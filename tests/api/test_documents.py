"""Long documents: accepted up to their own limit, as JSON or as a text/plain body."""

import pytest


def test_a_document_beyond_the_text_limit_is_accepted(client):
    document = "A sentence of the report. " * 150  # 3,900 characters; texts stop at 100
    as_document = client.post(
        "/v1/jobs", json={"task": "summarize", "input": {"document": document}}
    )
    assert as_document.status_code == 202
    as_text = client.post("/v1/jobs", json={"task": "summarize", "input": {"text": document}})
    assert as_text.status_code == 422
    assert "send a long text as input.document" in as_text.json()["detail"]


def test_a_document_is_one_item_of_kind_document(client, stored_rows):
    response = client.post(
        "/v1/jobs", json={"task": "summarize", "input": {"document": "Long. " * 15}}
    )
    assert response.status_code == 202
    job = response.json()
    assert job["input"] == {"kind": "document", "preview": ("Long. " * 15)[:80]}
    assert job["progress"]["total"] == 1
    assert stored_rows() == (1, 1)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("   \n\t  ", "must not be empty or only whitespace"),
        ("x" * 5001, "document is 5001 characters; the limit is 5000"),
    ],
    ids=["whitespace", "over the limit"],
)
def test_a_bad_document_is_422_and_stores_nothing(client, stored_rows, document, expected):
    response = client.post("/v1/jobs", json={"task": "summarize", "input": {"document": document}})
    assert response.status_code == 422
    assert expected in response.json()["detail"]
    assert stored_rows() == (0, 0)


def test_a_text_plain_body_with_a_task_is_a_document(client):
    response = client.post(
        "/v1/jobs?task=summarize&options=%7B%22max_length%22%3A%2030%7D",
        content=b"First sentence. Second sentence.\n\nNew paragraph.",
        headers={"content-type": "text/plain; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["task"], job["input"], job["options"]) == (
        "summarize",
        {"kind": "document", "preview": "First sentence. Second sentence.\n\nNew paragraph."},
        {"max_length": 30},
    )


def test_text_plain_options_that_are_not_json_are_400(client, stored_rows):
    response = client.post(
        "/v1/jobs?task=summarize&options=max_length=30",
        content=b"A document.",
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 400
    assert "The options parameter is not valid JSON" in response.json()["detail"]
    assert stored_rows() == (0, 0)
