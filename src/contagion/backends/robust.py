"""The thick wrapper around any Backend: timeouts, retries, a concurrency limit, a response cache, usage.

Backends stay small; the shared hard parts live here once (as Inspect AI's ``Model`` wraps its
``ModelAPI``s)::

    backend = RobustBackend(resolve("openai:qwen2.5-7b@http://localhost:8000/v1"), concurrency=8,
                            cache=ResponseCache(path="responses.sqlite"))

- **Timeouts**: each attempt gets ``timeout`` seconds (``asyncio.wait_for``); running out is a
  transient :class:`~contagion.errors.BackendError`. Time queued for a concurrency slot does not count.
- **Retries** (:mod:`contagion.backends.retry`): :func:`should_retry` decides, per cause, nothing else:
  transient ``BackendError``\\s (HTTP 5xx, 408, 429, truncated bodies, empty ``choices``, a reply that lost
  its logprobs), timeouts and HTTP transport failures are retried with exponential backoff and jitter
  (tenacity); bad requests (400, 401, 404, ...), ``UserError``\\s and programming errors (``ValueError``,
  ``TypeError``, ...) are raised at once. An ``ExceptionGroup`` (parallel calls that failed together) is
  unwrapped first: it is retried when every error in it is. A server's ``Retry-After`` is honoured up to
  ``retry_after_max`` seconds (:data:`~contagion.backends.retry.RETRY_AFTER_MAX` by default), said on stderr while
  it lasts; a server that asks for longer is not waited for: the call fails at once, saying so. After the last
  attempt the last error is raised, with a note saying how many attempts were made. :func:`retry_call` applies
  the same policy to any call (the sampled fallback's requests use it).
- **Replies**: a generated reply longer than :data:`~contagion.backends.base.MAX_CHARS_PER_TOKEN` characters
  per token asked is refused (a non-transient error), never returned or stored.
- **Concurrency**: at most ``concurrency`` calls in flight per event loop (a semaphore per loop, since
  an asyncio semaphore belongs to one loop). Backoff sleeps do not hold a slot.
- **Cache** (:class:`~contagion.backends.response_cache.ResponseCache`): only when the same request must
  give the same answer (see :meth:`RobustBackend.caches_generate` and :meth:`RobustBackend.caches_scores`);
  hits come back with ``cached=True``.
- **Usage**: :attr:`RobustBackend.usage` adds up every call; :func:`track_usage` collects the calls made
  inside a block (and the tasks it starts), e.g. one game's share of a backend shared by many games.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from pydantic import BaseModel, Field

from contagion.backends.base import (
    Backend,
    Capabilities,
    Completion,
    GenerationConfig,
    ScoreMethod,
    ScoreRequest,
    Scores,
    gather_bounded,
    reply_problem,
)
from contagion.backends.response_cache import CACHE_KEY_VERSION, ResponseCache
from contagion.backends.retry import (
    RETRY_AFTER_MAX,
    announce_wait,
    backoff_seconds,
    beyond_cap,
    leaf_errors,
    retry_after,
    retry_call,
    should_retry,
)
from contagion.errors import BackendError
from contagion.messages import Message

__all__ = ["CACHE_KEY_VERSION", "RETRY_AFTER_MAX", "ResponseCache", "RobustBackend", "Usage", "backoff_seconds",
           "leaf_errors", "retry_after", "retry_call", "should_retry", "track_usage"]

T = TypeVar("T")


class Usage(BaseModel):
    """What calls cost. Add two with ``+``. Tokens and seconds count only work the model actually did."""

    calls: int = Field(default=0, description="Calls made (cached ones included; retries not counted again).")
    cached_calls: int = Field(default=0, description="Calls answered from the cache.")
    retries: int = Field(default=0, description="Extra attempts after transient failures.")
    failures: int = Field(default=0, description="Calls that raised after their last attempt.")
    prompt_tokens: int = Field(default=0, description="Prompt tokens of the answered calls.")
    prompt_tokens_encoded: int = Field(default=0, description="Prompt tokens actually run through the model.")
    completion_tokens: int = Field(default=0, description="Generated tokens.")
    seconds: float = Field(default=0.0, description="Seconds in the model, as the backend reports them.")

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})

    def _absorb(self, delta: Usage) -> None:
        for name in Usage.model_fields:
            setattr(self, name, getattr(self, name) + getattr(delta, name))


_trackers: ContextVar[tuple[Usage, ...]] = ContextVar("contagion_usage_trackers", default=())
_trackers_lock = threading.Lock()


@contextmanager
def track_usage() -> Iterator[Usage]:
    """Collect the usage of every RobustBackend call made in this block and in tasks it creates."""
    usage = Usage()
    token = _trackers.set((*_trackers.get(), usage))
    try:
        yield usage
    finally:
        _trackers.reset(token)


class RobustBackend(Backend):
    """Timeouts, classified retries, a per-loop concurrency limit, caching and usage around ``inner``.

    ``spec``, ``capabilities`` and ``identity`` are the inner backend's: the wrapper changes how calls
    are made, never what they answer, so records and cache keys do not depend on it.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        timeout: float | None = 120,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 20,
        retry_after_max: float = RETRY_AFTER_MAX,
        concurrency: int | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 <= backoff_initial <= backoff_max")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1 or None")
        if retry_after_max < 0:
            raise ValueError("retry_after_max must be >= 0")
        self.inner = inner
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.concurrency = concurrency
        self.cache = cache
        self._usage = Usage()
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._lock = threading.Lock()

    # -- delegated identity ------------------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.inner.spec

    @spec.setter
    def spec(self, value: str) -> None:
        raise AttributeError("a RobustBackend's spec is its inner backend's")

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        raise AttributeError("a RobustBackend's capabilities are its inner backend's")

    @property
    def identity(self) -> str:
        return self.inner.identity

    def __repr__(self) -> str:
        return f"RobustBackend({self.inner!r})"

    # -- usage --------------------------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        """A copy of the usage so far."""
        with self._lock:
            return self._usage.model_copy()

    def reset_usage(self) -> Usage:
        """Start counting from zero; returns what had been counted."""
        with self._lock:
            old, self._usage = self._usage, Usage()
        return old

    def _record(self, delta: Usage) -> None:
        with self._lock:
            self._usage._absorb(delta)
        with _trackers_lock:
            for tracker in _trackers.get():
                tracker._absorb(delta)

    # -- cache rules ----------------------------------------------------------------------------
    def caches_generate(self, config: GenerationConfig) -> bool:
        """Whether a generation may be answered from (and stored in) the cache.

        Only when the same request must give the same answer: the config is reproducible (temperature 0
        or a seed) *and* either the temperature is 0 (greedy decoding has one answer) or the inner
        backend declares itself deterministic (so a seeded sample repeats). A seeded sample from a
        server that may ignore the seed is never cached.
        """
        if not config.reproducible:
            return False
        return config.temperature == 0.0 or self.inner.capabilities.deterministic

    def caches_scores(self, scores: Scores) -> bool:
        """Whether computed scores may be stored: log-probabilities involve no sampling, so yes, except
        sampled-fallback estimates from a backend that is not deterministic, and invalid scores (never
        kept: a later call may be answered properly)."""
        if scores.invalid is not None:
            return False
        return scores.method != ScoreMethod.SAMPLED or self.inner.capabilities.deterministic

    # -- calls --------------------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        """The inner backend's reply, through cache, concurrency limit, timeout and retries."""
        key: str | None = None
        if self.cache is not None and self.caches_generate(config):
            key = ResponseCache.key(self.identity, "generate", messages, config.model_dump(mode="json"))
            hit = self.cache.get(key)
            if hit is not None:
                self._record(Usage(calls=1, cached_calls=1))
                return Completion.model_validate(hit).model_copy(update={"cached": True})
        completion = await self._call(lambda: self.inner.generate(messages, config))
        problem = reply_problem(completion.text, config)
        if problem is not None:  # refused whole: never returned, cached or stored
            self._record(Usage(calls=1, failures=1))
            raise BackendError(f"{self.spec} sent {problem}; refused (it is not stored)")
        self._record(
            Usage(
                calls=1,
                prompt_tokens=completion.prompt_tokens,
                prompt_tokens_encoded=completion.prompt_tokens_encoded,
                completion_tokens=completion.completion_tokens,
                seconds=completion.seconds,
            )
        )
        if key is not None and self.cache is not None:
            self.cache.put(key, completion.model_copy(update={"cached": False}).model_dump())
        return completion

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        """The inner backend's scores, through cache, concurrency limit, timeout and retries."""
        key: str | None = None
        if self.cache is not None:
            request = {"choices": list(choices), "prefix": prefix}
            key = ResponseCache.key(self.identity, "score_choices", messages, request)
            hit = self.cache.get(key)
            if hit is not None:
                self._record(Usage(calls=1, cached_calls=1))
                return Scores.model_validate(hit).model_copy(update={"cached": True})
        scores = await self._call(lambda: self.inner.score_choices(messages, choices, prefix=prefix))
        if len(scores.choices) != len(choices):
            raise BackendError(
                f"{self.spec} returned {len(scores.choices)} scores for {len(choices)} choices"
            )
        inner_retries = scores.detail.get("retries", 0)  # e.g. the sampled fallback's own request retries
        self._record(
            Usage(
                calls=1,
                retries=inner_retries if isinstance(inner_retries, int) else 0,
                prompt_tokens=scores.prompt_tokens,
                prompt_tokens_encoded=scores.prompt_tokens_encoded,
                seconds=scores.seconds,
            )
        )
        if key is not None and self.cache is not None and self.caches_scores(scores):
            self.cache.put(key, scores.model_copy(update={"cached": False}).model_dump())
        return scores

    async def score_choices_many(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Every request through the cache; the misses go to the inner backend together.

        An inner backend that answers a batch in one model call (``batches_scores``) gets the misses as
        one call, with the concurrency limit, timeout and retries applied to that call; any other gets
        one :meth:`score_choices` per miss, at most ``inner.score_concurrency`` in flight, each retried
        on its own. Answers, usage and cache entries are per request either way.
        """
        if not self.inner.batches_scores:
            calls = [(lambda r=r: self.score_choices(r.messages, r.choices, prefix=r.prefix)) for r in requests]
            return await gather_bounded(calls, self.inner.score_concurrency)
        out: list[Scores | None] = [None] * len(requests)
        keys: list[str | None] = [None] * len(requests)
        misses: list[int] = []
        for i, r in enumerate(requests):
            if self.cache is not None:
                keys[i] = ResponseCache.key(self.identity, "score_choices", r.messages,
                                            {"choices": list(r.choices), "prefix": r.prefix})
                hit = self.cache.get(keys[i] or "")
                if hit is not None:
                    self._record(Usage(calls=1, cached_calls=1))
                    out[i] = Scores.model_validate(hit).model_copy(update={"cached": True})
                    continue
            misses.append(i)
        if misses:
            batch = [requests[i] for i in misses]
            answers = await self._call(lambda: self.inner.score_choices_many(batch))
            if len(answers) != len(batch):
                raise BackendError(f"{self.spec} returned {len(answers)} answers for {len(batch)} requests")
            for i, scores in zip(misses, answers, strict=True):
                if len(scores.choices) != len(requests[i].choices):
                    raise BackendError(
                        f"{self.spec} returned {len(scores.choices)} scores for {len(requests[i].choices)} choices"
                    )
                self._record(Usage(calls=1, prompt_tokens=scores.prompt_tokens,
                                   prompt_tokens_encoded=scores.prompt_tokens_encoded, seconds=scores.seconds))
                key = keys[i]
                if key is not None and self.cache is not None and self.caches_scores(scores):
                    self.cache.put(key, scores.model_copy(update={"cached": False}).model_dump())
                out[i] = scores
        return [s for s in out if s is not None]

    def steered(self, additions: Mapping[int, Sequence[float]], label: str) -> RobustBackend:
        """The inner backend's steered sibling behind a wrapper like this one (its identity differs, so
        the shared response cache never mixes steered and unsteered answers)."""
        return self._rewrapped(self.inner.steered(additions, label))

    def _rewrapped(self, inner: Backend) -> RobustBackend:
        """``inner`` behind a wrapper with this one's settings and cache."""
        return RobustBackend(inner, timeout=self.timeout, max_retries=self.max_retries,
                             backoff_initial=self.backoff_initial, backoff_max=self.backoff_max,
                             retry_after_max=self.retry_after_max, concurrency=self.concurrency, cache=self.cache)

    def monitored(self, directions: Mapping[str, tuple[int, Sequence[float]]], label: str) -> RobustBackend:
        """The inner backend's monitored sibling behind a wrapper like this one (its identity differs, so a
        cached answer always carries its probes)."""
        return self._rewrapped(self.inner.monitored(directions, label))

    def release(self, messages: Sequence[Message]) -> None:
        """Pass the hint on to the inner backend."""
        self.inner.release(messages)

    async def aclose(self) -> None:
        """Close the inner backend (a shared cache is left open; close it yourself)."""
        await self.inner.aclose()

    def _semaphore(self) -> asyncio.Semaphore | None:
        if self.concurrency is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._semaphores.get(loop)
            if semaphore is None:
                for old in [lp for lp in self._semaphores if lp.is_closed()]:
                    del self._semaphores[old]
                semaphore = self._semaphores[loop] = asyncio.Semaphore(self.concurrency)
            return semaphore

    async def _attempt(self, call: Callable[[], Awaitable[T]]) -> T:
        semaphore = self._semaphore()
        if semaphore is not None:
            async with semaphore:
                return await self._timed(call)
        return await self._timed(call)

    async def _timed(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.timeout is None:
            return await call()
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            message = f"{self.spec} did not answer within {self.timeout:g} s"
            raise BackendError(message, transient=True) from None

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        # The first attempt runs bare: most calls succeed, and the retry machinery costs about a millisecond a
        # call, which a simulated or local model would pay thousands of times per run for nothing.
        try:
            return await self._attempt(call)
        except Exception as exc:
            refused = beyond_cap(exc, self.retry_after_max, self.spec)
            if refused is not None:
                self._record(Usage(calls=1, failures=1))
                raise refused from exc
            if self.max_retries == 0 or not should_retry(exc):
                self._record(Usage(calls=1, failures=1))
                raise
            first = exc
        self._record(Usage(retries=1))
        announce_wait(first, self.retry_after_max, self.spec)
        await asyncio.sleep(backoff_seconds(1, first, initial=self.backoff_initial, maximum=self.backoff_max,
                                            retry_after_max=self.retry_after_max))
        try:
            return await retry_call(
                lambda: self._attempt(call), max_retries=self.max_retries - 1, backoff_initial=self.backoff_initial,
                backoff_max=self.backoff_max, retry_after_max=self.retry_after_max,
                on_retry=lambda _: self._record(Usage(retries=1)), what=self.spec, attempts_before=1,
            )
        except Exception:
            self._record(Usage(calls=1, failures=1))
            raise
