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
from contagion.traits.assess import assess, pre_play_context
from contagion.traits.inventory import DEFAULT_TRAIT_SETS, Inventory, TraitSets, load_inventory
from contagion.traits.profile import Profile


class AssessmentSettings(BaseModel):
    """Which items are asked and how (part of every game spec that measures traits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inventory: str = Field("builtin", description="'builtin', 'hub', or a path to persona JSONL / YAML.")
    traits: tuple[str, ...] | None = Field(
        None, description="Traits to measure (None = all in the inventory)."
    )
    items: Int | None = Field(10, ge=1, description="Items per trait measured (the measurement set), sampled "
                                                    "with the seed (None = all but the SIT source set).")
    source_items: Int = Field(6, ge=0, le=1000, description="Items per trait held out as SIT's source set: "
                              "reminders are drawn from them only, never from the measured items (0 = none).")
    min_mass: float = Field(0.05, ge=0.0, le=1.0, description="Items whose two answers together get less "
                            "probability than this (or whose answers the server did not return) are flagged "
                            "and left out of the primary scores.")
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
        """The measurement set: ``items`` per trait, a seeded sample."""
        return _split(self.inventory, self.traits, self.items, self.source_items, self.seed)[0]

    def inventory_source(self) -> Inventory | None:
        """SIT's source set: up to ``source_items`` per trait from the items not measured (seeded), or
        None when there are none. Disjoint from :meth:`inventory_sample` by construction."""
        return _split(self.inventory, self.traits, self.items, self.source_items, self.seed)[1]

    @classmethod
    def from_spec(cls, data: dict[str, Any] | None) -> AssessmentSettings:
        return cls.model_validate(data or {})


@functools.lru_cache(maxsize=32)
def _load(source: str, traits: tuple[str, ...] | None) -> Inventory:
    # the hub and directories load only the traits asked for (and the hub defaults to a short list)
    return load_inventory(source, traits=traits)


@functools.lru_cache(maxsize=128)
def _split(source: str, traits: tuple[str, ...] | None, items: int | None, source_items: int,
           seed: int) -> tuple[Inventory, Inventory | None]:
    """(measurement set, SIT source set). The measurement set is the same seeded sample it would be without
    a source set; the source set is a seeded sample of the rest, so the two never share an item."""
    full = _load(source, traits)
    wanted = list(traits) if traits is not None else full.traits()
    if items is None and source_items:
        # "all items" leaves room for the source set: each trait keeps source_items back
        measure_ids = set()
        for trait in wanted:
            pool = full.sample([trait], None, seed).items
            keep = max(1, len(pool) - source_items)
            measure_ids |= {i.id for i in full.sample([trait], keep, seed).items}
        measured = Inventory(source=full.source, items=[i for i in full.items if i.id in measure_ids])
    else:
        measured = full.sample(traits, items, seed)
    if not source_items:
        return measured, None
    taken = {i.id for i in measured.items}
    rest = Inventory(source=full.source, items=[i for i in full.items if i.id not in taken])
    left = [t for t in wanted if rest.by_trait(t)]
    if not left:
        return measured, None
    return measured, rest.sample(left, source_items, seed + 1)


async def measure(
    backend: Backend,
    context: Sequence[Message],
    settings: AssessmentSettings,
    *,
    context_kind: str,
    inventory: Inventory | None = None,
) -> Profile:
    """Measure a profile after ``context`` with these settings.

    Both item sets are asked: the measurement set (the primary scores) and SIT's source set (labelled
    ``role="source"``, summarised apart), so drift can be read on items SIT never quoted and, separately,
    on the ones it did. ``inventory`` replaces both with one set of measured items (e.g. a probe).
    """
    return await assess(
        backend,
        context,
        inventory or settings.inventory_sample(),
        source=None if inventory is not None else settings.inventory_source(),
        min_mass=settings.min_mass,
        trait_sets=settings.trait_sets(),
        debias=settings.debias,
        context_kind=context_kind,
        seed=settings.seed,
        bootstrap=settings.bootstrap,
    )


async def measure_agent(backend: Backend, system: Message | str, settings: AssessmentSettings,
                        *, persona: str | None = None) -> Profile:
    """An agent's pre-play profile: the settings' items asked right after its system prompt alone (the
    one pre-play measurement: trials, the runner's cache, ``contagion assess`` and the guard all use it).

    ``system`` is the engine's system message (it carries the persona) or the prompt text, with
    ``persona`` naming the persona.
    """
    return await measure(backend, pre_play_context(system, persona=persona), settings, context_kind="pre")
