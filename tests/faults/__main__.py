"""`python -m tests.faults [--jobs N] [--only NAME ...]`: run the fault scenarios, print the table.

`make faults` runs the long version (5,000 jobs per fault); CI runs tests/faults/test_faults.py,
the same scenarios with 200 jobs each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.harness import RunConfig, Verdict
from tests.faults.scenarios import SCENARIOS, run_scenario
from tests.faults.servers import PrivatePostgres
from tests.model_factory import build_sentiment_model, build_summarization_model


def table(verdicts: list[tuple[str, Verdict]]) -> str:
    header = (
        "fault",
        "jobs",
        "items",
        "faults",
        "lost",
        "duplicated",
        "webhooks owed",
        "max recovery s",
    )
    rows = [header] + [
        (
            fault,
            str(v.jobs),
            str(v.items),
            str(v.faults),
            str(v.lost),
            str(v.duplicated),
            str(v.undelivered_webhooks),
            f"{v.recovery_s:.1f}",
        )
        for fault, v in verdicts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per fault run")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds over which each run's jobs arrive (default: jobs / 15)",
    )
    parser.add_argument(
        "--webhook-down", type=float, default=180.0, help="seconds the webhook receiver stays down"
    )
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    root = Path(tempfile.mkdtemp(prefix="textq-faults-"))
    models = (
        build_sentiment_model(root / "models" / "sentiment"),
        build_summarization_model(root / "models" / "summarization"),
    )
    config = RunConfig(
        jobs=args.jobs,
        duration_s=args.duration or args.jobs / 15,
        models=models,
        root=root,
        finish_timeout_s=1800,
        webhook_down_s=args.webhook_down,
    )
    postgres = PrivatePostgres()
    postgres.start()
    verdicts = []
    try:
        for scenario in chosen:
            started = time.monotonic()
            verdict = run_scenario(scenario, config, postgres)
            verdicts.append((scenario.fault, verdict))
            print(
                f"{scenario.name}: {time.monotonic() - started:.0f} s, "
                f"{'clean' if verdict.clean else verdict.problems}",
                flush=True,
            )
    finally:
        postgres.close()
    print()
    print(table(verdicts))
    return 0 if all(v.clean for _, v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
