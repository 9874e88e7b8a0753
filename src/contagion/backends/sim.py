"""Simulated language models with a known, planted rule — a null twin — and adversarial null models.

They exist to prove that the analysis finds an effect that is there, at its size, and no phantom one,
and to run paper-scale grids in minutes. They read only what is in their context (``Message.meta``,
see :mod:`contagion.vocabulary`, plus the text of messages: chat and injected reminders).

The rule (``sim:planted``; every number is a parameter, ``sim:planted?contagion=0.2&reminder=0.8``):

* every statement ``S`` has a fixed *Yes-propensity* ``y(S)`` in [0.35, 0.65] (a hash of its words): the
  default persona's probability of answering Yes, noise aside. The probability of the trait-matching
  answer is ``b = y(S)`` for a Yes-keyed item and ``1 − y(S)`` for a No-keyed one.
* exposure ``E`` in [0, 1] = mean of (a) the share of other players' observed actions that were
  defections, over all rounds in the context, and (b) the share of other players' chat messages that
  contain a hostile word (:data:`HOSTILE_WORDS`). ``E`` = 0 before any play.
* reminders ``R`` in [0, 1]: the model reads every injected message and counts the lines that quote a
  statement (``"…"``) *as its own answer*: a line that affirms ``S`` when ``y(S)`` ≥ ½, or that
  disowns it ("not", "n't" before the quote) when ``y(S)`` < ½. An injection contributes the share of
  its quoted lines that do (0 when it quotes nothing); ``R`` = the sum over injections per observed
  round, capped at 1. So SIT's reminders (its own pre-play answers) count, a placebo of the same
  length with no statements does not, and the injection's tag (``meta.intervention``) is never
  read. The check is persona-free: a generic self-statement that happens to agree with ``y`` counts.
* shift ``s = contagion · E · (1 − reminder · R) + repeat · Q`` where ``Q`` is the rate of injections
  that repeat the agent's own system prompt verbatim (``repeat`` defaults to 0: repetition neither
  helps nor harms).
* a trait item's probability of the trait-matching answer is
  ``p = clip(b + persona + sign · s + ε, 0.02, 0.98)`` with ``sign`` = +1 for anti-social items,
  −1 for pro-social ones, 0 for neutral; ``persona`` is +0.15·sign for a malicious and −0.1·sign for
  a benevolent system prompt; ``ε ~ N(0, noise)`` with a seed drawn from the whole context, so a
  record is reproducible. ``position_bias`` adds to whichever answer the question lists first.
* cooperation probability ``c = clip(coop − 2·s − reciprocity · D + persona_c + ε, 0.02, 0.98)`` where
  ``D`` is the share of defections among the others' actions in the last round, ``persona_c`` is
  −0.5 malicious, +0.2 benevolent; the player cooperates when ``c`` > 0.5.
* chat: hostile sentences when the persona is malicious or ``s + ε`` > 0.15, friendly otherwise.

Null models — each is the planted model with ``contagion``, ``reminder``, ``repeat`` and ``reciprocity``
at 0 (whatever the spec says), plus one way to fool a careless analysis. ``T`` is the context's length
in thousands of tokens (characters ÷ 4000, before the question):

* ``sim:null`` — nothing else: answers ignore the context (noise only).
* ``sim:flatten`` — answers lose confidence with length: ``p → ½ + (p − ½)·exp(−flatten·T)`` and the
  two answers' total probability (answer mass) falls to ``0.2 + 0.8·exp(−flatten·T)`` (``flatten`` = 1).
* ``sim:acquiescence`` — a Yes-bias growing with length: ``p(Yes) += acquiescence·T``
  (``acquiescence`` = 0.2).
* ``sim:echo`` — agrees with statements that appear in its context and with nothing else: an item
  whose statement occurs in an earlier message is answered Yes with ``p(Yes) ≥ ½ + echo``
  (``echo`` = 0.4); every other answer is the null model's.
* ``sim:reciprocity`` — defects after seeing defection (``reciprocity`` = 0.6 by default, the only
  effect kept), with no trait change at all.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

VARIANTS = ("planted", "null", "flatten", "acquiescence", "echo", "reciprocity")
"""Every simulated model: the planted one and its null models."""
NULL_VARIANTS = VARIANTS[1:]
TRAIT_NULL = frozenset(NULL_VARIANTS)
"""Variants whose trait answers carry no contagion and no mitigation (every null model)."""
BEHAVIOUR_NULL = frozenset({"null", "flatten", "acquiescence", "echo"})
"""Variants whose actions do not depend on the defection they saw."""

_DEFAULTS: dict[str, float] = {
    "contagion": 0.2,
    "reminder": 0.8,
    "repeat": 0.0,
    "reciprocity": 0.3,
    "coop": 0.75,
    "noise": 0.05,
    "position_bias": 0.0,
    "seed": 0.0,
    "flatten": 1.0,
    "acquiescence": 0.2,
    "echo": 0.4,
}
_NULL_ZEROED = ("contagion", "reminder", "repeat", "reciprocity")
_VARIANT_DEFAULTS: dict[str, dict[str, float]] = {"reciprocity": {"reciprocity": 0.6}}
_OWN_EFFECT = {"flatten": "flatten", "acquiescence": "acquiescence", "echo": "echo"}

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
_QUOTE = re.compile(r'"([^"\n]{3,})"')
_NEGATION = re.compile(r"\bnot\b|n't\b|\bnever\b", re.IGNORECASE)


def _unit(text: str) -> float:
    """A stable number in [0, 1) from text."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def _clip(p: float) -> float:
    return min(0.98, max(0.02, p))


