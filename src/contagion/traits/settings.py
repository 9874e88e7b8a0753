"""How an agent's traits are measured in a game: one typed settings object and one call.

The experiment layer and the interventions share it, so a pre-play profile measured for SIT and the
pre/post profiles of the analysis use the same items, scoring and seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contagion.backends.base import Backend
from contagion.messages import Message
from contagion.strict import Int, Seed, seed_field
from contagion.traits.assess import assess
from contagion.traits.inventory import DEFAULT_TRAIT_SETS, Inventory, TraitSets, load_inventory
from contagion.traits.profile import Profile


class AssessmentSettings(BaseModel):
    """Which items are asked and how (part of every game spec that measures traits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inventory: str = Field("builtin", description="'builtin', 'hub', or a path to persona JSONL / YAML.")
    traits: tuple[str, ...] | None = Field(
        None, description="Traits to measure (None = all in the inventory)."
    )
    items: Int | None = Field(10, ge=1, description="Items per trait, sampled with the seed (None = all).")
    debias: bool = Field(False, description="Ask with the answers in both orders and average.")
    seed: Seed = seed_field(0, description="Item sampling and bootstrap seed.")
    bootstrap: Int = Field(500, ge=100, le=1_000_000, description="Bootstrap resamples for CIs.")
    pro_social: tuple[str, ...] | None = Field(None, description="Override the pro-social trait set.")
    anti_social: tuple[str, ...] | None = Field(None, description="Override the anti-social trait set.")

    def trait_sets(self) -> TraitSets:
        if self.pro_social is None and self.anti_social is None:
            return DEFAULT_TRAIT_SETS
        return TraitSets(
            pro_social=self.pro_social if self.pro_social is not None else DEFAULT_TRAIT_SETS.pro_social,
            anti_social=self.anti_social if self.anti_social is not None else DEFAULT_TRAIT_SETS.anti_social,
        )

    def inventory_full(self) -> Inventory:
        """Every item of the chosen traits (before sampling)."""
        return _load(self.inventory, self.traits)

    def inventory_sample(self) -> Inventory:
        return _sample(self.inventory, self.traits, self.items, self.seed)

    @classmethod
    def from_spec(cls, data: dict[str, Any] | None) -> AssessmentSettings:
        return cls.model_validate(data or {})


@functools.lru_cache(maxsize=32)
def _load(source: str, traits: tuple[str, ...] | None) -> Inventory:
    # the hub and directories load only the traits asked for (and the hub defaults to a short list)
    return load_inventory(source, traits=traits)


@functools.lru_cache(maxsize=128)
def _sample(source: str, traits: tuple[str, ...] | None, items: int | None, seed: int) -> Inventory:
    return _load(source, traits).sample(traits, items, seed)


async def measure(
    backend: Backend,
    context: Sequence[Message],
    settings: AssessmentSettings,
    *,
    context_kind: str,
    inventory: Inventory | None = None,
) -> Profile:
    """Measure a profile after ``context`` with these settings (``inventory`` overrides the sample)."""
    return await assess(
        backend,
        context,
        inventory or settings.inventory_sample(),
        trait_sets=settings.trait_sets(),
        debias=settings.debias,
        context_kind=context_kind,
        seed=settings.seed,
        bootstrap=settings.bootstrap,
    )
