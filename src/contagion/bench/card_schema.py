"""The schema of ``card.json`` (version :data:`CARD_VERSION`): what a contagion card holds, and what a card
handed to ``contagion leaderboard`` must hold to be read.

A card is written by :func:`contagion.bench.render.write_card` only after it validates against
:class:`CardFile`, and read by :func:`contagion.bench.render.load_card` only through it, so an edited card,
one from elsewhere or one from another contagion version is refused with one line naming the field and
what was expected — never a traceback, never a silently wrong leaderboard. The numbers are bounded by what
they measure: differences of pro-social index drifts (the index lies in [−1, 1]) and of rates lie within
±:data:`ESTIMATE_BOUND`, p-values and power in [0, 1].
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contagion.errors import UserError
from contagion.fileio import validation_message
from contagion.redact import redact, secret_in
from contagion.strict import Int

CARD_VERSION = 2
"""The card format this contagion writes (``card_version`` in every card). Version 2 adds the analysis
fingerprint to the protocol (its hash covers it), each headline's estimand and p-values read from the report's
rows; version 1 cards (no fingerprint) still load, and a leaderboard refuses them next to version 2 ones."""
READABLE_VERSIONS = (1, 2)
"""Every card format this contagion reads."""
ESTIMATE_BOUND = 4.0
"""No headline estimate or interval bound lies outside ±4: each is a difference of two drifts of an index
(or of two rates) that lie in [−1, 1]."""

Finite = Annotated[float, Field(allow_inf_nan=False)]
Bounded = Annotated[float, Field(allow_inf_nan=False, ge=-ESTIMATE_BOUND, le=ESTIMATE_BOUND)]
Probability = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]
Count = Annotated[Int, Field(ge=0)]
Mass = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0 + 1e-6)]
"""A sum of two probabilities (p(Yes) + p(No)): at most 1, within float rounding."""


class CardProtocol(BaseModel):
    """The protocol a card was measured under: what makes cards comparable (the rest describes it)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    version: Int = Field(ge=1)
    size: str = Field(min_length=1)
    hash: str = Field(pattern=r"^[0-9a-f]{16}$", description="The protocol hash: 16 hexadecimal digits.")
    design_hash: str | None = Field(None, pattern=r"^[0-9a-f]{16}$",
                                    description="What was measured (card version 2): 16 hexadecimal digits.")
    analysis_fingerprint: str | None = Field(None, pattern=r"^[0-9a-f]{12}$",
                                             description="The analysis code's fingerprint (card version 2).")


class CardHeadline(BaseModel):
    """One headline of a card (an unavailable one carries no numbers)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    question: str = ""
    estimand: str = ""
    primary: bool = False
    direction: Literal[-1, 1] = -1
    units: str = Field("pro-social index", min_length=1)
    available: bool = False
    reason: str | None = None
    estimate: Bounded | None = None
    ci_low: Bounded | None = None
    ci_high: Bounded | None = None
    p: Probability | None = None
    p_holm: Probability | None = None
    n_games: Count | None = None
    games_a: Count | None = None
    games_b: Count | None = None
    effect: Finite | None = None
    effect_name: str = ""
    test: str = ""
    source: str = ""
    warning: str = ""
    se: Annotated[float, Field(allow_inf_nan=False, ge=0.0)] | None = None
    df: Annotated[float, Field(allow_inf_nan=False, ge=0.0)] | None = None
    power: Probability | None = None
    power_effect: Finite | None = None
    mass_estimate: Bounded | None = None
    mass_p: Probability | None = None
    mass_tost_p: Probability | None = None
    flat_estimate: Bounded | None = None
    flat_low: Bounded | None = None
    flat_high: Bounded | None = None
    net_estimate: Bounded | None = None
    net_p: Probability | None = None
    confidence_gated: bool = False
    significant: bool = False
    detected: bool = False

    @field_validator("ci_high")
    @classmethod
    def _ordered(cls, high: float | None, info: Any) -> float | None:
        low = info.data.get("ci_low")
        if high is not None and low is not None and high < low:
            raise ValueError(f"ci_high ({high:g}) is below ci_low ({low:g})")
        return high


class CardSupport(BaseModel):
    """What the scores rest on: the answers' mean share of the scored position's probability (items and
    actions), with their counts, and whether that share is below half (``low``)."""

    model_config = ConfigDict(extra="forbid")

    mass: Mass | None = None
    items: Count = 0
    item_mass: Mass | None = None
    actions: Count = 0
    action_mass: Mass | None = None
    low: bool = False


class CardScoring(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: dict[str, Count] = Field(default_factory=dict)
    method: str = ""
    actions: dict[str, Count] = Field(default_factory=dict)
    support: CardSupport | None = None


class CardFile(BaseModel):
    """A whole ``card.json``."""

    model_config = ConfigDict(extra="forbid")

    card_version: Int = Field(description=f"The card format; this contagion reads version {CARD_VERSION}.")
    protocol: CardProtocol
    model: str = Field(min_length=1, description="The backend spec of the model measured.")
    backend: str = ""
    scoring: CardScoring = Field(default_factory=CardScoring)
    contagion_version: str = ""
    generated: str = ""
    run: dict[str, Any] = Field(default_factory=dict)
    analysis: dict[str, Any] = Field(default_factory=dict)
    headlines: list[CardHeadline] = Field(min_length=1)
    detected: list[str] = Field(default_factory=list)
    verdict: str = ""
    warnings: list[str] = Field(default_factory=list)
    validation: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fingerprinted(self) -> CardFile:
        if self.card_version >= 2:
            missing = [k for k in ("design_hash", "analysis_fingerprint") if getattr(self.protocol, k) is None]
            if missing:
                raise ValueError(f"a card of version {self.card_version} names its protocol's "
                                 f"{' and '.join(missing)} (protocol.{missing[0]} is missing)")
        return self

    @field_validator("headlines")
    @classmethod
    def _unique(cls, heads: list[CardHeadline]) -> list[CardHeadline]:
        ids = [h.id for h in heads]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"headline id(s) {', '.join(twice)} appear twice")
        return heads


def check_card(data: Any, source: str) -> dict[str, Any]:
    """``data`` validated as a card (a UserError naming ``source``, the field and what was expected, when it is
    not one); returns the card as a plain mapping with every field present."""
    if not isinstance(data, dict):
        raise UserError(f"{source} is not a contagion card (expected a JSON object, got {type(data).__name__})")
    version = data.get("card_version")
    if version is None:
        raise UserError(f"{source} is not a contagion card (no card_version)")
    if isinstance(version, int) and not isinstance(version, bool) and version > CARD_VERSION:
        raise UserError(f"{source} is a card of version {version}, written by a newer contagion (this one reads "
                        f"version {CARD_VERSION}); upgrade with: pip install -U contagion")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise UserError(f"{source}: card_version {version!r} is not one this contagion reads (expected "
                        f"{' or '.join(str(v) for v in READABLE_VERSIONS)})")
    try:
        card = CardFile.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, source, show_input=True)) from None
    secret = secret_in(card.model)
    if secret is not None:
        raise UserError(f"{source}: model {redact(card.model)!r} carries a secret ({secret}); a leaderboard would "
                        "publish it: remove it from the card")
    return card.model_dump(mode="json")
