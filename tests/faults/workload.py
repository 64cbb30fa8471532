"""The jobs a fault run submits: single texts, lists, documents and CSV files, as clients do.

Every submission carries an Idempotency-Key and is retried (honouring Retry-After) on 429,
503 and broken connections, as a careful client would; a job counts as accepted once the
API has answered with its id. Server errors are recorded, never retried into success.
"""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DATA = Path(__file__).resolve().parent.parent / "data"
RETRYABLE = {429, 502, 503, 504}
POISON = "zanzibar-poison"  # the poisoned worker's model fails on any text holding this


def _feedback() -> list[str]:
    texts = []
    for name in ("uci_amazon_cells_labelled.jsonl", "uci_yelp_labelled.jsonl"):
        with (DATA / name).open() as lines:
            texts += [json.loads(line)["text"] for line in lines]
    return texts


def _book_words() -> list[str]:
    return (DATA / "long_documents" / "gutenberg_35_the_time_machine.txt").read_text().split()


@dataclass
class Submission:
    """One job to submit: a JSON body or a CSV file, and the items it must produce."""

    number: int
    kind: str
    expected_items: int
    body: dict[str, Any] | None = None
    csv_file: bytes | None = None
    poisoned: int = 0
    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)


def build_workload(
    jobs: int, *, webhook_url: str | None, poison_every: int = 0, seed: int = 7
) -> list[Submission]:
    """Return `jobs` submissions: half single texts, 30% lists, 10% documents, 10% files.

    A quarter ask for a webhook. With `poison_every`, every that-many list and file jobs
    carry one poisoned text among healthy ones.
    """
    rng = random.Random(seed)
    feedback = _feedback()
    words = _book_words()
    submissions = []
    for number in range(jobs):
        roll = rng.random()
        poisoned = bool(poison_every) and number % poison_every == 0
        if roll < 0.5:
            sub = Submission(
                number, "text", 1, {"task": "sentiment", "input": {"text": rng.choice(feedback)}}
            )
        elif roll < 0.8:
            texts = rng.sample(feedback, 10)
            if poisoned:
                texts[rng.randrange(10)] = f"the {POISON} case: {rng.choice(feedback)}"
            sub = Submission(
                number,
                "texts",
                10,
                {"task": "sentiment", "input": {"texts": texts}},
                poisoned=int(poisoned),
            )
        elif roll < 0.9:
            start = rng.randrange(len(words) - 2000)
            length = 1500 if number % 5 == 0 else 150  # some split into chunks, most not
            document = " ".join(words[start : start + length])
            sub = Submission(
                number,
                "document",
                1,
                {
                    "task": "summarize",
                    "input": {"document": document},
                    "options": {"max_length": 40, "min_length": 5},
                },
            )
        else:
            rows = [(f"row-{number}-{n}", rng.choice(feedback)) for n in range(200)]
            if poisoned:
                at = rng.randrange(len(rows))
                rows[at] = (rows[at][0], f"{POISON} {rows[at][1]}")
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["ticket", "comment"])
            writer.writerows(rows)
            sub = Submission(
                number,
                "file",
                len(rows),
                csv_file=buffer.getvalue().encode(),
                poisoned=int(poisoned),
            )
        if webhook_url and number % 4 == 0 and sub.body is not None:
            sub.body["webhook_url"] = webhook_url
        submissions.append(sub)
    return submissions


@dataclass
class LoadResult:
    accepted: dict[str, Submission] = field(default_factory=dict)  # job id -> submission
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    unaccepted: list[Submission] = field(default_factory=list)


class LoadGenerator:
    """Submit a workload from a few client threads, spread over `duration_s`."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        submissions: list[Submission],
        *,
        duration_s: float,
        clients: int = 4,
        give_up_s: float = 180,
    ) -> None:
        self.base_url = base_url
        self.headers = headers
        self.submissions = submissions
        self.interval_s = duration_s / max(len(submissions), 1)
        self.clients = clients
        self.give_up_s = give_up_s
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._next = 0
        self._started = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> LoadResult:
        for thread in self._threads:
            thread.join()
        return self.result

    def _take(self) -> Submission | None:
        with self._lock:
            if self._next >= len(self.submissions):
                return None
            submission = self.submissions[self._next]
            self._next += 1
        due = self._started + submission.number * self.interval_s
        time.sleep(max(0.0, due - time.monotonic()))
        return submission

    def _client(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30) as http:
            while (submission := self._take()) is not None:
                job_id = submit_until_answered(
                    http, submission, self.result, self._lock, give_up_s=self.give_up_s
                )
                with self._lock:
                    if job_id is None:
                        self.result.unaccepted.append(submission)
                    else:
                        self.result.accepted[job_id] = submission


def submit_until_answered(
    http: httpx.Client,
    submission: Submission,
    result: LoadResult,
    lock: threading.Lock,
    *,
    give_up_s: float,
) -> str | None:
    """Submit, retrying what a client may retry; return the job id, or None on giving up."""
    deadline = time.monotonic() + give_up_s
    headers = {"Idempotency-Key": submission.idempotency_key}
    while time.monotonic() < deadline:
        try:
            if submission.csv_file is not None:
                response = http.post(
                    "/v1/batches",
                    headers=headers,
                    files={"file": ("feedback.csv", submission.csv_file, "text/csv")},
                    data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
                )
            else:
                response = http.post("/v1/jobs", headers=headers, json=submission.body)
        except httpx.TransportError:
            time.sleep(0.5)  # the API is down or restarting: the same key makes a retry safe
            continue
        with lock:
            result.statuses[response.status_code] += 1
        if response.status_code in (200, 201, 202):
            return str(response.json()["id"])
        if response.status_code in RETRYABLE:
            time.sleep(min(float(response.headers.get("retry-after", "1")), 5.0))
            continue
        with lock:
            result.server_errors.append(
                f"job {submission.number}: {response.status_code} {response.text[:300]}"
            )
        return None
    return None
