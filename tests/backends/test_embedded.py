"""The embedded llama.cpp backend, on the real SmolLM2-135M model."""

from __future__ import annotations

import math
import os

import pytest

from contagion.backends.base import GenerationConfig, ScoreMethod, ScoreRequest, run_sync
from contagion.backends.embedded import (
    BLOCK,
    LANE_STEP,
    LlamaCppBackend,
    default_threads,
    embedded_model_path,
    reusable_prefix,
    split_calls,
)
from contagion.backends.registry import build, resolve
from contagion.errors import BackendSpecError, BackendUnavailableError
from contagion.messages import assistant, system, user

QUESTION = 'Is the following statement something you would say?\n"I like helping other people."\nAnswer Yes or No.'


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    b = build("embedded")
    assert isinstance(b, LlamaCppBackend)
    return b


def _history(turns: int) -> list:
    msgs = [system("You are Avery, playing a repeated game with two other players.")]
    for i in range(turns):
        msgs.append(user(f"Round {i + 1}: Blake says he will cooperate; Casey says she will defect and lie."))
        msgs.append(assistant("I think we should all cooperate so that everyone does better over time."))
    return msgs


def test_model_file_found_without_network() -> None:
    path = embedded_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_generation_returns_text_and_counts(backend: LlamaCppBackend) -> None:
    c = run_sync(backend.generate([system("You are helpful."), user("Say hello in one short sentence.")],
                                  GenerationConfig(max_tokens=20)))
    assert c.text.strip()
    assert 0 < c.completion_tokens <= 20
    assert c.prompt_tokens > 5 and c.seconds > 0


def test_greedy_generation_is_deterministic(backend: LlamaCppBackend) -> None:
    msgs = [user("Name one colour.")]
    a = run_sync(backend.generate(msgs, GenerationConfig(max_tokens=12)))
    b = run_sync(backend.generate(msgs, GenerationConfig(max_tokens=12)))
    assert a.text == b.text


def test_seeded_sampling_is_reproducible(backend: LlamaCppBackend) -> None:
    msgs = [user("Write a word.")]
    cfg = GenerationConfig(max_tokens=10, temperature=1.0, seed=5)
    assert run_sync(backend.generate(msgs, cfg)).text == run_sync(backend.generate(msgs, cfg)).text


def test_stop_strings_cut_the_reply(backend: LlamaCppBackend) -> None:
    c = run_sync(backend.generate([user("Count from 1 to 10 separated by commas.")],
                                  GenerationConfig(max_tokens=40, stop=("5",))))
    assert "5" not in c.text


def test_yes_no_scores_normalise_sensibly(backend: LlamaCppBackend) -> None:
    s = run_sync(backend.score_choices([user(QUESTION)], ["Yes", "No"], prefix="Answer: "))
    assert s.method == ScoreMethod.FULL
    assert all(math.isfinite(x) and x < 0 for x in s.logprobs)
    p = s.normalised()
    assert abs(sum(p) - 1) < 1e-9
    # " Yes" and " No" are plausible answers here: together they hold a real share of the mass
    assert math.exp(s.logprobs[0]) + math.exp(s.logprobs[1]) > 0.05


def test_multi_token_continuation_is_sum_of_token_logprobs(backend: LlamaCppBackend) -> None:
    msgs = [user("Pick an action: cooperate or defect.")]
    whole = run_sync(backend.score_choices(msgs, ["cooperate"], prefix="I choose: ")).logprobs[0]
    toks = backend.tokenize(backend.render(msgs) + "I choose: cooperate")
    base = backend.tokenize(backend.render(msgs) + "I choose:")
    assert len(toks) - len(base) >= 1
    assert whole < 0 and math.isfinite(whole)


