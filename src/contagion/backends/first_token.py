"""First-token scoring: one computation for every backend, so one model gives one score wherever it runs.

What is scored (question and action format v2) is the reply's **first token**, right after the chat
template opens the assistant turn — nothing pre-filled. A chat server reports that token's distribution
as ``top_logprobs``: its :data:`TOP_K` most likely tokens, each with its text and log-probability. A
local backend (llama.cpp, transformers) computes the same list from its own logits at the same position
after the same tokens (:func:`top_candidates`), and every backend turns the list into scores with
:func:`score_candidates`. The local backends thus do exactly what the server does: they see no more
than its top-k, so they agree with it up to the numerics of the model's own computation.

A token **owns** a choice when its text, stripped of whitespace and case-folded, is

1. equal to the choice's (also stripped and case-folded): ``"Yes"``, ``" Yes"``, ``"YES"`` and ``"yes"``
   all answer ``Yes``; or else
2. a non-empty proper prefix of that choice's text and of no other choice's: ``"co"`` and ``" Co"``
   begin ``cooperate`` (a multi-token answer starts with such a token), while ``"s"`` begins both
   ``swerve`` and ``straight`` and so counts for neither.

The rule depends on the token's text and the choices only, never on which other tokens are present. A
choice's log-probability is ``log Σ p(token)`` over the candidates it owns. A choice that no candidate
owns gets a **floor**, ``min(candidate log-prob) − ln 2`` (below every candidate, as the truth must be,
without pretending to know how far), and is listed in ``floored``.

Every candidate's log-probability is checked first (:func:`contagion.backends.base.logprob_problem`): one
NaN, ``+inf`` or positive value, or a list without any finite one, makes the whole distribution unusable —
every choice gets NaN and ``detail["invalid"]`` says why, so the :class:`~contagion.backends.base.Scores`
built from it are invalid (never a made-up value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from contagion.backends.base import logprob_problem

TOP_K = 20
"""Candidates of the first-token distribution: the most a chat API returns (``top_logprobs`` ≤ 20)."""


def normalise(text: str) -> str:
    """A token's or a choice's text as the rule compares it: stripped of whitespace, case-folded."""
    return text.strip().casefold()


def owner(token_text: str, targets: Sequence[str]) -> int | None:
    """Index of the choice whose normalised text ``targets[i]`` the token owns, or None (module doc)."""
    t = normalise(token_text)
    if not t:
        return None
    exact = [i for i, target in enumerate(targets) if target == t]
    if exact:
        return exact[0] if len(exact) == 1 else None
    starts = [i for i, target in enumerate(targets) if target.startswith(t)]
    return starts[0] if len(starts) == 1 else None


def targets_of(choices: Sequence[str]) -> list[str]:
    """The normalised choices; a choice without text is an error (no token could own it)."""
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


def top_candidates(
    logprobs: npt.ArrayLike, text_of: Callable[[int], str], k: int = TOP_K
) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens of a full first-token distribution as (text, log-prob), most likely
    first, one entry per distinct text (the first, as a server's ``top_logprobs`` object keeps one per
    key). ``logprobs`` is indexed by token id; ``text_of(id)`` gives a token's text."""
    values = np.asarray(logprobs, dtype=np.float64)
    k = min(k, values.shape[0])
    ids = np.argpartition(-values, k - 1)[:k]
    ids = ids[np.argsort(-values[ids], kind="stable")]
    out: dict[str, float] = {}
    for i in ids:
        out.setdefault(str(text_of(int(i))), float(values[i]))
    return list(out.items())


def score_candidates(
    candidates: Iterable[tuple[str, float]], choices: Sequence[str]
) -> tuple[list[float], dict[str, Any]]:
    """Each choice's log-probability from (token text, log-prob) candidates, floored where no candidate
    owns it, and the detail every first-token score carries: ``matched`` (choice → its tokens),
    ``floored`` (choices given the floor), ``floor`` and ``candidates`` (how many were read)."""
    targets = targets_of(choices)
    pairs = list(candidates)
    bad = [(token, problem) for token, lp in pairs if (problem := logprob_problem(lp)) is not None]
    finite = [lp for _, lp in pairs if math.isfinite(lp)]
    if bad or not finite:
        reason = ("first-token candidate " + "; ".join(f"{token!r}: {problem}" for token, problem in bad[:3])
                  + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "") if bad
                  else "no first-token candidate has a finite log-probability")
        return [math.nan] * len(choices), {"invalid": reason, "candidates": len(pairs)}
    floor = min(finite) - math.log(2.0)
    hits: list[list[tuple[str, float]]] = [[] for _ in choices]
    for token, lp in pairs:
        i = owner(token, targets)
        if i is not None:
            hits[i].append((token, lp))
    logprobs = [logsumexp([lp for _, lp in h]) if h else floor for h in hits]
    detail: dict[str, Any] = {
        "matched": {c: [tok for tok, _ in h] for c, h in zip(choices, hits, strict=True) if h},
        "floored": [c for c, h in zip(choices, hits, strict=True) if not h],
        "floor": floor,
        "candidates": len(pairs),
    }
    return logprobs, detail
