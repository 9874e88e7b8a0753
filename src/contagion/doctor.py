"""``contagion doctor``: can the instrument measure this model, how, and at what cost — before a paid grid.

About a minute of probing a model through its backend, then a verdict:

1. **where the answer sits** — the fixed probes (:mod:`contagion.backends.probe`) scored at the reply's
   first token; on a chat server also where the answer is (``answer-token``): the token it sits at, what
   comes before it, and the share of that position's probability the answers hold (their *mass*);
2. **logprobs** — whether the server returns them (else scores are sampled estimates, labelled so);
3. **reasoning** — whether the model reasons first (a reasoning field, or inline ``<think>`` tags);
4. **system role** — whether the chat template accepts a system message (else ``system_role=merge``);
5. **pace** — latency of one scoring call, a generation's tokens per second, and scoring calls per second
   at 1, 4 and 16 requests in flight;
6. **cost** — for a config file or a benchmark size: games, requests, tokens and wall time
   (:mod:`contagion.experiment.estimate`).

It ends with the settings to use (the spec, and the config's ``model_options``), or a refusal with the
reason and what to try (exit 2). :func:`preflight` is its quick part (the probes only), which ``contagion
run`` and ``contagion bench`` run on each real model before the first game: a model whose answers hold
less than :data:`REFUSE_MASS` of the scored position's probability, as the grid would score it, is refused
(``--no-preflight`` overrides). Simulated models and scripted strategies are not probed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contagion.backends.base import Backend, GenerationConfig, ScoreMethod, Scores, gather_bounded
from contagion.backends.probe import LOW_MASS, PROBES
from contagion.backends.registry import build, resolve
from contagion.backends.robust import RobustBackend
from contagion.backends.server_options import with_options
from contagion.errors import BackendError, UserError
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.estimate import Estimate, estimate_grid
from contagion.messages import system, user

REFUSE_MASS = 0.25
"""Below this mean share of the scored position's probability, a model is not measured (run/bench refuse)."""
LEVELS = (1, 4, 16)
"""Requests in flight at which the pace is measured."""
TALK = [user("You are playing a game with two other players. Write one short message (one or two sentences) "
             "to the other players.")]


@dataclass
class Reading:
    """One probe, scored: the method, the answers' share of the scored position, where the answer sat."""

    choices: tuple[str, ...]
    method: str
    mass: float
    answered: bool
    seconds: float
    position: int | None = None
    skipped: str = ""
    generated: int | None = None
    reasoning: bool = False


def _reading(choices: tuple[str, ...], scores: Scores, seconds: float) -> Reading:
    detail = scores.detail
    if scores.method == ScoreMethod.SAMPLED:
        counts = detail.get("counts") or {}
        n = int(detail.get("samples") or 0) or 1
        matched = sum(int(v) for v in counts.values())
        return Reading(choices, scores.method.value, matched / n, matched > 0, seconds)
    mass = min(1.0, sum(math.exp(lp) for lp in scores.logprobs if math.isfinite(lp)))
    floored = detail.get("floored") or []
    return Reading(choices, scores.method.value, mass, len(floored) < len(choices), seconds,
                   position=detail.get("position"), skipped=str(detail.get("skipped", "")),
                   generated=detail.get("generated"), reasoning=bool(detail.get("reasoning")))


def _probe_backend(spec: str) -> RobustBackend:
    """A fresh backend (nothing shared with a run's), retried a little: the doctor must answer in time."""
    return RobustBackend(build(spec), timeout=None, max_retries=2, backoff_initial=0.2, backoff_max=2)


async def _read_shared(spec: str) -> list[Reading]:
    """The probes through the run's own shared backend: a local model is not loaded twice, and an ``auto``
    probe settled here is the run's."""
    return await read_probes(resolve(spec))


async def read_probes(backend: Backend) -> list[Reading]:
    out = []
    for probe in PROBES:
        started = time.perf_counter()
        scores = await backend.score_choices(probe.messages, probe.choices)
        out.append(_reading(probe.choices, scores, time.perf_counter() - started))
    return out


def mean_mass(readings: Sequence[Reading]) -> float:
    return sum(r.mass for r in readings) / len(readings) if readings else 0.0


@dataclass
class Quick:
    """The probes scored as a spec scores them (the quick part)."""

    spec: str
    readings: list[Reading]

    @property
    def method(self) -> str:
        methods = sorted({r.method for r in self.readings})
        return " + ".join(methods)

    @property
    def mass(self) -> float:
        return mean_mass(self.readings)

    @property
    def measurable(self) -> bool:
        return self.mass >= REFUSE_MASS


class _Backends:
    """The diagnosis' own backends, one per spec variant, closed together: a local model loads once."""

    def __init__(self) -> None:
        self._made: dict[str, RobustBackend] = {}

    def __call__(self, spec: str) -> RobustBackend:
        if spec not in self._made:
            self._made[spec] = _probe_backend(spec)
        return self._made[spec]

    async def aclose(self) -> None:
        for backend in self._made.values():
            await backend.aclose()


