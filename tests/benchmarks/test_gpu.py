"""The GPU benchmark script runs its every step (tiny models, on the CPU) before a GPU is had."""

import json
import os
import subprocess
import sys

from benchmarks.run import RESULTS, ROOT


def test_the_gpu_script_runs_the_models_alone_and_end_to_end(tmp_path):
    before = set(RESULTS.glob("gpu-*.json"))
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--device", "cpu"],
        cwd=ROOT,
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    for task in ("sentiment", "summarize"):
        assert result["alone"][task]["per_s"] > 0
        assert result["end_to_end"][task]["per_s"] > 0
    assert "| bulk sentiment, 400 texts (texts/s) |" in run.stdout
    for written in set(RESULTS.glob("gpu-*.json")) - before:
        written.unlink()  # a smoke run is not a result
