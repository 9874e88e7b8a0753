"""Served models' answer styles, emulated with known answer probabilities, for the loopback server.

Models as people serve them do not all answer with their first token. :class:`StyleResponder` answers the
way they do, token by token with log-probabilities at every position (a :class:`~contagion.testing.loopback.Reply`):

- ``direct`` — the answer is the first token (``" Yes"``);
- ``markdown`` — a markdown opener first (``**Yes**``);
- ``words`` — a few words first (``I would say: Yes.``);
- ``inline-reasoning`` — ``<think>…</think>`` then the answer, all in ``content`` (a reasoning model served
  without a reasoning parser);
- ``field-reasoning`` — the same generation, but the server moves the reasoning into a field of its own
  (``reasoning_content`` by default; ``reasoning`` as vLLM ≥ 0.11 and Ollama name it) and sends the
  logprobs of every generated token (``logprobs_cover="all"``, as vLLM does) or of the ``content`` tokens
  only (``"content"``, OpenAI's definition);
- ``no-logprobs`` — a direct answer from a server that returns no logprobs (serve it with
  ``LoopbackServer(logprobs=False)``); sampled answers follow the known probability as closely as the
  number of samples allows (seed ``s`` draws the van der Corput point ``u(s)``, so ``n`` consecutive
  seeds hit every interval of width ``1/n``… for ``n`` a power of two exactly).

**Known probabilities.** At the answer's position, a yes/no question (``…Answer Yes or No.``) gets
``p(Yes) = known_probability(statement)`` (the quoted statement, or the whole question without one) and an
act prompt (``Reply with one word: 'a' or 'b'.``) gets ``p(first of the two labels in sorted order) =
known_probability("a|b")`` — both renormalised over the two answers, which hold 97 % of that position
(3 % is on ``" Maybe"``). Where a style puts something else first, the first token's distribution holds
the answers with only a small share, and with the *opposite* preference (``1 - p``), so scoring the wrong
position gives a visibly wrong score, not a lucky right one. Reasoning mentions the answers' words
(``yes``, ``no``, the action names) and a marker, :data:`REASONING_MARKER`, so a test sees at once when
reasoning is scored or shown to another player.

Request options a responder honours: ``chat_template_kwargs: {"enable_thinking": false}`` (extra body)
turns the reasoning styles into ``direct``, as Qwen3's template does; with ``system_role=False`` a
request holding a ``system`` message is refused with HTTP 400, as templates without a system role are.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from contagion.testing.loopback import RawResponse, Reply, Token

STYLES: tuple[str, ...] = ("direct", "markdown", "words", "inline-reasoning", "field-reasoning", "no-logprobs")
"""Every emulated answer style."""

REASONING_MARKER = "PRIVATE-REASONING-7f3a"
"""Appears in every emulated reasoning and nowhere else: it must never reach another player."""

ANSWER_SHARE = 0.97
"""The answers' share of the probability at the answer's position (the rest is on ``" Maybe"``)."""
OPENER_SHARE = {"markdown": 0.88, "words": 0.9}
"""The opener's share of the first token's probability where a style opens with something else."""

_YES_NO = re.compile(r"Answer (Yes|No) or (Yes|No)\.")
_ACT = re.compile(r"Reply with one word: '([^']+)' or '([^']+)'")
_STATEMENT = re.compile(r'"(.+)"', re.DOTALL)
_TALK_REPLY = "Let us all do well together this round."


def known_probability(key: str) -> float:
    """The emulation's known probability for a question key, in [0.2, 0.8): a hash of the key."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32
    return 0.2 + 0.6 * h


def yes_probability(statement: str) -> float:
    """Known p(Yes) of the trait question about ``statement`` (renormalised over Yes and No)."""
    return known_probability(statement)


def label_probability(label: str, other: str) -> float:
    """Known probability of action ``label`` against ``other`` (renormalised over the two)."""
    first, second = sorted((label, other))
    p_first = known_probability(f"{first}|{second}")
    return p_first if label == first else 1.0 - p_first


def van_der_corput(n: int) -> float:
    """The ``n``-th point of the base-2 van der Corput sequence in [0, 1)."""
    out, denom = 0.0, 1.0
    while n:
        n, bit = divmod(n, 2)
        denom *= 2
        out += bit / denom
    return out