async def quick(spec: str, backends: _Backends | None = None) -> Quick:
    own = backends or _Backends()
    try:
        return Quick(spec, await read_probes(own(spec)))
    finally:
        if backends is None:
            await own.aclose()


def probed(spec: str) -> bool:
    """Whether run/bench probe this spec before the first game: a language model that is not simulated."""
    caps = build(spec).capabilities
    return caps.language_model and not caps.simulated and not caps.scripted


async def preflight(specs: Iterable[str]) -> list[Quick]:
    """The quick part for every real model of a grid; UserError naming each model that cannot be measured as
    the grid would score it, with the figure and the settings to try."""
    results: list[Quick] = []
    refused: list[str] = []
    for spec in specs:
        if not probed(spec):
            continue
        result = Quick(spec, await _read_shared(spec))
        results.append(result)
        if not result.measurable:
            hint = "run `contagion doctor` on it for the settings to use"
            if build(spec).capabilities.served and "score=" not in spec:
                alternative = await quick(with_options(spec, {"score": "answer-token"}))
                if alternative.measurable:
                    hint = (f"scored where its answer is they hold {alternative.mass:.0%}: add ?score=auto to the "
                            "spec (or score: auto under model_options)")
            refused.append(f"{spec}: its answers hold {result.mass:.0%} of the scored position's probability "
                           f"({result.method}; below {REFUSE_MASS:.0%}); {hint}")
    if refused:
        raise UserError("the instrument cannot measure " + "; ".join(refused)
                        + ". Nothing was run (--no-preflight runs it anyway).")
    return results


@dataclass
class Verdict:
    """Everything ``contagion doctor`` found, and what it concludes."""

    spec: str
    identity: str
    readings: list[Reading] = field(default_factory=list)
    """The probes at the first token (or as the spec scores, for a backend without server options)."""
    answer_readings: list[Reading] = field(default_factory=list)
    """The probes where the answer is (chat servers with logprobs)."""
    logprobs: bool = True
    reasoning: str | None = None
    system_role: str = "accepted"
    latency: float | None = None
    generation_seconds: float | None = None
    generation_tokens: int = 0
    pace: dict[int, float] = field(default_factory=dict)
    """Scoring calls per second at each number of requests in flight."""
    options: dict[str, Any] = field(default_factory=dict)
    """The backend options to add to the spec."""
    method: str = ""
    mass: float = 0.0
    refusal: str | None = None
    estimate: Estimate | None = None
    estimate_seconds: float | None = None
    estimate_level: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def settings(self) -> str:
        return with_options(self.spec, self.options)


def _answer_tokens(readings: Sequence[Reading]) -> int:
    """A generation budget with room: four times the longest generation seen, a power of two, 16..8192."""
    longest = max((r.generated or 1) for r in readings)
    budget = 16
    while budget < 4 * longest and budget < 8192:
        budget *= 2
    return budget


async def _system_role(spec: str, served: bool, backends: _Backends) -> tuple[str, dict[str, Any]]:
    messages = [system("You are Avery, a player in a game."), user("Say hello in three words.")]
    config = GenerationConfig(max_tokens=8)
    try:
        await backends(spec).generate(messages, config)
        return "accepted", {}
    except BackendError as exc:
        if exc.transient:
            raise
        refused = f"refused ({str(exc)[:120]})"
    if not served:
        return refused, {}
    try:
        await backends(with_options(spec, {"system_role": "merge"})).generate(messages, config)
        return refused + "; accepted merged into the user message", {"system_role": "merge"}
    except BackendError:
        return refused + "; refused merged too", {}


