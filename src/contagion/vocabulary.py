"""The game vocabulary: the structured facts (``Message.meta``) that non-LM players read.

Real models see only role and content. Scripted players and simulated models act on the game state
they are shown through these keys, which the engine and the assessment write. Keeping the vocabulary
here, in the lowest layer, lets higher layers write it without backends knowing about them.

kinds:
- ``act``: the prompt asking for an action. Keys ``cooperate`` and ``defect`` give the labels of the
  cooperative and the defecting choice as passed to ``score_choices`` (stripped of spaces).
- ``observation``: the result of a round for this player. ``round`` (1-based), ``own`` (``cooperate``,
  ``defect`` or ``invalid``), ``others_cooperated`` and ``others_defected`` (counts).
- ``talk``: another player's chat message; ``speaker``.
- ``trait_item``: a trait question. ``trait``, ``matching`` ("Yes"/"No", the trait-matching answer)
  and ``polarity`` (``pro`` / ``anti`` / ``neutral``).
- ``injection``: a steering message. ``intervention`` (e.g. ``sit``, ``repeat-system``).

Outside the messages, :data:`CURRENT_GAME` holds the seed and game of the trial being run (see :func:`playing`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from contagion.messages import Message

KIND = "kind"
ACT = "act"
OBSERVATION = "observation"
TALK = "talk"
TRAIT_ITEM = "trait_item"
INJECTION = "injection"

CURRENT_GAME: ContextVar[tuple[int, str] | None] = ContextVar("contagion_current_game", default=None)
"""``(seed, game name)`` of the trial (game) the current call belongs to: set by
:func:`contagion.experiment.trial.run_trial` for the whole trial, ``None`` elsewhere (e.g. a pre-play
profile measured once for many games). It is not part of any message and no real model sees it; a
simulated model draws its game-level random effect from it (``sim:…?game_sd=``), so games that share a
seed — the same repetition in every cell of a grid — share that effect, as common seeds link a grid's
games. Each asyncio task has its own value."""


@contextmanager
def playing(seed: int, game: str) -> Iterator[None]:
    """Set :data:`CURRENT_GAME` to ``(seed, game)`` for the duration of a ``with`` block (restored after)."""
    token = CURRENT_GAME.set((seed, game))
    try:
        yield
    finally:
        CURRENT_GAME.reset(token)


def last_of_kind(messages: Sequence[Message], kind: str) -> Message | None:
    for m in reversed(messages):
        if m.meta.get(KIND) == kind:
            return m
    return None


def all_of_kind(messages: Sequence[Message], kind: str) -> list[Message]:
    return [m for m in messages if m.meta.get(KIND) == kind]


def choice_roles(act: Message, choices: Sequence[str]) -> tuple[int, int]:
    """Indices of the cooperative and the defecting choice in ``choices``."""
    coop = str(act.meta.get("cooperate", "")).strip().lower()
    defect = str(act.meta.get("defect", "")).strip().lower()
    norm = [c.strip().lower() for c in choices]
    if coop not in norm or defect not in norm:
        raise ValueError(f"choices {list(choices)} do not contain the act prompt's labels {coop!r}/{defect!r}")
    return norm.index(coop), norm.index(defect)


def meta_get(message: Message | None, key: str, default: Any = None) -> Any:
    return default if message is None else message.meta.get(key, default)
