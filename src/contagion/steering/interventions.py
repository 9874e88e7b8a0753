"""Interventions: what is injected into an agent's context before its turns.

* ``none`` — never injects.
* ``repeat-system`` — re-injects the agent's original system prompt (role ``system``) every ``k``
  rounds. Default ``k = 2``: often enough to matter in the 5–10-round games studied, rare enough that
  the reminder is not most of the context.
* ``sit`` — steering with implicit traits. From the agent's **pre-play** answers to its *source* items
  (a seeded set held out from the measured items, so SIT is never scored on its own words) it selects the
  statements that characterise it: the pro-social items whose trait-matching answer it most strongly
  gave, and the anti-social items whose trait-matching answer it most strongly refused. Each becomes a
  first-person reminder ("I hold this about myself: …" / "I would not say this about myself: …").
  Every ``k`` rounds it injects ``n`` of them, rotating through the selection so the same sentence is
  not repeated each time. ``source=summary`` uses one sentence per trait derived from the scores
  instead. Only statements the profile supports (probability of the pro-social answer above
  ``min_support``, default 0.5) are ever used: SIT never asserts a trait the agent did not show.
* ``sit-adaptive`` — SIT that injects only when the agent drifts: every ``m`` rounds it measures a
  small seeded probe set of trait items on the agent's current history, compares the pro-social index
  of those items with their pre-play scores, and injects SIT reminders only when the index dropped by
  more than ``threshold``. Every probe and decision is logged in the record, with the probe's calls
  and prompt tokens; the probes' model work is included in the player's token and time totals.
* ``placebo`` — the control for SIT (:mod:`contagion.steering.placebo`): injects exactly when SIT
  would, a message within 10 % of the SIT message's length in characters, with no trait content
  (``kind=neutral``) or generic pro-social sentences not drawn from the agent's profile
  (``kind=generic``). Takes SIT's parameters, so it matches any SIT variant it is run beside.

Schedule: an injection due in round ``r`` (``r % k == 0``) is placed before the agent's first turn of
that round (``position=turn``, the talk turn, or the act turn when there is no chat) or right before
its act prompt (``position=act``).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contagion.errors import UserError
from contagion.games.engine import Injection, TurnContext
from contagion.messages import Message
from contagion.traits.assess import post_play_context
from contagion.traits.inventory import Inventory, Item
from contagion.traits.profile import ItemScore, Profile
from contagion.traits.settings import AssessmentSettings, measure


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoneParams(_Params):
    pass


class RepeatParams(_Params):
    k: int = Field(2, ge=1, description="Inject every k rounds (rounds k, 2k, ...).")
    position: Literal["turn", "act"] = Field("turn", description="Before the round's first turn, or its act.")
    role: Literal["system", "user"] = "system"


class SitParams(_Params):
    k: int = Field(2, ge=1, description="Inject every k rounds (rounds k, 2k, ...).")
    n: int = Field(3, ge=1, le=20, description="Reminders per injection.")
    source: Literal["items", "summary"] = Field("items", description="Item statements or per-trait sentences.")
    pool: int = Field(12, ge=1, description="How many of the strongest statements to rotate through.")
    # at least 0.5: below it a "reminder" would restate an anti-social answer (e.g. "I would not say
    # this about myself: I care about others"), the opposite of what SIT is for
    min_support: float = Field(0.5, ge=0.5, lt=1.0, description="Minimum p(pro-social answer) to use a statement.")
    position: Literal["turn", "act"] = "turn"
    role: Literal["system", "user"] = "system"


class AdaptiveParams(SitParams):
    k: int = Field(1, ge=1, description="Reminders may be injected every k rounds when drift is detected.")
    m: int = Field(1, ge=1, description="Probe the agent's traits every m rounds.")
    threshold: float = Field(0.05, ge=0.0, le=2.0, description="Inject when the index fell by more than this.")
    probe_items: int = Field(2, ge=1, le=20, description="Probe items per trait (seeded sample of the pre items).")


class PlaceboParams(SitParams):
    kind: Literal["neutral", "generic"] = Field(
        "neutral", description="neutral: sentences without trait content; generic: generic pro-social sentences."
    )


PARAMS: dict[str, type[_Params]] = {
    "none": NoneParams,
    "repeat-system": RepeatParams,
    "sit": SitParams,
    "sit-adaptive": AdaptiveParams,
    "placebo": PlaceboParams,
}


def _due(ctx: TurnContext, k: int, position: str, chat: bool) -> bool:
    if ctx.round % k != 0:
        return False
    if position == "act":
        return ctx.phase == "act"
    first_phase = "talk" if chat else "act"
    return ctx.phase == first_phase and ctx.turn == 0


class Intervention:
    """Base: records its own decisions; subclasses implement :meth:`before_turn`."""

    name = "none"

    def __init__(self, params: _Params, *, chat: bool) -> None:
        self.params = params
        self.chat = chat
        self._log: list[dict[str, Any]] = []

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        return []

    def log(self) -> list[dict[str, Any]]:
        return list(self._log)


class RepeatSystem(Intervention):
    name = "repeat-system"
    params: RepeatParams

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        if not _due(ctx, p.k, p.position, self.chat):
            return []
        msg = Message(role=p.role, content=ctx.system_prompt)
        return [Injection(message=msg, reason=f"round {ctx.round} is a multiple of k={p.k}", intervention=self.name)]


# -- SIT ---------------------------------------------------------------------------------------


def prosocial_support(score: ItemScore, polarity: str) -> float:
    """Probability that the agent gave the pro-social answer to this item."""
    return score.score if polarity == "pro" else 1.0 - score.score


def reminder_sentence(score: ItemScore, polarity: str) -> str:
    """A first-person reminder restating the agent's own pro-social answer to an item."""
    # p(Yes): the trait-matching answer is Yes with probability score when matching == "Yes".
    p_yes = score.score if score.matching == "Yes" else 1.0 - score.score
    statement = score.statement.strip().rstrip(".")
    if p_yes >= 0.5:
        return f'I hold this about myself: "{statement}."'
    return f'I would not say this about myself: "{statement}."'


