"""One trial, end to end — the only place a game is assembled.

``run_trial(spec)``: system prompts (made once) → pre-play profiles of the agents under study (from the
caller's :class:`~contagion.experiment.profiles.ProfileCache`, which measures what it lacks; a yoked
placebo's yokes too) → each agent's intervention → the game → post-play profiles (:data:`POST_CONTEXTS`:
after the history with the injected messages removed — the profile of record —, with them in view where
there were any, and after a length-matched neutral history, the sham baseline) → the record. The runner
(locally or on a Ray worker), ``contagion play``, the statistical check and the Inspect task all call it,
each with its own cache (the run's store, memory, one per task); ``contagion assess`` and the guard measure
an agent with :func:`~contagion.traits.settings.measure_agent`, the same call the cache makes.

It is a pure function of the spec, its labels and the pre-play profiles the cache holds, so every executor
produces the same record. A backend failure is not raised: it comes back as a record with ``error`` set
(the run goes on); a user error (bad input) is raised.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Sequence
from typing import Any

from contagion import __version__
from contagion.backends.base import Backend
from contagion.backends.registry import resolve
from contagion.errors import UserError
from contagion.experiment.profiles import (
    ProfileCache,
    ProfileRecord,
    needed_profiles,
    profile_key,
    profile_requests,
    yoke_requests,
)
from contagion.experiment.record import GameRecord, TrialSpec
from contagion.games.engine import EventSink, GameEngine, TurnHook, system_messages
from contagion.games.record import PlayerRecord
from contagion.messages import Message
from contagion.personas import Persona
from contagion.steering import Yoke, make_intervention, steers_activations, validate_intervention
from contagion.steering.interventions import VectorSteering
from contagion.steering.monitor import monitor_backend
from contagion.traits.assess import post_play_context
from contagion.traits.profile import Profile
from contagion.traits.settings import measure, measure_agent
from contagion.traits.sham import context_chars, neutral_history, strip_injections
from contagion.vocabulary import CURRENT_GAME

__all__ = ["GameRecord", "ProfileCache", "TrialSpec", "failed_record", "invalid_scores", "measure_agent",
           "needed_profiles", "profile_key", "run_trial"]


def invalid_scores(players: Sequence[PlayerRecord]) -> str | None:
    """The error of a game in which a model reported scores that are no log-probabilities (NaN, +inf, above
    0), or None. Such scores were never used as values (the actions are invalid, the items unscored), but
    the game is not a clean one: it is stored as failed, so it is not analysed and a rerun plays it again."""
    actions = [a.problem for p in players for a in p.actions if a.problem]
    items = [why for p in players
             for prof in (p.pre_profile, p.post_profile, p.post_profile_injected, p.sham_profile) if prof
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


POST_CONTEXTS = ("post", "post-injected", "sham")
"""The contexts an agent under study is measured in after play: ``post`` (its history without the injected
messages: the profile of record), ``post-injected`` (the whole history, injections in view: secondary, only
for an agent that received injections) and ``sham`` (a neutral history of the same roles and length in
characters as ``post``'s: :func:`contagion.traits.sham.neutral_history`; unless the spec's ``sham`` is off)."""


def sham_seed(spec: TrialSpec, seat: int) -> int:
    """The seed of a seat's sham history (its text only; never the game's randomness)."""
    return spec.game.seed * 1000 + seat


def _tokens_per_question(profile: Profile) -> float | None:
    """The mean prompt tokens of one question of ``profile`` (context + question), where the backend counted."""
    cost = profile.cost
    if not cost.calls or not cost.prompt_tokens:
        return None
    return round(cost.prompt_tokens / cost.calls, 3)


async def _measure_after_play(spec: TrialSpec, backends: Sequence[Backend], players: Sequence[PlayerRecord],
                              agents: Sequence[int]) -> list[list[list[Message]]]:
    """Measure each agent's post-play profiles (:data:`POST_CONTEXTS`) into its record; returns the contexts
    measured that are not the game history itself (the sham; the stripped history where injections were
    removed), per agent, so the caller can release them. All profiles go out together (concurrent requests
    to a server; a local model takes them in turn); each is a function of its own context only."""
    jobs: list[tuple[int, str, list[Message]]] = []
    for i in agents:
        history = players[i].messages
        stripped = post_play_context(strip_injections(history))
        jobs.append((i, "post", stripped))
        if len(stripped) != len(history):
            jobs.append((i, "post-injected", post_play_context(history)))
        if spec.sham:
            jobs.append((i, "sham", neutral_history(stripped, seed=sham_seed(spec, i))))
    profiles = await asyncio.gather(*(measure(backends[i], context, spec.assessment, context_kind=kind)
                                      for i, kind, context in jobs))
    by_seat: dict[int, dict[str, tuple[Profile, list[Message]]]] = {}
    for (i, kind, context), profile in zip(jobs, profiles, strict=True):
        by_seat.setdefault(i, {})[kind] = (profile, context)
    out: list[list[list[Message]]] = []
    for i in agents:
        got = by_seat[i]
        player = players[i]
        post, post_context = got["post"]
        player.post_profile = post.to_record()
        if "post-injected" in got:
            player.post_profile_injected = got["post-injected"][0].to_record()
        if "sham" in got:
            sham, sham_context = got["sham"]
            player.sham_profile = sham.to_record()
            player.sham_context = {
                "chars_post": context_chars(post_context), "chars_sham": context_chars(sham_context),
                "messages_post": len(post_context), "messages_sham": len(sham_context),
                "prompt_tokens_post": _tokens_per_question(post), "prompt_tokens_sham": _tokens_per_question(sham),
                "seed": sham_seed(spec, i),
            }
        # the contexts that are not the game history itself (released too once measured)
        out.append([context for kind, (_, context) in got.items()
                    if kind == "sham" or (kind == "post" and "post-injected" in got)])
    return out


def steer_backend(hook: TurnHook | None, backend: Backend) -> Backend:
    """The backend a seat plays on: steered for a white-box ``vector`` intervention, else its own."""
    return hook.steer(backend) if isinstance(hook, VectorSteering) else backend


async def run_trial(
    spec: TrialSpec,
    *,
    labels: dict[str, Any] | None = None,
    personas: dict[str, Persona] | None = None,
    profiles: ProfileCache | None = None,
    on_event: EventSink | None = None,
) -> GameRecord:
    """Play one trial and return its record; backend failures are recorded in it, not raised.

    ``profiles`` holds (or measures, once per key) the agents' pre-play profiles; a new in-memory cache
    when None. ``on_event`` sees the game as it happens (talk, injections, rounds) for printing.
    """
    started = time.perf_counter()
    game_token = CURRENT_GAME.set((spec.game.seed, spec.game.game))  # for simulated models' game_sd
    try:
        validate_intervention(spec.intervention)
        game = spec.game
        systems = system_messages(game, personas)
        backends = [resolve(p.backend) for p in game.players]
        # the seats under study: focal language models (a backend says what it is)
        agents = [i for i, p in enumerate(game.players) if p.focal and backends[i].capabilities.language_model]
        if steers_activations(spec.intervention):  # refused before any model work, not mid-game
            for i in agents:
                if not backends[i].capabilities.activations:
                    raise UserError(f"intervention vector needs a backend with activations (hf:embedded or "
                                    f"hf:PATH_OR_ID); {game.players[i].backend} has none")
        if spec.monitor is not None:  # refused before any model work, not mid-game
            for i in agents:
                if not backends[i].capabilities.activations:
                    raise UserError(f"the monitor needs a backend with activations (hf:embedded or "
                                    f"hf:PATH_OR_ID); {game.players[i].backend} has none")
        requests = profile_requests(spec, systems, agents)
        cache = profiles or ProfileCache()
        pre: list[ProfileRecord | None] = await cache.for_seats(requests, backends)
        yokes: dict[int, Yoke] = {}
        for request in yoke_requests(spec, agents, personas):  # a yoked placebo's other agents
            yoke_record = await cache.profile(request, backends[request.seat])
            yokes[request.seat] = Yoke(Profile.from_record(yoke_record), {
                "persona": request.system.meta.get("persona"), "backend": request.backend, "profile": request.key})
        hooks: list[TurnHook | None] = [None] * len(game.players)
        for i in agents:
            record = pre[i]
            hooks[i] = make_intervention(
                spec.intervention, chat=game.chat_turns > 0,
                profile=Profile.from_record(record) if record is not None else None,
                seed=game.seed * 1000 + i, settings=spec.assessment, yoke=yokes.get(i),
            )
        # white-box steering plays the agent on a steered sibling of its backend; profiles stay unsteered
        playing = [steer_backend(hook, backend) for hook, backend in zip(hooks, backends, strict=True)]
        if spec.monitor is not None:  # the agents under study play on monitored siblings (same answers)
            playing = [monitor_backend(spec.monitor, b) if i in agents else b for i, b in enumerate(playing)]
        engine = GameEngine(game, playing, hooks=hooks, pre_profiles=pre, personas=personas,
                            on_event=on_event, systems=systems)
        play = await engine.play()
        measured: list[list[list[Message]]] = []
        if play.error is None and spec.measure:
            measured = await _measure_after_play(spec, backends, play.players, agents)
        for backend, player in zip(playing, play.players, strict=True):
            backend.release(player.messages)  # the game is over: no request extends these histories
        for i, contexts in zip(agents, measured, strict=False):
            for context in contexts:
                backends[i].release(context)
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
