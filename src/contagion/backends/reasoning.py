"""Reasoning is the model's own: recognise it in a reply and keep it apart from the answer.

How servers return a reasoning model's thoughts (read from vLLM's, llama.cpp server's, SGLang's and
Ollama's documentation and issues, not assumed):

- **a field of its own** when the server runs a reasoning parser: ``reasoning_content`` (vLLM before
  0.11, llama.cpp server's ``--reasoning-format deepseek``, DeepSeek's API) or ``reasoning`` (vLLM from
  0.11, Ollama's ``/v1``, OpenRouter); ``content`` then holds the answer alone;
- **inline**, between tags in ``content``, when it runs none (Qwen3, DeepSeek-R1 distills, QwQ):
  ``<think>…</think>`` and its kin (:data:`REASONING_TAGS`). A chat template that opens the tag in the
  prompt (DeepSeek-R1) leaves only the closing tag in the reply: ``…reasoning…</think>answer``.
  gpt-oss served without a parser writes its analysis channel first (``<|channel|>analysis<|message|>…``)
  and the answer after ``<|channel|>final<|message|>``;
- **both**: llama.cpp's ``deepseek-legacy`` keeps the tags in ``content`` and fills the field too.

And the token log-probabilities of such a reply (``logprobs.content``) cover either every generated
token, the reasoning and its tags included (vLLM, SGLang), or only the tokens of ``content`` (OpenAI's
definition, and SGLang after its fix): :func:`reasoning_end` finds where the answer begins in either.

:func:`split_reasoning` is the one place a reply becomes (answer, reasoning). A reply without reasoning
comes back unchanged, byte for byte, so records of models that do not reason are what they were.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REASONING_FIELDS: tuple[str, ...] = ("reasoning_content", "reasoning")
"""Message fields servers put reasoning in, first present wins."""

REASONING_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("◁think▷", "◁/think▷"),
    ("<|channel|>analysis<|message|>", "<|channel|>final<|message|>"),
)
"""(opening, closing) markers of inline reasoning; a closing marker alone ends template-opened reasoning."""

_OPEN = re.compile("|".join(re.escape(o) for o, _ in REASONING_TAGS), re.IGNORECASE)
_CLOSE = re.compile("|".join(re.escape(c) for _, c in REASONING_TAGS), re.IGNORECASE)
_MARKERS = re.compile("|".join(re.escape(m) for pair in REASONING_TAGS for m in pair)
                      + r"|<\|end\|>|<\|start\|>assistant", re.IGNORECASE)

REASONING_MODES = ("strip", "keep")
"""What the speaker's own history holds of its reasoning (``GameSpec.reasoning``); co-players never see it."""


@dataclass(frozen=True)
class Split:
    """A reply taken apart: the answer (what the speaker said) and its reasoning, if it reasoned."""

    answer: str
    reasoning: str | None = None


def reasoning_end(text: str) -> int | None:
    """Offset in ``text`` where the answer begins, after inline reasoning: 0 when there is none, None when
    reasoning opens and never closes (the reply ran out of tokens while thinking).

    Reasoning opens with an opening marker at the very start of the reply (after whitespace), or — for a
    template that opened it in the prompt — is everything before the first closing marker.
    """
    opened = _OPEN.search(text)
    if opened is not None and not text[: opened.start()].strip():
        closed = _CLOSE.search(text, opened.end())
        return None if closed is None else closed.end()
    closed = _CLOSE.search(text)
    return 0 if closed is None else closed.end()


def _clean(reasoning: str) -> str:
    return _MARKERS.sub("", reasoning).strip()


def split_reasoning(text: str, field: str | None = None) -> Split:
    """The answer and the reasoning of a reply whose ``content`` is ``text`` and whose reasoning field (if
    the server sent one) is ``field``. Without reasoning the answer is ``text`` itself, unchanged."""
    end = reasoning_end(text)
    inline: str | None = None
    answer = text
    if end is None:  # thinking until the token budget ran out: no answer at all
        inline, answer = _clean(text), ""
    elif end > 0:
        inline, answer = _clean(text[:end]), text[end:].lstrip()
    thought = _clean(field) if isinstance(field, str) and _clean(field) else None
    reasoning = thought or inline or None
    if reasoning is None and end in (None, 0):
        return Split(answer=answer)
    return Split(answer=answer, reasoning=reasoning)


def reasoning_field(message: Mapping[str, Any]) -> str | None:
    """The reasoning a server sent in a field of the reply's message, or None."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def with_reasoning(answer: str, reasoning: str | None) -> str:
    """The text a speaker keeps of its reply under ``reasoning: keep``: its reasoning inline, as a
    reasoning model writes it, then the answer (the answer alone when it did not reason)."""
    if not reasoning:
        return answer
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"
