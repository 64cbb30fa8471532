"""A ring waiting in a queue makes the next ones there unneeded, on the real brokers: the
Redis list (Postgres backend) and the embedded file broker (SQLite backend)."""

import os
import time

import pytest

from shared.broker import Doorbell, create_celery
from shared.states import Task
from shared.unanswered_rings import RING_MEMORY_S, UnansweredRings
from tests import services
from tests.broker import published
from tests.e2e.processes import free_port


@pytest.fixture
def doorbell(settings):
    return Doorbell(create_celery(settings), settings)


def queues(settings, messages):
    return sorted(message["queue"] for message in messages)


def test_rings_of_a_queue_wait_as_one_until_a_worker_answers(doorbell, settings):
    for _ in range(5):
        assert doorbell.ring(Task.SENTIMENT, model_name="a")
    assert doorbell.ring(Task.SENTIMENT, model_name="b")
    a, b = settings.queue_for(Task.SENTIMENT, "a"), settings.queue_for(Task.SENTIMENT, "b")
    assert queues(settings, published(settings, Task.SENTIMENT)) == [a, b]

    doorbell.release([a])
    assert doorbell.ring(Task.SENTIMENT, model_name="a")
    assert doorbell.ring(Task.SENTIMENT, model_name="b")
    assert queues(settings, published(settings, Task.SENTIMENT)) == [a, a, b]


def test_the_sweepers_ring_is_published_over_a_waiting_one(doorbell, settings):
    doorbell.ring(Task.SUMMARIZE)
    doorbell.ring(Task.SUMMARIZE, always=True)
    assert len(published(settings, Task.SUMMARIZE)) == 2


def test_a_ring_that_failed_to_publish_leaves_no_mark(doorbell, settings, monkeypatch):
    def broker_down(*_args, **_kwargs):
        raise ConnectionError("the broker went away")

    with monkeypatch.context() as patched:
        patched.setattr(doorbell.app, "send_task", broker_down)
        assert doorbell.ring(Task.SENTIMENT) is False
    assert published(settings, Task.SENTIMENT) == []
    assert doorbell.ring(Task.SENTIMENT)
    assert len(published(settings, Task.SENTIMENT)) == 1


def test_a_mark_outlives_its_ring_only_for_a_while(doorbell, settings):
    queue = settings.queue_for(Task.SENTIMENT)
    doorbell.ring(Task.SENTIMENT)
    if settings.is_embedded_broker:
        mark = settings.broker_dir / "unanswered" / queue
        stale = time.time() - RING_MEMORY_S - 1
        os.utime(mark, (stale, stale))
    else:
        ttl_ms = services.redis_client().pttl(f"{settings.queue_prefix}.unanswered-ring.{queue}")
        assert 0 < ttl_ms <= RING_MEMORY_S * 1000
        services.redis_client().pexpire(f"{settings.queue_prefix}.unanswered-ring.{queue}", 1)
        time.sleep(0.05)
    doorbell.ring(Task.SENTIMENT)
    assert len(published(settings, Task.SENTIMENT)) == 2


def test_an_unreachable_mark_store_rings_every_time(settings):
    # A Redis nobody listens on (a loopback port just closed): ringing does not depend on it.
    port = free_port()
    rings = UnansweredRings(settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}"}))
    assert rings.mark("q") and rings.mark("q")
    rings.clear(["q"])  # and says nothing


def test_a_drain_holding_a_queue_makes_its_rings_unneeded_until_it_lets_go(doorbell, settings):
    queue = settings.queue_for(Task.SENTIMENT, "a")
    doorbell.hold([queue])
    doorbell.ring(Task.SENTIMENT, model_name="a")
    assert published(settings, Task.SENTIMENT) == []
    doorbell.release([queue])
    doorbell.ring(Task.SENTIMENT, model_name="a")
    assert len(published(settings, Task.SENTIMENT)) == 1
