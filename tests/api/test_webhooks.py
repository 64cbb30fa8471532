"""Webhook settings at submit (refused when they point inward), secrets, events."""

import pytest

TEXTS = {"task": "sentiment", "input": {"texts": ["ok"]}}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:9/hook",
        "http://[fe80::1]:9/hook",
        "http://169.254.169.254/latest",
        "http://0.0.0.0/hook",
        "ftp://x/y",
    ],
)
def test_a_webhook_pointing_inward_is_422_at_submit_and_stores_nothing(client, stored_rows, url):
    response = client.post("/v1/jobs", json=TEXTS | {"webhook_url": url})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/unsafe-webhook-url"
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://[::1]:9/hook"])
def test_loopback_is_open_on_the_embedded_default_only(client, backend, stored_rows, url):
    # SQLite without keys is `textq up`: an API on loopback only, on one machine.
    response = client.post("/v1/jobs", json=TEXTS | {"webhook_url": url})
    if backend == "sqlite":
        assert response.status_code == 202, response.text
        assert response.json()["webhook"]["url"] == url
    else:
        assert response.json()["type"] == "/problems/unsafe-webhook-url"
        assert "loopback" in response.json()["detail"]
        assert stored_rows() == (0, 0)


def test_an_allowed_network_accepts_the_webhook_and_the_job_shows_it(api_settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    allowed = api_settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8"})
    with TestClient(create_app(allowed), base_url="http://127.0.0.1") as client:
        body = TEXTS | {"webhook_url": "http://127.0.0.1:9/hook", "webhook_events": ["progress"]}
        job = client.post("/v1/jobs", json=body).json()
        assert job["webhook"] == {"url": "http://127.0.0.1:9/hook", "events": ["progress"]}
        assert client.get(f"/v1/jobs/{job['id']}/webhooks").json() == []
        private = client.post("/v1/jobs", json=TEXTS | {"webhook_url": "http://10.0.0.1:9/x"})
        assert private.status_code == 422, "only 127.0.0.0/8 was allowed"


def test_webhook_events_without_a_url_are_422(client):
    response = client.post("/v1/jobs", json=TEXTS | {"webhook_events": ["completed"]})
    assert response.status_code == 422
    assert "webhook_events needs a webhook_url" in response.json()["detail"]


def test_the_secret_is_stable_until_rotated_and_the_old_one_stays_valid(client):
    first = client.get("/v1/webhooks/secret").json()
    assert first["secret"].startswith("whsec_")
    assert client.get("/v1/webhooks/secret").json()["secret"] == first["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate").json()
    assert rotated["secret"] != first["secret"]
    assert rotated["previous_secret_valid_until"] is not None