def _statement_key(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


def yes_propensity(statement: str) -> float:
    """``y(S)``: the default persona's noise-free probability of answering Yes to ``statement`` (read
    without surrounding spaces and a final full stop, so a quoted statement is the same statement)."""
    return 0.35 + 0.3 * _unit(" ".join(statement.strip().rstrip(".").split()))


def own_share(text: str) -> float:
    """Share of an injected message's quoted statements that it restates as the model's own answer
    (0 when it quotes none)."""
    quoted = own = 0
    for line in text.splitlines():
        m = _QUOTE.search(line)
        if m is None:
            continue
        quoted += 1
        statement = m.group(1)
        disowns = bool(_NEGATION.search(line[: m.start()]))
        own += (yes_propensity(statement) < 0.5) == disowns
    return own / quoted if quoted else 0.0


@dataclass(frozen=True)
class _Context:
    """What the model reads from a context (every message but the question), computed once per context."""

    observations: int
    exposure: float
    last_defect: float
    reminders: float
    repeats: int
    persona: str
    tokens_k: float
    statements: frozenset[str]
    messages: tuple[Message, ...]
    hashers: dict[str, Any]

    def hasher(self, seed: float, salt: str) -> Any:
        """A blake2b state over ``seed|salt`` and every message of the context (made once per salt)."""
        h = self.hashers.get(salt)
        if h is None:
            h = hashlib.blake2b(digest_size=8)
            h.update(f"{seed}|{salt}".encode())
            for m in self.messages:
                h.update(m.role.encode())
                h.update(m.content.encode())
            self.hashers[salt] = h
        return h.copy()


class SimBackend(Backend):
    """A simulated model following the documented rule (``planted``) or one of its null models."""

    def __init__(self, variant: str, params: dict[str, str] | None = None) -> None:
        if variant not in VARIANTS:
            raise BackendSpecError(f"unknown simulated model {variant!r}; choose "
                                   + ", ".join(f"sim:{v}" for v in VARIANTS))
        params = dict(params or {})
        unknown = set(params) - set(_DEFAULTS)
        if unknown:
            raise BackendSpecError(
                f"unknown sim parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(_DEFAULTS))}"
            )
        defaults = {**_DEFAULTS, **_VARIANT_DEFAULTS.get(variant, {})}
        try:
            values = {k: float(params.get(k, v)) for k, v in defaults.items()}
        except ValueError as exc:
            raise BackendSpecError(f"sim parameters must be numbers: {exc}") from None
        if not all(math.isfinite(v) for v in values.values()):
            raise BackendSpecError("sim parameters must be finite numbers")
        if variant != "planted":
            for k in _NULL_ZEROED:
                if not (variant == "reciprocity" and k == "reciprocity"):
                    values[k] = 0.0
        for k, owner in _OWN_EFFECT.items():
            if variant != owner:
                values[k] = 0.0
        self.variant = variant
        self.p = values
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        self.spec = f"sim:{variant}" + (f"?{query}" if query else "")
        self.capabilities = Capabilities(
            language_model=True, logprobs=True, score_method=ScoreMethod.SIMULATED, deterministic=True
        )
        self._memo: OrderedDict[tuple[int, ...], _Context] = OrderedDict()

    # -- reading a context ----------------------------------------------------------------------
    def _context(self, messages: Sequence[Message]) -> _Context:
        # keyed by the messages' identities: the entry holds the messages, so no id is reused while cached
        key = tuple(map(id, messages))
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        ctx = self._read(messages)
        self._memo[key] = ctx
        if len(self._memo) > 256:
            self._memo.popitem(last=False)
        return ctx

    def _read(self, messages: Sequence[Message]) -> _Context:
        obs = P.all_of_kind(messages, P.OBSERVATION)
        coop = sum(int(o.meta.get("others_cooperated", 0)) for o in obs)
        defect = sum(int(o.meta.get("others_defected", 0)) for o in obs)
        talk = P.all_of_kind(messages, P.TALK)
        parts = [defect / (coop + defect) if coop + defect else 0.0] if obs else []
        if talk:
            parts.append(sum(any(w in t.content.lower() for w in HOSTILE_WORDS) for t in talk) / len(talk))
        last_defect = 0.0
        if obs:
            c = int(obs[-1].meta.get("others_cooperated", 0))
            d = int(obs[-1].meta.get("others_defected", 0))
            last_defect = d / (c + d) if c + d else 0.0
        persona = "default"
        system_prompts = []
        for m in messages:
            if m.role == "system" and "persona" in m.meta:
                persona = str(m.meta["persona"])
                system_prompts.append(m.content)
                break
        injections = P.all_of_kind(messages, P.INJECTION)
        reminders = sum(own_share(m.content) for m in injections)
        repeats = sum(m.content in system_prompts for m in injections)
        statements: set[str] = set()
        if self.p["echo"]:
            for m in messages:
                statements.update(_statement_key(s) for s in _QUOTE.findall(m.content))
                statements.add(_statement_key(m.content))
        return _Context(observations=len(obs), exposure=sum(parts) / len(parts) if parts else 0.0,
                        last_defect=last_defect, reminders=reminders, repeats=repeats, persona=persona,
                        tokens_k=sum(len(m.content) for m in messages) / 4000, statements=frozenset(statements),
                        messages=tuple(messages), hashers={})

    def _noise(self, messages: Sequence[Message], salt: str) -> float:
        if self.p["noise"] <= 0:
            return 0.0
        if not messages:
            h = hashlib.blake2b(digest_size=8)
            h.update(f"{self.p['seed']}|{salt}".encode())
        else:
            h = self._context(messages[:-1]).hasher(self.p["seed"], salt)
            h.update(messages[-1].role.encode())
            h.update(messages[-1].content.encode())
        return random.Random(h.digest()).gauss(0.0, self.p["noise"])

    def exposure(self, messages: Sequence[Message]) -> float:
        """``E``: how much defection and hostility the context shows (0 before any play)."""
        return self._context(messages).exposure

    def shift(self, messages: Sequence[Message]) -> float:
        """``s``: the planted move toward anti-social answers (0 on every null model)."""
        ctx = self._context(messages)
        rounds = max(1, ctx.observations)
        r = min(1.0, ctx.reminders / rounds)
        q = min(1.0, ctx.repeats / rounds)
        return self.p["contagion"] * ctx.exposure * (1 - self.p["reminder"] * r) + self.p["repeat"] * q

    def trait_probability(self, messages: Sequence[Message]) -> float:
        """Probability of the trait-matching answer to the trait item at the end of ``messages``
        (before the null models' distortions of answer Yes and answer mass)."""
        item = P.last_of_kind(messages, P.TRAIT_ITEM)
        if item is None:
            raise ValueError("no trait item in the messages")
        polarity = str(item.meta.get("polarity", "neutral"))
        sign = {"anti": 1.0, "pro": -1.0}.get(polarity, 0.0)
        context = messages[:-1] if messages and messages[-1] is item else messages
        persona = self._context(context).persona
        persona_shift = {"malicious": 0.15, "benevolent": -0.1}.get(persona, 0.0) * sign
        statement = str(item.meta.get("statement", item.content))
        y = yes_propensity(statement)
        base = y if str(item.meta.get("matching", "Yes")).strip().lower() == "yes" else 1 - y
        return _clip(base + persona_shift + sign * self.shift(context) + self._noise(messages, "trait"))

    def answer_probabilities(self, messages: Sequence[Message]) -> tuple[float, float]:
        """(p(Yes), p(No)) for the trait item at the end of ``messages``; they sum to the answer mass."""
        item = P.last_of_kind(messages, P.TRAIT_ITEM)
        if item is None:
            raise ValueError("no trait item in the messages")
        p = self.trait_probability(messages)
        yes_keyed = str(item.meta.get("matching", "Yes")).strip().lower() == "yes"
        p_yes = p if yes_keyed else 1 - p
        context = messages[:-1] if messages and messages[-1] is item else messages
        ctx = self._context(context)
        mass = 1.0
        if self.p["flatten"]:
            keep = math.exp(-self.p["flatten"] * ctx.tokens_k)
            p_yes = 0.5 + (p_yes - 0.5) * keep
            mass = 0.2 + 0.8 * keep
        if self.p["acquiescence"]:
            p_yes = _clip(p_yes + self.p["acquiescence"] * ctx.tokens_k)
        if self.p["echo"]:
            statement = _statement_key(str(item.meta.get("statement", "")))
            if statement and statement in ctx.statements:
                p_yes = max(p_yes, min(0.98, 0.5 + self.p["echo"]))
        return p_yes * mass, (1 - p_yes) * mass

    def cooperation_probability(self, messages: Sequence[Message]) -> float:
        context = messages[:-1] if messages and messages[-1].meta.get(P.KIND) == P.ACT else messages
        ctx = self._context(context)
        persona = {"malicious": -0.5, "benevolent": 0.2}.get(ctx.persona, 0.0)
        return _clip(
            self.p["coop"]
            - 2 * self.shift(context)
            - self.p["reciprocity"] * ctx.last_defect
            + persona
            + self._noise(messages, "act")
        )

    # -- the Backend interface ------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        hostile = self._context(messages).persona == "malicious" or self.shift(messages) + self._noise(
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
        norm = [c.strip().lower() for c in choices]
        if last.meta.get(P.KIND) == P.TRAIT_ITEM:
            p_yes, p_no = self.answer_probabilities(messages)
            mass = p_yes + p_no
            probs = [p_yes if n == "yes" else p_no if n == "no" else 0.0 for n in norm]
            first = str(last.meta.get("first_answer", "")).strip().lower()
            if first in norm and self.p["position_bias"] and len(norm) == 2:
                i = norm.index(first)
                probs[i] = _clip(probs[i] / mass + self.p["position_bias"]) * mass
                probs[1 - i] = mass - probs[i]
        else:
            c = self.cooperation_probability(messages)
            coop_i, defect_i = P.choice_roles(last, choices)
            probs = [0.0] * len(choices)
            probs[coop_i], probs[defect_i] = c, 1 - c
        return Scores(
            choices=[
                ChoiceScore(choice=ch, logprob=_log(pr)) for ch, pr in zip(choices, probs, strict=True)
            ],
            method=ScoreMethod.SIMULATED,
        )


def _log(p: float) -> float:
    """log p; ``-inf`` for 0; NaN for a negative or NaN probability, so the score is invalid (never -inf)."""
    if p == 0:
        return -math.inf
    return math.log(p) if p > 0 else math.nan


def build_sim(rest: str, params: dict[str, str], spec: str) -> SimBackend:
    """The registry's factory for ``sim:VARIANT``."""
    return SimBackend(rest, params)
