"""The processes' JSON log lines name the tenant and the job they were about."""

import json

import pytest

from tests.e2e.conftest import E2E_TENANT
from tests.e2e.polling import wait_for_job

pytestmark = pytest.mark.e2e


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_api_and_worker_lines_name_the_tenant_and_the_job(service, http):
    job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "logs please"}})
    job_id = job.json()["id"]
    wait_for_job(http, job_id)
    logs = {p.name: json_lines(p.output()) for p in service.processes}
    assert logs["api"] and logs["worker"], "the processes do not log JSON lines"
    access = [
        line
        for line in logs["api"]
        if line["logger"] == "uvicorn.access" and job_id in line["message"]
    ]
    assert access and all(
        line["tenant"] == E2E_TENANT and line["job_id"] == job_id for line in access
    )
    submit = [line for line in logs["api"] if line.get("job_id") == job_id]
    assert any("POST /v1/jobs" in line["message"] for line in submit)
    assert any(job_id in line.get("job_ids", []) for line in logs["worker"])
