"""Assessment on the real embedded model (SmolLM2-135M through llama.cpp). Kept small: 30 scoring calls."""

from __future__ import annotations

import pytest

from contagion.backends.base import run_sync
from contagion.backends.registry import build, resolve
from contagion.games.dilemmas import load_dilemma
from contagion.games.engine import system_prompt_for
from contagion.messages import Message
from contagion.personas import resolve_persona
from contagion.traits.assess import assess, pre_play_context
from contagion.traits.inventory import Inventory, load_inventory
from contagion.traits.profile import Profile


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory("builtin").sample(["honesty", "psychopathy"], per_trait=3, seed=0)


@pytest.fixture(scope="module")
def context() -> list[Message]:
    prompt = system_prompt_for("Avery", load_dilemma("prisoners-dilemma"), resolve_persona("default"), 3, 5)
    return pre_play_context(prompt, persona="default")


@pytest.fixture(scope="module")
def debiased(inventory: Inventory, context: list[Message]) -> Profile:
    return run_sync(assess(resolve("embedded"), context, inventory, debias=True, context_kind="pre", seed=1))


def test_scores_are_probabilities_and_the_method_is_stated(debiased: Profile) -> None:
    assert debiased.method == "first-token-top-logprobs"  # question format v2: the same rule on every backend
    assert debiased.backend == "embedded"
    assert len(debiased.items) == 6
    for item in debiased.items:
        for s in (item.score, item.score_order_a, item.score_order_b):
            assert s is not None and 0.0 <= s <= 1.0
    for trait in debiased.traits.values():
        assert 0.0 <= trait.ci_low <= trait.mean <= trait.ci_high <= 1.0
    assert debiased.prosocial_index is not None and -1 <= debiased.prosocial_index <= 1


def test_debiased_score_is_the_mean_of_the_two_orders(debiased: Profile) -> None:
    for item in debiased.items:
        assert item.score_order_a is not None and item.score_order_b is not None
        assert item.score == pytest.approx((item.score_order_a + item.score_order_b) / 2, abs=1e-12)
    # the orders really are different questions to the model
    assert any(abs(i.score_order_a - i.score_order_b) > 1e-6 for i in debiased.items)  # type: ignore[operator]


def test_reversed_key_scores_one_minus_s(debiased: Profile, inventory: Inventory, context: list[Message]) -> None:
    reversed_inventory = Inventory(source="reversed", items=[i.reversed() for i in inventory.items])
    rev = run_sync(assess(resolve("embedded"), context, reversed_inventory, context_kind="pre", seed=1))
    for original, flipped in zip(debiased.items, rev.items, strict=True):
        assert original.score_order_a is not None
        assert flipped.score == pytest.approx(1.0 - original.score_order_a, abs=1e-9)


@pytest.mark.slow
def test_same_seed_same_profile_on_a_fresh_model(
    debiased: Profile, inventory: Inventory, context: list[Message]
) -> None:
    fresh = build("embedded")  # a second load: no shared cache with the first
    try:
        again = run_sync(assess(fresh, context, inventory, debias=True, context_kind="pre", seed=1))
    finally:
        run_sync(fresh.aclose())
    assert again.measurement() == debiased.measurement()


def test_the_context_is_encoded_once(debiased: Profile) -> None:
    cost = debiased.cost
    assert cost.calls == 12
    per_call = cost.prompt_tokens / cost.calls
    assert per_call > 250  # the system prompt with the rules
    # prefix reuse: after the first call only each question's own tokens (and < one block) are encoded
    assert cost.prompt_tokens_encoded < per_call + cost.calls * 120
