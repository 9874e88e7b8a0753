"""RobustBackend: classified retries, timeouts, concurrency limit, response cache, usage accounting."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
    run_sync,
)
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.robust import (
    ResponseCache,
    RobustBackend,
    Usage,
    backoff_seconds,
    retry_after,
    retry_call,
    should_retry,
    track_usage,
)
from contagion.errors import BackendError, BackendUnavailableError, UserError
from contagion.messages import Message, system, user
from contagion.testing import FaultPlan, LoopbackServer

GREEDY = GenerationConfig(temperature=0.0, seed=0)
MESSAGES = [system("You play a game."), user("Your move?")]


class FakeBackend(Backend):
    """Raises the queued failures first, sleeps as told, and measures how many calls overlap."""

    def __init__(
        self,
        failures: Sequence[BaseException] = (),
        *,
        delays: Sequence[float] = (),
        delay: float = 0.0,
        deterministic: bool = False,
        method: ScoreMethod = ScoreMethod.FULL,
        spec: str = "fake:test",
    ) -> None:
        self.spec = spec
        self.capabilities = Capabilities(deterministic=deterministic, score_method=method)
        self.failures = list(failures)
        self.delays = list(delays)
        self.delay = delay
        self.method = method
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def _work(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delays.pop(0) if self.delays else self.delay
            if delay:
                await asyncio.sleep(delay)
            if self.failures:
                raise self.failures.pop(0)
        finally:
            self.in_flight -= 1

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        await self._work()
        return Completion(
            text=f"reply #{self.calls}",
            prompt_tokens=10,
            prompt_tokens_encoded=7,
            completion_tokens=3,
            seconds=0.5,
        )

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        await self._work()
        return Scores(
            choices=[
                ChoiceScore(choice=c, logprob=-math.inf if i else -0.1 * self.calls)
                for i, c in enumerate(choices)
            ],
            method=self.method,
            prompt_tokens=4,
            prompt_tokens_encoded=2,
            seconds=0.25,
        )

    async def aclose(self) -> None:
        self.closed = True


def robust(inner: Backend, **kwargs: object) -> RobustBackend:
    """A RobustBackend with millisecond backoff, so retry tests stay fast."""
    options: dict[str, object] = {"backoff_initial": 0.001, "backoff_max": 0.005}
    options.update(kwargs)
    return RobustBackend(inner, **options)  # type: ignore[arg-type]


# -- the retry classifier -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, expected",
    [
        (BackendError("busy", transient=True, status=503), True),
        (BackendError("bad request", transient=False, status=400), False),
        (TimeoutError(), True),
        (TimeoutError(), True),
        (aiohttp.ServerTimeoutError("slow"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("truncated body"), True),
        (aiohttp.ClientOSError(104, "reset"), True),
        (ConnectionResetError(104, "reset"), True),
        (aiohttp.InvalidURL("ftp://x"), False),
        (BackendUnavailableError("server down"), False),
        (UserError("fix your config"), False),
        (ValueError("bug"), False),
        (TypeError("bug"), False),
        (KeyError("bug"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_should_retry(exc: BaseException, expected: bool) -> None:
    assert should_retry(exc) is expected


TRANSIENT = BackendError("busy", transient=True, status=503)
PERMANENT = BackendError("not found", transient=False, status=404)


@pytest.mark.parametrize(
    "exc, expected",
    [
        # parallel calls (a TaskGroup) fail together: the group is judged by what is inside it
        (ExceptionGroup("samples", [TRANSIENT, TimeoutError()]), True),
        (ExceptionGroup("samples", [TRANSIENT, ExceptionGroup("nested", [aiohttp.ServerDisconnectedError()])]), True),
        (ExceptionGroup("samples", [TRANSIENT, PERMANENT]), False),
        (ExceptionGroup("samples", [TRANSIENT, ValueError("bug")]), False),
        (ExceptionGroup("samples", [BackendUnavailableError("down")]), False),
    ],
)
def test_exception_groups_are_unwrapped_before_classification(exc: BaseException, expected: bool) -> None:
    assert should_retry(exc) is expected


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    asked = BackendError("slow down", transient=True, status=429, retry_after=3.0)
    options = {"initial": 0.001, "maximum": 0.005, "retry_after_max": 10.0}
    assert backoff_seconds(1, asked, **options) == 3.0  # longer than the backoff: the server's wish wins
    too_long = BackendError("come back tomorrow", transient=True, status=429, retry_after=86400.0)
    assert backoff_seconds(1, too_long, **options) == 10.0  # capped
    assert backoff_seconds(1, TRANSIENT, **options) <= 0.005  # no header: the usual backoff
    group = ExceptionGroup("samples", [asked, BackendError("x", transient=True, retry_after=5.0)])
    assert retry_after(group) == 5.0
    assert retry_after(TRANSIENT) is None


async def test_retry_call_waits_as_the_server_asked() -> None:
    waits: list[float] = []
    failures = [BackendError("slow down", transient=True, status=429, retry_after=0.05), TRANSIENT]

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    def seen(exc: BaseException | None) -> None:
        waits.append(backoff_seconds(1, exc, initial=0.0, maximum=0.0, retry_after_max=1.0))

    assert await retry_call(call, max_retries=3, backoff_initial=0.0, backoff_max=0.0, on_retry=seen) == "done"
    assert waits == [0.05, 0.0]


async def test_a_failing_group_is_retried_like_any_transient_error() -> None:
    inner = FakeBackend([ExceptionGroup("samples", [TRANSIENT, TimeoutError()])])
    backend = robust(inner)
    scores = await backend.score_choices(MESSAGES, ["A", "B"])
    assert len(scores.choices) == 2 and inner.calls == 2
    assert backend.usage.retries == 1


# -- retries ------------------------------------------------------------------------------------


async def test_transient_failures_are_retried_until_success() -> None:
    inner = FakeBackend(
        [BackendError("busy", transient=True, status=503), TimeoutError(), aiohttp.ServerDisconnectedError()]
    )
    backend = robust(inner)
    completion = await backend.generate(MESSAGES, GREEDY)
    assert completion.text == "reply #4"
    assert inner.calls == 4
    usage = backend.usage
    assert (usage.calls, usage.retries, usage.failures) == (1, 3, 0)
    assert usage.prompt_tokens == 10  # only the answered attempt did countable work


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    errors = [BackendError(f"busy {i}", transient=True, status=429) for i in range(10)]
    inner = FakeBackend(errors)
    backend = robust(inner, max_retries=2)
    with pytest.raises(BackendError) as info:
        await backend.score_choices(MESSAGES, ["A", "B"])
    assert str(info.value) == "busy 2"
    assert any("3 attempts" in note for note in info.value.__notes__)
    assert inner.calls == 3
    usage = backend.usage
    assert (usage.calls, usage.retries, usage.failures, usage.prompt_tokens) == (1, 2, 1, 0)


@pytest.mark.parametrize(
    "exc",
    [
        BackendError("bad request", transient=False, status=400),
        BackendUnavailableError("server down; start it"),
        UserError("fix the config"),
        ValueError("a bug"),
        TypeError("another bug"),
    ],
)
async def test_permanent_errors_are_raised_at_once(exc: Exception) -> None:
    inner = FakeBackend([exc, exc, exc])
    backend = robust(inner, max_retries=5)
    with pytest.raises(type(exc)) as info:
        await backend.generate(MESSAGES, GREEDY)
    assert info.value is exc
    assert inner.calls == 1
    assert (backend.usage.retries, backend.usage.failures) == (0, 1)


async def test_slow_attempt_times_out_and_is_retried() -> None:
    inner = FakeBackend(delays=[5.0, 0.0])
    backend = robust(inner, timeout=0.05)
    started = time.perf_counter()
    completion = await backend.generate(MESSAGES, GREEDY)
    assert time.perf_counter() - started < 1.0
    assert completion.text == "reply #2"
    assert backend.usage.retries == 1


async def test_timeouts_exhausted_raise_a_transient_backend_error() -> None:
    inner = FakeBackend(delay=5.0)
    backend = robust(inner, timeout=0.02, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(BackendError) as info:
        await backend.generate(MESSAGES, GREEDY)
    assert time.perf_counter() - started < 1.0
    assert info.value.transient is True
    assert "did not answer within 0.02 s" in str(info.value)
    assert inner.calls == 2


async def test_retries_ride_out_a_faulty_http_server() -> None:
    kinds = ("500", "503", "429", "malformed", "reset", "timeout", "slow")
    # every kind once up front (a slow reply is good, so request 7 answers the first call), then random
    plan = FaultPlan(rate=0.4, kinds=kinds, seed=3, sequence=kinds, hang_seconds=3.0, slow_seconds=0.02)
    with LoopbackServer(faults=plan) as server:
        # a 1 s timeout: long enough that a reply delayed by a busy machine is not taken for a hang
        backend = robust(OpenAIBackend("m", server.base_url, timeout=1.0), max_retries=10)
        texts = [(await backend.generate([user(f"question {i}")], GREEDY)).text for i in range(12)]
        scores = await backend.score_choices([user("Would you?")], [" Yes", " No"])
        await backend.aclose()
        faults = [kind for _, kind in server.fault_log]
        requests = len(server.requests)

    assert texts == [f"Yes, you said: question {i}" for i in range(12)]
    assert scores.method is ScoreMethod.FIRST_TOKEN and scores.best() == " Yes"
    assert set(faults) == set(kinds)
    assert len(faults) > len(kinds)  # the random part bit too
    failed_attempts = sum(kind != "slow" for kind in faults)  # a slow reply is still a good reply
    usage = backend.usage
    assert usage.retries == failed_attempts
    assert requests == 13 + failed_attempts
    assert (usage.calls, usage.failures) == (13, 0)


async def test_unreachable_server_is_not_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = robust(OpenAIBackend("m", f"http://127.0.0.1:{port}/v1"), max_retries=5)
    with pytest.raises(BackendUnavailableError):
        await backend.generate(MESSAGES, GREEDY)
    assert backend.usage.retries == 0


async def test_wrong_number_of_scores_is_an_error() -> None:
    class Short(FakeBackend):
        async def score_choices(
            self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
        ) -> Scores:
            return Scores(choices=[ChoiceScore(choice=choices[0], logprob=0.0)], method=ScoreMethod.FULL)

    with pytest.raises(BackendError, match="1 scores for 2 choices"):
        await robust(Short()).score_choices(MESSAGES, ["A", "B"])


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrency_limit_is_enforced_and_used() -> None:
    inner = FakeBackend(delay=0.02)
    backend = robust(inner, concurrency=3)
    await asyncio.gather(*(backend.generate([user(str(i))], GREEDY) for i in range(12)))
    assert inner.max_in_flight == 3
    assert inner.calls == 12


async def test_no_limit_lets_every_call_run_at_once() -> None:
    inner = FakeBackend(delay=0.02)
    backend = robust(inner)
    await asyncio.gather(*(backend.generate([user(str(i))], GREEDY) for i in range(12)))
    assert inner.max_in_flight == 12


def test_concurrency_limit_works_across_event_loops() -> None:
    inner = FakeBackend(delay=0.01)
    backend = robust(inner, concurrency=2)

    async def burst() -> None:
        await asyncio.gather(*(backend.generate([user(str(i))], GREEDY) for i in range(6)))

    run_sync(burst())  # each asyncio.run is a new loop; a semaphore of a closed loop must not be reused
    run_sync(burst())
    assert inner.calls == 12
    assert inner.max_in_flight == 2


# -- cache --------------------------------------------------------------------------------------


async def test_greedy_generation_is_cached() -> None:
    inner = FakeBackend()
    backend = robust(inner, cache=ResponseCache())
    first = await backend.generate(MESSAGES, GREEDY)
    second = await backend.generate(MESSAGES, GREEDY)
    assert inner.calls == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text
    usage = backend.usage
    assert (usage.calls, usage.cached_calls, usage.prompt_tokens, usage.completion_tokens) == (2, 1, 10, 3)


async def test_anything_that_changes_the_request_misses() -> None:
    inner = FakeBackend(deterministic=True)
    backend = robust(inner, cache=ResponseCache())
    await backend.generate(MESSAGES, GREEDY)
    await backend.generate(MESSAGES, GREEDY.model_copy(update={"max_tokens": 7}))
    await backend.generate([*MESSAGES[:-1], Message(role="user", content="Your move?", name="bob")], GREEDY)
    await backend.generate([*MESSAGES[:-1], user("Your move?", kind="act")], GREEDY)  # meta differs
    await backend.generate([*MESSAGES[:-1], Message(role="assistant", content="Your move?")], GREEDY)
    assert inner.calls == 5
    await backend.generate(MESSAGES, GREEDY)
    assert inner.calls == 5


@pytest.mark.parametrize(
    "config, deterministic, cached",
    [
        (GenerationConfig(temperature=0.0, seed=0), False, True),  # greedy: one answer
        (GenerationConfig(temperature=0.0, seed=None), False, True),  # greedy without a seed: still one
        (GenerationConfig(temperature=0.7, seed=1), False, False),  # a server may ignore the seed
        (GenerationConfig(temperature=0.7, seed=1), True, True),  # a deterministic backend repeats it
        (GenerationConfig(temperature=0.7, seed=None), True, False),  # not reproducible at all
    ],
)
async def test_generation_cache_rules(config: GenerationConfig, deterministic: bool, cached: bool) -> None:
    inner = FakeBackend(deterministic=deterministic)
    backend = robust(inner, cache=ResponseCache())
    assert backend.caches_generate(config) is cached
    await backend.generate(MESSAGES, config)
    second = await backend.generate(MESSAGES, config)
    assert second.cached is cached
    assert inner.calls == (1 if cached else 2)


async def test_scores_are_cached_with_infinities_intact() -> None:
    inner = FakeBackend()
    backend = robust(inner, cache=ResponseCache())
    first = await backend.score_choices(MESSAGES, ["C", "D"], prefix="Action:")
    second = await backend.score_choices(MESSAGES, ["C", "D"], prefix="Action:")
    assert inner.calls == 1
    assert second.cached and not first.cached
    assert second.logprobs == first.logprobs == [-0.1, -math.inf]
    assert second.method is ScoreMethod.FULL
    await backend.score_choices(MESSAGES, ["C", "D"], prefix="Move:")
    await backend.score_choices(MESSAGES, ["D", "C"], prefix="Action:")
    assert inner.calls == 3


@pytest.mark.parametrize("deterministic, stored", [(False, False), (True, True)])
async def test_sampled_estimates_are_cached_only_from_deterministic_backends(
    deterministic: bool, stored: bool
) -> None:
    inner = FakeBackend(method=ScoreMethod.SAMPLED, deterministic=deterministic)
    backend = robust(inner, cache=ResponseCache())
    await backend.score_choices(MESSAGES, ["Yes", "No"])
    second = await backend.score_choices(MESSAGES, ["Yes", "No"])
    assert second.cached is stored
    assert second.method is ScoreMethod.SAMPLED
    assert inner.calls == (1 if stored else 2)


async def test_without_a_cache_nothing_is_cached() -> None:
    inner = FakeBackend(deterministic=True)
    backend = robust(inner)
    await backend.generate(MESSAGES, GREEDY)
    await backend.generate(MESSAGES, GREEDY)
    assert inner.calls == 2


async def test_cache_keys_include_the_backend_identity() -> None:
    cache = ResponseCache()
    one, two = FakeBackend(spec="fake:one"), FakeBackend(spec="fake:two")
    await robust(one, cache=cache).generate(MESSAGES, GREEDY)
    await robust(two, cache=cache).generate(MESSAGES, GREEDY)
    assert (one.calls, two.calls) == (1, 1)


async def test_sqlite_cache_survives_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "responses.sqlite"
    cache = ResponseCache(path=path)
    first = await robust(FakeBackend(), cache=cache).score_choices(MESSAGES, ["C", "D"])
    cache.close()

    inner = FakeBackend()
    reopened = ResponseCache(path=path)
    assert len(reopened) == 0  # nothing in memory yet: the hit must come from disk
    again = await robust(inner, cache=reopened).score_choices(MESSAGES, ["C", "D"])
    reopened.close()
    assert inner.calls == 0
    assert again.cached
    assert again.logprobs == first.logprobs


async def test_memory_cache_is_a_bounded_lru() -> None:
    inner = FakeBackend()
    cache = ResponseCache(max_entries=2)
    backend = robust(inner, cache=cache)
    for text in ("a", "b", "a", "c"):  # "a" is used again before "c" arrives, so "b" is evicted
        await backend.generate([user(text)], GREEDY)
    assert inner.calls == 3 and len(cache) == 2
    await backend.generate([user("a")], GREEDY)
    assert inner.calls == 3
    await backend.generate([user("b")], GREEDY)
    assert inner.calls == 4


# -- usage ----------------------------------------------------------------------------------------


def test_usage_adds_field_by_field() -> None:
    a = Usage(
        calls=2,
        cached_calls=1,
        retries=3,
        failures=0,
        prompt_tokens=10,
        prompt_tokens_encoded=5,
        completion_tokens=4,
        seconds=1.5,
    )
    b = Usage(calls=1, failures=1, prompt_tokens=2, seconds=0.25)
    total = a + b
    assert total == Usage(
        calls=3,
        cached_calls=1,
        retries=3,
        failures=1,
        prompt_tokens=12,
        prompt_tokens_encoded=5,
        completion_tokens=4,
        seconds=1.75,
    )
    assert a.calls == 2  # operands unchanged
    assert sum([a, b], Usage()) == total


async def test_usage_accumulates_over_mixed_calls() -> None:
    inner = FakeBackend([BackendError("busy", transient=True)])
    backend = robust(inner, cache=ResponseCache())
    await backend.generate(MESSAGES, GREEDY)  # 1 retry, then answered
    await backend.generate(MESSAGES, GREEDY)  # cached
    await backend.score_choices(MESSAGES, ["A", "B"])
    inner.failures = [ValueError("bug")]
    with pytest.raises(ValueError):
        await backend.generate([user("other")], GREEDY)
    assert backend.usage == Usage(
        calls=4,
        cached_calls=1,
        retries=1,
        failures=1,
        prompt_tokens=14,
        prompt_tokens_encoded=9,
        completion_tokens=3,
        seconds=0.75,
    )
    old = backend.reset_usage()
    assert old.calls == 4 and backend.usage == Usage()


async def test_track_usage_counts_only_its_own_block_and_tasks() -> None:
    backend = robust(FakeBackend(delay=0.005))
    other = robust(FakeBackend())
    await backend.generate(MESSAGES, GREEDY)  # before: not tracked
    with track_usage() as usage:
        await asyncio.gather(*(backend.generate([user(str(i))], GREEDY) for i in range(3)))
        await other.score_choices(MESSAGES, ["A", "B"])
    await backend.generate(MESSAGES, GREEDY)  # after: not tracked
    assert usage.calls == 4
    assert usage.prompt_tokens == 3 * 10 + 4
    assert backend.usage.calls == 5


# -- delegation and construction ------------------------------------------------------------------


async def test_spec_capabilities_identity_and_close_are_the_inner_backends() -> None:
    inner = FakeBackend(deterministic=True, spec="fake:inner")
    backend = robust(inner)
    assert backend.spec == backend.identity == "fake:inner"
    assert backend.capabilities is inner.capabilities
    with pytest.raises(AttributeError):
        backend.spec = "other"
    await backend.aclose()
    assert inner.closed


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"max_retries": -1}, {"concurrency": 0}, {"backoff_initial": 2.0, "backoff_max": 1.0}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RobustBackend(FakeBackend(), **kwargs)  # type: ignore[arg-type]
