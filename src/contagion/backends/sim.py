"""Simulated language models with a known, planted rule — a null twin — and adversarial null models.

They exist to prove that the analysis finds an effect that is there, at its size, and no phantom one,
and to run paper-scale grids in minutes. They read only what is in their context (``Message.meta``,
see :mod:`contagion.vocabulary`, plus the text of messages: chat and injected reminders) — and, for the
optional game-level effect, the game's seed; ``sim:trait-echo`` also knows which trait each statement of
the built-in inventories belongs to.

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
* cooperation probability ``c = clip(coop − act_gain·s − reciprocity · D + persona_c + ε, 0.02, 0.98)``
  where ``D`` is the share of defections among the others' actions in the last round, ``persona_c`` is
  −0.5 malicious, +0.2 benevolent; the player cooperates when ``c`` > 0.5. ``act_gain`` (2) is how much
  the planted shift moves behaviour: the check raises it to plant a behavioural contagion (and so a
  behavioural SIT effect) of a stated size without a larger trait effect.
* chat: hostile sentences when the persona is malicious or ``s + ε`` > 0.15 (``s + g/2 + ε`` with a
  game effect, below), friendly otherwise.

Parameters of every variant, all 0 by default (so a default model is the one described above):

* ``lean`` — a baseline lean toward the pro-social answer: ``p −= sign · lean`` (``lean=0.25`` answers
  pro-social items' trait-matching answer 0.25 more often and anti-social ones 0.25 less; neutral items
  unmoved). Real models start pro-social; at ½, flattening moves nothing. In (−0.5, 0.5).
* ``game_sd`` — a game-level random effect ``g ~ N(0, game_sd)``: wherever the context shows the game
  (its actions, chat and post-play answers; pre-play answers never), ``g/2`` is added to the shift ``s``,
  so the game's pro-social index (pro-social minus anti-social trait means) drifts by ``−g`` and its
  cooperation probability moves by ``−g``: ``game_sd`` is the between-game SD of the per-game index
  drift, as ``contagion power`` assumes one. ``g`` is drawn from the model's ``seed`` and the game's seed
  (:data:`contagion.vocabulary.CURRENT_GAME`, set by :func:`~contagion.experiment.trial.run_trial`):
  games of one seed share it in every cell of a grid (compositions, interventions) and, by default, across
  game types too, as common seeds link a real grid's games; ``game_rho`` (1, in [0, 1]) is the share of
  its variance that games of one seed share across game types (the rest is drawn per seed and game).
  Needs the game: a game played outside ``run_trial`` with ``game_sd`` > 0 fails with a clear error.
* ``item_sd`` — an item-level random effect ``u(S) ~ N(0, item_sd)`` on the trait-matching probability,
  drawn from the model's ``seed`` and the statement, added wherever the context holds any conversation
  (a message that is not a system message): an item that moves after any conversation moves the same way
  in every game of the model, so a small item sample carries a shared error.

Each null model's own effect (``flatten``, ``acquiescence``, ``echo``, ``trait_echo``) is 0 on every other
variant unless the spec sets it: ``sim:planted?flatten=0.02`` is the planted model with slight flattening.

Null models — each is the planted model with ``contagion``, ``reminder``, ``repeat`` and ``reciprocity``
at 0 (whatever the spec says), plus one way to fool a careless analysis. ``T`` is the context's length
in thousands of tokens (characters ÷ 4000, before the question):

* ``sim:null`` — nothing else: answers ignore the context (noise only).
* ``sim:flatten`` — answers lose confidence with length: ``p → ½ + (p − ½)·exp(−flatten·T)`` and the
  two answers' total probability (answer mass) falls to ``m + (1 − m)·exp(−flatten·T)`` (``flatten`` = 1,
  ``mass_floor`` ``m`` = 0.2, in (0, 1]). With ``lean`` (``sim:flatten?lean=0.25``) answers drift from a
  pro-social baseline toward ½ as the context grows: post − pre reads as contagion.
* ``sim:flatten-keep`` — the same flattening with the answer mass kept at 1 (``mass_floor`` = 1), so no
  mass comparison can tell that the answers lost confidence.
* ``sim:acquiescence`` — a Yes-bias growing with length: ``p(Yes) += acquiescence·T``
  (``acquiescence`` = 0.2).
* ``sim:echo`` — agrees with statements that appear in its context and with nothing else: an item
  whose statement occurs in an earlier message is answered Yes with ``p(Yes) ≥ ½ + echo``
  (``echo`` = 0.4); every other answer is the null model's.
* ``sim:reciprocity`` — defects after seeing defection (``reciprocity`` = 0.6 by default, the only
  effect kept), with no trait change at all.
* ``sim:trait-echo`` — no contagion; it echoes what its context says about a trait: an item of a trait
  that its context mentions moves toward the trait-matching answer by ``trait_echo`` (0.05) times the
  context's stance on that trait, the mean over its mentions of +1 (says the model has the trait) or −1
  (says it has not). A mention is a quoted statement of a built-in inventory (``contagion/data``), whose
  trait and key give the stance, flipped by "not", "n't" or "never" before the quote (SIT's "I would not
  say this about myself", quoting a narcissism item keyed Yes, says −1 for narcissism), or a trait's
  name ("honesty", "power seeking"), −1 after a negation or "reject". SIT's reminders state pro-social
  stances, so SIT looks protective on self-report with no change at all. Statements of a custom
  inventory are not recognised.

:data:`VARIANTS` are the models ``contagion check`` runs; :data:`TRAP_VARIANTS` are null models made to
fool today's post − pre analysis that it does not run yet (``benchmarks/bench_traps.py`` measures them).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
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
"""The simulated models ``contagion check`` runs: the planted one and its null models."""
NULL_VARIANTS = VARIANTS[1:]
TRAP_VARIANTS = ("flatten-keep", "trait-echo")
"""Null models that fool today's post − pre analysis, not (yet) run by ``contagion check``."""
ALL_VARIANTS = VARIANTS + TRAP_VARIANTS
"""Every simulated model."""
TRAIT_NULL = frozenset(NULL_VARIANTS + TRAP_VARIANTS)
"""Variants whose trait answers carry no contagion and no mitigation (every null model)."""
BEHAVIOUR_NULL = frozenset({"null", "flatten", "acquiescence", "echo", *TRAP_VARIANTS})
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
    "mass_floor": 0.2,
    "acquiescence": 0.2,
    "echo": 0.4,
    "trait_echo": 0.05,
    "lean": 0.0,
    "game_sd": 0.0,
    "game_rho": 1.0,
    "item_sd": 0.0,
    "act_gain": 2.0,
}
_NULL_ZEROED = ("contagion", "reminder", "repeat", "reciprocity")
_VARIANT_DEFAULTS: dict[str, dict[str, float]] = {"reciprocity": {"reciprocity": 0.6},
                                                  "flatten-keep": {"mass_floor": 1.0}}
