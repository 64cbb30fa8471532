"""`textq up`: the embedded default a new user starts with, and its clear start-up errors."""

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.e2e.polling import all_results, wait_for_job
from tests.e2e.processes import free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_serves_both_tasks_from_one_data_dir_and_stops_on_ctrl_c(tmp_path, model_dirs):
    port = free_port()
    data_dir = tmp_path / "textq-data"
    env = {
        "TEXTQ_DATA_DIR": str(data_dir),
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
    }
    up = start("up", ["up", "--port", str(port)], env, tmp_path / "logs", own_group=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [up])
        with httpx.Client(base_url=base, timeout=60) as http:
            sentiment = http.post(
                "/v1/jobs", json={"task": "sentiment", "input": {"texts": ["I love it", "meh"]}}
            ).json()
            summary = http.post(
                "/v1/jobs", json={"task": "summarize", "input": {"text": "A short story."}}
            ).json()
            for job in (sentiment, summary):
                assert wait_for_job(http, job["id"])["status"] == "succeeded", up.output()
            assert {"label", "score", "scores"} <= set(all_results(http, sentiment["id"])[0])
            assert "summary_text" in all_results(http, summary["id"])[0]
            [answer] = http.post("/analyze", json={"text": "great"}).json()
            assert set(answer) == {"label", "score"}

            # A worker that dies (here kill -9) is restarted, and work goes on.
            children = psutil.Process(up.popen.pid).children()
            assert sorted(c.cmdline()[-1] for c in children) == ["webhooks", "worker"]
            [worker] = [c for c in children if c.cmdline()[-1] == "worker"]
            worker.kill()
            worker.wait(timeout=10)
            again = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "x"}})
            assert wait_for_job(http, again.json()["id"])["status"] == "succeeded", up.output()
            assert "worker exited with status -9; restarting it" in up.output()
    finally:
        pgid = up.popen.pid
        if up.popen.poll() is None:
            os.killpg(pgid, signal.SIGINT)  # what one Ctrl-C in a terminal does
        code = up.stop(sig=None)
    assert code == 0, up.output()
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid), "a textq process outlived Ctrl-C"
    assert (data_dir / "textq.db").is_file()
    assert (data_dir / "broker").is_dir()
    assert "Traceback" not in up.output()


def run_cli(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "textq", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_without_the_hub_says_which_setting_to_change(tmp_path):
    # The defaults are hub ids; the hub is out of reach (offline mode, loopback endpoint).
    result = run_cli(["up", "--port", str(free_port())], {"TEXTQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("textq:")]
    assert len(lines) == 1, result.stderr
    assert "distilbert/distilbert-base-uncased-finetuned-sst-2-english" in lines[0]
    assert "TEXTQ_SENTIMENT_MODEL" in lines[0]
    assert "Traceback" not in result.stderr


def test_worker_with_a_missing_model_directory_names_the_setting(tmp_path, model_dirs):
    result = run_cli(
        ["worker", "--tasks", "summarize"],
        {"TEXTQ_DATA_DIR": str(tmp_path), "TEXTQ_SUMMARIZATION_MODEL": str(tmp_path / "gone")},
    )
    assert result.returncode == 1
    assert "TEXTQ_SUMMARIZATION_MODEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_with_an_unknown_task_says_so(tmp_path):
    result = run_cli(["worker", "--tasks", "translate"], {"TEXTQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "unknown task" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_are_printed_once_listed_by_prefix_and_revoked(tmp_path):
    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    made = run_cli(["keys", "create", "--tenant", "acme", "--name", "ci"], env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("tq_")
    prefix = key.split("_")[1]
    listed = run_cli(["keys", "list"], env)
    assert prefix in listed.stdout and key not in listed.stdout
    assert "acme  active" in listed.stdout
    assert run_cli(["keys", "revoke", prefix], env).returncode == 0
    assert "revoked" in run_cli(["keys", "list", "--tenant", "acme"], env).stdout
    again = run_cli(["keys", "revoke", prefix], env)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_an_api_without_keys_refuses_to_listen_beyond_loopback(tmp_path):
    result = run_cli(
        ["api", "--host", "0.0.0.0", "--port", str(free_port())], {"TEXTQ_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    assert "only listens on 127.0.0.1" in result.stderr
    assert "TEXTQ_AUTH=required" in result.stderr


def test_a_tenants_retention_is_set_from_the_command_line(tmp_path):
    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    run_cli(["db", "upgrade"], env)
    run_cli(["keys", "create", "--tenant", "acme"], env)
    assert "for 90 days" in run_cli(["tenants", "retention", "acme", "--days", "90"], env).stdout
    assert "forever" in run_cli(["tenants", "retention", "acme", "--days", "0"], env).stdout
    missing = run_cli(["tenants", "retention", "nobody", "--days", "1"], env)
    assert missing.returncode == 1 and "no tenant" in missing.stderr
