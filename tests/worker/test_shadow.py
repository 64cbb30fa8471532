"""Shadow comparison end to end: a real worker runs a default's jobs, a share of their texts
again on the candidate at the lowest priority, and the report compares the two."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from api.app import create_app
from shared.config import Settings
from shared.jobs.claims import models_outranking
from shared.jobs.reads import list_item_outcomes
from shared.jobs.submit import create_job
from shared.models import Job, JobItem
from shared.shadow.sampling import SHADOW_PRIORITY
from shared.states import JobStatus, Task
from tests.model_factory import labelled_feedback
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

# Sixty short texts, words enough to move the tiny models' scores apart.
TEXTS = [
    f"{a} {b} order number {n}"
    for n, (a, b) in enumerate(
        [
            (a, b)
            for a in ("great", "awful", "late", "fine", "broken", "lovely")
            for b in (
                "service",
                "parcel",
                "refund",
                "support",
                "price",
                "quality",
                "app",
                "delivery",
                "screen",
                "box",
            )
        ]
    )
]
FRACTION = 0.5


def catalogue(settings: Settings, path: Path, default: Path, candidate: Path, shadow: bool):
    """Return settings whose catalogue has sst2 (default) and cand, cand shadowing or not."""
    shadowing = f'shadow = "cand"\nshadow_fraction = {FRACTION}\n' if shadow else ""
    path.write_text(
        f'[sentiment.sst2]\nsource = "{default}"\ndefault = true\n{shadowing}\n'
        f'[sentiment.cand]\nsource = "{candidate}"\n'
    )
    return settings.model_copy(update={"models_file": path, "result_cache": False})


def run_jobs(settings: Settings, texts: list[str]) -> str:
    """Submit one sentiment job on the default, let a worker serving both models drain
    everything, and return the job's id."""
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        answer = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}})
        assert answer.status_code == 202, answer.text
    runtime = WorkerRuntime.start(settings)
    runtime.list_in_registry()  # a live worker serves the candidate: shadows are taken
    try:
        drain_queue(runtime, Task.SENTIMENT)
        drain_queue(runtime, Task.SENTIMENT)
    finally:
        runtime.stop()
    return answer.json()["id"]


def shadowed(item_ids: list[int]) -> list[int]:
    """The rule the README states, computed here on its own: sha256 of the id's digits."""
    return [
        i
        for i in item_ids
        if int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") < FRACTION * 2**64
    ]


def user_items(db, job_id: str) -> list[JobItem]:
    with db.read() as session:
        return list(
            session.scalars(
                select(JobItem).where(JobItem.job_id == uuid.UUID(job_id)).order_by(JobItem.idx)
            )
        )


def report(settings: Settings, name: str = "sst2") -> dict:
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        answer = client.get(f"/v1/models/{name}/shadow", params={"window_h": 1})
    assert answer.status_code == 200, answer.text
    return answer.json()


