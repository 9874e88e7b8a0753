"""One game, end to end: pre-play profiles (from the cache), interventions, play, post-play profiles.

This is the unit of work every executor runs (locally or on a Ray worker). It is a pure function of
the spec, its labels and the pre-play profiles handed in, so any executor produces the same record.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from typing import Any

from contagion import __version__
from contagion.backends.base import Backend
from contagion.backends.registry import resolve
from contagion.backends.robust import RobustBackend
from contagion.games.dilemmas import load_dilemma
from contagion.games.engine import play_game, player_name, system_prompt_for
from contagion.games.record import GameRecord, GameSpec
from contagion.messages import Message
from contagion.personas import Persona, resolve_persona
from contagion.steering import build_hooks
from contagion.traits.assess import QUESTION_FORMAT_VERSION, post_play_context, pre_play_context
from contagion.traits.settings import AssessmentSettings, measure

_LOCAL_KINDS = ("embedded", "gguf:", "hf:", "scripted:", "sim:")


def backend_for(spec: str) -> Backend:
    """The shared backend for a spec; remote ones get the robust wrapper (timeouts, retries)."""
    backend = resolve(spec)
    if spec.startswith(_LOCAL_KINDS):
        return backend
    key = f"robust|{spec}"
    cached = _robust.get(key)
    if cached is None:
        # A backend with its own per-request timeout (openai: ``?timeout=``) keeps it: a fixed outer
        # cap would cut a slow server the user allowed more time, and a sampled-fallback score (many
        # requests in one call) that is making progress.
        own_timeout = getattr(backend, "timeout", None)
        cached = _robust[key] = RobustBackend(backend, timeout=None if own_timeout else 120, max_retries=6)
    return cached


_robust: dict[str, RobustBackend] = {}


def system_message(spec: GameSpec, index: int, personas: dict[str, Persona]) -> Message:
    """The system message player ``index`` starts with (what its pre-play profile is measured on)."""
    dilemma = load_dilemma(spec.game)
    persona = resolve_persona(spec.players[index].persona, personas)
    text = system_prompt_for(player_name(index), dilemma, persona, len(spec.players),
                             spec.rounds if spec.reveal_horizon else None)
    return Message(role="system", content=text, meta={"kind": "system_prompt", "persona": persona.name})


def profile_key(backend_identity: str, system: Message, settings: AssessmentSettings) -> str:
    payload = json.dumps({"v": 1, "backend": backend_identity, "system": system.content,
                          "persona": system.meta.get("persona"), "settings": settings.model_dump(mode="json"),
                          "qf": QUESTION_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def needed_profiles(spec: GameSpec, personas: dict[str, Persona]) -> list[tuple[int, str, Message]]:
    """(player index, cache key, system message) for each player whose pre-play profile the game needs."""
    settings = AssessmentSettings.from_spec(spec.assessment)
    out = []
    for i, p in enumerate(spec.players):
        if p.backend.startswith("scripted:"):
            continue
        if p.focal:  # measured before and after play, and the only players an intervention steers
            system = system_message(spec, i, personas)
            out.append((i, profile_key(p.backend, system, settings), system))
    return out


async def measure_pre_profile(backend_spec: str, system: Message, settings: AssessmentSettings) -> dict[str, Any]:
    profile = await measure(backend_for(backend_spec), pre_play_context(system), settings, context_kind="pre")
    return profile.to_record()


def failed_record(spec: GameSpec, labels: dict[str, Any], error: str, wall: float) -> GameRecord:
    return GameRecord(spec=spec, spec_hash=spec.stable_hash(), game={}, players=[], error=error,
                      wall_seconds=wall, labels=labels, contagion_version=__version__)


async def execute_game(
    spec: GameSpec,
    labels: dict[str, Any],
    *,
    personas: dict[str, Persona] | None = None,
    pre_profiles: Sequence[dict[str, Any] | None] | None = None,
) -> GameRecord:
    """Play one game and measure its focal players after play. Failures come back as failed records."""
    personas = personas or {}
    started = time.perf_counter()
    try:
        backends = [backend_for(p.backend) for p in spec.players]
        hooks, profiles = await build_hooks(spec, backends, personas=personas, pre_profiles=pre_profiles)
        record = await play_game(spec, backends=backends, hooks=hooks, pre_profiles=profiles, personas=personas)
        if record.error is None:
            settings = AssessmentSettings.from_spec(spec.assessment)
            for p, backend in zip(record.players, backends, strict=True):
                if p.focal and backend.capabilities.language_model:
                    post = await measure(backend, post_play_context(p.messages), settings, context_kind="post")
                    p.post_profile = post.to_record()
        record.labels = dict(labels)
        record.wall_seconds = round(time.perf_counter() - started, 6)
        return record
    except Exception as exc:  # the run goes on; the store keeps the error
        from contagion.errors import UserError

        if isinstance(exc, UserError):
            raise
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return failed_record(spec, labels, detail, time.perf_counter() - started)
