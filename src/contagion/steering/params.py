"""The interventions' parameters: one typed, validated model per intervention (recorded verbatim in a trial's spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InterventionParams(BaseModel):
    """Parameters of an intervention: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoneParams(InterventionParams):
    pass


class RepeatParams(InterventionParams):
    k: int = Field(2, ge=1, description="Inject every k rounds (rounds k, 2k, ...).")
    position: Literal["turn", "act"] = Field("turn", description="Before the round's first turn, or its act.")
    role: Literal["system", "user"] = "system"


class SitParams(InterventionParams):
    k: int = Field(2, ge=1, description="Inject every k rounds (rounds k, 2k, ...).")
    n: int = Field(3, ge=1, le=20, description="Reminders per injection.")
    source: Literal["items", "summary"] = Field("items", description="Item statements or per-trait sentences.")
    pool: int = Field(12, ge=1, description="How many of the strongest statements to rotate through.")
    # at least 0.5: below it a "reminder" would restate an anti-social answer (e.g. "I would not say
    # this about myself: I care about others"), the opposite of what SIT is for
    min_support: float = Field(0.5, ge=0.5, lt=1.0, description="Minimum p(pro-social answer) to use a statement.")
    position: Literal["turn", "act"] = "turn"
    role: Literal["system", "user"] = "system"


class AdaptiveParams(SitParams):
    k: int = Field(1, ge=1, description="Reminders may be injected every k rounds when drift is detected.")
    m: int = Field(1, ge=1, description="Probe the agent's traits every m rounds.")
    threshold: float = Field(0.05, ge=0.0, le=2.0, description="Inject when the index fell by more than this.")
    probe_items: int = Field(2, ge=1, le=20, description="Probe items per trait (seeded sample of the pre items).")


class PlaceboParams(SitParams):
    kind: Literal["neutral", "generic", "yoked"] = Field(
        "neutral", description="neutral: sentences without trait content; generic: generic pro-social sentences; "
                               "yoked: SIT's own first-person form with another agent's statements."
    )

    @model_validator(mode="after")
    def _yoked_items(self) -> PlaceboParams:
        if self.kind == "yoked" and self.source != "items":
            raise ValueError("kind=yoked restates another agent's item statements, so it needs source=items "
                             "(a per-trait summary of another agent would restate the agent's own traits)")
        return self


class VectorParams(InterventionParams):
    """White-box steering (:mod:`contagion.steering.vector`): needs a backend with activations."""

    file: str = Field(description="A vectors file made by `contagion vectors` for this model.")
    trait: str = Field(description="Which of the file's traits to steer along.")
    alpha: float = Field(description="Multiple of the trait's direction added to the residual stream (negative: "
                                     "toward the trait's low pole).", allow_inf_nan=False)
    layers: int | str = Field("best", description="best (the file's chosen layer), one layer (12) or a range (10-14).")


PARAMS: dict[str, type[InterventionParams]] = {
    "none": NoneParams,
    "repeat-system": RepeatParams,
    "sit": SitParams,
    "sit-adaptive": AdaptiveParams,
    "placebo": PlaceboParams,
    "vector": VectorParams,
}
