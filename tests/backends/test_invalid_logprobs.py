"""A log-probability a model reports must be finite (or -inf) and at most 0: NaN, +inf and positive values make
the score invalid on every backend kind that scores, through the one check in ``contagion.backends.base``.

Each backend is a real object doing its own work up to the point where its numbers come from the model; the
test corrupts those numbers there (a server's reply, the candidates computed from a local model's logits, a
simulated model's probabilities) and checks that what comes back is an invalid score — never a value.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from contagion import vocabulary as P
from contagion.backends import first_token
from contagion.backends.base import (
    LOGPROB_TOLERANCE,
    ChoiceScore,
    ScoreMethod,
    Scores,
    logprob_problem,
    run_sync,
)
from contagion.backends.registry import build, wrap
from contagion.backends.robust import ResponseCache, RobustBackend
from contagion.messages import Message, user
from contagion.testing import LoopbackServer, default_responder

QUESTION = [user('Is the following statement something you would say?\n"I like helping people."\nAnswer Yes or No.')]
BAD: dict[str, tuple[float, str]] = {"nan": (math.nan, "NaN"), "+inf": (math.inf, "+infinity"),
                                     "positive": (2.6, "above 0")}
"""Corruptions: the value a model reports, and what the invalid score's reason says about it."""


def corrupt_first(value: float) -> Callable[[list[tuple[str, float]]], list[tuple[str, float]]]:
    """Replace the most likely candidate's log-probability with ``value``."""
    def apply(candidates: list[tuple[str, float]]) -> list[tuple[str, float]]:
        return [(token, value if i == 0 else lp) for i, (token, lp) in enumerate(candidates)]
    return apply


def assert_invalid(scores: Scores, needle: str) -> None:
    assert scores.invalid is not None and needle in scores.invalid, scores.invalid
    assert all(math.isnan(lp) for lp in scores.logprobs)  # no number of an invalid score is a value
    with pytest.raises(ValueError, match="invalid scores"):
        scores.normalised()
    with pytest.raises(ValueError, match="invalid scores"):
        scores.best()


# -- the rule itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "problem"), [
    (0.0, None), (-0.5, None), (-math.inf, None), (LOGPROB_TOLERANCE, None), (-1e300, None),
    (math.nan, "NaN"), (math.inf, "+infinity"), (2.6, "above 0"), (1e-5, "above 0"), (True, "not a number"),
    ("-0.1", "not a number"),
])
def test_the_rule(value: Any, problem: str | None) -> None:
    got = logprob_problem(value)
    assert got is None if problem is None else (got is not None and problem in got)


def test_scores_check_every_choice_and_read_rounding_as_zero() -> None:
    ok = Scores(choices=[ChoiceScore(choice="Yes", logprob=5e-7), ChoiceScore(choice="No", logprob=-math.inf)],
                method=ScoreMethod.FULL)
    assert ok.invalid is None and ok.logprobs == [0.0, -math.inf] and ok.best() == "Yes"
    for value, needle in BAD.values():
        bad = Scores(choices=[ChoiceScore(choice="Yes", logprob=value), ChoiceScore(choice="No", logprob=-1.0)],
                     method=ScoreMethod.FULL)
        assert_invalid(bad, needle)
        assert "'Yes'" in str(bad.invalid)
        assert "invalid" in bad.model_dump() and "invalid" not in ok.model_dump()


@pytest.mark.parametrize("kind", BAD)
def test_one_bad_candidate_spoils_the_whole_first_token_distribution(kind: str) -> None:
    value, needle = BAD[kind]
    # " Maybe" belongs to no choice: a distribution holding an impossible number is not used at all
    logprobs, detail = first_token.score_candidates([(" Yes", -0.2), (" No", -2.0), (" Maybe", value)], ["Yes", "No"])
    assert all(math.isnan(lp) for lp in logprobs) and needle in detail["invalid"] and "' Maybe'" in detail["invalid"]
    assert_invalid(Scores(choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(["Yes", "No"], logprobs,
                                                                                       strict=True)],
                          method=ScoreMethod.FIRST_TOKEN, detail=detail), needle)


def test_candidates_without_any_finite_value_are_invalid_not_an_error() -> None:
    logprobs, detail = first_token.score_candidates([(" Yes", -math.inf), (" No", -math.inf)], ["Yes", "No"])
    assert all(math.isnan(lp) for lp in logprobs) and "finite" in detail["invalid"]


