"""Which failures are worth another attempt, and the retry loop itself (backoff with jitter, ``Retry-After``).

:func:`should_retry` decides, per cause, nothing else: transient ``BackendError``\\s (HTTP 5xx, 408, 429,
truncated bodies, empty ``choices``, a reply that lost its logprobs), timeouts and HTTP transport failures are
retried; bad requests (400, 401, 404, ...), ``UserError``\\s and programming errors are not. A server's
``Retry-After`` is honoured up to :data:`RETRY_AFTER_MAX` seconds, said on stderr while it lasts; a server that
asks for longer fails the call at once (:func:`beyond_cap`). An
``ExceptionGroup`` (parallel calls that failed together) is retried when every error in it is.
:func:`retry_call` applies that policy to any call, with exponential backoff and jitter (tenacity); the robust
wrapper (:mod:`contagion.backends.robust`) uses it for every model call, the sampled fallback for its requests.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from contagion.errors import BackendError, UserError

T = TypeVar("T")
log = logging.getLogger("contagion.backends")

RETRY_AFTER_MAX = 60.0
"""The longest wait a server may ask for with ``Retry-After`` (seconds) and still be waited for."""

_jitter = random.Random()
_RETRYABLE_TRANSPORT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside ``exc``: itself, or every leaf of a (nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_errors(inner)]
    return [exc]


def should_retry(exc: BaseException) -> bool:
    """Whether retrying the call that raised ``exc`` may help.

    Yes for ``BackendError(transient=True)``, timeouts (``TimeoutError``, which aiohttp's timeouts are)
    and transport failures (aiohttp connection and payload errors, ``ConnectionError``: refused, reset or
    dropped connections, truncated bodies). No for everything else:
    ``UserError`` (including an unreachable server at first contact), non-transient ``BackendError``,
    cancellation and programming errors. An exception group is retried when every error in it would be.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = leaf_errors(exc)
        return bool(leaves) and all(should_retry(leaf) for leaf in leaves)
    if isinstance(exc, UserError):
        return False
    if isinstance(exc, BackendError):
        return exc.transient
    return isinstance(exc, (TimeoutError, *_RETRYABLE_TRANSPORT))


def retry_after(exc: BaseException | None) -> float | None:
    """The wait a server asked for (``Retry-After``) behind ``exc``, the longest in a group, or None."""
    if exc is None:
        return None
    waits = [leaf.retry_after for leaf in leaf_errors(exc)
             if isinstance(leaf, BackendError) and leaf.retry_after is not None]
    return max(waits) if waits else None


def backoff_seconds(attempt: int, exc: BaseException | None, *, initial: float, maximum: float,
                    retry_after_max: float) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from ``initial`` plus up to ``initial`` of jitter
    (so clients that failed together do not retry together), capped at ``maximum``; at least the
    server's ``Retry-After`` when it sent one, itself capped at ``retry_after_max``. The jitter only
    shifts timing, never results, so it needs no seed."""
    wait = min(maximum, initial * 2 ** (attempt - 1) + _jitter.uniform(0.0, initial))
    asked = retry_after(exc)
    if asked is not None:
        wait = max(wait, min(max(asked, 0.0), retry_after_max))
    return wait


def beyond_cap(exc: BaseException, retry_after_max: float, what: str) -> BackendError | None:
    """The error to raise instead of waiting, when the server asked (``Retry-After``) for more than
    ``retry_after_max`` seconds; None otherwise."""
    asked = retry_after(exc)
    if asked is None or asked <= retry_after_max or not should_retry(exc):
        return None
    error = BackendError(f"{what}: the server asked to wait {asked:,.0f} s before trying again (Retry-After), longer "
                         f"than the {retry_after_max:g} s this client waits; try again later ({exc})", transient=False,
                         status=getattr(exc, "status", None))
    error.__cause__ = exc
    return error


def announce_wait(exc: BaseException | None, retry_after_max: float, what: str) -> None:
    """Say on stderr (the ``contagion.backends`` logger) that a wait the server asked for is under way."""
    asked = retry_after(exc)
    if asked is not None and asked >= 1.0:
        log.warning("%s: the server asked to wait %.0f s before trying again (Retry-After); waiting %.0f s",
                    what, asked, min(asked, retry_after_max))


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    backoff_initial: float = 0.5,
    backoff_max: float = 20,
    retry_after_max: float = RETRY_AFTER_MAX,
    on_retry: Callable[[BaseException | None], None] | None = None,
    what: str = "the call",
    attempts_before: int = 0,
) -> T:
    """Await ``call()`` until it succeeds, retrying what :func:`should_retry` allows, up to ``max_retries``
    extra attempts, with :func:`backoff_seconds` between attempts. The last error is raised with a note
    saying how many attempts were made; ``on_retry`` is told of every retry. ``attempts_before`` counts
    attempts the caller already made (for the backoff and the note)."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return backoff_seconds(state.attempt_number + attempts_before, exc, initial=backoff_initial,
                               maximum=backoff_max, retry_after_max=retry_after_max)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        announce_wait(exc, retry_after_max, what)
        if on_retry is not None:
            on_retry(exc)

    async def checked() -> T:
        try:
            return await call()
        except Exception as exc:
            refused = beyond_cap(exc, retry_after_max, what)
            if refused is not None:
                raise refused from exc
            raise

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=wait,
        retry=retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = attempts_before
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                return await checked()
    except Exception as exc:
        if attempts > 1:
            exc.add_note(f"{what}: gave up after {attempts} attempts")
        raise
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