@pytest.mark.slow
@pytest.mark.parametrize("turns", [3, 12])
def test_prefix_reuse_gives_identical_scores(backend: LlamaCppBackend, turns: int) -> None:
    hist = _history(turns)
    items = ["I keep my promises.", "I enjoy deceiving people.", "Winning matters more than fairness."]
    questions = [[*hist, user(f'Is the following statement something you would say?\n"{s}"\nAnswer Yes or No.')]
                 for s in items]
    backend.reuse = True
    backend.clear_cache()
    with_reuse = [run_sync(backend.score_choices(q, ["Yes", "No"], prefix="Answer: ")) for q in questions]
    backend.reuse = False
    try:
        without = [run_sync(backend.score_choices(q, ["Yes", "No"], prefix="Answer: ")) for q in questions]
    finally:
        backend.reuse = True
    assert [s.logprobs for s in with_reuse] == [s.logprobs for s in without]
    assert all(s.prompt_tokens_encoded == s.prompt_tokens for s in without)
    # reuse skipped the shared history and the question's opening: each later item decodes its own
    # statement, the rest of its question and the answer prompt (and nothing of the history)
    n_hist = len(backend.tokenize(backend.render(hist, add_generation_prompt=False)))
    assert all(s.prompt_tokens - s.prompt_tokens_encoded > n_hist for s in with_reuse[1:])
    assert all(s.prompt_tokens_encoded < 30 for s in with_reuse[1:])


def test_batch_gives_the_scores_of_one_call_each(backend: LlamaCppBackend) -> None:
    hist = _history(4)
    requests = [ScoreRequest([*hist, user(f'Is the following statement something you would say?\n"{s}"\n'
                                          "Answer Yes or No.")], ("Yes", "No"), "Answer: ")
                for s in ("I keep my promises.", "I lie when it pays.")]
    requests.append(ScoreRequest([*hist, user("Round 5: choose. Reply with one word: 'cooperate' or 'defect'.")],
                                 ("cooperate", "defect"), "I choose: "))
    backend.clear_cache()
    batched = run_sync(backend.score_choices_many(requests))
    backend.clear_cache()
    one_by_one = [run_sync(backend.score_choices(r.messages, r.choices, prefix=r.prefix)) for r in requests]
    assert [s.logprobs for s in batched] == [s.logprobs for s in one_by_one]


def test_concurrent_batches_do_not_interleave_and_evict_each_others_prefix(backend: LlamaCppBackend) -> None:
    """Three profile-like batches (8 questions each after three histories that share their opening, as an
    agent's post-play history and its sham do) sent at once encode what they encode one after another, and
    score the same: a batch holds the model from its first request to its last. (Interleaved per request,
    the three took turns on the lane holding their shared opening, each re-encoding its own part per
    question.)"""
    import asyncio

    def batch(k: int) -> list[ScoreRequest]:
        hist = [*_history(2), *(m for i in range(4) for m in (
            user(f"Round {i + 3}, table {k}: Casey says she will defect and lie, and Blake is not sure."),
            assistant(f"At table {k} I still think we should all cooperate, whatever Casey does in round {i + 3}.")))]
        return [ScoreRequest([*hist, user(f'Is the following statement something you would say?\n"Statement {q} '
                                          f'of batch {k}."\nAnswer Yes or No.')], ("Yes", "No"), "Answer: ")
                for q in range(8)]

    batches = [batch(k) for k in range(3)]

    async def together() -> list[list]:
        return list(await asyncio.gather(*(backend.score_choices_many(b) for b in batches)))

    backend.clear_cache()
    alone = []
    for b in batches:
        backend.clear_cache()
        alone.append(run_sync(backend.score_choices_many(b)))
    backend.clear_cache()
    at_once = run_sync(together())
    for one, other in zip(alone, at_once, strict=True):
        assert [s.logprobs for s in one] == [s.logprobs for s in other]
        encoded = sum(s.prompt_tokens_encoded for s in other)
        assert encoded <= sum(s.prompt_tokens_encoded for s in one) + 64, encoded
        assert encoded < 2 * other[0].prompt_tokens  # the history once, then only each question


