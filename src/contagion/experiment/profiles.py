"""Pre-play profiles: which ones a trial needs, and the cache that measures each of them once.

A trial needs the pre-play profile of each agent under study when it measures traits or its intervention
steers from a profile (:func:`needed_profiles`). Profiles are keyed by what they depend on
(:func:`profile_key`: the model, the system prompt, the assessment settings), so every trial of a grid that
seats the same agent shares one measurement. :func:`~contagion.experiment.trial.run_trial` takes a
:class:`ProfileCache` and asks it for every profile it needs (:meth:`ProfileCache.for_seats` with the
trial's :func:`profile_requests`):

* :class:`ProfileCache` — in memory (``contagion play``, the statistical check, one per Inspect task);
* :class:`StoredProfiles` — backed by the run's store, so a rerun measures nothing twice (the runner);
* :meth:`ProfileCache.holding` — a cache of given profiles (a Ray worker gets the ones its game needs).

A profile asked for again while it is being measured waits for that one measurement.

A yoked placebo (``placebo:kind=yoked``) also needs each agent's *yoke* (:func:`yoke_requests`): the pre-play
profile of the same model in the same seat under another persona (:func:`yoke_persona`), measured with the
same settings but the next item seed (:data:`YOKE_SEED_OFFSET`). Another persona makes it another agent (a
deterministic model measured again on the same prompt gives the same profile, so in an all-default group a
same-key profile would be the agent's own); another item sample gives it source statements the agent's own
SIT never quotes even where the model answers alike under both personas (on one shared source set, a yoke
that supports no more than the agent has nothing that is not the agent's own). The placebo drops every yoke
statement measured on the agent. The yoke is always there, in all-default groups too, and the same for every
game of a grid that seats that agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contagion.backends.base import Backend
from contagion.backends.registry import resolve
from contagion.backends.retry import should_retry
from contagion.errors import UserError
from contagion.experiment.record import TrialSpec
from contagion.experiment.store import Store
from contagion.games.engine import system_messages
from contagion.messages import Message
from contagion.personas import Persona, resolve_persona
from contagion.steering import needs_profile, needs_yoke
from contagion.strict import INT64_MAX
from contagion.traits.assess import QUESTION_FORMAT_VERSION
from contagion.traits.settings import AssessmentSettings, measure_agent

ProfileRecord = dict[str, Any]


def profile_key(backend_spec: str, system: Message, settings: AssessmentSettings) -> str:
    """The cache key of a pre-play profile: the model, the system prompt it is measured on, the settings."""
    payload = json.dumps({"v": 1, "backend": backend_spec, "system": system.content,
                          "persona": system.meta.get("persona"), "settings": settings.model_dump(mode="json"),
                          "qf": QUESTION_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ProfileRequest:
    """One pre-play profile a trial needs: whose (seat), under which key, measured how."""

    seat: int
    key: str
    backend: str
    system: Message
    settings: AssessmentSettings


def needs_pre_play(spec: TrialSpec) -> bool:
    """Whether the trial needs its agents' pre-play profiles (to measure drift, or to steer from them)."""
    return spec.measure or needs_profile(spec.intervention)


def profile_requests(spec: TrialSpec, systems: Sequence[Message], agents: Sequence[int]) -> list[ProfileRequest]:
    """The pre-play profiles a trial needs, given its seats' system messages and the seats under study
    (none when it needs none)."""
    if not needs_pre_play(spec):
        return []
    return [ProfileRequest(seat=i, key=profile_key(spec.game.players[i].backend, systems[i], spec.assessment),
                           backend=spec.game.players[i].backend, system=systems[i], settings=spec.assessment)
            for i in agents]


YOKE_ORDER = ("benevolent", "default", "malicious")
"""The personas a yoke is drawn from, in order of preference: the first whose instruction differs from the
agent's (a default agent's yoke is benevolent: pro-social like it, so its statements are reminders a
default agent could be given, but another agent's answers)."""


YOKE_SEED_OFFSET = 1
"""The yoke's item seed is the agent's plus this: another sample of source items (the persona makes it another
agent; the sample gives it statements beyond the agent's own source set)."""


def yoke_persona(persona: str, personas: Mapping[str, Persona] | None = None) -> Persona:
    """The persona of an agent's yoke: the first of :data:`YOKE_ORDER` whose text differs from the agent's."""
    extra = dict(personas) if personas is not None else None
    own = resolve_persona(persona, extra)
    for name in YOKE_ORDER:
        other = resolve_persona(name, extra)
        if other.text != own.text:
            return other
    raise UserError(f"persona {persona!r}: every built-in persona has its text, so no yoke can differ from it")


