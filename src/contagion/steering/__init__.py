"""Steering interventions (none, repeat-system, SIT, adaptive SIT) and how games get them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from contagion.backends.base import Backend
from contagion.errors import UserError
from contagion.games.engine import GameEngine, TurnHook
from contagion.games.record import GameSpec, InterventionSpec
from contagion.personas import Persona
from contagion.steering.interventions import (
    PARAMS,
    AdaptiveParams,
    Intervention,
    RepeatParams,
    RepeatSystem,
    Sit,
    SitAdaptive,
    SitParams,
    select_reminders,
)
from contagion.traits.assess import pre_play_context
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings, measure

__all__ = ["PARAMS", "build_hooks", "make_intervention", "needs_profile", "parse_intervention", "parse_params",
           "select_reminders", "validate_intervention"]


def validate_intervention(spec: InterventionSpec) -> Any:
    """The typed parameters of an intervention; unknown names or bad values raise UserError."""
    if spec.name not in PARAMS:
        raise UserError(f"unknown intervention {spec.name!r}; choose one of: {', '.join(PARAMS)}")
    try:
        return PARAMS[spec.name].model_validate(spec.params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or spec.name
        raise UserError(f"intervention {spec.name}: {where}: {first['msg']}") from None


def needs_profile(spec: InterventionSpec) -> bool:
    return spec.name in ("sit", "sit-adaptive")


def make_intervention(
    spec: InterventionSpec, *, chat: bool, profile: Profile | None, seed: int,
    settings: AssessmentSettings | None = None,
) -> Intervention:
    """One agent's intervention object."""
    params = validate_intervention(spec)
    if spec.name == "none":
        return Intervention(params, chat=chat)
    if spec.name == "repeat-system":
        assert isinstance(params, RepeatParams)
        return RepeatSystem(params, chat=chat)
    if profile is None:
        raise UserError(f"intervention {spec.name} needs the agent's pre-play trait profile, and none is available")
    if spec.name == "sit":
        assert isinstance(params, SitParams)
        return Sit(params, chat=chat, profile=profile, seed=seed)
    assert isinstance(params, AdaptiveParams)
    return SitAdaptive(params, chat=chat, profile=profile, seed=seed, settings=settings or AssessmentSettings())


async def build_hooks(
    spec: GameSpec,
    backends: Sequence[Backend],
    *,
    personas: dict[str, Persona] | None = None,
    pre_profiles: Sequence[dict[str, Any] | None] | None = None,
) -> tuple[list[TurnHook | None], list[dict[str, Any] | None]]:
    """Each player's intervention hook, and pre-play profiles where the intervention needs them.

    Interventions guard the focal players (the agents under study, ``PlayerSpec.focal``); co-players
    such as a malicious one or a scripted bot are never steered, so a mitigation is not confounded
    with reforming the opponent.

    ``pre_profiles`` given by the caller (e.g. the runner's cache) are used as they are; missing ones
    are measured here for language-model players when the intervention needs them.
    """
    validate_intervention(spec.intervention)
    settings = AssessmentSettings.from_spec(spec.assessment)
    profiles: list[dict[str, Any] | None] = list(pre_profiles) if pre_profiles is not None else [None] * len(backends)
    hooks: list[TurnHook | None] = []
    # the engine builds the system prompts; reuse it rather than re-deriving them
    engine = GameEngine(spec, backends=backends, personas=personas)
    for i, backend in enumerate(backends):
        player = engine.players[i]
        if not backend.capabilities.language_model or not spec.players[i].focal:
            hooks.append(None)  # interventions guard the agents under study, not their co-players
            continue
        if profiles[i] is None and needs_profile(spec.intervention):
            prof = await measure(backend, pre_play_context(player.messages[0]), settings, context_kind="pre")
            profiles[i] = prof.to_record()
        record = profiles[i]
        profile = Profile.from_record(record) if record is not None else None
        hooks.append(make_intervention(spec.intervention, chat=spec.chat_turns > 0, profile=profile,
                                       seed=spec.seed * 1000 + i, settings=settings))
    return hooks, profiles


def parse_params(text: str) -> dict[str, Any]:
    """``k=2,n=3,source=items`` → {"k": 2, "n": 3, "source": "items"} (numbers become numbers)."""
    params: dict[str, Any] = {}
    if not text:
        return params
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UserError(f"parameter {part!r} must look like name=value")
        params[key.strip()] = _number(value.strip())
    return params


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_intervention(text: str) -> InterventionSpec:
    """``sit:k=2,n=3`` → InterventionSpec(name="sit", params={"k": 2, "n": 3}), validated."""
    name, _, rest = text.strip().partition(":")
    spec = InterventionSpec(name=name, params=parse_params(rest))
    validate_intervention(spec)
    return spec
