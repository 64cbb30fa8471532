"""The shared Celery app: a worker that stops on an error says so in its exit status."""

import subprocess
import sys
import textwrap

# A real Celery worker on the embedded broker whose start fails the way a broken broker
# connection did (`Unrecoverable error` in the consumer), run in a process of its own.
FAILING_WORKER = textwrap.dedent(
    """
    import sys
    from celery import bootsteps
    from shared.broker import create_celery, run_worker
    from shared.config import Settings

    class Breaks(bootsteps.StartStopStep):
        def start(self, worker):
            raise ValueError("Expecting value: line 1 column 1 (char 0)")

    app = create_celery(Settings(data_dir=sys.argv[1]))
    app.steps["worker"].add(Breaks)
    sys.exit(run_worker(app, ["worker", "--pool=solo", "--without-gossip", "--without-mingle"]))
    """
)


def test_a_worker_stopped_by_an_unrecoverable_error_exits_with_a_failure_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FAILING_WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unrecoverable error" in result.stderr
    assert result.returncode == 1, result.stderr
