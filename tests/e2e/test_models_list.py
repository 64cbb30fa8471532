"""`textq models list` shows what the running worker serves, read from the database."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def models_list(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "textq", "models", "list", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_models_list_shows_each_live_worker_and_its_models(service, model_dirs):
    listed = models_list(service.env, "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["configured"]["sentiment"]["model"] == str(model_dirs.sentiment)
    live = [w for w in report["workers"] if w["live"]]
    assert len(live) == 1, report
    (worker,) = live
    assert (worker["device"], worker["dtype"]) == ("cpu", "float32")
    assert worker["models"]["sentiment"]["model"] == str(model_dirs.sentiment)
    assert worker["models"]["summarize"]["revision"].startswith("sha256:")
    # What the API checks a summary's lengths against (the tiny BART's decoder positions).
    assert worker["models"]["summarize"]["limits"]["max_output_tokens"] == 1024

    text = models_list(service.env)
    assert worker["name"] in text.stdout and "live" in text.stdout
