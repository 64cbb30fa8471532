"""Idempotency-Key: a retried submit finds its first job; a reused key with another body fails."""

import pytest

from shared.states import Task
from tests.broker import published

BODY = {"task": "sentiment", "input": {"texts": ["I love it"]}}


def test_a_retry_with_the_same_key_returns_the_first_job(client, stored_rows, api_settings):
    first = client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "order-17"})
    again = client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "order-17"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert stored_rows() == (1, 1)
    assert len(published(api_settings, Task.SENTIMENT)) == 1


def test_the_same_key_with_another_body_is_422_and_stores_nothing(client, stored_rows):
    client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "order-18"})
    other = {"task": "sentiment", "input": {"texts": ["I hate it"]}}
    response = client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "order-18"})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"
    assert "different request" in response.json()["detail"]
    assert stored_rows() == (1, 1)


def test_keys_are_per_request_kind_and_without_a_key_every_submit_is_new(client, stored_rows):
    client.post("/v1/jobs", json=BODY)
    client.post("/v1/jobs", json=BODY)
    assert stored_rows() == (2, 2)


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\there"])
def test_a_malformed_key_is_422(client, stored_rows, key):
    response = client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert stored_rows() == (0, 0)


def test_a_retried_upload_returns_the_first_job(client, stored_rows):
    def upload(content):
        return client.post(
            "/v1/batches",
            files={"file": ("f.csv", content)},
            data={"task": "sentiment"},
            headers={"Idempotency-Key": "upload-1"},
        )

    first = upload(b"text\nfine\ngood\n")
    again = upload(b"text\nfine\ngood\n")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert upload(b"text\nother\n").status_code == 422
    assert stored_rows() == (1, 2)
