"""One trial, end to end — the only place a game is assembled.

``run_trial(spec)``: system prompts (made once) → pre-play profiles of the agents under study (from the
caller's cache, else measured) → each agent's intervention → the game → post-play profiles → the record.
The runner (locally or on a Ray worker), ``contagion play``, and the statistical check all call it;
``contagion assess`` and the guard measure an agent with :func:`~contagion.traits.settings.measure_agent`, the
same call the trial makes.

It is a pure function of the spec, its labels and the pre-play profiles handed in, so every executor
produces the same record. A backend failure is not raised: it comes back as a record with ``error`` set
(the run goes on); a user error (bad input) is raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from typing import Any

from contagion import __version__
from contagion.backends.registry import kind_of, resolve
from contagion.errors import UserError
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.games.engine import EventSink, GameEngine, TurnHook, system_messages
from contagion.messages import Message
from contagion.personas import Persona
from contagion.steering import make_intervention, needs_profile, validate_intervention
from contagion.traits.assess import QUESTION_FORMAT_VERSION, post_play_context
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings, measure, measure_agent

__all__ = ["GameRecord", "TrialSpec", "failed_record", "measure_agent", "needed_profiles", "profile_key",
           "run_trial"]

ProfileRecord = dict[str, Any]


def profile_key(backend_spec: str, system: Message, settings: AssessmentSettings) -> str:
    """The cache key of a pre-play profile: the model, the system prompt it is measured on, the settings."""
    payload = json.dumps({"v": 1, "backend": backend_spec, "system": system.content,
                          "persona": system.meta.get("persona"), "settings": settings.model_dump(mode="json"),
                          "qf": QUESTION_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _agents(spec: TrialSpec) -> list[int]:
    """The seats under study: focal language-model players (measured, and the only ones steered)."""
    return [i for i, p in enumerate(spec.game.players) if p.focal and kind_of(p.backend).language_model]


def _needs_pre(spec: TrialSpec) -> bool:
    return spec.measure or needs_profile(spec.intervention)


def needed_profiles(spec: TrialSpec, personas: dict[str, Persona] | None = None
                    ) -> list[tuple[int, str, Message]]:
    """(seat, cache key, system message) of each pre-play profile the trial needs, so a runner can
    measure each distinct one once and hand it to :func:`run_trial`."""
    if not _needs_pre(spec):
        return []
    systems = system_messages(spec.game, personas)
    return [(i, profile_key(spec.game.players[i].backend, systems[i], spec.assessment), systems[i])
            for i in _agents(spec)]


def failed_record(spec: TrialSpec, labels: dict[str, Any] | None, error: str, wall: float) -> GameRecord:
    """The record of a trial that could not be played (the store keeps the error; a rerun retries it)."""
    return GameRecord(spec=spec, spec_hash=spec.stable_hash(), game={}, players=[], error=error,
                      wall_seconds=round(wall, 6), labels=dict(labels or {}), contagion_version=__version__)


async def run_trial(
    spec: TrialSpec,
    *,
    labels: dict[str, Any] | None = None,
    personas: dict[str, Persona] | None = None,
    pre_profiles: Sequence[ProfileRecord | None] | None = None,
    on_event: EventSink | None = None,
) -> GameRecord:
    """Play one trial and return its record; backend failures are recorded in it, not raised.

    ``pre_profiles`` (one per seat, ``None`` where not given) come from the caller's cache; the missing
    ones the trial needs are measured here. ``on_event`` sees the game as it happens (talk, injections,
    rounds) for printing.
    """
    started = time.perf_counter()
    try:
        validate_intervention(spec.intervention)
        game = spec.game
        backends = [resolve(p.backend) for p in game.players]
        systems = system_messages(game, personas)
        profiles: list[ProfileRecord | None] = (list(pre_profiles) if pre_profiles is not None
                                                else [None] * len(game.players))
        hooks: list[TurnHook | None] = [None] * len(game.players)
        for i in _agents(spec):
            if profiles[i] is None and _needs_pre(spec):
                profiles[i] = (await measure_agent(backends[i], systems[i], spec.assessment)).to_record()
            record = profiles[i]
            hooks[i] = make_intervention(
                spec.intervention, chat=game.chat_turns > 0,
                profile=Profile.from_record(record) if record is not None else None,
                seed=game.seed * 1000 + i, settings=spec.assessment,
            )
        engine = GameEngine(game, backends=backends, hooks=hooks, pre_profiles=profiles, personas=personas,
                            on_event=on_event, systems=systems)
        play = await engine.play()
        if play.error is None and spec.measure:
            agents = _agents(spec)
            # the players' profiles go out together (concurrent requests to a server; a local model
            # takes them in turn); each is a function of its own history only
            posts = await asyncio.gather(*(
                measure(backends[i], post_play_context(play.players[i].messages), spec.assessment,
                        context_kind="post") for i in agents))
            for i, post in zip(agents, posts, strict=True):
                play.players[i].post_profile = post.to_record()
        for backend, player in zip(backends, play.players, strict=True):
            backend.release(player.messages)  # the game is over: no request extends these histories
        return GameRecord(spec=spec, spec_hash=spec.stable_hash(), game=play.game, players=play.players,
                          rounds=play.rounds, wall_seconds=round(time.perf_counter() - started, 6),
                          error=play.error, contagion_version=__version__, labels=dict(labels or {}))
    except UserError:
        raise
    except Exception as exc:  # the run goes on; the store keeps the error
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return failed_record(spec, labels, detail, time.perf_counter() - started)