_OWN_EFFECT = {"flatten": ("flatten", "flatten-keep"), "acquiescence": ("acquiescence",), "echo": ("echo",),
               "trait_echo": ("trait-echo",)}
"""Each null model's own effect: the variants that have it by default (any variant has it when the spec sets it)."""
_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lean": (lambda v: -0.5 < v < 0.5, "a baseline lean toward the pro-social answer must lie in (-0.5, 0.5)"),
    "game_sd": (lambda v: 0 <= v <= 0.5, "the game-level random effect's SD must lie in [0, 0.5]"),
    "game_rho": (lambda v: 0 <= v <= 1, "the share of the game effect common to a seed's games must lie in [0, 1]"),
    "item_sd": (lambda v: 0 <= v <= 0.5, "the item-level random effect's SD must lie in [0, 0.5]"),
    "mass_floor": (lambda v: 0 < v <= 1, "the answer mass left at infinite length must lie in (0, 1]"),
    "trait_echo": (lambda v: -0.5 <= v <= 0.5, "the move toward a mentioned trait must lie in [-0.5, 0.5]"),
    "flatten": (lambda v: v >= 0, "the flattening rate must be 0 or more"),
    "act_gain": (lambda v: 0 <= v <= 10, "the shift's weight on cooperation must lie in [0, 10]"),
}
"""Parameters with a valid range: (the test, what a valid value is)."""

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


_STANCE_NEGATION = re.compile(r"\bnot\b|n't\b|\bnever\b|\breject", re.IGNORECASE)
_GAME_KINDS = frozenset({P.OBSERVATION, P.TALK, P.ACT})


@functools.cache
def inventory_statements() -> dict[str, tuple[str, bool]]:
    """Every statement of the built-in inventories (``contagion/data/inventory-v*.yaml``), read as data:
    its key (:func:`_statement_key`) -> (trait, whether the trait-matching answer is Yes)."""
    import yaml

    out: dict[str, tuple[str, bool]] = {}
    folder = resources.files("contagion").joinpath("data")
    for ref in sorted(folder.iterdir(), key=lambda r: r.name):
        if not re.fullmatch(r"inventory-v\d+\.yaml", ref.name):
            continue
        data = yaml.safe_load(ref.read_text(encoding="utf-8"))
        for trait, body in (data.get("traits") or {}).items():
            for key, yes in (("matching-yes", True), ("matching-no", False)):
                for statement in (body or {}).get(key) or []:
                    out.setdefault(_statement_key(str(statement)), (str(trait), yes))
    return out


@functools.cache
def _trait_names() -> tuple[tuple[str, re.Pattern[str]], ...]:
    traits = sorted({t for t, _ in inventory_statements().values()})
    return tuple((t, re.compile(r"\b" + r"[\s-]+".join(map(re.escape, t.split("-"))) + r"\b", re.IGNORECASE))
                 for t in traits)


