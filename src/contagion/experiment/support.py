"""What a model's scores rest on: the share of the scored position's probability its answers held.

Every score is the two answers' probabilities renormalised over the pair, so it reads the same whether
the answers held 95 % of the scored token's probability or 5 %. Only the raw **answer mass** (``p(Yes) +
p(No)`` of a trait item, ``p(cooperate) + p(defect)`` of a scored action) says how much of the model's
reply the number rests on: a model that opens with ``**`` or ``I`` (scored at its first token) puts most of
its probability elsewhere, and its profile is then a reading of a small corner of its distribution.

:class:`Support` adds up those masses per model over records (trait items of every pre- and post-play
profile, and scored actions); :func:`low_support` names each model whose mean is under
:data:`~contagion.backends.probe.LOW_MASS` (a half), with the figure. ``contagion assess``, ``play`` and
``run`` print it, and the report and the card carry it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from contagion.backends.probe import LOW_MASS
from contagion.games.record import GamePlay


@dataclass
class Support:
    """Answer masses of one model: trait items and scored actions (sums and counts)."""

    item_mass: float = 0.0
    items: int = 0
    action_mass: float = 0.0
    actions: int = 0

    def add_profile(self, profile: Mapping[str, Any] | None) -> None:
        """The measured items of a profile record (SIT's source items count too: the same instrument)."""
        for item in (profile or {}).get("items", []):
            mass = item.get("mass")
            if mass is not None:
                self.item_mass += float(mass)
                self.items += 1

    def add_action(self, mass: float | None) -> None:
        if mass is not None:
            self.action_mass += float(mass)
            self.actions += 1

    @property
    def item_mean(self) -> float | None:
        return self.item_mass / self.items if self.items else None

    @property
    def action_mean(self) -> float | None:
        return self.action_mass / self.actions if self.actions else None

    @property
    def mean(self) -> float | None:
        """The mean answer mass over every scored item and action."""
        n = self.items + self.actions
        return (self.item_mass + self.action_mass) / n if n else None

    def as_dict(self) -> dict[str, Any]:
        return {"mass": self.mean, "items": self.items, "item_mass": self.item_mean, "actions": self.actions,
                "action_mass": self.action_mean, "low": self.low}

    @property
    def low(self) -> bool:
        mean = self.mean
        return mean is not None and mean < LOW_MASS


def tally(record: GamePlay, into: dict[str, Support]) -> None:
    """Add a record's language-model players' answer masses to ``into`` (keyed by backend identity)."""
    for player in record.players:
        if not player.language_model:
            continue
        support = into.setdefault(player.backend, Support())
        support.add_profile(player.pre_profile)
        support.add_profile(player.post_profile)
        for action in player.actions:
            if action.method.startswith("score:"):
                support.add_action(action.mass)


def tally_records(records: Iterable[GamePlay]) -> dict[str, Support]:
    out: dict[str, Support] = {}
    for record in records:
        tally(record, out)
    return out


def describe(model: str, support: Support) -> str:
    """One sentence: what the model's scores rest on (for a model flagged by :func:`low_support`)."""
    parts = []
    if support.item_mean is not None:
        parts.append(f"trait items {support.item_mean:.0%} over {support.items}")
    if support.action_mean is not None:
        parts.append(f"actions {support.action_mean:.0%} over {support.actions}")
    mean = support.mean or 0.0
    return (f"the scores of {model} rest on {mean:.0%} of the scored position's probability "
            f"({'; '.join(parts)}); the other {1 - mean:.0%} is on tokens that are no answer, so the "
            f"scores read a small part of what the model says. If it reasons or opens with formatting, score "
            f"where its answer is (add ?score=auto to an openai: spec), and see `contagion doctor`.")


def low_support(tallies: Mapping[str, Support]) -> list[str]:
    """A sentence for every model whose scores rest on less than half of the scored position's probability."""
    return [describe(model, s) for model, s in sorted(tallies.items()) if s.low]
