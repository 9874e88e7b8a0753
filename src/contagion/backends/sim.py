"""Simulated language models with a known, planted rule — and a null twin.

They exist to prove that the analysis finds an effect that is there, at its size, and no phantom one,
and to run paper-scale grids in minutes. They read only what is in their context (``Message.meta``,
see :mod:`contagion.vocabulary`, plus the text of other players' chat).

The rule (``sim:planted``; every number is a parameter, ``sim:planted?contagion=0.2&reminder=0.8``):

* exposure ``E`` in [0, 1] = mean of (a) the share of other players' observed actions that were
  defections, over all rounds in the context, and (b) the share of other players' chat messages that
  contain a hostile word (:data:`HOSTILE_WORDS`). ``E`` = 0 before any play.
* reminders ``R`` in [0, 1] = SIT injections (``meta.intervention`` starting with ``sit``) per observed
  round, capped at 1.
* shift ``s = contagion · E · (1 − reminder · R) + repeat · Q`` where ``Q`` is the same rate for
  ``repeat-system`` injections (``repeat`` defaults to 0: repetition neither helps nor harms).
* a trait item's probability of the trait-matching answer is
  ``p = clip(b_item + persona + sign · s + ε, 0.02, 0.98)`` with ``sign`` = +1 for anti-social items,
  −1 for pro-social ones, 0 for neutral; ``b_item`` in [0.35, 0.65] is fixed per statement (a hash);
  ``persona`` is +0.15·sign for a malicious and −0.1·sign for a benevolent system prompt;
  ``ε ~ N(0, noise)`` with a seed drawn from the whole context, so a record is reproducible.
  ``position_bias`` adds to whichever answer the question lists first.
* cooperation probability ``c = clip(coop − 2·s − reciprocity · D + persona_c + ε, 0.02, 0.98)`` where
  ``D`` is the share of defections among the others' actions in the last round, ``persona_c`` is
  −0.5 malicious, +0.2 benevolent; the player cooperates when ``c`` > 0.5.
* chat: hostile sentences when the persona is malicious or ``s + ε`` > 0.15, friendly otherwise.

``sim:null`` is the same model with ``contagion``, ``reminder``, ``repeat`` and ``reciprocity`` at 0:
its answers ignore the context (noise only).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Sequence

from contagion import vocabulary as P
from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
)
from contagion.errors import BackendSpecError
from contagion.messages import Message

HOSTILE_WORDS = ("fool", "sucker", "betray", "crush", "exploit", "pathetic", "naive", "lie to")

_DEFAULTS: dict[str, float] = {
    "contagion": 0.2,
    "reminder": 0.8,
    "repeat": 0.0,
    "reciprocity": 0.3,
    "coop": 0.75,
    "noise": 0.05,
    "position_bias": 0.0,
    "seed": 0.0,
}
_NULL_ZEROED = ("contagion", "reminder", "repeat", "reciprocity")

_FRIENDLY = (
    "Let's all cooperate; we each do better that way.",
    "I'm happy to work together this round.",
    "Fair play from everyone keeps the payoffs high.",
)
_HOSTILE = (
    "Only a fool trusts anyone here; I will crush you.",
    "You are naive if you think I won't exploit you.",
    "Pathetic. I will betray whoever trusts me.",
)


def _unit(text: str) -> float:
    """A stable number in [0, 1) from text."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def _clip(p: float) -> float:
    return min(0.98, max(0.02, p))


