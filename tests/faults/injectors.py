"""Entry points that run the real `textq` command with one fault planted in it.

`python -m tests.faults.injectors poisoned-model worker ...`: the worker's models raise on
any batch holding a text with the poison marker, as a model that chokes on one input does.
`python -m tests.faults.injectors switchable DIR worker ...`: the worker's models wait while
the file DIR/hold exists, and fail on the poison marker while DIR/poison exists, so a test
holds a claim running, or makes a text fail the first time and succeed when retried.
`python -m tests.faults.injectors die-before-publish DIR api ...`: the API kills itself
(SIGKILL) right after it committed a job and before it publishes the doorbell, whenever
the file DIR/die-before-publish exists (the file is removed first, so it dies once).
Everything else is the code users run.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.faults.workload import POISON


class PoisonedInput(RuntimeError):
    pass


def plant_poisoned_model() -> None:
    from worker import engine

    for runner in engine.RUNNERS.values():
        healthy_forward = runner._forward

        def forward(
            self: Any,
            batch: list[Any],
            encoded: list[list[int]],
            tensors: Any,
            _healthy=healthy_forward,
        ):
            if any(POISON in item.text for item in batch):
                raise PoisonedInput(f"the model cannot read a text holding {POISON!r}")
            return _healthy(self, batch, encoded, tensors)

        runner._forward = forward  # type: ignore[method-assign]


def plant_switchable_model(switches: Path) -> None:
    from worker import engine

    for runner in engine.RUNNERS.values():
        healthy_forward = runner._forward

        def forward(
            self: Any,
            batch: list[Any],
            encoded: list[list[int]],
            tensors: Any,
            _healthy=healthy_forward,
        ):
            while (switches / "hold").exists():
                time.sleep(0.05)
            if (switches / "poison").exists() and any(POISON in item.text for item in batch):
                raise PoisonedInput(f"the model cannot read a text holding {POISON!r}")
            return _healthy(self, batch, encoded, tensors)

        runner._forward = forward  # type: ignore[method-assign]


def plant_death_before_publish(trigger_dir: Path) -> None:
    from shared.broker import Doorbell

    publish = Doorbell.ring

    def ring(self: Doorbell, *args: Any, **kwargs: Any) -> bool:
        trigger = trigger_dir / "die-before-publish"
        if trigger.exists():
            trigger.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return publish(self, *args, **kwargs)

    Doorbell.ring = ring  # type: ignore[method-assign]


def main() -> None:
    fault, *rest = sys.argv[1:]
    if fault == "poisoned-model":
        plant_poisoned_model()
    elif fault == "switchable":
        plant_switchable_model(Path(rest.pop(0)))
    elif fault == "die-before-publish":
        plant_death_before_publish(Path(rest.pop(0)))
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    sys.argv = ["textq", *rest]
    from textq.cli import main as textq_main

    textq_main()


if __name__ == "__main__":
    main()
