"""score_choices_many: the batch entry point gives the answers of one score_choices call each, in order,
against a real loopback OpenAI-compatible server (bounded concurrent requests) and through the robust
wrapper (cache and retries per request)."""

from __future__ import annotations

import asyncio

from contagion.backends.base import ScoreRequest, run_sync
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.robust import ResponseCache, RobustBackend
from contagion.messages import user
from contagion.testing import LoopbackServer
from contagion.traits.assess import ANSWER_PREFIX, CHOICES, assess
from contagion.traits.inventory import Inventory, load_inventory


def _requests(n: int) -> list[ScoreRequest]:
    return [ScoreRequest([user(f"Statement {i}: I keep my promises ({i}). Yes or no?")], CHOICES, ANSWER_PREFIX)
            for i in range(n)]


def test_http_batch_equals_one_call_each_and_runs_side_by_side() -> None:
    with LoopbackServer(latency=0.05) as server:
        backend = OpenAIBackend("loopback", server.base_url)
        requests = _requests(40)
        one_by_one = [run_sync(backend.score_choices(r.messages, r.choices, prefix=r.prefix)) for r in requests]
        peak = 0
        in_flight = 0
        original = backend.score_choices

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal peak, in_flight
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await original(*args, **kwargs)
            finally:
                in_flight -= 1

        backend.score_choices = counting  # type: ignore[method-assign]
        batched = run_sync(backend.score_choices_many(requests))
        run_sync(backend.aclose())
    assert [s.logprobs for s in batched] == [s.logprobs for s in one_by_one]
    assert 1 < peak <= OpenAIBackend.score_concurrency


def test_robust_wrapper_passes_a_batch_through_with_cache() -> None:
    with LoopbackServer() as server:
        cache = ResponseCache()
        robust = RobustBackend(OpenAIBackend("loopback", server.base_url), cache=cache)
        requests = _requests(10)
        first = run_sync(robust.score_choices_many(requests))
        n_requests = len(server.requests)
        again = run_sync(robust.score_choices_many(requests))
        run_sync(robust.aclose())
    assert [s.logprobs for s in first] == [s.logprobs for s in again]
    assert all(s.cached for s in again) and len(server.requests) == n_requests
    assert robust.usage.calls == 20 and robust.usage.cached_calls == 10


def test_a_profile_gives_the_same_scores_batched_or_not() -> None:
    full = load_inventory("builtin")
    inventory = Inventory(source=full.source, items=full.items[:12])
    with LoopbackServer() as server:
        backend = OpenAIBackend("loopback", server.base_url)
        batched = run_sync(assess(backend, [], inventory, context_kind="bare"))
        backend.score_concurrency = 1  # the default path, one request at a time
        sequential = run_sync(assess(backend, [], inventory, context_kind="bare"))
        run_sync(backend.aclose())
    assert [i.score for i in batched.items] == [i.score for i in sequential.items]
    assert asyncio.iscoroutinefunction(backend.score_choices_many)
