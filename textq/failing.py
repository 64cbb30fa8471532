"""How every `textq` command ends on an error: one line on stderr and a non-zero exit, or
status 141 and no word when the reader of its stdout went away."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from shared.config import Settings, get_settings

SIGPIPE_EXIT_STATUS = 141  # 128 + SIGPIPE, as the shell reports a process it killed


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"textq: {message}", err=True)
    return typer.Exit(code)


def settings_or_fail(hint: str = "") -> Settings:
    """Return the settings, or end the command naming the first bad TEXTQ_ variable.

    `hint` (e.g. another way to go on) is added to that line after a semicolon.
    """
    try:
        return get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = "TEXTQ_" + "_".join(str(part) for part in first["loc"]).upper()
        raise fail(f"{name}: {first['msg']}" + (f"; {hint}" if hint else "")) from None


P = ParamSpec("P")
R = TypeVar("R")


def quiet_on_closed_pipe(command: Callable[P, R]) -> Callable[P, R]:
    """End `command` with status 141 and no word when the reader of stdout goes away.

    141 is 128 + SIGPIPE, what `cat` or `yes` killed by a closed pipe report, and what
    `set -o pipefail` scripts expect. SIGPIPE itself stays ignored (as Python sets it), so a
    closed socket still raises rather than killing the process.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            # What is still buffered for stdout would fail again at exit, with a warning:
            # let it go nowhere instead.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise typer.Exit(SIGPIPE_EXIT_STATUS) from None

    return run
