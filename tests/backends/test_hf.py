"""HFBackend on the embedded GGUF through transformers: generation, scoring, prefix reuse, errors.

The model is loaded once per process (backends naming the same source share it).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from contagion.backends.base import GenerationConfig, ScoreMethod
from contagion.backends.hf import HFBackend, LoadedModel
from contagion.backends.registry import build
from contagion.errors import BackendSpecError, BackendUnavailableError, MissingExtraError
from contagion.messages import Message, assistant, system, user

QUESTION = [
    system("You are a helpful assistant."),
    user('Is the following statement something you would say? "I like to help people." Answer Yes or No.'),
]
HISTORY = [
    system("You are Avery. You play a game with Blake and Casey."),
    user("Round 1. Say something to the other players."),
    assistant("Let us all cooperate, it is best for everyone."),
    user("Blake says: I will cooperate. Casey says: I will defect and exploit you all."),
    assistant("Casey, please reconsider."),
    user("Round 1 result: you cooperated; 1 other cooperated and 1 defected."),
]


@pytest.fixture(scope="module")
def hf() -> HFBackend:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return HFBackend("embedded")


@pytest.fixture(scope="module")
def hf_no_reuse() -> HFBackend:
    return HFBackend("embedded", prefix_reuse="0")


def test_spec_and_capabilities_without_loading() -> None:
    backend = build("hf:embedded")
    assert isinstance(backend, HFBackend)
    assert backend.spec == "hf:embedded"
    caps = backend.capabilities
    assert caps.logprobs and caps.attention and caps.prefix_caching and caps.deterministic
    assert caps.score_method is ScoreMethod.FULL


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(BackendSpecError, match="prefill_chunk"):
        HFBackend("embedded", n_ctx="2048")


def test_prefix_reuse_takes_1_0_or_blocks() -> None:
    with pytest.raises(BackendSpecError, match="must be 1, 0 or blocks"):
        HFBackend("embedded", prefix_reuse="sometimes")
    exact, blocks, off = (HFBackend("embedded", prefix_reuse=v) for v in ("1", "blocks", "0"))
    assert (exact.prefix_reuse, exact.whole_blocks, exact.prefill_chunk) == (True, False, 512)
    assert (blocks.prefix_reuse, blocks.whole_blocks, blocks.prefill_chunk) == (True, True, 64)
    assert (off.prefix_reuse, off.whole_blocks) == (False, False)
    assert HFBackend("embedded", prefix_reuse="blocks", prefill_chunk="32").prefill_chunk == 32


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = f"{tmp_path}/nowhere/model.gguf"
    with pytest.raises(BackendUnavailableError, match=r"nowhere/model\.gguf"):
        HFBackend(missing)


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'contagion\[whitebox\]'") as info:
        HFBackend("embedded")
    assert info.value.module == module


def test_missing_extra_at_load_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from contagion.backends.hf_model import load_model

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'contagion\[whitebox\]'"):
        load_model("/nonexistent-source-for-test", None)


@pytest.mark.slow
async def test_generate_returns_text(hf: HFBackend) -> None:
    config = GenerationConfig(max_tokens=12)
    first = await hf.generate(QUESTION, config)
    assert first.text.strip()
    assert 0 < first.completion_tokens <= 12
    assert first.prompt_tokens > 10 and first.seconds > 0
    again = await hf.generate(QUESTION, config)
    assert again.text == first.text  # greedy is deterministic
    assert again.prompt_tokens_encoded < again.prompt_tokens  # the prompt came from the cache


@pytest.mark.slow
async def test_sampling_is_seeded_and_stop_strings_cut(hf: HFBackend) -> None:
    sampled = GenerationConfig(max_tokens=6, temperature=1.0, seed=7)
    a = await hf.generate(QUESTION, sampled)
    b = await hf.generate(QUESTION, sampled)
    assert a.text == b.text
    greedy = await hf.generate(QUESTION, GenerationConfig(max_tokens=12))
    cut_at = greedy.text[1:4]
    stopped = await hf.generate(QUESTION, GenerationConfig(max_tokens=12, stop=(cut_at,)))
    assert stopped.text == greedy.text[: greedy.text.find(cut_at)]


@pytest.mark.slow
async def test_yes_no_scores_are_finite_and_normalise(hf: HFBackend) -> None:
    scores = await hf.score_choices(QUESTION, ["Yes", "No"], prefix="Answer: ")
    assert scores.method is ScoreMethod.FULL
    assert [c.choice for c in scores.choices] == ["Yes", "No"]
    assert all(math.isfinite(lp) and lp < 0 for lp in scores.logprobs)
    probs = scores.normalised()
    assert math.isclose(sum(probs), 1.0) and all(0 < p < 1 for p in probs)
    assert scores.detail["continuation_tokens"] == [1, 1]  # " Yes" / " No" with the space moved


@pytest.mark.slow
async def test_prefix_reuse_scores_equal_full_passes(hf: HFBackend, hf_no_reuse: HFBackend) -> None:
    choices = [" Yes", " No", " I will defect and keep all the points"]
    questions = [  # the second shares the history but not the last message with the first
        [*HISTORY, user('Is this something you would say? "I keep my promises." Answer Yes or No.')],
        [*HISTORY, assistant("I see."), user("Round 2. What do you do? Answer cooperate or defect.")],
    ]
    for messages in questions:
        cached = await hf.score_choices(messages, choices, prefix="Answer:")
        full = await hf_no_reuse.score_choices(messages, choices, prefix="Answer:")
        assert cached.prompt_tokens == full.prompt_tokens
        assert max(abs(a - b) for a, b in zip(cached.logprobs, full.logprobs, strict=True)) < 1e-4
    # the history was encoded once: later calls encoded only their new suffix
    assert cached.prompt_tokens_encoded < cached.prompt_tokens // 2
    assert full.prompt_tokens_encoded >= len(choices) * full.prompt_tokens


@pytest.mark.slow
async def test_with_whole_blocks_every_number_is_a_function_of_the_prompt_alone(hf: HFBackend) -> None:
    """``prefix_reuse=blocks``: whatever the prompt cache held before — nothing, the shared history, a generated
    reply on another question (decoded tokens cached), another question, a longer prompt holding this one — a
    question's first-token scores and a greedy reply are bitwise the same, and the same as a fresh backend's;
    each call encoded only what follows the last whole block it shares with the call before. With exact reuse
    (the default) the same scores agree to float32 rounding only: a matrix product's rounding depends on how
    many rows it multiplies at once, so on where the reused prefix ended."""
    blocks = HFBackend("embedded", prefix_reuse="blocks")
    question = [*HISTORY, user('Is this something you would say? "I keep my promises." Answer Yes or No.')]
    other = [*HISTORY, user("Round 2. What do you do? Answer cooperate or defect.")]
    config = GenerationConfig(max_tokens=6, temperature=0.0)
    ids = blocks.encode(blocks.render(question))
    fresh = await blocks.score_choices(question, ["Yes", "No"])
    reply = await blocks.generate(question, config)
    reference = (fresh.logprobs, fresh.detail, reply.text)
    assert fresh.detail["prefix_reuse"] == "blocks" and all(math.isfinite(x) for x in fresh.logprobs)
    primers = [
        lambda b: b.score_choices(HISTORY, ["Yes", "No"]),
        lambda b: b.generate(other, GenerationConfig(max_tokens=40, temperature=0.0)),
        lambda b: b.score_choices(other, ["cooperate", "defect"]),
        lambda b: b.score_choices([*question, assistant("Yes."), user("Why?")], ["Because"]),
    ]
    encoded, exact = [], []
    for prime in primers:
        await prime(blocks)
        again = await blocks.score_choices(question, ["Yes", "No"])
        encoded.append(again.prompt_tokens_encoded)
        assert (again.logprobs, again.detail, (await blocks.generate(question, config)).text) == reference
        await prime(hf)
        exact.append(await hf.score_choices(question, ["Yes", "No"]))
    assert (await HFBackend("embedded", prefix_reuse="blocks").score_choices(question, ["Yes", "No"])).logprobs \
        == fresh.logprobs
    size = blocks.prefill_chunk
    shared = [_shared(blocks, question, before) for before in (HISTORY, other, other, [*question, assistant("Yes.")])]
    assert encoded == [len(ids) - n // size * size for n in shared] and max(encoded) < len(ids)
    for e in exact:  # exact reuse: the same numbers to float32 rounding
        assert e.logprobs == pytest.approx(fresh.logprobs, abs=1e-4)


def _shared(hf: HFBackend, a: list[Message], b: list[Message]) -> int:
    """Leading tokens two prompts share."""
    x, y = hf.encode(hf.render(a)), hf.encode(hf.render(b))
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


class TemplateOnlyTokenizer:
    """Just enough of a tokenizer to render a chat template (no model needed)."""

    def __init__(self, template: str) -> None:
        import jinja2

        self.template = jinja2.Environment().from_string(template)

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: object) -> str:
        return self.template.render(messages=messages, add_generation_prompt=kwargs["add_generation_prompt"])


def content_spans(template: str, messages: list[Message]) -> tuple[str, list[tuple[int, int]]]:
    backend = HFBackend("embedded")
    tokenizer = TemplateOnlyTokenizer(template)
    backend._state = LoadedModel(
        model=None, tokenizer=tokenizer, cache_arg="cache", keep_arg=None, stop_ids=frozenset()
    )
    text = tokenizer.apply_chat_template([m.wire() for m in messages], add_generation_prompt=True)
    return text, backend._content_spans(messages, text)


def test_content_spans_with_a_trimming_template() -> None:
    template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    messages = [system("  Be kind. "), user("user"), assistant("s")]
    text, spans = content_spans(template, messages)
    assert [text[a:b] for a, b in spans] == ["Be kind.", "user", "s"]  # not the role names


def test_content_spans_fall_back_to_whole_turns() -> None:
    template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content | upper }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    messages = [system("be kind"), user("hello")]
    text, spans = content_spans(template, messages)
    assert [text[a:b] for a, b in spans] == ["[system] BE KIND\n", "[user] HELLO\n"]
    assert text.endswith("[assistant] ")