def _last_user(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _words(text: str) -> list[str]:
    """Text cut into word tokens (each with its leading space), a stand-in for a tokenizer."""
    return re.findall(r"\s*\S+|\s+", text)


def _filler(text: str) -> Token:
    return Token(text, ({"token": text, "logprob": math.log(0.95)}, {"token": " Hmm", "logprob": math.log(0.05)}))


class StyleResponder:
    """A loopback responder answering in one :data:`STYLES` style with known probabilities (module doc).

    Args:
        style: one of :data:`STYLES`.
        reasoning_field: the field ``field-reasoning`` puts reasoning in (``reasoning_content`` or ``reasoning``).
        logprobs_cover: ``all`` or ``content`` (``field-reasoning`` only; see
            :class:`~contagion.testing.loopback.Reply`).
        system_role: False refuses requests that hold a ``system`` message (HTTP 400).
        reasoning_words: words of emulated reasoning before the answer (a longer think costs more tokens).
    """

    def __init__(self, style: str = "direct", *, reasoning_field: str = "reasoning_content",
                 logprobs_cover: str = "all", system_role: bool = True, reasoning_words: int = 0) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown answer style {style!r}; known: {', '.join(STYLES)}")
        self.style = style
        self.reasoning_field = reasoning_field
        self.logprobs_cover = logprobs_cover
        self.system_role = system_role
        self.reasoning_words = reasoning_words

    def __call__(self, body: dict[str, Any]) -> Reply | RawResponse:
        messages = body.get("messages") or []
        if not self.system_role and any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            return RawResponse(400, json.dumps({"error": {"message": "System role not supported",
                                                          "type": "invalid_request_error", "code": 400}}))
        style = self.style
        kwargs = body.get("chat_template_kwargs")
        if style.endswith("reasoning") and isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
            style = "direct"
        question = _last_user(body)
        answers = self._answers(question)
        tokens = self._opening(style, answers) + self._answer(style, answers, body)
        field = self.reasoning_field if style == "field-reasoning" else None
        return Reply(tokens=tuple(tokens), reasoning_field=field,
                     logprobs_cover=self.logprobs_cover if field else "all")

    # -- the parts of a reply --------------------------------------------------------------------
    @staticmethod
    def _answers(question: str) -> tuple[list[str], list[float]] | None:
        """The two answers of the question and their known probabilities, or None (not a question)."""
        m = _YES_NO.search(question)
        if m is not None:
            quoted = _STATEMENT.search(question)
            key = quoted.group(1) if quoted is not None else question
            p = yes_probability(key)
            return ["Yes", "No"], [p, 1.0 - p]
        m = _ACT.search(question)
        if m is not None:
            a, b = m.group(1), m.group(2)
            pa = label_probability(a, b)
            return [a, b], [pa, 1.0 - pa]
        return None

    def _reasoning(self, answers: tuple[list[str], list[float]] | None) -> str:
        named = " or ".join(answers[0]) if answers else "cooperate or defect"
        extra = " ".join(["Considering."] * self.reasoning_words)
        return (f"<think>\nLet me weigh it: yes, no, {named}? {REASONING_MARKER} {extra}".rstrip()
                + "\n</think>\n\n")

    def _opening(self, style: str, answers: tuple[list[str], list[float]] | None) -> list[Token]:
        """The tokens before the answer (the first of them carries the small, reversed answer share)."""
        if style in ("direct", "no-logprobs") or (answers is None and not style.endswith("reasoning")):
            return []
        if style.endswith("reasoning"):
            pieces = _words(self._reasoning(answers))
            first = Token(pieces[0], ({"token": pieces[0], "logprob": math.log(0.99)},
                                      {"token": "Okay", "logprob": math.log(0.01)}))
            return [first, *(_filler(t) for t in pieces[1:])]
        opener = "**" if style == "markdown" else "I"
        share = OPENER_SHARE[style]
        top = [{"token": opener, "logprob": math.log(share)}]
        if answers is not None:
            (a, b), (pa, pb) = answers
            top += [{"token": f" {a}", "logprob": math.log((1 - share) * pb)},  # the reversed preference
                    {"token": f" {b}", "logprob": math.log((1 - share) * pa)}]
        rest = [] if style == "markdown" else [_filler(t) for t in (" would", " say", ":")]
        return [Token(opener, tuple(sorted(top, key=lambda t: -t["logprob"]))), *rest]

    def _answer(self, style: str, answers: tuple[list[str], list[float]] | None, body: dict[str, Any]) -> list[Token]:
        lead = "" if style == "markdown" else " "
        close = [_filler("**")] if style == "markdown" else [_filler(".")]
        if answers is None:  # talk, or anything that is not a question: a short message
            return [_filler(t) for t in _words(_TALK_REPLY)]
        (a, b), (pa, pb) = answers
        ranked = sorted([(f"{lead}{a}", math.log(ANSWER_SHARE * pa)), (f"{lead}{b}", math.log(ANSWER_SHARE * pb)),
                         (f"{lead}Maybe", math.log(1 - ANSWER_SHARE))], key=lambda t: -t[1])
        top = [{"token": token, "logprob": lp} for token, lp in ranked]
        if float(body.get("temperature", 1.0)) == 0.0:
            chosen = ranked[0][0]
        else:
            u = van_der_corput(int(body.get("seed") or 0))
            chosen = f"{lead}{a}" if u < pa else f"{lead}{b}"
        return [Token(chosen, tuple(top)), *close]


def expected_item_score(statement: str, matching: str) -> float:
    """The known score of a trait item: p(the trait-matching answer), renormalised over Yes and No."""
    p = yes_probability(statement)
    return p if matching == "Yes" else 1.0 - p


def expected_choice(labels: Sequence[str]) -> str:
    """The action the emulation prefers (the more likely of the two labels)."""
    a, b = labels
    return a if label_probability(a, b) >= 0.5 else b