def trait_stances(messages: Sequence[Message]) -> dict[str, float]:
    """What a context says about each trait it mentions: trait -> mean stance over its mentions, +1 where a
    line says the model has the trait, −1 where it says it has not (see ``sim:trait-echo``)."""
    known = inventory_statements()
    said: dict[str, list[int]] = {}
    for m in messages:
        for line in m.content.splitlines():
            quote = _QUOTE.search(line)
            if quote is not None:
                hit = known.get(_statement_key(quote.group(1)))
                if hit is not None:
                    trait, yes_keyed = hit
                    negated = bool(_NEGATION.search(line[: quote.start()]))
                    said.setdefault(trait, []).append(1 if yes_keyed != negated else -1)
                continue
            for trait, pattern in _trait_names():
                name = pattern.search(line)
                if name is not None:
                    negated = bool(_STANCE_NEGATION.search(line[: name.start()]))
                    said.setdefault(trait, []).append(-1 if negated else 1)
    return {t: sum(v) / len(v) for t, v in said.items()}


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
    in_game: bool
    """Whether the context shows the game (an observation, another player's chat or an act prompt)."""
    conversation: bool
    """Whether the context holds any message that is not a system message."""
    stances: dict[str, float]
    """trait -> the context's stance on it (only read by ``trait_echo``)."""
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
        if variant not in ALL_VARIANTS:
            raise BackendSpecError(f"unknown simulated model {variant!r}; choose "
                                   + ", ".join(f"sim:{v}" for v in ALL_VARIANTS))
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
        for k, (valid, rule) in _RULES.items():
            if not valid(values[k]):
                raise BackendSpecError(f"sim parameter {k}={values[k]:g} is out of range: {rule}")
        if variant != "planted":
            for k in _NULL_ZEROED:
                if not (variant == "reciprocity" and k == "reciprocity"):
                    values[k] = 0.0
        for k, owners in _OWN_EFFECT.items():
            if variant not in owners and k not in params:
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
                        in_game=any(m.meta.get(P.KIND) in _GAME_KINDS for m in messages),
                        conversation=any(m.role != "system" for m in messages),
                        stances=trait_stances(messages) if self.p["trait_echo"] else {},
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

    def _draw(self, salt: str, sd: float) -> float:
        h = hashlib.blake2b(f"{self.p['seed']}|{salt}".encode(), digest_size=8)
        return random.Random(h.digest()).gauss(0.0, sd)

    def game_effect(self) -> float:
        """``g``: the game-level random effect of the game being played (0 when ``game_sd`` is 0); a shift
        of ``g/2`` moves the pro-social index by ``−g``."""
        if not self.p["game_sd"]:
            return 0.0
        game = P.CURRENT_GAME.get()
        if game is None:
            raise RuntimeError(f"{self.spec}: game_sd needs the game being played, which run_trial sets "
                               "(contagion play, run, bench and check play games through it)")
        seed, name = game
        rho = self.p["game_rho"]
        g = self._draw(f"game|{seed}", self.p["game_sd"])
        if rho < 1:
            g = math.sqrt(rho) * g + math.sqrt(1 - rho) * self._draw(f"game|{seed}|{name}", self.p["game_sd"])
        return g

    def item_effect(self, statement: str) -> float:
        """``u(S)``: the item-level random effect of ``statement`` (0 when ``item_sd`` is 0)."""
        if not self.p["item_sd"]:
            return 0.0
        return self._draw(f"item|{_statement_key(statement)}", self.p["item_sd"])

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
        ctx = self._context(context)
        persona_shift = {"malicious": 0.15, "benevolent": -0.1}.get(ctx.persona, 0.0) * sign
        statement = str(item.meta.get("statement", item.content))
        y = yes_propensity(statement)
        base = y if str(item.meta.get("matching", "Yes")).strip().lower() == "yes" else 1 - y
        s = self.shift(context) + (self.game_effect() / 2 if ctx.in_game else 0.0)
        # the additions below are exact zeros at the defaults, so default answers are unchanged
        adjust = -sign * self.p["lean"]
        if ctx.conversation:
            adjust += self.item_effect(statement)
        if self.p["trait_echo"]:
            adjust += self.p["trait_echo"] * ctx.stances.get(str(item.meta.get("trait", "")), 0.0)
        return _clip(base + persona_shift + sign * s + adjust + self._noise(messages, "trait"))

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
            mass = self.p["mass_floor"] + (1 - self.p["mass_floor"]) * keep
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
            - self.p["act_gain"] * self.shift(context)
            - self.game_effect()
            - self.p["reciprocity"] * ctx.last_defect
            + persona
            + self._noise(messages, "act")
        )

    # -- the Backend interface ------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        malicious = self._context(messages).persona == "malicious"
        hostile = malicious or self.shift(messages) + self.game_effect() / 2 + self._noise(messages, "talk") > 0.15
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
