"""One load generator for both servers: the same clients, the same inputs, the same clock."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
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
    one: Callable[[httpx.AsyncClient, Any], Awaitable[None]],
    base_url: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Run `one` for every job from `count` concurrent clients, each with its connection."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, headers=headers) as http:
            while not queue.empty():
                await one(http, queue.get_nowait())

    await asyncio.gather(*(client() for _ in range(count)))


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

    async def one(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        (await http.post(path, json=body)).raise_for_status()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    asyncio.run(_clients(clients, bodies, one, base_url, headers))
    return Run(len(bodies), time.perf_counter() - started, latencies)


async def submit_and_wait(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a textq job, wait for it with long polls, and read all its results."""
    job = (await http.post("/v1/jobs", json=body)).raise_for_status().json()
    while job["status"] in ("queued", "running"):
        response = await http.get(f"/v1/jobs/{job['id']}", params={"wait_s": WAIT_S})
        job = response.raise_for_status().json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}")
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"/v1/jobs/{job['id']}/results", params=params)).json()
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

    async def one(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        nonlocal items
        started = time.perf_counter()
        done = await submit_and_wait(http, body)
        latencies.append(time.perf_counter() - started)
        items += len(done["results"])

    started = time.perf_counter()
    asyncio.run(_clients(clients, bodies, one, base_url, headers))
    return Run(items, time.perf_counter() - started, latencies)
