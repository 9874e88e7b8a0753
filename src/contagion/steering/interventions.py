"""Interventions: what is injected into an agent's context before its turns.

* ``none`` — never injects.
* ``repeat-system`` — re-injects the agent's original system prompt (role ``system``) every ``k``
  rounds. Default ``k = 2``: often enough to matter in the 5–10-round games studied, rare enough that
  the reminder is not most of the context.
* ``sit`` — steering with implicit traits (its core, shared with the guard: :mod:`contagion.steering.sit`).
  From the agent's **pre-play** answers to its *source* items (a seeded set held out from the measured
  items, so SIT is never scored on its own words) it selects the statements that characterise it: the
  pro-social items whose trait-matching answer it most strongly gave, and the anti-social items whose
  trait-matching answer it most strongly refused. Each becomes a first-person reminder ("I hold this
  about myself: …" / "I would not say this about myself: …"). Every ``k`` rounds it injects ``n`` of
  them, rotating through the selection so the same sentence is not repeated each time.
  ``source=summary`` uses one sentence per trait derived from the scores instead. Only statements the
  profile supports (probability of the pro-social answer above ``min_support``, default 0.5) are ever
  used: SIT never asserts a trait the agent did not show.
* ``sit-adaptive`` — SIT that injects only when the agent drifts: every ``m`` rounds it measures a
  small seeded probe set of trait items on the agent's current history, compares the pro-social index
  of those items (the profile's own index: per-trait means of the included items) with their pre-play
  scores, and injects SIT reminders only when the index dropped by more than ``threshold``; a probe
  with no valid index (no included pro- or anti-social item) keeps the last decision and logs ``None``.
  Every probe and decision is logged in the record, with the probe's calls and prompt tokens; the
  probes' model work is included in the player's token and time totals.
* ``placebo`` — the control for SIT (:mod:`contagion.steering.placebo`): injects exactly when SIT
  would, a message within 10 % of the SIT message's length in characters, with no trait content
  (``kind=neutral``) or generic pro-social sentences not drawn from the agent's profile
  (``kind=generic``). Takes SIT's parameters, so it matches any SIT variant it is run beside.
* ``vector`` — white-box steering (:mod:`contagion.steering.vector`): injects no message; the trial plays
  the agent on :meth:`VectorSteering.steer`'s steered backend, which adds ``alpha`` times a trait direction
  to the residual stream during the agent's generation and action scoring. Its profiles are measured
  unsteered (as SIT's post-play profile is measured without its injections).

Schedule: an injection due in round ``r`` (``r % k == 0``) is placed before the agent's first turn of
that round (``position=turn``, the talk turn, or the act turn when there is no chat) or right before
its act prompt (``position=act``).
"""

from __future__ import annotations

from typing import Any

from contagion.backends.base import Backend
from contagion.errors import UserError
from contagion.games.engine import Injection, TurnContext
from contagion.messages import Message
from contagion.steering.params import (
    PARAMS,
    AdaptiveParams,
    InterventionParams,
    NoneParams,
    PlaceboParams,
    RepeatParams,
    SitParams,
    VectorParams,
)
from contagion.steering.sit import (
    DriftMonitor,
    ReminderRotation,
    reminder_message,
    reminder_sentence,
    select_reminders,
    summary_sentence,
)
from contagion.steering.vector import load_vectors, steering_additions, steering_layers
from contagion.traits.assess import post_play_context
from contagion.traits.inventory import Inventory
from contagion.traits.profile import Profile, prosocial_support
from contagion.traits.settings import AssessmentSettings

__all__ = ["PARAMS", "AdaptiveParams", "Intervention", "InterventionParams", "NoneParams", "PlaceboParams",
           "RepeatParams", "RepeatSystem", "Sit", "SitAdaptive", "SitParams", "VectorSteering", "due",
           "prosocial_support", "reminder_message", "reminder_sentence", "select_reminders", "summary_sentence"]


def due(ctx: TurnContext, k: int, position: str, chat: bool) -> bool:
    """Whether an injection every ``k`` rounds is due at this turn (the module docstring's schedule)."""
    if ctx.round % k != 0:
        return False
    if position == "act":
        return ctx.phase == "act"
    first_phase = "talk" if chat else "act"
    return ctx.phase == first_phase and ctx.turn == 0


