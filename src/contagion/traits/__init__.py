"""Implicit-trait assessment: inventories, log-probability scoring in a stated context, profiles and drift.

inventory = load_inventory("builtin").sample(["agreeableness", "narcissism"], per_trait=10, seed=1)
pre = await assess(backend, pre_play_context(system_prompt), inventory, context_kind="pre")
post = await assess(backend, post_play_context(history), inventory, context_kind="post")
change = drift(pre, post)
"""

from contagion.traits.assess import (
    ANSWER_PREFIX,
    QUESTION_FORMAT_VERSION,
    assess,
    bare_context,
    post_play_context,
    pre_play_context,
    question_message,
)
from contagion.traits.inventory import (
    DEFAULT_TRAIT_SETS,
    Inventory,
    Item,
    TraitSets,
    load_inventory,
)
from contagion.traits.profile import ItemScore, Profile, ProfileDrift, TraitDrift, TraitScore, drift

__all__ = [
    "ANSWER_PREFIX",
    "DEFAULT_TRAIT_SETS",
    "QUESTION_FORMAT_VERSION",
    "Inventory",
    "Item",
    "ItemScore",
    "Profile",
    "ProfileDrift",
    "TraitDrift",
    "TraitScore",
    "TraitSets",
    "assess",
    "bare_context",
    "drift",
    "load_inventory",
    "post_play_context",
    "pre_play_context",
    "question_message",
]
