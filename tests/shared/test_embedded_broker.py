"""The embedded broker's files: whole when seen, and a reader that never dies on a bad one."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from pathlib import Path

from kombu import Exchange, Queue

from shared.broker import create_celery
from shared.config import Settings


def a_queue() -> str:
    # kombu keeps bindings per process, so a queue name used against an earlier folder would
    # not be bound again in this one.
    return f"q-{uuid.uuid4().hex[:8]}"


def embedded(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, queue_prefix="textq-test")


def queue_files(settings: Settings) -> list[Path]:
    return sorted((settings.broker_dir / "queue").iterdir())


def left_by_a_writer(
    settings: Settings, queue: str, content: bytes = b"", age_s: float = 0
) -> Path:
    """Leave what kombu's own writer leaves between its open() and its write() (or a crash),
    named to sort before every real message (those start with a monotonic clock in ms)."""
    path = settings.broker_dir / "queue" / f"0_{uuid.uuid4()}.{queue}.msg"
    path.write_bytes(content)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_an_empty_message_file_is_passed_over_then_read_once_its_writer_has_written(tmp_path):
    settings = embedded(tmp_path)
    with create_celery(settings).connection_for_write() as connection:
        name = a_queue()
        queue = connection.SimpleQueue(name)
        early = left_by_a_writer(settings, name)
        queue.put({"n": 1})
        # Sorted first, yet empty: the reader takes the real message behind it and survives.
        first = queue.get(timeout=2)
        first.ack()
        assert first.payload == {"n": 1}
        assert early.exists(), "a file a writer may still be filling was taken away"
        # The slow writer finishes: its message is delivered, not lost.
        queue.put({"n": 2})
        [written] = [path for path in queue_files(settings) if path != early]
        early.write_bytes(written.read_bytes())
        written.unlink()
        second = queue.get(timeout=2)
        second.ack()
        assert second.payload == {"n": 2}
        assert queue_files(settings) == []
        queue.close()


def test_an_old_unreadable_message_file_is_set_aside_and_the_queue_goes_on(tmp_path):
    settings = embedded(tmp_path)
    with create_celery(settings).connection_for_write() as connection:
        name = a_queue()
        queue = connection.SimpleQueue(name)
        crashed = left_by_a_writer(settings, name, b'{"body": "eyJ', age_s=60)
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        message.ack()
        assert message.payload == {"n": 1}
        assert queue_files(settings) == []
        aside = settings.broker_dir / "unreadable" / crashed.name
        assert aside.read_bytes() == b'{"body": "eyJ'
        queue.close()


def publish(data_dir: str, name: str, writer: int, count: int) -> None:
    with create_celery(embedded(Path(data_dir))).connection_for_write() as connection:
        queue = connection.SimpleQueue(name)
        for n in range(count):
            queue.put({"writer": writer, "n": n})
        queue.close()


def bind(data_dir: str, name: str) -> None:
    with create_celery(embedded(Path(data_dir))).connection_for_write() as connection:
        Queue(name, Exchange("fan", type="fanout"))(connection.default_channel).declare()


def test_messages_from_writer_processes_all_arrive_whole_while_a_reader_drains(tmp_path):
    settings = embedded(tmp_path)
    writers, per_writer = 4, 250
    spawn = multiprocessing.get_context("spawn")
    with create_celery(settings).connection_for_write() as connection:
        name = a_queue()
        queue = connection.SimpleQueue(name)
        with spawn.Pool(writers) as pool:
            done = pool.starmap_async(
                publish, [(str(tmp_path), name, w, per_writer) for w in range(writers)]
            )
            received = []
            for _ in range(writers * per_writer):
                message = queue.get(timeout=30)
                message.ack()
                received.append(message.payload)
            done.get(timeout=30)
        queue.close()
    assert sorted((m["writer"], m["n"]) for m in received) == [
        (w, n) for w in range(writers) for n in range(per_writer)
    ]
    # Nothing half-written is left behind, and nothing was set aside.
    assert queue_files(settings) == []
    assert list((settings.broker_dir / "unreadable").iterdir()) == []


def test_queues_bound_at_once_by_many_processes_all_stay_in_the_exchange_table(tmp_path):
    settings = embedded(tmp_path)
    names = sorted(a_queue() for _ in range(4))
    with multiprocessing.get_context("spawn").Pool(len(names)) as pool:
        pool.starmap(bind, [(str(tmp_path), name) for name in names])
    with create_celery(settings).connection_for_write() as connection:
        table = connection.default_channel.get_table("fan")
    assert sorted(row.queue for row in table) == names
    assert not list((settings.broker_dir / "control").glob("*.part"))