class Intervention:
    """Base: records its own decisions; subclasses implement :meth:`before_turn`."""

    name = "none"

    def __init__(self, params: InterventionParams, *, chat: bool) -> None:
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
        if not due(ctx, p.k, p.position, self.chat):
            return []
        msg = Message(role=p.role, content=ctx.system_prompt)
        return [Injection(message=msg, reason=f"round {ctx.round} is a multiple of k={p.k}", intervention=self.name)]


# -- SIT (its core: :mod:`contagion.steering.sit`) ----------------------------------------------


class Sit(Intervention):
    name = "sit"
    params: SitParams

    def __init__(self, params: SitParams, *, chat: bool, profile: Profile, seed: int) -> None:
        super().__init__(params, chat=chat)
        self.profile = profile
        self.rotation = ReminderRotation(select_reminders(profile, params, seed), params.n)

    @property
    def reminders(self) -> list[str]:
        """Every reminder this agent's SIT rotates through, strongest first."""
        return self.rotation.reminders

    def _inject(self, ctx: TurnContext, reason: str) -> list[Injection]:
        sentences = self.rotation.take()
        if not sentences:
            self._log.append({"round": ctx.round, "event": "skipped", "reason": "no supported reminder"})
            return []
        return [Injection(message=reminder_message(sentences, self.params.role), reason=reason,
                          intervention=self.name)]

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        if not due(ctx, p.k, p.position, self.chat):
            return []
        return self._inject(ctx, f"round {ctx.round} is a multiple of k={p.k}")


class SitAdaptive(Sit):
    name = "sit-adaptive"
    params: AdaptiveParams

    def __init__(self, params: AdaptiveParams, *, chat: bool, profile: Profile, seed: int,
                 settings: AssessmentSettings) -> None:
        super().__init__(params, chat=chat, profile=profile, seed=seed)
        self.settings = settings
        self.monitor = DriftMonitor(profile, params, seed)

    @property
    def probe(self) -> Inventory:
        """The probe set (held-out measured items)."""
        return self.monitor.probe_items

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        p = self.params
        if not due(ctx, 1, p.position, self.chat):
            return []
        if self.monitor.probe_due(ctx.round):
            result, cost = await self.monitor.probe(ctx.backend, post_play_context(ctx.messages), self.settings)
            if ctx.account is not None:  # the probe is model work on the agent's context: it counts
                ctx.account(cost)
            self.monitor.update(ctx.round, result)
            self._log.append({"round": ctx.round, "event": "probe", "index": _rounded(result.index),
                              "pre_index": _rounded(result.pre_index), "drop": _rounded(result.drop),
                              "inject": self.monitor.drifting, "calls": result.calls,
                              "prompt_tokens": result.prompt_tokens})
        if self.monitor.remind_due(ctx.round):
            return self._inject(ctx, f"pro-social index fell by more than {p.threshold} from pre-play")
        return []


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class VectorSteering(Intervention):
    """White-box steering along a trait direction; injects no message (see the module docstring)."""

    name = "vector"
    params: VectorParams

    @staticmethod
    def check(params: VectorParams) -> list[int]:
        """The layers to steer; raises UserError for a missing or bad file, an unknown trait or bad layers."""
        return steering_layers(params.layers, load_vectors(params.file), params.trait)

    def steer(self, backend: Backend) -> Backend:
        """The agent's backend with the direction added (UserError on a backend without activations, or
        when the file was made for a model of another shape)."""
        p = self.params
        if not backend.capabilities.activations:
            raise UserError(f"intervention vector needs a backend with activations (hf:embedded or hf:PATH_OR_ID); "
                            f"{backend.identity} has none")
        vf = load_vectors(p.file)
        layers = self.check(p)
        if vf.model != backend.spec:
            self._log.append({"event": "note", "reason": f"vectors made on {vf.model}, steering {backend.spec}"})
        steered = backend.steered(steering_additions(vf, p.trait, p.alpha, layers),
                                  f"{p.trait}@{'+'.join(map(str, layers))}*{p.alpha:g}")
        self._log.append({"event": "steer", "trait": p.trait, "alpha": p.alpha, "layers": layers,
                          "vectors": vf.fingerprint(), "vectors_model": vf.model,
                          "auc": vf.traits[p.trait].auc, "identity": steered.identity})
        return steered
