"""The typer application and the helpers every command shares."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from contagion import __version__
from contagion.errors import UserError
from contagion.redact import redact

F = TypeVar("F", bound=Callable[..., Any])

HELP = """Study and stop misalignment contagion between language-model agents.

Agents that play multi-turn social dilemmas together drift toward anti-social traits, more so next to
a malicious co-player. contagion plays the games, measures each agent's traits before and after play,
and mitigates the drift with steering with implicit traits (SIT).

Models are given as backend specs: embedded (the tiny offline default, SmolLM2-135M),
gguf:PATH, openai:MODEL@BASE_URL (vLLM, Ollama, llama.cpp server), hf:PATH_OR_ID,
scripted:always-defect (and other strategies), sim:planted / sim:null (simulated models).
Other packages add kinds of backends through the entry-point group contagion.backends (see the
docstring of contagion.backends.registry). Before a paid grid: contagion doctor MODEL_SPEC.

Start with:

\b
  contagion demo              a small real experiment on the embedded model, then the report
  contagion demo --simulated  the same report where a planted effect is found (seconds)
"""

app = typer.Typer(
    name="contagion",
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# soft_wrap: lines of prose (paths, messages) are never broken at the terminal width, so a path stays one
# string a user can copy; tables still fit the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"contagion {__version__}")
        raise typer.Exit()


class _NoteHandler(logging.Handler):
    """What the library says while it works (e.g. a server's Retry-After being waited out), as a note on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"Note: {redact(record.getMessage())}", style="yellow", markup=False, highlight=False,
                          soft_wrap=True)


_notes = logging.getLogger("contagion")
if not any(isinstance(h, _NoteHandler) for h in _notes.handlers):
    _notes.addHandler(_NoteHandler(logging.WARNING))
    _notes.propagate = False


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Root options."""


def user_errors(func: F) -> F:
    """Turn a UserError into one clear line on stderr and exit code 2 (no traceback); secrets in it (a URL's
    user:password@, an api_key=… parameter) are masked (:func:`contagion.redact.redact`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            err_console.print(Text.assemble(("Error: ", "bold red"), redact(str(exc))), highlight=False,
                              soft_wrap=True)
            sys.exit(exc.exit_code)
        except BaseExceptionGroup as group:  # parallel tasks (asyncio.TaskGroup): a user error among them
            matched, _ = group.split(UserError)
            if matched is None:
                raise
            first = _first_leaf(matched)
            err_console.print(Text.assemble(("Error: ", "bold red"), redact(str(first))), highlight=False,
                              soft_wrap=True)
            sys.exit(getattr(first, "exit_code", 2))

    return wrapper  # type: ignore[return-value]


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
