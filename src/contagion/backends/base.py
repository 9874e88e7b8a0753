"""The Backend interface: everything that needs a model goes through it.

A backend is async inside; :func:`run_sync` is the one sync entry point for scripts and the CLI.
Backends know nothing of games, traits or experiments: they turn messages into text
(:meth:`Backend.generate`) and score candidate continuations (:meth:`Backend.score_choices`).
"""

from __future__ import annotations

import asyncio
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contagion.errors import UserError
from contagion.messages import Message
from contagion.strict import Int, Seed, seed_field

T = TypeVar("T")


class GenerationConfig(BaseModel):
    """How to sample a reply. Temperature 0 is greedy (and reproducible on local backends)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: Int = Field(96, ge=1, le=8192, description="Upper bound on reply tokens.")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: Seed | None = seed_field(0, description="Sampling seed; None = not reproducible.")
    stop: tuple[str, ...] = Field((), description="Strings that end the reply (not included).")

    @property
    def reproducible(self) -> bool:
        """Whether the same request may be answered from a cache."""
        return self.temperature == 0.0 or self.seed is not None


MAX_CHARS_PER_TOKEN = 32
"""The longest reply taken, in characters per token asked (``max_tokens``): a token is a few characters, the
longest in common vocabularies a few dozen. A server that sends more ignored ``max_tokens`` (or misbehaves);
its reply is refused (:func:`reply_problem`), never stored."""


def reply_problem(text: str, config: GenerationConfig) -> str | None:
    """Why a generated reply cannot be taken (longer than :data:`MAX_CHARS_PER_TOKEN` × ``max_tokens``), or None."""
    limit = MAX_CHARS_PER_TOKEN * config.max_tokens
    if len(text) > limit:
        return (f"a reply of {len(text):,} characters to a request for at most {config.max_tokens} tokens (more "
                f"than {MAX_CHARS_PER_TOKEN} characters a token, {limit:,} in all)")
    return None


class Completion(BaseModel):
    """A generated reply and what it cost."""

    text: str = Field(description="The reply; a backend that can tell reasoning apart leaves it out of here.")
    reasoning: str | None = Field(None, description="What the model reasoned before its reply, when it did "
                                                    "(a server's reasoning field, or inline tags taken out).")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_encoded: int = Field(
        0, description="Prompt tokens actually run through the model (less than prompt_tokens with prefix reuse)."
    )
    seconds: float = Field(0.0, description="Seconds spent in the model.")
    cached: bool = False
    probes: dict[str, float] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="A monitored white-box backend: the prompt's last-token residual projected on each trait "
                    "direction (see Backend.monitored); None otherwise.")


class ScoreMethod(StrEnum):
    """How a log-probability was obtained. Every score carries one, so results say how they were measured."""

    FULL = "full-continuation"  # sum of token log-probs of the whole continuation
    FIRST_TOKEN = "first-token-top-logprobs"  # log-prob of the first token from a server's top_logprobs
    ANSWER_TOKEN = "answer-token-top-logprobs"  # the same, at the first generated token that owns a choice
    SAMPLED = "sampled-fallback"  # frequencies of sampled answers; an estimate, labelled as such
    SCRIPTED = "scripted"  # a scripted player's deterministic choice (log-prob 0 or -inf)
    SIMULATED = "simulated"  # a simulated model's known rule


LOGPROB_TOLERANCE = 1e-6
"""How far above 0 a log-probability may lie and still be read as 0 (rounding in a model's or a server's
arithmetic); anything higher claims a probability above 1."""


def logprob_problem(value: object) -> str | None:
    """Why ``value`` is not a log-probability, or None when it is one.

    A log-probability is a number that is finite or ``-inf`` (an impossible answer) and at most 0, give or
    take :data:`LOGPROB_TOLERANCE`. NaN, ``+inf`` and positive values (``+2.6`` would be a probability of
    13) are not, and neither is anything that is not a number. This is the one rule every number a model
    reports goes through: :class:`Scores` applies it to every score of every backend, and
    :func:`contagion.backends.first_token.score_candidates` to every first-token candidate.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"not a number ({value!r})"
    if math.isnan(value):
        return "NaN"
    if value == math.inf:
        return "+infinity"
    if value > LOGPROB_TOLERANCE:
        return f"{value:g}, above 0 (a probability above 1)"
    return None