def test_one_model_lanes_sized_to_the_history(backend: LlamaCppBackend) -> None:
    backend.clear_cache()
    for turns in (2, 5):
        run_sync(backend.score_choices([*_history(turns), user("Yes or no?")], ["Yes", "No"]))
    lanes = backend.lanes
    assert 1 <= len(lanes) <= backend.n_slots
    assert all(size % LANE_STEP == 0 and size < backend.n_ctx and held <= size for size, held in lanes)
    # clearing the cache keeps the lanes: the next request uses one of them instead of opening another
    n = len(lanes)
    backend.clear_cache()
    run_sync(backend.score_choices([*_history(3), user("Yes or no?")], ["Yes", "No"]))
    assert len(backend.lanes) == n


@pytest.mark.slow  # long histories on the embedded model (~40-80 s)
def test_a_lane_that_grows_keeps_exact_scores() -> None:
    small = build("embedded")
    assert isinstance(small, LlamaCppBackend)
    try:
        short, long = _history(1), _history(40)  # the long history outgrows the first lane's cache
        run_sync(small.score_choices([*short, user("Yes or no?")], ["Yes", "No"]))
        first = small.lanes[0][0]
        grown = run_sync(small.score_choices([*long, user("Yes or no?")], ["Yes", "No"]))
        again = run_sync(small.score_choices([*long, user("Really, yes or no?")], ["Yes", "No"]))
        assert max(size for size, _ in small.lanes) > first
        small.reuse = False
        assert run_sync(small.score_choices([*long, user("Yes or no?")], ["Yes", "No"])).logprobs == grown.logprobs
        assert run_sync(small.score_choices([*long, user("Really, yes or no?")], ["Yes", "No"])).logprobs == \
            again.logprobs
    finally:
        small.close()


def test_decode_calls_never_hold_one_token_and_reuse_leaves_two() -> None:
    assert split_calls(1) == [1]
    assert split_calls(BLOCK + 1) == [BLOCK - 1, 2]
    assert split_calls(2 * BLOCK) == [BLOCK, BLOCK]
    assert all(min(split_calls(n)) >= 2 for n in range(2, 3 * BLOCK))
    assert reusable_prefix([1, 2, 3, 4], 4, [1, 2, 3, 4, 5]) == 3  # one new token: decode two
    assert reusable_prefix([1, 2, 3, 4], 4, [1, 2, 3, 4, 5, 6]) == 4
    assert reusable_prefix([1, 2, 3, 4], 2, [1, 2, 3, 4, 5, 6]) == 2  # generated tokens are not reused
    assert reusable_prefix([1, 2, 3], 3, [1, 2, 3], logits=True) == 1


def test_growing_history_is_encoded_incrementally(backend: LlamaCppBackend) -> None:
    backend.clear_cache()
    hist = _history(6)
    first = run_sync(backend.generate(hist, GenerationConfig(max_tokens=5)))
    hist2 = [*hist, assistant(first.text), user("Round 7: what do you do?")]
    second = run_sync(backend.generate(hist2, GenerationConfig(max_tokens=5)))
    assert second.prompt_tokens > first.prompt_tokens
    # only the new messages are decoded: the reply, the new prompt and the generation prompt
    n_old = len(backend.tokenize(backend.render(hist, add_generation_prompt=False)))
    assert second.prompt_tokens - second.prompt_tokens_encoded >= n_old
    assert second.prompt_tokens_encoded <= second.prompt_tokens - n_old


def test_default_threads_follow_the_affinity_mask() -> None:
    assert default_threads() == len(os.sched_getaffinity(0))


def test_missing_gguf_path_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        build(f"gguf:{tmp_path / 'nope.gguf'}")


def test_gguf_path_spec_loads_the_same_model() -> None:
    """``embedded`` is the shipped file in float32: ``gguf:SHIPPED?weights=f32`` is the same model, bit for
    bit, and ``gguf:SHIPPED`` (the file as it is) is ``embedded?weights=asis``."""
    def logprobs(spec: str) -> list[float]:
        b = build(spec)
        try:
            return run_sync(b.score_choices([user(QUESTION)], ["Yes", "No"], prefix="Answer: ")).logprobs
        finally:
            run_sync(b.aclose())

    shipped = embedded_model_path()
    ref = run_sync(resolve("embedded").score_choices([user(QUESTION)], ["Yes", "No"], prefix="Answer: ")).logprobs
    assert logprobs(f"gguf:{shipped}?weights=f32") == ref
    assert logprobs(f"gguf:{shipped}") == logprobs("embedded?weights=asis") != ref


