"""One trial, end to end — the only place a game is assembled.

``run_trial(spec)``: system prompts (made once) → pre-play profiles of the agents under study (from the
caller's cache, else measured) → each agent's intervention → the game → post-play profiles → the record.
The runner (locally or on a Ray worker), ``contagion play``, and the statistical check all call it;
``contagion assess`` measures an agent with :func:`measure_agent`, the same call the trial makes.

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
from contagion.backends.base import Backend
from contagion.backends.registry import kind_of, resolve
from contagion.errors import UserError
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.games.engine import EventSink, GameEngine, TurnHook, system_messages
from contagion.games.record import PlayerRecord
from contagion.messages import Message
from contagion.personas import Persona
from contagion.steering import make_intervention, needs_profile, validate_intervention
from contagion.traits.assess import QUESTION_FORMAT_VERSION, post_play_context, pre_play_context
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings, measure
from contagion.vocabulary import CURRENT_GAME

__all__ = ["GameRecord", "TrialSpec", "failed_record", "invalid_scores", "measure_agent", "needed_profiles",
           "profile_key", "run_trial"]

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


async def measure_agent(backend: Backend | str, system: Message | str, settings: AssessmentSettings,
                        *, persona: str | None = None) -> Profile:
    """An agent's pre-play profile: the settings' items asked right after its system prompt."""
    if isinstance(backend, str):
        backend = resolve(backend)
    return await measure(backend, pre_play_context(system, persona=persona), settings, context_kind="pre")


def invalid_scores(players: Sequence[PlayerRecord]) -> str | None:
    """The error of a game in which a model reported scores that are no log-probabilities (NaN, +inf, above
    0), or None. Such scores were never used as values (the actions are invalid, the items unscored), but
    the game is not a clean one: it is stored as failed, so it is not analysed and a rerun plays it again."""
    actions = [a.problem for p in players for a in p.actions if a.problem]
    items = [why for p in players for prof in (p.pre_profile, p.post_profile) if prof
             for why in (prof.get("invalid_items") or {}).values()]
    if not actions and not items:
        return None
    return (f"the model reported invalid scores for {len(actions)} action(s) and {len(items)} trait item(s) "
            f"(e.g. {(actions or items)[0]}); a log-probability must be finite (or -inf) and at most 0. None of "
            "them was used as a value; the game is stored as failed (a rerun plays it again)")


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
    game_token = CURRENT_GAME.set((spec.game.seed, spec.game.game))  # for simulated models' game_sd
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
                          error=play.error or invalid_scores(play.players), contagion_version=__version__,
                          labels=dict(labels or {}))
    except UserError:
        raise
    except Exception as exc:  # the run goes on; the store keeps the error
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return failed_record(spec, labels, detail, time.perf_counter() - started)
    finally:
        CURRENT_GAME.reset(game_token)