async def _pace(backend: Backend, levels: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for level in levels:
        calls = [(lambda p=PROBES[i % len(PROBES)]: backend.score_choices(p.messages, p.choices))
                 for i in range(max(4, 2 * level))]
        started = time.perf_counter()
        await gather_bounded(calls, level)
        out[level] = len(calls) / max(1e-9, time.perf_counter() - started)
    return out


async def diagnose(spec: str, configs: Sequence[ExperimentConfig] = (), *, in_flight: int | None = None,
                   levels: Sequence[int] = LEVELS) -> Verdict:
    """Probe ``spec`` and conclude (module docstring). Raises UserError for a spec that is no language model."""
    bare = build(spec)
    if not bare.capabilities.language_model:
        raise UserError(f"{spec} is a scripted strategy, not a language model: there is nothing to measure")
    backends = _Backends()
    try:
        return await _diagnose(spec, configs, bare, backends, in_flight=in_flight, levels=levels)
    finally:
        await backends.aclose()


async def _diagnose(spec: str, configs: Sequence[ExperimentConfig], bare: Backend, backends: _Backends, *,
                    in_flight: int | None, levels: Sequence[int]) -> Verdict:
    verdict = Verdict(spec=spec, identity=bare.identity)
    served = bare.capabilities.served
    first = with_options(spec, {"score": "first-token"}) if served else spec
    verdict.readings = (await quick(first, backends)).readings
    verdict.logprobs = all(r.method != ScoreMethod.SAMPLED.value for r in verdict.readings)
    verdict.latency = statistics.median(r.seconds for r in verdict.readings)
    if served and verdict.logprobs:
        verdict.answer_readings = (await quick(with_options(spec, {"score": "answer-token"}), backends)).readings
    if any(r.reasoning for r in verdict.answer_readings):
        verdict.reasoning = "before its answers (in its replies to the probes)"

    started = time.perf_counter()
    talk = await backends(spec).generate(TALK, GenerationConfig(max_tokens=48))
    verdict.generation_seconds = time.perf_counter() - started
    verdict.generation_tokens = talk.completion_tokens
    if talk.reasoning:
        verdict.reasoning = verdict.reasoning or "before its reply to a talk prompt"
    verdict.system_role, role_options = await _system_role(spec, served, backends)

    ft_mass = mean_mass(verdict.readings)
    at_mass = mean_mass(verdict.answer_readings)
    at_ok = bool(verdict.answer_readings) and all(r.answered for r in verdict.answer_readings)
    if not verdict.logprobs:
        verdict.method, verdict.mass = ScoreMethod.SAMPLED.value, ft_mass
        verdict.options["logprobs"] = 0
        if ft_mass < REFUSE_MASS:
            verdict.refusal = (f"the server returns no logprobs, and only {ft_mass:.0%} of the sampled answers name "
                               "a choice")
            if served:
                verdict.refusal += "; if the model reasons or writes a few words first, try ?logprobs=0&score=auto"
        verdict.notes.append("no logprobs: every score is an estimate from sampled answers (noisier; labelled "
                             "sampled-fallback)")
    elif ft_mass >= LOW_MASS or (ft_mass >= at_mass and ft_mass >= REFUSE_MASS):
        verdict.method, verdict.mass = ScoreMethod.FIRST_TOKEN.value, ft_mass
    elif at_ok and at_mass >= REFUSE_MASS:
        verdict.method, verdict.mass = ScoreMethod.ANSWER_TOKEN.value, at_mass
        verdict.options.update(score="answer-token", answer_tokens=_answer_tokens(verdict.answer_readings))
    else:
        verdict.method, verdict.mass = ScoreMethod.FIRST_TOKEN.value, max(ft_mass, at_mass)
        where = (f"where its answer is they hold {at_mass:.0%}" if verdict.answer_readings
                 else "this backend cannot score anywhere but the first token")
        verdict.refusal = (f"its answers hold {ft_mass:.0%} of the first token's probability and {where}, below "
                           f"{REFUSE_MASS:.0%}: the model does not answer the instrument's yes/no and action "
                           "questions in a way that can be read")
        if verdict.answer_readings and not at_ok:
            verdict.refusal += (" (some probes got no answer at all: if it reasons for long, a larger "
                                "answer_tokens may reach the answer)")
    if "refused" in verdict.system_role and not role_options:
        verdict.refusal = verdict.refusal or "its chat template refuses system messages (the players' rules)"
    verdict.options.update(role_options)
    if verdict.reasoning and verdict.method == ScoreMethod.ANSWER_TOKEN.value:
        verdict.notes.append("it reasons before answering: each score generates its reasoning too (answer_tokens), "
                             "and its chat messages need a generation.max_tokens that leaves room for reasoning "
                             "(a reply cut off while thinking says nothing); to measure it without thinking, a "
                             'Qwen3-style template takes extra_body={"chat_template_kwargs":{"enable_thinking":false}}')
    if verdict.mass < LOW_MASS and verdict.refusal is None:
        verdict.notes.append(f"its scores will rest on {verdict.mass:.0%} of the scored position's probability "
                             "(under half): they read a small part of what it says")

    if verdict.refusal is None:
        verdict.pace = await _pace(backends(verdict.settings), levels)
        if configs:
            scored = verdict.answer_readings if verdict.options.get("score") == "answer-token" else []
            per_score = statistics.mean(r.generated or 1 for r in scored) if scored else 1.0
            samples = int(getattr(bare, "samples", 20)) if not verdict.logprobs else 0
            talk_tokens = verdict.generation_tokens or 48
            verdict.estimate = await estimate_grid(configs, talk_tokens=talk_tokens,
                                                   score_completion_tokens=per_score, samples=samples)
            wanted = in_flight or max((c.concurrency or 8) for c in configs)
            level = min(verdict.pace, key=lambda lv: (abs(lv - wanted), lv))
            verdict.estimate_level = level
            score_seconds = 1.0 / verdict.pace[level]
            verdict.estimate_seconds = verdict.estimate.seconds(score_seconds, verdict.generation_seconds or 0.0,
                                                                level)
    return verdict
