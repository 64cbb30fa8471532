"""The event stream's framing, ids and keep-alive (pure: a scripted job, no database)."""

import asyncio

import pytest

from api import events
from api.events import Position, Snapshot, stream_events
from shared.errors import InvalidCursor, JobNotFound
from shared.states import JobStatus


def snapshot(status=JobStatus.RUNNING, done=0, results=(), last_index=-1):
    return Snapshot(
        status=status,
        done=done,
        errored=0,
        chunks_done=0,
        chunks_total=0,
        progress={"status": status.value, "progress": {"done": done}},
        results=[{"index": i} for i in results],
        last_index=last_index,
        more_results=False,
    )


class QuietWatch:
    """Nothing is ever announced: each wait lasts its timeout, briefly."""

    async def changed(self, timeout_s):
        await asyncio.sleep(min(timeout_s, 0.01))


def run(reads, **kwargs):
    script = iter(reads)

    def read(after, with_results):
        item = next(script)
        if isinstance(item, Exception):
            raise item
        return item

    async def collect():
        return [
            chunk.decode()
            async for chunk in stream_events(read, QuietWatch(), first=next(script), **kwargs)
        ]

    return asyncio.run(collect())


@pytest.fixture(autouse=True)
def no_read_interval(monkeypatch):
    monkeypatch.setattr(events, "MIN_READ_INTERVAL_S", 0.0)


def test_unchanged_figures_send_nothing_and_an_idle_stream_keeps_alive():
    idle = [snapshot(done=1)] * 30
    chunks = run(
        [*idle, snapshot(JobStatus.SUCCEEDED, done=2)],
        start=Position(),
        results=False,
        keep_alive_s=0.05,
    )
    assert chunks[0].startswith("retry: ")
    named = [c.split("\n")[0] for c in chunks if c.startswith("event:")]
    assert named == ["event: progress", "event: progress", "event: finished"]
    assert ": keep-alive\n\n" in chunks


def test_ids_resume_where_they_say():
    chunks = run(
        [snapshot(done=1, results=[0], last_index=0), snapshot(JobStatus.SUCCEEDED, done=1)],
        start=Position(),
        results=True,
    )
    ids = [line[4:] for c in chunks for line in c.split("\n") if line.startswith("id: ")]
    assert ids == [
        "1.0.0.0.-1.running",
        "1.0.0.0.0.running",
        "1.0.0.0.0.succeeded",  # the status moved: a progress event says so
        "1.0.0.0.0.end",
    ]
    assert [Position.parse(i).event_id() for i in ids] == ids
    resumed = run(
        [snapshot(done=1)] * 3 + [JobNotFound()], start=Position.parse(ids[1]), results=True
    )
    assert [c for c in resumed if c.startswith("event:")] == [], "nothing new, nothing sent"


@pytest.mark.parametrize("bad", ["", "1.2.3", "a.b.c.d.e.running", "1.0.0.0.0.sleeping", "9" * 300])
def test_an_id_this_stream_did_not_send_is_refused(bad):
    with pytest.raises(InvalidCursor, match="Last-Event-ID"):
        Position.parse(bad)
