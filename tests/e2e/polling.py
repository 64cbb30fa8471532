import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "partial", "cancelled"}


def wait_for_job(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """Poll a job until it is terminal and return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in TERMINAL:
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: {job}")


def all_results(http: httpx.Client, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Follow the cursor through every page of a job's results."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = http.get(f"/v1/jobs/{job_id}/results", params=params).raise_for_status().json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def wait_until_partly_done(
    http: httpx.Client, job_id: str, timeout_s: float = 300
) -> dict[str, Any]:
    """Return the job once some of its texts have finished and not all (it must not end first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        finished = job["progress"]["done"] + job["progress"]["errored"]
        if 0 < finished < job["progress"]["total"]:
            return job  # type: ignore[no-any-return]
        assert job["status"] not in TERMINAL, f"the job ended before it was read: {job}"
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start within {timeout_s} s")