def labels_of(model_dir: Path, texts: list[str]) -> list[str]:
    """Label texts with the model itself, one at a time: no textq code involved."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = []
    with torch.inference_mode():
        for text in texts:
            logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
            labels.append(model.config.id2label[int(logits.argmax())])
    return labels


def test_two_identical_models_agree_on_every_shadowed_text(settings, db, model_dirs, tmp_path):
    twin = shutil.copytree(model_dirs.sentiment, tmp_path / "twin")
    with_shadow = catalogue(settings, tmp_path / "m.toml", model_dirs.sentiment, twin, True)
    job_id = run_jobs(with_shadow, TEXTS)

    expected = shadowed([item.id for item in user_items(db, job_id)])
    assert 0 < len(expected) < len(TEXTS)
    found = report(with_shadow)
    assert (found["default"], found["candidate"], found["shadow_fraction"]) == (
        "sst2",
        "cand",
        FRACTION,
    )
    assert found["items_compared"] == len(expected)
    assert found["label_agreement"] == 1.0
    assert sum(map(sum, found["confusion"])) == len(expected)
    # Same weights, same texts; batches of other lengths may differ in the last float bits.
    assert found["max_abs_delta_score"] == pytest.approx(0, abs=1e-5)
    assert report(with_shadow, "cand") == found, "the candidate's name reports the same"

    with db.read() as session:
        shadows = session.scalars(select(Job).where(Job.shadow.is_(True))).all()
        copied = session.scalars(select(JobItem.shadow_of).where(JobItem.shadow_of.is_not(None)))
        assert sorted(copied) == expected
    assert shadows and all(j.priority == SHADOW_PRIORITY for j in shadows)
    assert all(j.model_name == "cand" and j.status == JobStatus.SUCCEEDED for j in shadows)


def test_different_models_agree_at_the_rate_the_models_themselves_give(
    settings, db, model_dirs, feedback_model_dir, tmp_path
):
    # Tiny random classifiers of any seed call every text the same; the candidate is one
    # fitted on reviews, which tells complaints from praise, so the two sometimes disagree.
    other = feedback_model_dir
    texts = [text for text, _ in labelled_feedback()[-40:]]
    without = catalogue(settings, tmp_path / "a.toml", model_dirs.sentiment, other, False)
    with_shadow = catalogue(settings, tmp_path / "b.toml", model_dirs.sentiment, other, True)
    plain_job = run_jobs(without, texts)
    with db.read() as session:
        assert session.scalars(select(Job).where(Job.shadow.is_(True))).all() == []
    job_id = run_jobs(with_shadow, texts)

    # The user's results do not change with a shadow on.
    with db.read() as session:
        plain, shadowed_run = (
            [
                o.result
                for o in list_item_outcomes(session, job_id=uuid.UUID(j), after_index=-1, limit=100)
            ]
            for j in (plain_job, job_id)
        )
    assert shadowed_run == plain

    items = {item.id: item.input_text for item in user_items(db, job_id)}
    copied = [items[i] for i in shadowed(list(items))]
    pairs = list(
        zip(labels_of(model_dirs.sentiment, copied), labels_of(other, copied), strict=True)
    )
    agreeing = sum(d == c for d, c in pairs)
    assert 0 < agreeing < len(pairs), "the test needs models that sometimes disagree"
    found = report(with_shadow)
    assert found["items_compared"] == len(pairs)
    assert found["label_agreement"] == pytest.approx(agreeing / len(pairs))
    cells = Counter(pairs)
    assert found["confusion"] == [[cells[(r, c)] for c in found["labels"]] for r in found["labels"]]
    assert found["max_abs_delta_score"] > 0


def test_shadow_jobs_stay_out_of_the_tenants_view(settings, db, model_dirs, tmp_path):
    twin = shutil.copytree(model_dirs.sentiment, tmp_path / "twin")
    with_shadow = catalogue(settings, tmp_path / "m.toml", model_dirs.sentiment, twin, True)
    job_id = run_jobs(with_shadow, TEXTS)
    with db.read() as session:
        shadow_ids = session.scalars(select(Job.id).where(Job.shadow.is_(True))).all()
    assert shadow_ids
    with TestClient(create_app(with_shadow), base_url="http://127.0.0.1") as client:
        listed = client.get("/v1/jobs").json()
        assert [job["id"] for job in listed["items"]] == [job_id]
        assert client.get(f"/v1/jobs/{shadow_ids[0]}").status_code == 404
        assert client.get(f"/v1/jobs/{shadow_ids[0]}/results").status_code == 404


def test_a_shadow_claim_yields_to_user_work_of_any_model_the_worker_serves(settings, db):
    served = [(Task.SENTIMENT, "default-source", "sst2"), (Task.SENTIMENT, "cand-source", "cand")]
    with db.write() as session:
        create_job(
            session,
            tenant_id="default",
            task=Task.SENTIMENT,
            model="cand-source",
            model_name="cand",
            options={},
            texts=["copy"],
            priority=SHADOW_PRIORITY,
        )
    with db.read() as session:
        assert models_outranking(session, served=served, priority=SHADOW_PRIORITY) == []
    with db.write() as session:
        create_job(
            session,
            tenant_id="default",
            task=Task.SENTIMENT,
            model="default-source",
            model_name="sst2",
            options={},
            texts=["a user's text"],
            priority=0,
        )
    with db.read() as session:
        outranking = models_outranking(session, served=served, priority=SHADOW_PRIORITY)
        assert outranking == [(Task.SENTIMENT, "sst2")]
        # A user's claim yields only to work of a higher priority than its own.
        assert models_outranking(session, served=served, priority=0) == []


def test_a_model_without_a_comparison_is_a_404_naming_those_with_one(
    settings, db, model_dirs, tmp_path
):
    twin = shutil.copytree(model_dirs.sentiment, tmp_path / "twin")
    with_shadow = catalogue(settings, tmp_path / "m.toml", model_dirs.sentiment, twin, True)
    with TestClient(create_app(with_shadow), base_url="http://127.0.0.1") as client:
        missing = client.get("/v1/models/nope/shadow")
        bad_window = client.get("/v1/models/sst2/shadow", params={"window_h": 0})
        empty = client.get("/v1/models/sst2/shadow").json()
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("/no-shadow-comparison")
    assert "sst2 (shadow: cand)" in missing.json()["detail"]
    assert bad_window.status_code == 422
    assert empty["items_compared"] == 0 and empty["label_agreement"] is None


def cli_shadow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `textq models shadow` on this test's database and catalogue."""
    where = (
        {"TEXTQ_DATABASE_URL": settings.database_url}
        if settings.database_url
        else {"TEXTQ_DATA_DIR": str(settings.data_dir)}
    )
    return subprocess.run(
        [sys.executable, "-m", "textq", "models", "shadow", *args],
        env={**os.environ, **where, "TEXTQ_MODELS_FILE": str(settings.models_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_reports_what_the_api_does(settings, db, model_dirs, tmp_path):
    twin = shutil.copytree(model_dirs.sentiment, tmp_path / "twin")
    with_shadow = catalogue(settings, tmp_path / "m.toml", model_dirs.sentiment, twin, True)
    run_jobs(with_shadow, TEXTS)
    found = report(with_shadow)

    as_json = cli_shadow(with_shadow, "cand", "--json", "--window-h", "1")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == found
    text = cli_shadow(with_shadow, "sst2")
    assert text.returncode == 0, text.stderr
    assert f"{found['items_compared']} texts compared" in text.stdout
    assert "label agreement 100.0%" in text.stdout
    unknown = cli_shadow(with_shadow, "nope")
    assert unknown.returncode != 0 and "sst2 (shadow: cand)" in unknown.stderr
