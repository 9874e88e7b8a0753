"""The first-reply-token rule: which first tokens of a reply count as which answer.

One rule for every backend, so one model gives one score wherever it runs. A chat server reports the
distribution of the reply's first token (``top_logprobs``, its k most likely tokens); a local backend
(llama.cpp, transformers) has the whole distribution at the same position — right after the chat
template opens the assistant turn. Both apply :func:`owner` to every token they see and score each
choice as ``log Σ p(token)`` over the tokens it owns (:func:`choice_logprobs`). A local backend sums over
the whole vocabulary, a server over its top-k, so the two differ only by matching tokens outside the
server's top-k (each less likely than the k-th candidate).

A token **owns** a choice when its text, stripped of whitespace and case-folded, is

1. equal to the choice's (also stripped and case-folded): ``"Yes"``, ``" Yes"``, ``"YES"`` and ``"yes"``
   all answer ``Yes``; or else
2. a non-empty proper prefix of that choice's text and of no other choice's: ``"co"`` and ``" Co"``
   begin ``cooperate`` (a multi-token answer starts with such a token), while ``"s"`` begins both
   ``swerve`` and ``straight`` and so counts for neither.

The rule depends on the token's text and the choices only — never on which other tokens are present —
so a server's top-k and a full vocabulary are read the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def normalise(text: str) -> str:
    """A token's or a choice's text as the rule compares it: stripped of whitespace, case-folded."""
    return text.strip().casefold()


def owner(token_text: str, targets: Sequence[str]) -> int | None:
    """Index of the choice whose normalised text ``targets[i]`` the token owns, or None (see module doc)."""
    t = normalise(token_text)
    if not t:
        return None
    exact = [i for i, target in enumerate(targets) if target == t]
    if exact:
        return exact[0] if len(exact) == 1 else None
    starts = [i for i, target in enumerate(targets) if target.startswith(t)]
    return starts[0] if len(starts) == 1 else None


def targets_of(choices: Sequence[str]) -> list[str]:
    """The normalised choices; a choice without text is an error (nothing could own it)."""
    targets = [normalise(c) for c in choices]
    if any(not t for t in targets):
        raise ValueError("every choice must contain non-space text")
    return targets


def logsumexp(values: Sequence[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def choice_logprobs(
    candidates: Iterable[tuple[str, float]], choices: Sequence[str]
) -> tuple[list[float], dict[str, list[str]]]:
    """Each choice's log-probability from (token text, log-prob) pairs, and the tokens that matched it.

    A choice no candidate owns gets ``-inf`` (a server then floors it; a local backend, which saw every
    token, reports the ``-inf``).
    """
    targets = targets_of(choices)
    hits: list[list[tuple[str, float]]] = [[] for _ in choices]
    for token, lp in candidates:
        i = owner(token, targets)
        if i is not None:
            hits[i].append((token, lp))
    logprobs = [logsumexp([lp for _, lp in h]) for h in hits]
    matched = {c: [tok for tok, _ in h] for c, h in zip(choices, hits, strict=True) if h}
    return logprobs, matched


def owned_ids(vocabulary: Sequence[str], choices: Sequence[str]) -> list[list[int]]:
    """For each choice, the ids of the vocabulary's tokens (``vocabulary[id]`` = the token's text) it owns."""
    targets = targets_of(choices)
    out: list[list[int]] = [[] for _ in choices]
    for token_id, text in enumerate(vocabulary):
        i = owner(text, targets)
        if i is not None:
            out[i].append(token_id)
    return out
