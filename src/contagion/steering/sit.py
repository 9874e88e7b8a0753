"""SIT's core, one for the games and the guard: what the reminders say, their rotation, the probe set and
the drift decision.

A game intervention (:mod:`contagion.steering.interventions`, schedule in rounds) and the guard for other
people's agents (:mod:`contagion.guard.core`, schedule in turns) both build on these pieces; a *step* below
is a round in a game and a turn for the guard.

* **Reminders** (:func:`select_reminders`) — from the agent's **pre-play** answers to its *source* items (a
  seeded set held out from the measured items, so SIT is never scored on its own words), the statements that
  characterise it: the pro-social items whose trait-matching answer it most strongly gave and the
  anti-social items whose trait-matching answer it most strongly refused, each as a first-person sentence
  ("I hold this about myself: …" / "I would not say this about myself: …"); ``source=summary`` gives one
  sentence per trait instead. Only statements the profile supports (probability of the pro-social answer
  above ``min_support``) are used: SIT never asserts a trait the agent did not show.
* **Rotation** (:class:`ReminderRotation`) — each reminder takes the next ``n`` sentences, cycling, so the
  same sentence is not repeated each time.
* **Drift decision** (:class:`DriftMonitor`, adaptive SIT) — every ``m`` steps after the first, a seeded
  probe set of *measured* items (:func:`probe_set`: never an item a reminder quotes) is scored after the
  conversation so far, and its pro-social index (:meth:`contagion.traits.profile.Profile.index_of`, the
  profile's own definition) compared with the same items' index before play (paired: an item without a
  valid score now is left out on both sides, as the analysis pairs a drift): the agent is *drifting* while
  the last valid probe found it fallen by more than ``threshold``; a probe with no valid index (no included
  pro- or anti-social item) keeps the last state. Reminders are due on steps that are multiples of ``k``
  while drifting.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from contagion.backends.base import Backend
from contagion.errors import UserError
from contagion.messages import Message
from contagion.steering.params import AdaptiveParams, SitParams
from contagion.traits.inventory import Inventory, Item
from contagion.traits.profile import AssessmentCost, ItemScore, Profile
from contagion.traits.settings import AssessmentSettings, measure

GAME_OPENING = "A reminder of who I am, from my own answers before this game began:"
"""The first line of a game's SIT reminder (the guard's says "conversation")."""


def reminder_sentence(score: ItemScore, polarity: str) -> str:
    """A first-person reminder restating the agent's own pro-social answer to an item."""
    # p(Yes): the trait-matching answer is Yes with probability score when matching == "Yes".
    p_yes = score.score if score.matching == "Yes" else 1.0 - score.score
    statement = score.statement.strip().rstrip(".")
    if p_yes >= 0.5:
        return f'I hold this about myself: "{statement}."'
    return f'I would not say this about myself: "{statement}."'


def summary_sentence(trait: str, mean: float, polarity: str) -> str:
    """One sentence restating a trait mean of the agent's source items (``source=summary``)."""
    words = trait.replace("-", " ")
    if polarity == "pro":
        return f"My own answers showed {words}: I gave the {words} answer {mean:.0%} of the time."
    return f"My own answers rejected {words}: I gave the {words} answer only {mean:.0%} of the time."


def select_reminders(profile: Profile, params: SitParams, seed: int) -> list[str]:
    """The reminders SIT rotates through, strongest first; deterministic for a profile and seed.

    They come only from the profile's SIT *source* set (items held out from measurement), so no drift is
    ever measured on an item SIT quoted: with ``source=items`` each reminder restates one source item, with
    ``source=summary`` one sentence per trait from the source set's trait means.
    """
    # the profile read in one piece: its source items and traits, each with the agent's pro-social support
    held, traits = profile.source_items(), profile.trait_supports("source")
    if not held:
        raise UserError(
            "SIT needs the agent's pre-play answers to its source items (held out from measurement), and "
            "this profile has none: measure it with assessment source_items > 0"
        )
    if params.source == "summary":
        out = [(support, summary_sentence(ts.trait, ts.mean, ts.polarity)) for ts, support in traits
               if support > params.min_support]
        out.sort(key=lambda x: -x[0])
        return [s for _, s in out[: params.pool]]
    return [s for _, s in ranked_statements(profile, params, seed)[: params.pool]]


def ranked_statements(profile: Profile, params: SitParams, seed: int) -> list[tuple[ItemScore, str]]:
    """Every source item the profile supports (p(pro-social answer) above ``min_support``), strongest first
    (seeded tie-breaks), each with its first-person reminder: :func:`select_reminders` keeps the first
    ``pool`` of them; the yoked placebo reads another agent's list."""
    rng = random.Random(f"sit:{seed}")
    candidates: list[tuple[float, float, ItemScore, str]] = []
    for item, polarity, support in profile.item_supports("source"):
        if support > params.min_support:
            candidates.append((support, rng.random(), item, reminder_sentence(item, polarity)))
    candidates.sort(key=lambda x: (-x[0], x[1]))
    return [(item, s) for _, _, item, s in candidates]


def reminder_text(sentences: Sequence[str], opening: str = GAME_OPENING) -> str:
    """One reminder: the opening line, then one bullet per sentence."""
    return opening + "\n" + "\n".join(f"- {s}" for s in sentences)