class ChoiceScore(BaseModel):
    choice: str
    logprob: float


class Scores(BaseModel):
    """Log-probabilities of candidate continuations, and how they were measured.

    Every score is checked where it enters (:func:`logprob_problem`, on construction): when one choice's
    log-probability is not a log-probability, or the first-token candidates it came from were not (the
    reason in ``detail["invalid"]``), the scores are **invalid**: :attr:`invalid` says why and every
    choice's log-probability is NaN, so no number of them can be read as a value. Callers count such a
    score as invalid (an item left out, an invalid action); :meth:`normalised` and :meth:`best` refuse it.
    Values within :data:`LOGPROB_TOLERANCE` above 0 are read as 0.
    """

    choices: list[ChoiceScore]
    method: ScoreMethod
    prompt_tokens: int = 0
    prompt_tokens_encoded: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)
    cached: bool = False
    invalid: str | None = Field(None, exclude_if=lambda v: v is None,
                                description="Why these are not log-probabilities (then none is a value), or None.")
    probes: dict[str, float] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="A monitored white-box backend: the prompt's last-token residual projected on each trait "
                    "direction (see Backend.monitored); None otherwise.")

    @model_validator(mode="after")
    def _checked(self) -> Scores:
        problems = [f"{c.choice!r}: {p}" for c in self.choices if (p := logprob_problem(c.logprob)) is not None]
        if self.invalid is None and problems:
            given = self.detail.get("invalid")
            self.invalid = str(given) if given else "log-probability of " + "; ".join(problems)
        if self.invalid is not None:
            self.choices = [ChoiceScore(choice=c.choice, logprob=math.nan) for c in self.choices]
        elif any(c.logprob > 0 for c in self.choices):  # within the tolerance: rounding above 0
            self.choices = [ChoiceScore(choice=c.choice, logprob=min(c.logprob, 0.0)) for c in self.choices]
        return self

    @property
    def logprobs(self) -> list[float]:
        return [c.logprob for c in self.choices]

    def _valid(self) -> None:
        if self.invalid is not None:
            raise ValueError(f"invalid scores ({self.invalid})")

    def normalised(self) -> list[float]:
        """Probabilities renormalised over the candidates (softmax of the log-probs)."""
        self._valid()
        lps = self.logprobs
        top = max(lps)
        if top == -math.inf:
            raise ValueError("every candidate has probability zero")
        exps = [math.exp(lp - top) for lp in lps]
        total = sum(exps)
        return [e / total for e in exps]

    def best(self) -> str:
        self._valid()
        lps = self.logprobs
        return self.choices[lps.index(max(lps))].choice


class Capabilities(BaseModel):
    """What a backend can do, so callers choose honestly."""

    model_config = ConfigDict(frozen=True)

    language_model: bool = Field(True, description="A language model (False: a scripted strategy).")
    local: bool = Field(False, description="Runs in this process (no server to wait for).")
    cpu_bound: bool = Field(False, description="Computes on this machine's CPU: games run best one at a time.")
    simulated: bool = Field(False, description="A simulated model with a known rule (validation), not a real one.")
    scripted: bool = Field(False, description="A scripted game strategy: acts, but has no traits to measure.")
    strategy: str | None = Field(None, description="A scripted player's strategy (e.g. 'always-defect'); None "
                                                   "for a language model.")
    logprobs: bool = True
    score_method: ScoreMethod = ScoreMethod.FULL
    prefix_caching: bool = False
    attention: bool = False
    activations: bool = Field(False, description="Residual-stream activations can be read and steered "
                                                 "(a transformers model in this process).")
    deterministic: bool = Field(False, description="Same request, same answer (at temperature 0).")
    served: bool = Field(False, description="A chat server's backend: the options score, answer_tokens, extra_body "
                                            "and system_role apply (contagion doctor proposes them).")
    parallel_games: int | None = Field(
        None, ge=1, description="Most games worth having in flight at once on this backend (None: no limit of "
                                "its own). An in-process model that computes one call at a time gains nothing "
                                "from more and loses its cached histories to the other games: 1.")