def test_float_weights_are_written_once_atomically_and_reused(tmp_path, monkeypatch) -> None:
    """The float copy goes to the cache directory under a name keyed by the source file; a second use
    reuses it; the spec and the record name the weights whenever they are not the kind's default."""
    from contagion.backends import dequantize

    monkeypatch.setenv(dequantize.CACHE_ENV, str(tmp_path))
    source = embedded_model_path()
    target = dequantize.float_path(source, "f16")
    assert target.parent == tmp_path / "models" and not target.exists()
    first = dequantize.float_gguf(source, "f16", announce=False)
    assert first == target and target.stat().st_size > 2 * source.stat().st_size
    stamp = target.stat().st_mtime_ns
    assert dequantize.float_gguf(source, "f16", announce=False) == target and target.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".partial-")] == []
    b = build("embedded?weights=f16")
    assert isinstance(b, LlamaCppBackend) and b.spec == b.identity == "embedded?weights=f16"
    assert b.path == target
    assert build("embedded").spec == "embedded" and build("embedded?n_ctx=4096").spec == "embedded"


def test_weights_option_errors_are_clear(tmp_path, monkeypatch) -> None:
    from contagion.backends import dequantize

    with pytest.raises(BackendSpecError, match=r"weights='q8' .* not one of asis, f32, f16"):
        build("embedded?weights=q8")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    monkeypatch.setenv(dequantize.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(BackendUnavailableError, match="not a readable GGUF file"):
        dequantize.float_gguf(bogus, "f32", announce=False)
    assert [p for p in (tmp_path / "cache" / "models").iterdir() if p.suffix == ".gguf"] == []


@pytest.mark.slow  # long histories on the embedded model (~40-80 s)
def test_released_histories_free_their_lanes_down_to_the_cell_budget() -> None:
    small = build("embedded?cells=1024")
    assert isinstance(small, LlamaCppBackend) and small.cells == 1024
    try:
        histories = [[system(f"You are {name}, playing a repeated game."), *_history(12)[1:]]
                     for name in ("Avery", "Blake", "Casey")]
        first = [run_sync(small.score_choices([*h, user("Yes or no?")], ["Yes", "No"])) for h in histories]
        assert len(small.lanes) == 3  # three live histories: none is idle, none is closed
        assert sum(size for size, _ in small.lanes) > small.cells
        small.release([system("You are Dana, playing a repeated game."), *_history(12)[1:]])  # not held
        assert len(small.lanes) == 3
        small.release(histories[0])
        assert len(small.lanes) == 2 and sum(size for size, _ in small.lanes) > small.cells  # two still live
        small.release(histories[1])
        assert len(small.lanes) == 1
        small.release(histories[2])  # within the budget: kept (idle) for a history that shares its prefix
        assert len(small.lanes) == 1 and sum(size for size, _ in small.lanes) <= small.cells
        # a released history can still be asked about: it is re-encoded, with the same scores
        again = [run_sync(small.score_choices([*h, user("Yes or no?")], ["Yes", "No"])) for h in histories]
        assert [s.logprobs for s in again] == [s.logprobs for s in first]
    finally:
        small.close()


def test_freeing_shared_local_models_empties_them_and_they_load_again_on_use() -> None:
    from contagion.backends.registry import free_local_models

    shared = resolve("embedded?cells=2048")  # a shared instance of its own (the spec is the key)
    inner = shared.inner
    assert isinstance(inner, LlamaCppBackend)
    question = [*_history(2), user("Yes or no?")]
    before = run_sync(shared.score_choices(question, ["Yes", "No"]))
    assert inner.lanes and inner._model is not None
    free_local_models()
    assert inner.lanes == [] and inner._model is None
    assert run_sync(shared.score_choices(question, ["Yes", "No"])).logprobs == before.logprobs
    inner.close()