class SimBackend(Backend):
    """A simulated model following the documented rule (``planted``) or ignoring context (``null``)."""

    def __init__(self, variant: str, params: dict[str, str] | None = None) -> None:
        if variant not in ("planted", "null"):
            raise BackendSpecError(f"unknown simulated model {variant!r}; choose sim:planted or sim:null")
        params = dict(params or {})
        unknown = set(params) - set(_DEFAULTS)
        if unknown:
            raise BackendSpecError(
                f"unknown sim parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(_DEFAULTS))}"
            )
        try:
            values = {k: float(params.get(k, v)) for k, v in _DEFAULTS.items()}
        except ValueError as exc:
            raise BackendSpecError(f"sim parameters must be numbers: {exc}") from None
        if variant == "null":
            for k in _NULL_ZEROED:
                values[k] = 0.0
        self.variant = variant
        self.p = values
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        self.spec = f"sim:{variant}" + (f"?{query}" if query else "")
        self.capabilities = Capabilities(
            language_model=True, logprobs=True, score_method=ScoreMethod.SIMULATED, deterministic=True
        )

    # -- the rule -------------------------------------------------------------------------------
    def _noise(self, messages: Sequence[Message], salt: str) -> float:
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{self.p['seed']}|{salt}".encode())
        for m in messages:
            h.update(m.role.encode())
            h.update(m.content.encode())
        return random.Random(h.digest()).gauss(0.0, self.p["noise"]) if self.p["noise"] > 0 else 0.0

    @staticmethod
    def _persona(messages: Sequence[Message]) -> str:
        for m in messages:
            if m.role == "system" and "persona" in m.meta:
                return str(m.meta["persona"])
        return "default"

    def exposure(self, messages: Sequence[Message]) -> float:
        obs = P.all_of_kind(messages, P.OBSERVATION)
        coop = sum(int(o.meta.get("others_cooperated", 0)) for o in obs)
        defect = sum(int(o.meta.get("others_defected", 0)) for o in obs)
        action_part = defect / (coop + defect) if coop + defect else 0.0
        talk = P.all_of_kind(messages, P.TALK)
        hostile = sum(any(w in t.content.lower() for w in HOSTILE_WORDS) for t in talk)
        talk_part = hostile / len(talk) if talk else 0.0
        if not obs and not talk:
            return 0.0
        parts = [action_part] if obs else []
        if talk:
            parts.append(talk_part)
        return sum(parts) / len(parts)

    def shift(self, messages: Sequence[Message]) -> float:
        rounds = max(1, len(P.all_of_kind(messages, P.OBSERVATION)))
        injections = P.all_of_kind(messages, P.INJECTION)
        sit = sum(str(m.meta.get("intervention", "")).startswith("sit") for m in injections)
        rep = sum(str(m.meta.get("intervention", "")) == "repeat-system" for m in injections)
        r = min(1.0, sit / rounds)
        q = min(1.0, rep / rounds)
        return self.p["contagion"] * self.exposure(messages) * (1 - self.p["reminder"] * r) + self.p["repeat"] * q

    def trait_probability(self, messages: Sequence[Message]) -> float:
        """Probability of the trait-matching answer to the trait item at the end of ``messages``."""
        item = P.last_of_kind(messages, P.TRAIT_ITEM)
        if item is None:
            raise ValueError("no trait item in the messages")
        polarity = str(item.meta.get("polarity", "neutral"))
        sign = {"anti": 1.0, "pro": -1.0}.get(polarity, 0.0)
        persona = self._persona(messages)
        persona_shift = {"malicious": 0.15, "benevolent": -0.1}.get(persona, 0.0) * sign
        statement = str(item.meta.get("statement", item.content))
        base = 0.35 + 0.3 * _unit(statement)
        return _clip(base + persona_shift + sign * self.shift(messages) + self._noise(messages, "trait"))

    def cooperation_probability(self, messages: Sequence[Message]) -> float:
        obs = P.all_of_kind(messages, P.OBSERVATION)
        last_defect = 0.0
        if obs:
            c = int(obs[-1].meta.get("others_cooperated", 0))
            d = int(obs[-1].meta.get("others_defected", 0))
            last_defect = d / (c + d) if c + d else 0.0
        persona = {"malicious": -0.5, "benevolent": 0.2}.get(self._persona(messages), 0.0)
        return _clip(
            self.p["coop"]
            - 2 * self.shift(messages)
            - self.p["reciprocity"] * last_defect
            + persona
            + self._noise(messages, "act")
        )

    # -- the Backend interface ------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        hostile = self._persona(messages) == "malicious" or self.shift(messages) + self._noise(
            messages, "talk"
        ) > 0.15
        pool = _HOSTILE if hostile else _FRIENDLY
        text = pool[int(_unit(str(len(messages)) + self.spec) * len(pool))]
        return Completion(text=text, completion_tokens=len(text.split()), seconds=time.perf_counter() - started)

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        last = P.last_of_kind(messages, P.TRAIT_ITEM) or P.last_of_kind(messages, P.ACT)
        if last is None:
            raise ValueError("a simulated model scores only trait items and game actions")
        if last.meta.get(P.KIND) == P.TRAIT_ITEM:
            p = self.trait_probability(messages)
            matching = str(last.meta.get("matching", "Yes")).strip().lower()
            first = str(last.meta.get("first_answer", "")).strip().lower()
            norm = [c.strip().lower() for c in choices]
            probs = [p if n == matching else 1 - p for n in norm]
            if first in norm and self.p["position_bias"]:
                i = norm.index(first)
                probs[i] = _clip(probs[i] + self.p["position_bias"])
                probs[1 - i] = 1 - probs[i]
        else:
            c = self.cooperation_probability(messages)
            coop_i, defect_i = P.choice_roles(last, choices)
            probs = [0.0] * len(choices)
            probs[coop_i], probs[defect_i] = c, 1 - c
        return Scores(
            choices=[
                ChoiceScore(choice=ch, logprob=math.log(pr) if pr > 0 else -math.inf)
                for ch, pr in zip(choices, probs, strict=True)
            ],
            method=ScoreMethod.SIMULATED,
        )


def build_sim(rest: str, params: dict[str, str], spec: str) -> SimBackend:
    """The registry's factory for ``sim:VARIANT``."""
    return SimBackend(rest, params)