def split_prefix(prefix: str, choices: Sequence[str]) -> tuple[str, list[str]]:
    """Move trailing whitespace of the prefix into the continuations.

    Tokenisers attach a space to the following word (" Yes"), so "Answer: " + "Yes" would score an
    unnatural token split. This is the one place the rule lives.
    """
    stripped = prefix.rstrip()
    moved = prefix[len(stripped) :]
    return stripped, [moved + c for c in choices]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest shared prefix of two token sequences (prefix-cache reuse)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class ScoreRequest:
    """One :meth:`Backend.score_choices` call, for :meth:`Backend.score_choices_many`."""

    messages: Sequence[Message]
    choices: Sequence[str]
    prefix: str = ""


async def gather_bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Await every call with at most ``limit`` in flight; results in the calls' order.

    The first failure cancels the calls not yet finished and is raised (like a task group, but the
    error itself, not a group of one).
    """
    if limit <= 1 or len(calls) <= 1:
        return [await call() for call in calls]
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    tasks = [asyncio.ensure_future(one(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Backend(ABC):
    """A model. Subclasses implement the two async calls and declare their capabilities."""

    spec: str
    capabilities: Capabilities

    @property
    def identity(self) -> str:
        """What identifies this model for caching and records (never contains secrets)."""
        return self.spec

    @abstractmethod
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        """Reply to the messages as the assistant."""

    @abstractmethod
    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        """Log-probability of each choice as the start of the assistant's reply (after ``prefix``).

        With an empty ``prefix`` (question and action format v2) every language-model backend scores the
        reply's *first token* right after the chat template opens the assistant turn, by one computation
        (:mod:`contagion.backends.first_token`): the distribution's top-k tokens — a server's
        ``top_logprobs``, or the same list from a local model's logits — matched to the choices by one rule
        (method ``first-token-top-logprobs``), so one model gives the same score on every backend. With a
        ``prefix`` (format v1) a local model scores the full continuation after it; a server cannot
        pre-fill it and appends an instruction instead.

        Every call returns one score per choice, in order, or raises; never a partial result.
        """

    score_concurrency: int = 1
    """How many ``score_choices`` calls the default :meth:`score_choices_many` keeps in flight."""

    batches_scores: bool = False
    """Whether :meth:`score_choices_many` answers a batch as one model call (retried as a unit)."""

    async def score_choices_many(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Scores for several requests at once, in their order: the same answers as one
        :meth:`score_choices` call each, raised errors included (the first one raised).

        The caller fixes the batch (e.g. one profile's items, one round's actions), never timing. This
        default awaits :meth:`score_choices` with at most :attr:`score_concurrency` calls in flight;
        backends that can do better (one batched model call, concurrent requests) override it.
        """
        calls = [
            (lambda r=r: self.score_choices(r.messages, r.choices, prefix=r.prefix)) for r in requests
        ]
        return await gather_bounded(calls, self.score_concurrency)

    def steered(self, additions: Mapping[int, Sequence[float]], label: str) -> Backend:
        """A backend on the same model that adds ``additions[layer]`` to that layer's residual stream on every
        forward pass (white-box steering); only backends whose capabilities say ``activations`` can."""
        raise UserError(f"{self.identity} has no activations to steer: vector steering needs a transformers "
                        "backend in this process (hf:embedded or hf:PATH_OR_ID)")

    def monitored(self, directions: Mapping[str, tuple[int, Sequence[float]]], label: str) -> Backend:
        """A backend on the same model that answers exactly as this one and also reports, with every reply and
        score, the residual stream of the prompt's last token projected on ``directions[trait]`` = (layer,
        direction) (a white-box drift monitor); only backends whose capabilities say ``activations`` can."""
        raise UserError(f"{self.identity} has no activations to monitor: the monitor needs a transformers "
                        "backend in this process (hf:embedded or hf:PATH_OR_ID)")

    def release(self, messages: Sequence[Message]) -> None:  # noqa: B027 - optional hook
        """A hint that no later request extends this history (a finished game's player): a backend that
        keeps histories (the llama.cpp lanes) may free or recycle what holds it. Never changes a score."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, model memory)."""


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a backend coroutine from synchronous code (scripts, the CLI, notebooks).

    Works whether or not an event loop is already running in this thread: inside a running loop the
    coroutine runs on a private background loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, daemon=True, name="contagion-sync").start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()
