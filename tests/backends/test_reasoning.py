"""Reasoning is the model's own (issue 27, item 1): replies are taken apart into answer and reasoning,
records of models that do not reason stay byte-identical, and a served reasoning model's talk keeps its
reasoning out of the reply it returns."""

from __future__ import annotations

import json

import pytest

from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.reasoning import reasoning_end, reasoning_field, split_reasoning, with_reasoning
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message, user
from contagion.testing.loopback import LoopbackServer, Reply
from contagion.testing.styles import REASONING_MARKER, StyleResponder


@pytest.mark.parametrize("text", ["Yes", " Yes", "I would say: **No**.", "", "a < b and </ b>",
                                  "We think > we know", "  spaced  \n"])
def test_a_reply_without_reasoning_comes_back_unchanged(text: str) -> None:
    split = split_reasoning(text)
    assert split.answer == text and split.reasoning is None
    assert reasoning_end(text) == 0


def test_inline_think_tags_are_taken_out() -> None:
    split = split_reasoning("<think>\nShould I? yes or no\n</think>\n\nNo.")
    assert split.answer == "No."
    assert split.reasoning == "Should I? yes or no"


def test_a_template_opened_think_leaves_only_the_closing_tag() -> None:
    # DeepSeek-R1's template opens <think> in the prompt: the reply starts inside the reasoning
    split = split_reasoning("Hmm, cooperate is safer.</think>cooperate")
    assert split.answer == "cooperate" and split.reasoning == "Hmm, cooperate is safer."


def test_reasoning_that_never_closes_leaves_no_answer() -> None:
    split = split_reasoning("<think>\nLet me think about yes")
    assert split.answer == "" and split.reasoning == "Let me think about yes"
    assert reasoning_end("<think> still thinking") is None


@pytest.mark.parametrize("opening,closing", [("<thinking>", "</thinking>"), ("<reasoning>", "</reasoning>"),
                                             ("<THINK>", "</THINK>"), ("◁think▷", "◁/think▷")])
def test_other_tag_spellings(opening: str, closing: str) -> None:
    split = split_reasoning(f"{opening}plan{closing} Yes")
    assert (split.answer, split.reasoning) == ("Yes", "plan")


def test_gpt_oss_channels_without_a_parser() -> None:
    text = ("<|channel|>analysis<|message|>They asked yes/no.<|end|><|start|>assistant"
            "<|channel|>final<|message|>Yes")
    split = split_reasoning(text)
    assert split.answer == "Yes" and split.reasoning == "They asked yes/no."


def test_a_reasoning_field_and_the_legacy_form_with_both() -> None:
    assert split_reasoning("Yes", "weighing it").answer == "Yes"
    assert split_reasoning("Yes", "weighing it").reasoning == "weighing it"
    # llama.cpp deepseek-legacy: tags kept in content and the field filled: one reasoning, the answer alone
    both = split_reasoning("<think>weighing it</think>Yes", "weighing it")
    assert (both.answer, both.reasoning) == ("Yes", "weighing it")
    assert split_reasoning("Yes", "   ").reasoning is None
    assert reasoning_field({"content": "x", "reasoning": "r"}) == "r"
    assert reasoning_field({"content": "x", "reasoning_content": "rc", "reasoning": "r"}) == "rc"
    assert reasoning_field({"content": "x", "reasoning_content": None}) is None


def test_keep_puts_the_reasoning_inline_and_split_takes_it_back() -> None:
    kept = with_reasoning("cooperate", "they defected twice")
    assert kept.startswith("<think>")
    assert split_reasoning(kept).answer == "cooperate"
    assert split_reasoning(kept).reasoning == "they defected twice"
    assert with_reasoning("cooperate", None) == "cooperate"


def test_messages_without_reasoning_serialise_as_before() -> None:
    plain = Message(role="assistant", content="Hi", meta={"kind": "own_talk"})
    assert json.loads(plain.model_dump_json()) == {"role": "assistant", "content": "Hi", "name": None,
                                                   "meta": {"kind": "own_talk"}}
    thought = plain.model_copy(update={"reasoning": "plan"})
    assert json.loads(thought.model_dump_json())["reasoning"] == "plan"
    assert Message.model_validate_json(thought.model_dump_json()) == thought
    assert thought.wire() == {"role": "assistant", "content": "Hi"}  # never sent to a model


def test_the_default_reasoning_mode_leaves_the_spec_and_its_hash_as_they_were() -> None:
    players = (PlayerSpec(backend="sim:null"), PlayerSpec(backend="scripted:always-defect"))
    spec = GameSpec(players=players)
    assert "reasoning" not in spec.model_dump(mode="json")
    keep = GameSpec(players=players, reasoning="keep")
    assert keep.model_dump(mode="json")["reasoning"] == "keep"
    assert GameSpec.model_validate(keep.model_dump(mode="json")) == keep
    with pytest.raises(ValueError, match="strip"):
        GameSpec(players=players, reasoning="show")  # type: ignore[arg-type]


@pytest.mark.parametrize("style,field", [("inline-reasoning", "reasoning_content"),
                                         ("field-reasoning", "reasoning_content"),
                                         ("field-reasoning", "reasoning")])
def test_a_served_reasoning_models_reply_is_its_answer(style: str, field: str) -> None:
    with LoopbackServer(StyleResponder(style, reasoning_field=field)) as server:
        backend = OpenAIBackend("reasoner", server.base_url)
        completion = run_sync(backend.generate([user("Round 1, discussion. Write one short message.")],
                                               GenerationConfig(max_tokens=60)))
        run_sync(backend.aclose())
    assert completion.text == "Let us all do well together this round."
    assert completion.reasoning is not None and REASONING_MARKER in completion.reasoning
    assert "<think>" not in completion.reasoning and "</think>" not in completion.text


def test_enable_thinking_false_reaches_the_server_as_extra_body() -> None:
    # the emulation honours Qwen3's chat_template_kwargs; checked here so the extra_body tests can rely on it
    responder = StyleResponder("inline-reasoning")
    on = responder({"messages": [{"role": "user", "content": "hi"}]})
    off = responder({"messages": [{"role": "user", "content": "hi"}],
                     "chat_template_kwargs": {"enable_thinking": False}})
    assert isinstance(on, Reply) and isinstance(off, Reply)
    assert REASONING_MARKER in "".join(t.text for t in on.tokens)
    assert REASONING_MARKER not in "".join(t.text for t in off.tokens)
