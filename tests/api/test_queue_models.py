"""A job's place in line is that of its catalogue model: the live workers serving that model,
and the work of that model ahead of it, not of another model of the same source."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared import worker_registry
from shared.config import Settings


@pytest.fixture
def two_pins(settings: Settings, tmp_path: Path) -> Settings:
    """Two sentiment models of one source at two pinned revisions: told apart by name only."""
    path = tmp_path / "models.toml"
    source = settings.sentiment_model
    path.write_text(
        f'[sentiment.old]\nsource = "{source}"\nrevision = "r1"\ndefault = true\n\n'
        f'[sentiment.new]\nsource = "{source}"\nrevision = "r2"\n'
    )
    return settings.model_copy(update={"models_file": path})


def serve(db, worker: str, *names: str, source: str) -> None:
    """Register a live worker serving these sentiment models of `source`, as a worker does."""
    served = [
        {"name": name, "task": "sentiment", "model": source, "loaded": False} for name in names
    ]
    with db.write() as session:
        worker_registry.register_worker(
            session, name=worker, device="cpu", dtype="float32", models={}, served=served
        )


def test_the_queue_counts_only_workers_serving_the_jobs_catalogue_model(two_pins, db):
    source = two_pins.sentiment_model
    with TestClient(create_app(two_pins), base_url="http://127.0.0.1") as client:
        ahead = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": ["a", "b"]}})
        job = client.post(
            "/v1/jobs", json={"task": "sentiment", "model": "new", "input": {"text": "c"}}
        ).json()
        serve(db, "old-only", "old", source=source)

        queue = client.get(f"/v1/jobs/{job['id']}").json()["queue"]
        assert (queue["model"], queue["model_name"], queue["workers"]) == (source, "new", 0)
        assert queue["items_ahead"] == 0, "the other model's items are not ahead of it"
        assert queue["estimated_finish_at"] is None

        serve(db, "both", "old", "new", source=source)
        serve(db, "new-only", "new", source=source)
        assert client.get(f"/v1/jobs/{job['id']}").json()["queue"]["workers"] == 2
        older = client.get(f"/v1/jobs/{ahead.json()['id']}").json()["queue"]
        assert (older["model_name"], older["workers"], older["items_left"]) == ("old", 2, 2)
