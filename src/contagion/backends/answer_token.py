"""Answer-token scoring: the scored position is where the answer is, not the reply's first token.

Some served models do not answer with their first token: they reason first (``<think>…</think>``, or in a
field of the reply), open with markdown (``**Yes**``) or with a few words (``I would say: Yes``). For them
the first token's distribution holds the answers with a small share of its probability, or none at all.
Method ``answer-token-top-logprobs`` asks the server for **one** generation at temperature 0 with
``top_logprobs`` at every generated token, and scores the position where the answer is:

1. the answer region begins after any reasoning — after the closing ``</think>``-style marker in the
   generated tokens' text (:func:`~contagion.backends.reasoning.reasoning_end`), or, when the server moved
   the reasoning into a field and sent the logprobs of ``content`` only, where ``content`` begins;
2. the scored position is the first generated token in that region that **owns a choice** by the one
   ownership rule of :mod:`contagion.backends.first_token` (equal to a choice, or a proper prefix of
   exactly one, after stripping spaces and case) — ``**``, ``I``, ``would``, ``say`` and ``:`` own none;
3. that position's ``top_logprobs`` are scored by :func:`~contagion.backends.first_token.score_candidates`,
   exactly as a first token's are (floors included).

When the model answers with its first token, the scored position is that token, and the score is the
first-token score to the last digit. When no generated token owns a choice (the reasoning did not end
within the token budget, or the reply names no answer), there is no scored position: every choice gets
log-probability ``-inf`` and is listed as floored, so an action is invalid and an item is left out — an
answer that was not given is never made up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from contagion.backends.first_token import owner, targets_of
from contagion.backends.reasoning import reasoning_end

Candidates = list[tuple[str, float]]


@dataclass(frozen=True)
class AnswerPosition:
    """Where the answer is in a generation: the token index (None when there is none), and why."""

    index: int | None
    start: int
    """Offset in the generated tokens' text where the answer region begins (after reasoning)."""
    reason: str = ""


def locate_answer(tokens: Sequence[tuple[str, Candidates]], choices: Sequence[str], *,
                  content: str | None = None, reasoning: str | None = None) -> AnswerPosition:
    """The scored position among generated ``tokens`` (text, top candidates), by the module's rule.

    ``content`` and ``reasoning`` are the reply's message fields as the server sent them: with reasoning in
    a field, the answer region cannot begin before ``content`` does.
    """
    targets = targets_of(choices)
    texts = [text for text, _ in tokens]
    joined = "".join(texts)
    end = reasoning_end(joined)
    if end is None:
        return AnswerPosition(None, len(joined), "the reasoning did not end within the generated tokens")
    start = end
    if reasoning:
        answer = (content or "").strip()
        body = joined.rstrip()
        if not answer:
            return AnswerPosition(None, len(joined), "the reply has reasoning and no answer")
        if body.endswith(answer):
            start = max(start, len(body) - len(answer))
    offset = 0
    for i, text in enumerate(texts):
        offset += len(text)
        if offset <= start:  # the token ends before the answer region (reasoning, its closing marker)
            continue
        if owner(text, targets) is not None:
            return AnswerPosition(i, start)
    return AnswerPosition(None, start, "no generated token after the reasoning owns a choice")


def no_answer(choices: Sequence[str]) -> tuple[list[float], dict[str, object]]:
    """Log-probabilities and detail of a generation without a scored position: every choice ``-inf``."""
    return [-math.inf] * len(choices), {"matched": {}, "floored": list(choices), "floor": -math.inf,
                                        "candidates": 0}