def yoke_requests(spec: TrialSpec, agents: Sequence[int], personas: Mapping[str, Persona] | None = None
                  ) -> list[ProfileRequest]:
    """The yokes a yoked placebo needs, one per agent under study (none for any other intervention): the
    same model in the same seat under :func:`yoke_persona`, its system prompt made as every seat's is, its
    items sampled with the next seed (:data:`YOKE_SEED_OFFSET`)."""
    if not needs_yoke(spec.intervention):
        return []
    extra = dict(personas) if personas is not None else None
    players = spec.game.players
    seed = spec.assessment.seed
    settings = spec.assessment.model_copy(
        update={"seed": seed + YOKE_SEED_OFFSET if seed + YOKE_SEED_OFFSET <= INT64_MAX else seed - YOKE_SEED_OFFSET})
    out = []
    for i in agents:
        yoke = yoke_persona(players[i].persona, extra)
        seats = tuple(p.model_copy(update={"persona": yoke.name}) if j == i else p for j, p in enumerate(players))
        system = system_messages(spec.game.model_copy(update={"players": seats}), {**(extra or {}),
                                                                                  yoke.name: yoke})[i]
        out.append(ProfileRequest(seat=i, key=profile_key(players[i].backend, system, settings),
                                  backend=players[i].backend, system=system, settings=settings))
    return out


def needed_profiles(spec: TrialSpec, personas: Mapping[str, Persona] | None = None) -> list[ProfileRequest]:
    """The pre-play profiles the trial needs, one per agent under study (:meth:`TrialSpec.agents`), and a
    yoked placebo's yokes, for a caller that has not made the system prompts (the runner plans every
    profile before any game)."""
    if not needs_pre_play(spec):
        return []
    own = profile_requests(spec, system_messages(spec.game, dict(personas) if personas is not None else None),
                           spec.agents())
    return own + yoke_requests(spec, spec.agents(), personas)


class ProfileCache:
    """Pre-play profiles by key, each measured once; in memory.

    ``attempts``: how many times a failed measurement is tried (every model call in it is already retried
    by the robust wrapper; a retry here is for a failure that survived those); ``stopping`` ends the
    attempts early (a run being interrupted). A measurement that failed for good is remembered in
    :attr:`errors` (and raised to whoever asked); asking again measures again.
    """

    def __init__(self, *, attempts: int = 1, stopping: Callable[[], bool] | None = None) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.stopping = stopping or (lambda: False)
        self.errors: dict[str, str] = {}
        """key -> why its measurement failed (the last failure)."""
        self._held: dict[str, ProfileRecord] = {}
        self._measuring: dict[str, asyncio.Future[ProfileRecord]] = {}

    @classmethod
    def holding(cls, records: Mapping[str, ProfileRecord]) -> ProfileCache:
        """A cache that already holds these profiles (by key)."""
        cache = cls()
        cache._held.update(records)
        return cache

    # -- where profiles are kept (a store-backed cache overrides these) -------------------------
    def _load(self, key: str) -> ProfileRecord | None:
        return None

    def _save(self, key: str, record: ProfileRecord) -> None:
        pass

    # -- asking ---------------------------------------------------------------------------------
    def get(self, key: str) -> ProfileRecord | None:
        """The profile of ``key`` if it is known (held, or kept where this cache keeps them); never measures."""
        record = self._held.get(key)
        if record is None:
            record = self._load(key)
            if record is not None:
                self._held[key] = record
        return record

    async def profile(self, request: ProfileRequest, backend: Backend | None = None) -> ProfileRecord:
        """The profile of ``request``: known, being measured (then awaited), or measured now on ``backend``
        (the request's model, resolved, when None)."""
        known = self.get(request.key)
        if known is not None:
            return known
        pending = self._measuring.get(request.key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(self._measure(request, backend))
            self._measuring[request.key] = pending
        return await asyncio.shield(pending)

    async def for_seats(self, requests: Sequence[ProfileRequest], backends: Sequence[Backend]
                        ) -> list[ProfileRecord | None]:
        """One entry per seat (``backends`` has one per seat): the profile of each request, else None."""
        out: list[ProfileRecord | None] = [None] * len(backends)
        for request in requests:
            out[request.seat] = await self.profile(request, backends[request.seat])
        return out

    async def _measure(self, request: ProfileRequest, backend: Backend | None) -> ProfileRecord:
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    profile = await measure_agent(backend or resolve(request.backend), request.system,
                                                  request.settings)
                    break
                except UserError:
                    raise
                except Exception as exc:
                    if attempt < self.attempts and should_retry(exc) and not self.stopping():
                        continue
                    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                    self.errors[request.key] = (f"pre-play profile of {request.backend} failed after {attempt} "
                                                f"attempt(s): {detail}")
                    raise
            record = profile.to_record()
            self._held[request.key] = record
            self.errors.pop(request.key, None)
            self._save(request.key, record)
            return record
        finally:
            self._measuring.pop(request.key, None)


class StoredProfiles(ProfileCache):
    """A :class:`ProfileCache` kept in a run's store (its ``profiles`` table): what an earlier run of the
    same directory measured is not measured again."""

    def __init__(self, store: Store, *, attempts: int = 1, stopping: Callable[[], bool] | None = None) -> None:
        super().__init__(attempts=attempts, stopping=stopping)
        self.store = store

    def _load(self, key: str) -> ProfileRecord | None:
        return self.store.get_profile(key)

    def _save(self, key: str, record: ProfileRecord) -> None:
        self.store.put_profile(key, record)
