"""One load generator for both servers: the same clients, the same inputs, the same clock."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=600.0, connect=10.0)
WAIT_S = 60


@dataclass
class Run:
    """What one workload did: how many items, how long, each item's latency."""

    items: int
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.elapsed_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "items": self.items,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 3),
        }
        if self.latencies_s:
            out |= {f"p{q}_s": round(self.percentile(q), 3) for q in (50, 95, 99)} | {
                "mean_s": round(statistics.fmean(self.latencies_s), 3)
            }
        return out


async def _clients(
    count: int,
    jobs: Sequence[Any],
    one: Callable[[aiohttp.ClientSession, Any], Awaitable[None]],
    base_url: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Run `one` for every job from `count` concurrent clients, each with its connection."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def client() -> None:
        async with session(base_url, headers, connections=1) as http:
            while not queue.empty():
                await one(http, queue.get_nowait())

    await asyncio.gather(*(client() for _ in range(count)))


def session(
    base_url: str, headers: dict[str, str] | None = None, *, connections: int
) -> aiohttp.ClientSession:
    """Return an HTTP client keeping up to `connections` connections to `base_url`.

    aiohttp, not httpx: on the 2-core benchmark machine the client shares the CPU with the
    server it measures, and httpx's async client cost 4 to 13 ms of CPU a request (its
    pool is scanned on every request), aiohttp's about 0.7 ms.
    """
    return aiohttp.ClientSession(
        base_url=base_url,
        headers=headers,
        timeout=TIMEOUT,
        connector=aiohttp.TCPConnector(limit=connections),
    )


async def _json(response: aiohttp.ClientResponse) -> Any:
    """Return a response's JSON body; raise for an error status, saying what it was."""
    body = await response.read()
    if response.status >= 400:
        raise RuntimeError(f"{response.method} {response.url}: {response.status} {body[:300]!r}")
    return json.loads(body) if body else None


def run_requests(
    base_url: str,
    path: str,
    bodies: Sequence[dict[str, Any]],
    *,
    clients: int,
    headers: dict[str, str] | None = None,
) -> Run:
    """POST each body to a synchronous endpoint from `clients` concurrent clients."""
    latencies: list[float] = []

    async def one(http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        async with http.post(path, json=body) as response:
            await _json(response)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    asyncio.run(_clients(clients, bodies, one, base_url, headers))
    return Run(len(bodies), time.perf_counter() - started, latencies)


async def submit_and_wait(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a textq job, wait for it with long polls, and read all its results."""
    async with http.post("/v1/jobs", json=body) as response:
        job = await _json(response)
    while job["status"] in ("queued", "running"):
        async with http.get(f"/v1/jobs/{job['id']}", params={"wait_s": WAIT_S}) as response:
            job = await _json(response)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}")
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        async with http.get(f"/v1/jobs/{job['id']}/results", params=params) as response:
            page = await _json(response)
        results += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return {"job": job, "results": results}


def run_jobs(
    base_url: str,
    bodies: Sequence[dict[str, Any]],
    *,
    clients: int,
    headers: dict[str, str] | None = None,
) -> Run:
    """Submit each body as a textq job from `clients` concurrent clients, to results."""
    latencies: list[float] = []
    items = 0

    async def one(http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        nonlocal items
        started = time.perf_counter()
        done = await submit_and_wait(http, body)
        latencies.append(time.perf_counter() - started)
        items += len(done["results"])

    started = time.perf_counter()
    asyncio.run(_clients(clients, bodies, one, base_url, headers))
    return Run(items, time.perf_counter() - started, latencies)
