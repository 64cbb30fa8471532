"""How every `textq` command ends on an error: one line on stderr and a non-zero exit."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"textq: {message}", err=True)
    return typer.Exit(code)
