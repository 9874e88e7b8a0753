"""The ``contagion`` command. Each sub-command lives in its own module and registers itself on ``app``."""

from __future__ import annotations

import sys
import warnings

import typer

from contagion.cli.app import app
from contagion.errors import UserError
from contagion.redact import redact

# Each command module registers its commands on ``app`` when imported, in the order --help lists them.
# isort: off
from contagion.cli import play, assess, run, demo, report, attention, vectors, bench, power, doctor  # noqa: F401
# isort: on


def main() -> None:
    """Entry point: user errors print one clear sentence and exit 2, without a traceback."""
    # llama-cpp-python leaves /dev/null handles to the garbage collector at exit; not the user's concern
    warnings.filterwarnings("ignore", category=ResourceWarning)
    try:
        app()
    except UserError as exc:  # raised outside typer's own handling (e.g. at import time)
        typer.echo(f"Error: {redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