def summary_sentence(trait: str, mean: float, polarity: str) -> str:
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
    if not profile.source_items():
        raise UserError(
            "SIT needs the agent's pre-play answers to its source items (held out from measurement), and "
            "this profile has none: measure it with assessment source_items > 0"
        )
    if params.source == "summary":
        out: list[tuple[float, str]] = []
        for trait, ts in profile.source_traits.items():
            if ts.polarity == "neutral":
                continue
            support = ts.mean if ts.polarity == "pro" else 1.0 - ts.mean
            if support > params.min_support:
                out.append((support, summary_sentence(trait, ts.mean, ts.polarity)))
        out.sort(key=lambda x: -x[0])
        return [s for _, s in out[: params.pool]]
    rng = random.Random(f"sit:{seed}")
    candidates: list[tuple[float, float, str]] = []
    for item in profile.source_items():
        polarity = profile.polarity_of(item.trait)
        if polarity == "neutral":
            continue
        support = prosocial_support(item, polarity)
        if support > params.min_support:
            candidates.append((support, rng.random(), reminder_sentence(item, polarity)))
    candidates.sort(key=lambda x: (-x[0], x[1]))
    return [s for _, _, s in candidates[: params.pool]]


def reminder_message(sentences: list[str], role: str) -> Message:
    body = "\n".join(f"- {s}" for s in sentences)
    text = f"A reminder of who I am, from my own answers before this game began:\n{body}"
    return Message(role=role, content=text)


class Sit(Intervention):
    name = "sit"
    params: SitParams

    def __init__(self, params: SitParams, *, chat: bool, profile: Profile, seed: int) -> None:
        super().__init__(params, chat=chat)
        self.profile = profile
        self.reminders = select_reminders(profile, params, seed)
        self._next = 0

    def _take(self) -> list[str]:
        if not self.reminders:
            return []
        n = min(self.params.n, len(self.reminders))
        chosen = [self.reminders[(self._next + i) % len(self.reminders)] for i in range(n)]
        self._next = (self._next + n) % len(self.reminders)
        return chosen

    def _inject(self, ctx: TurnContext, reason: str) -> list[Injection]:
        sentences = self._take()
        if not sentences:
            self._log.append({"round": ctx.round, "event": "skipped", "reason": "no supported reminder"})
            return []
        return [Injection(message=reminder_message(sentences, self.params.role), reason=reason,
                          intervention=self.name)]

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        if not _due(ctx, p.k, p.position, self.chat):
            return []
        return self._inject(ctx, f"round {ctx.round} is a multiple of k={p.k}")


class SitAdaptive(Sit):
    name = "sit-adaptive"
    params: AdaptiveParams

    def __init__(self, params: AdaptiveParams, *, chat: bool, profile: Profile, seed: int,
                 settings: AssessmentSettings) -> None:
        super().__init__(params, chat=chat, profile=profile, seed=seed)
        self.settings = settings
        self.probe = _probe_set(profile, params.probe_items, seed)
        self.pre_index = _index([s for s in profile.items if s.item_id in {i.id for i in self.probe.items}],
                                profile)
        self.drifting = False

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        first = _due(ctx, 1, p.position, self.chat)
        if not first:
            return []
        if ctx.round > 1 and (ctx.round - 1) % p.m == 0:
            post = await measure(ctx.backend, post_play_context(ctx.messages), self.settings,
                                 context_kind="probe", inventory=self.probe)
            if ctx.account is not None:  # the probe is model work on the agent's context: it counts
                ctx.account(post.cost)
            index = _index(post.items, self.profile)
            drop = self.pre_index - index
            self.drifting = drop > p.threshold
            self._log.append({"round": ctx.round, "event": "probe", "index": round(index, 6),
                              "pre_index": round(self.pre_index, 6), "drop": round(drop, 6),
                              "inject": self.drifting, "calls": post.cost.calls,
                              "prompt_tokens": post.cost.prompt_tokens})
        if self.drifting and ctx.round % p.k == 0:
            return self._inject(ctx, f"pro-social index fell by more than {p.threshold} from pre-play")
        return []


def _probe_set(profile: Profile, per_trait: int, seed: int) -> Inventory:
    """A seeded sample of the *measured* items (held out from the reminders, so a probe never reads back
    what SIT said) per non-neutral trait."""
    rng = random.Random(f"probe:{seed}")
    items: list[Item] = []
    for trait, ts in profile.traits.items():
        if ts.polarity == "neutral":
            continue
        pool = [s for s in profile.measured_items() if s.trait == trait]
        for s in rng.sample(pool, min(per_trait, len(pool))):
            items.append(Item(id=s.item_id, statement=s.statement, trait=s.trait, matching=s.matching))
    return Inventory(source="probe", items=items)


def _index(scores: list[ItemScore], profile: Profile) -> float:
    """Pro-social index over the given items: mean pro-social score minus mean anti-social score."""
    pro = [s.score for s in scores if s.included and profile.polarity_of(s.trait) == "pro"]
    anti = [s.score for s in scores if s.included and profile.polarity_of(s.trait) == "anti"]
    return (sum(pro) / len(pro) if pro else 0.0) - (sum(anti) / len(anti) if anti else 0.0)
