"""Errors a user can act on.

``UserError`` and its subclasses carry one clear sentence naming the fix; the CLI prints the message
and exits with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""

    exit_code = 2


class BackendSpecError(UserError):
    """A backend spec string that no registered backend understands."""


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message names the pip command."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'contagion[{extra}]'"
        )
        self.extra = extra
        self.module = module


class BackendError(Exception):
    """A backend call failed. ``transient`` says whether retrying may help; ``retry_after`` is the wait in
    seconds the server asked for (HTTP ``Retry-After``), if any."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


class BackendUnavailableError(UserError):
    """The backend cannot be reached or loaded at all (e.g. server down, file missing)."""
