"""The ``contagion`` command. Each sub-command lives in its own module and registers itself on ``app``."""

from __future__ import annotations

import sys
import warnings

import typer

# Import the command modules for their side effect of registering on ``app``.
from contagion.cli import play as _play  # noqa: F401
from contagion.cli.app import app
from contagion.errors import UserError

try:  # commands added by later layers register only when present
    from contagion.cli import assess as _assess  # noqa: F401
except ImportError:  # pragma: no cover
    pass
for _mod in ("run", "demo", "report", "attention", "bench", "power"):
    try:
        __import__(f"contagion.cli.{_mod}")
    except ImportError as _exc:  # pragma: no cover - only while a command module is absent
        if _exc.name != f"contagion.cli.{_mod}":
            raise


def main() -> None:
    """Entry point: user errors print one clear sentence and exit 2, without a traceback."""
    # llama-cpp-python leaves /dev/null handles to the garbage collector at exit; not the user's concern
    warnings.filterwarnings("ignore", category=ResourceWarning)
    try:
        app()
    except UserError as exc:  # raised outside typer's own handling (e.g. at import time)
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
