"""Reading an action from a reply, aware of negation.

A reply names an action when one of the two labels appears as a word (``cooperate``, not
``cooperation``) and is not negated. A mention is negated when a negation cue stands among the few
words before it in the same clause: ``not``, ``never``, ``no``, contracted negations (``won't``,
``don't``, ``can't``, …), ``refuse``/``decline``/``avoid`` and their forms, and the pairs ``rather than``
and ``instead of``. Clauses end at punctuation and at ``but``.

* exactly one label has a plain (un-negated) mention → that action, whatever negated mentions of the
  other label surround it ("I will not cooperate; I defect" → defect);
* both labels have plain mentions → ambiguous: ``None`` (invalid);
* only negated mentions ("I refuse to cooperate", "I won't defect") → ``None``: a refusal of one action
  is not read as the choice of the other, and never as the negated action itself.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

WINDOW = 4
"""How many words before a mention are searched for a negation cue."""
NEGATIONS = frozenset({
    "not", "never", "no", "neither", "nor", "cannot", "refuse", "refuses", "refused", "refusing", "decline",
    "declines", "declined", "declining", "avoid", "avoids", "avoided", "avoiding",
})
PAIRS = frozenset({("rather", "than"), ("instead", "of")})
CLAUSE_BREAK = frozenset({"but"})
_TOKEN = re.compile(r"[a-z]+(?:['’][a-z]+)?|[.,;:!?()\[\]\"“”]")
_PUNCT = set(".,;:!?()[]\"“”")


def _negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith(("n't", "n’t"))


def mentions(text: str, label: str) -> list[bool]:
    """For each mention of ``label`` as a word in ``text``: whether it is negated."""
    label = label.strip().lower()
    tokens = _TOKEN.findall(text.lower())
    out: list[bool] = []
    for i, tok in enumerate(tokens):
        if tok != label:
            continue
        before: list[str] = []
        for prev in reversed(tokens[max(0, i - WINDOW):i]):
            if prev in _PUNCT or prev in CLAUSE_BREAK:
                break
            before.insert(0, prev)
        negated = any(_negation(w) for w in before) or any(pair in PAIRS for pair in itertools.pairwise(before))
        out.append(negated)
    return out


def parse_choice(text: str, cooperate: str, defect: str) -> Literal["cooperate", "defect"] | None:
    """The action a reply names, by the rule of the module docstring; ``None`` when it names none clearly."""
    coop = [not neg for neg in mentions(text, cooperate)]
    dfct = [not neg for neg in mentions(text, defect)]
    plain_c, plain_d = any(coop), any(dfct)
    if plain_c == plain_d:
        return None
    return "cooperate" if plain_c else "defect"
