"""A document ten times longer costs ten times the work and no more memory."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)


def cost(tmp_path, model_dir, characters):
    data_dir = tmp_path / f"data-{characters}"
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.worker.document_cost",
            str(data_dir),
            str(model_dir),
            str(characters),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=500,
    ).stdout
    return json.loads(output.splitlines()[-1])


def test_ten_times_the_text_is_ten_times_the_chunks_in_flat_memory(tmp_path, model_dirs):
    small = cost(tmp_path, model_dirs.summarization, 40_000)
    large = cost(tmp_path, model_dirs.summarization, 400_000)
    assert small["status"] == large["status"] == "done"
    assert 8.5 <= large["chunks"] / small["chunks"] <= 11.5, (small, large)
    assert 8.5 <= large["tokens"] / small["tokens"] <= 11.5, (small, large)
    assert large["peak_mb"] <= 1.2 * small["peak_mb"], (small, large)
