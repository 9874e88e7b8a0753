"""Steering interventions (none, repeat-system, SIT, adaptive SIT, placebo, white-box ``vector``): their specs
and how one is made.

A yoked placebo (``placebo:kind=yoked``) also takes a :class:`Yoke`: another agent's pre-play profile, which
the trial assembles (this layer never chooses whose).

A trial (:func:`contagion.experiment.trial.run_trial`) makes one intervention per agent under study with
:func:`make_intervention`. SIT's core (reminders, rotation, probe set, drift decision) is
:mod:`contagion.steering.sit`; the guard for other people's agents builds on it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contagion.errors import UserError
from contagion.fileio import validation_message
from contagion.steering.interventions import Intervention, RepeatSystem, Sit, SitAdaptive, VectorSteering
from contagion.steering.params import PARAMS, AdaptiveParams, PlaceboParams, RepeatParams, SitParams, VectorParams
from contagion.steering.placebo import Placebo, Yoke
from contagion.steering.sit import select_reminders
from contagion.traits.profile import Profile
from contagion.traits.settings import AssessmentSettings

__all__ = ["PARAMS", "InterventionSpec", "Yoke", "make_intervention", "needs_profile", "needs_yoke",
           "parse_intervention", "parse_params", "select_reminders", "steers_activations", "validate_intervention"]


class InterventionSpec(BaseModel):
    """Which intervention runs, with its exact parameters (recorded verbatim)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))


def validate_intervention(spec: InterventionSpec) -> Any:
    """The typed parameters of an intervention; unknown names or bad values raise UserError."""
    if spec.name not in PARAMS:
        raise UserError(f"unknown intervention {spec.name!r}; choose one of: {', '.join(PARAMS)}")
    try:
        params = PARAMS[spec.name].model_validate(spec.params)
    except ValidationError as exc:
        raise UserError(validation_message(exc, f"intervention {spec.name}")) from None
    if isinstance(params, VectorParams):  # the file, its trait and the layers are checked now, not mid-run
        VectorSteering.check(params)
    return params


def steers_activations(spec: InterventionSpec) -> bool:
    """Whether the intervention steers the model's activations (only backends with ``activations`` can)."""
    return spec.name == "vector"


def needs_profile(spec: InterventionSpec) -> bool:
    """Whether the intervention needs the agent's pre-play trait profile."""
    return spec.name in ("sit", "sit-adaptive", "placebo")


def needs_yoke(spec: InterventionSpec) -> bool:
    """Whether the intervention also needs another agent's pre-play profile (the yoked placebo's yoke)."""
    return spec.name == "placebo" and spec.params.get("kind") == "yoked"


def make_intervention(
    spec: InterventionSpec, *, chat: bool, profile: Profile | None, seed: int,
    settings: AssessmentSettings | None = None, yoke: Yoke | None = None,
) -> Intervention:
    """One agent's intervention object (``yoke``: whose statements a yoked placebo restates)."""
    params = validate_intervention(spec)
    if spec.name == "none":
        return Intervention(params, chat=chat)
    if spec.name == "repeat-system":
        assert isinstance(params, RepeatParams)
        return RepeatSystem(params, chat=chat)
    if spec.name == "vector":
        assert isinstance(params, VectorParams)
        return VectorSteering(params, chat=chat)
    if profile is None:
        raise UserError(f"intervention {spec.name} needs the agent's pre-play trait profile, and none is available")
    if spec.name == "placebo":  # checked before sit: PlaceboParams is a SitParams
        assert isinstance(params, PlaceboParams)
        return Placebo(params, chat=chat, profile=profile, seed=seed, yoke=yoke)
    if spec.name == "sit":
        assert isinstance(params, SitParams)
        return Sit(params, chat=chat, profile=profile, seed=seed)
    assert isinstance(params, AdaptiveParams)
    return SitAdaptive(params, chat=chat, profile=profile, seed=seed, settings=settings or AssessmentSettings())


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
