"""How every `textq` command ends on an error: one line on stderr and a non-zero exit."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from shared.config import Settings, get_settings


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