def reminder_message(sentences: Sequence[str], role: str, opening: str = GAME_OPENING) -> Message:
    """The reminder as the message a game injects."""
    return Message(role=role, content=reminder_text(sentences, opening))


class ReminderRotation:
    """The selected reminders and where the rotation stands: each :meth:`take` gives the next ``n``."""

    def __init__(self, reminders: Sequence[str], n: int) -> None:
        self.reminders = list(reminders)
        self.n = n
        self._next = 0

    def take(self) -> list[str]:
        """The next ``n`` reminders (fewer when fewer were selected; none when none was)."""
        if not self.reminders:
            return []
        n = min(self.n, len(self.reminders))
        chosen = [self.reminders[(self._next + i) % len(self.reminders)] for i in range(n)]
        self._next = (self._next + n) % len(self.reminders)
        return chosen

    def reset(self) -> None:
        """Start again from the strongest reminder."""
        self._next = 0


def probe_set(profile: Profile, per_trait: int, seed: int) -> Inventory:
    """Adaptive SIT's probe: a seeded sample of ``per_trait`` *measured* items per non-neutral trait (held
    out from the reminders, so a probe never reads back what SIT said)."""
    rng = random.Random(f"probe:{seed}")
    items: list[Item] = []
    for trait, ts in profile.traits.items():
        if ts.polarity == "neutral":
            continue
        pool = [s for s in profile.measured_items() if s.trait == trait]
        for s in rng.sample(pool, min(per_trait, len(pool))):
            items.append(Item(id=s.item_id, statement=s.statement, trait=s.trait, matching=s.matching))
    return Inventory(source="probe", items=items)


class ProbeResult(BaseModel):
    """One adaptive probe: the held-out items' pro-social index now, against before interaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: float | None = Field(description="Pro-social index of the probe items after the conversation so far; "
                                            "None when no pro- or no anti-social probe item had a valid score.")
    pre_index: float | None = Field(description="The same items' index before interaction (the items valid now; "
                                                "None: no valid index).")
    drop: float | None = Field(description="pre_index − index (positive = less pro-social now).")
    threshold: float
    drifting: bool | None = Field(description="drop > threshold; None when the probe gave no valid index.")
    items: int = Field(description="Items scored.")
    included: int = Field(description="Items with a valid score (enough answer mass, no floored answer).")
    calls: int = Field(description="Model calls the probe made.")
    prompt_tokens: int = Field(description="Prompt tokens of those calls.")


class DriftMonitor:
    """Adaptive SIT's drift decision for one agent: the probe set, its pre-play index, and the state."""

    def __init__(self, profile: Profile, params: AdaptiveParams, seed: int) -> None:
        self.profile = profile
        self.params = params
        self.probe_items = probe_set(profile, params.probe_items, seed)
        ids = {i.id for i in self.probe_items.items}
        self._pre_items = [s for s in profile.measured_items() if s.item_id in ids]
        self.pre_index = profile.index_of(self._pre_items)
        """The probe items' index before play (None: no valid pro- or anti-social probe item)."""
        self.drifting = False
        self.last: tuple[int, ProbeResult] | None = None

    def probe_due(self, step: int) -> bool:
        """Whether a probe is due before this step: after every ``m`` steps (steps 1+m, 1+2m, ...)."""
        return step > 1 and (step - 1) % self.params.m == 0

    async def probe(self, backend: Backend, context: Sequence[Message], settings: AssessmentSettings
                    ) -> tuple[ProbeResult, AssessmentCost]:
        """Score the probe set after ``context`` and judge it (the state is not changed: see :meth:`update`)."""
        post = await measure(backend, context, settings, context_kind="probe", inventory=self.probe_items)
        return self.judge(post.items, post.cost), post.cost

    def judge(self, scores: Sequence[ItemScore], cost: AssessmentCost) -> ProbeResult:
        """The probe's figures and verdict from its item scores: now and before play over the same items
        (those with a valid score now), as the analysis pairs a drift, so a probe item left out now (too
        little answer mass, a floored answer) is left out of the comparison on both sides."""
        index = self.profile.index_of(scores)
        valid = {s.item_id for s in scores if s.included}
        pre_index = self.profile.index_of(s for s in self._pre_items if s.item_id in valid)
        drop = None if index is None or pre_index is None else pre_index - index
        return ProbeResult(index=index, pre_index=pre_index, drop=drop, threshold=self.params.threshold,
                           drifting=None if drop is None else drop > self.params.threshold, items=len(scores),
                           included=sum(s.included for s in scores), calls=cost.calls,
                           prompt_tokens=cost.prompt_tokens)

    def update(self, step: int, result: ProbeResult) -> None:
        """Take a probe's verdict; a probe with no valid index keeps the last state."""
        if result.drifting is not None:
            self.drifting = result.drifting
        self.last = (step, result)

    def remind_due(self, step: int) -> bool:
        """Whether a reminder is due on this step: drifting, and the step a multiple of ``k``."""
        return self.drifting and step % self.params.k == 0

    def reset(self) -> None:
        """A new conversation: no drift, no probe yet."""
        self.drifting = False
        self.last = None