# -- openai-compatible: a real server on loopback sends the numbers ---------------------------------


def bad_server(value: float, token: str = " Yes") -> LoopbackServer:
    def respond(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text, top = default_responder(body)
        return text, [dict(t, logprob=value) if t["token"] == token else t for t in top]
    return LoopbackServer(respond)


@pytest.mark.parametrize("kind", BAD)
def test_openai_compatible_server(kind: str) -> None:
    value, needle = BAD[kind]
    with bad_server(value) as server:  # json.dumps sends NaN / Infinity / 2.6 as JSON number tokens
        backend = wrap(build(f"openai:m@{server.base_url}"))
        scores = run_sync(backend.score_choices(QUESTION, ["Yes", "No"]))
        assert scores.method == ScoreMethod.FIRST_TOKEN
        assert_invalid(scores, needle)
        assert "' Yes'" in str(scores.invalid)
        assert len(server.requests) == 1  # an invalid score is an answer, not a transient fault: no retry


def test_an_invalid_score_is_never_cached_and_a_later_good_one_is_used(tmp_path: Path) -> None:
    replies = iter([math.nan])

    def respond(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text, top = default_responder(body)
        bad = next(replies, None)
        return text, [dict(t, logprob=bad) if bad is not None and t["token"] == " Yes" else t for t in top]

    with LoopbackServer(respond) as server:
        cache = ResponseCache(path=tmp_path / "cache.sqlite")
        backend = RobustBackend(build(f"openai:m@{server.base_url}"), cache=cache)
        first = run_sync(backend.score_choices(QUESTION, ["Yes", "No"]))
        second = run_sync(backend.score_choices(QUESTION, ["Yes", "No"]))
        assert first.invalid is not None and second.invalid is None and not second.cached
        assert second.best() == "Yes" and len(server.requests) == 2
        cache.close()


# -- embedded / gguf: llama.cpp computes the distribution, the numbers are corrupted after it ----------


@pytest.fixture(scope="module")
def embedded() -> Iterator[Any]:
    backend = build("embedded")
    yield backend
    backend.close()


@pytest.mark.parametrize("kind", BAD)
def test_embedded_first_token(kind: str, embedded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.backends import embedded as module

    value, needle = BAD[kind]
    real = module.top_candidates
    monkeypatch.setattr(module, "top_candidates", lambda *a, **k: corrupt_first(value)(real(*a, **k)))
    assert_invalid(run_sync(wrap(embedded).score_choices(QUESTION, ["Yes", "No"])), needle)


def test_embedded_full_continuation(embedded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.backends import embedded as module

    real = module._log_softmax_at
    monkeypatch.setattr(module, "_log_softmax_at", lambda logits, token: real(logits, token) + 50.0)
    scores = run_sync(wrap(embedded).score_choices(QUESTION, ["Yes", "No"], prefix="Answer: "))
    assert scores.method == ScoreMethod.FULL
    assert_invalid(scores, "above 0")


# -- hf: a small transformers model, really run -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An HFBackend on a tiny random Llama (one layer) with a word-level tokenizer: the backend's own code
    runs the model; only the model is small."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    import torch

    from contagion.backends.hf import HFBackend, LoadedModel

    words = ["<unk>", "</s>", "Yes", "No", "user", "assistant", ":", "Is", "the", "following", "statement",
             "something", "you", "would", "say", "?", '"', "I", "like", "helping", "people", ".", "Answer", "or"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(config).eval()
    backend = HFBackend(str(tmp_path_factory.mktemp("tiny-hf")))
    params = inspect.signature(model.forward).parameters  # as the backend's own loader decides
    backend._state = LoadedModel(model=model, tokenizer=tokenizer,
                                 cache_arg="cache" if "cache" in params else "past_key_values",
                                 keep_arg="logits_to_keep" if "logits_to_keep" in params else None,
                                 stop_ids=frozenset({1}))
    return backend


def test_hf_scores_the_tiny_model(tiny_hf: Any) -> None:
    scores = run_sync(wrap(tiny_hf).score_choices(QUESTION, ["Yes", "No"]))
    assert scores.invalid is None and all(math.isfinite(lp) and lp <= 0 for lp in scores.logprobs)


@pytest.mark.parametrize("kind", BAD)
def test_hf_first_token(kind: str, tiny_hf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.backends import hf as module

    value, needle = BAD[kind]
    real = module.top_candidates
    monkeypatch.setattr(module, "top_candidates", lambda *a, **k: corrupt_first(value)(real(*a, **k)))
    assert_invalid(run_sync(wrap(tiny_hf).score_choices(QUESTION, ["Yes", "No"])), needle)


@pytest.mark.parametrize("prefix", ["", "Answer: "])
def test_hf_weights_that_compute_nan(prefix: str, tiny_hf: Any) -> None:
    """A broken checkpoint: NaN in the output layer makes every logit NaN, on both scoring paths."""
    import torch

    head = tiny_hf._state.model.lm_head.weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.fill_(math.nan)
        tiny_hf._invalidate()
        assert_invalid(run_sync(wrap(tiny_hf).score_choices(QUESTION, ["Yes", "No"], prefix=prefix)), "NaN")
    finally:
        with torch.no_grad():
            head.copy_(saved)
        tiny_hf._invalidate()


# -- inspect: the backend's own reading of an Inspect model output ---------------------------------------


def inspect_output(top: list[tuple[str, float]]) -> Any:
    """The shape of Inspect's ModelOutput that InspectBackend reads (choices[0].logprobs.content[0])."""
    first = SimpleNamespace(token=top[0][0], logprob=top[0][1],
                            top_logprobs=[SimpleNamespace(token=t, logprob=lp) for t, lp in top])
    return SimpleNamespace(error=None, usage=None, completion=top[0][0],
                           choices=[SimpleNamespace(logprobs=SimpleNamespace(content=[first]))])


@pytest.mark.parametrize("kind", BAD)
def test_inspect_first_token(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.backends.inspect_backend import InspectBackend

    value, needle = BAD[kind]
    backend = build("inspect:openai-api/loop/m")
    assert isinstance(backend, InspectBackend)

    async def generate(chat: Any, **config: Any) -> Any:
        return inspect_output([(" Yes", value), (" No", -1.5), ("No", -3.0)])

    monkeypatch.setattr(backend, "_generate", generate)
    monkeypatch.setattr(backend, "_chat", lambda messages: list(messages))
    assert_invalid(run_sync(wrap(backend).score_choices(QUESTION, ["Yes", "No"])), needle)


@pytest.mark.slow
def test_inspect_against_a_server_that_sends_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through Inspect AI's own OpenAI-compatible provider (slow: importing Inspect takes ~10 s)."""
    pytest.importorskip("inspect_ai")
    monkeypatch.setenv("LOOP_API_KEY", "unused")
    with bad_server(math.nan) as server:
        backend = wrap(build(f"inspect:openai-api/loop/m?base_url={server.base_url}"))
        assert_invalid(run_sync(backend.score_choices(QUESTION, ["Yes", "No"])), "NaN")


# -- sim: a simulated model whose probabilities are corrupted ----------------------------------------------


def trait_item() -> Message:
    return Message(role="user", content=QUESTION[0].content,
                   meta={P.KIND: P.TRAIT_ITEM, "trait": "agreeableness", "matching": "Yes", "polarity": "pro",
                         "statement": "I like helping people.", "first_answer": "Yes"})


@pytest.mark.parametrize(("probabilities", "needle"), [
    ((math.nan, 0.5), "NaN"), ((math.inf, 0.1), "+infinity"), ((13.0, 0.1), "above 0")])
def test_sim_trait_item(probabilities: tuple[float, float], needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = build("sim:planted")
    monkeypatch.setattr(backend, "answer_probabilities", lambda messages: probabilities)
    assert_invalid(run_sync(wrap(backend).score_choices([trait_item()], ["Yes", "No"])), needle)


def test_sim_action(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = build("sim:planted")
    monkeypatch.setattr(backend, "cooperation_probability", lambda messages: math.nan)
    act = Message(role="user", content="choose", meta={P.KIND: P.ACT, "cooperate": "cooperate", "defect": "defect"})
    assert_invalid(run_sync(wrap(backend).score_choices([act], ["cooperate", "defect"])), "NaN")


def test_every_backend_kind_that_scores_is_covered() -> None:
    from contagion.backends.registry import _KINDS

    scoring = {name for name, kind in _KINDS.items() if kind.language_model}
    covered = {"embedded", "gguf", "openai", "hf", "inspect", "sim"}  # gguf is the embedded backend's class
    assert scoring <= covered, scoring - covered
