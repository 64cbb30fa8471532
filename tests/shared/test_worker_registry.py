"""The worker registry: what `textq models list` reads."""

from datetime import timedelta

from shared import worker_registry
from shared.models import utcnow

MODELS = {"sentiment": {"model": "/models/sst2", "revision": "sha256:ab"}}


def test_a_worker_is_listed_live_until_it_stops_being_seen(db):
    with db.write() as session:
        worker_registry.register_worker(
            session, name="w1@host:1", device="cuda:1", dtype="bfloat16", models=MODELS
        )
    with db.read() as session:
        (worker,) = worker_registry.list_workers(session)
    assert (worker.device, worker.dtype, worker.models) == ("cuda:1", "bfloat16", MODELS)
    assert worker_registry.is_live(worker, sweep_interval_s=5)
    later = utcnow() + timedelta(seconds=60)
    assert not worker_registry.is_live(worker, sweep_interval_s=5, now=later)


def test_a_restarted_name_replaces_its_row_and_the_dead_are_forgotten(db):
    with db.write() as session:
        worker_registry.register_worker(session, name="w", device="cpu", dtype="f", models={})
        worker_registry.register_worker(session, name="w", device="cuda:0", dtype="f", models={})
        worker_registry.register_worker(session, name="gone", device="cpu", dtype="f", models={})
    with db.write() as session:
        worker_registry.worker_seen(session, "w")
        forgotten = worker_registry.forget_workers_unseen_since(
            session, utcnow() + timedelta(seconds=1)
        )
    assert forgotten == 2
    with db.write() as session:
        worker_registry.register_worker(session, name="w", device="cuda:0", dtype="f", models={})
        worker_registry.forget_worker(session, "w")
    with db.read() as session:
        assert worker_registry.list_workers(session) == []


def test_a_worker_that_cannot_load_a_model_does_not_count_as_serving_it(db):
    served = [
        {"name": "sst2", "task": "sentiment", "model": "/models/sst2", "loaded": True},
        {
            "name": "big",
            "task": "sentiment",
            "model": "/models/big",
            "loaded": False,
            "error": "needs 18 MB, more than this worker's whole memory budget of 3 MB",
        },
    ]
    with db.write() as session:
        worker_registry.register_worker(
            session, name="w", device="cpu", dtype="f", models={}, served=served
        )
    with db.read() as session:
        count = {
            name: worker_registry.live_workers_serving(
                session,
                task="sentiment",
                model=f"/models/{name}",
                model_name=name,
                sweep_interval_s=5,
            )
            for name in ("sst2", "big")
        }
    assert count == {"sst2": 1, "big": 0}
