"""A valid instrument (issue 13): held-out measurement, answer mass, floors.

SIT quotes only its source items, which are never measured; every item records the mass of its two
answers, and an answer a server did not return is a floor that flags the item (and makes a tie an
invalid action), never a score of 0.5 or a cooperation.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from contagion.backends.base import run_sync
from contagion.backends.registry import resolve
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention
from contagion.testing.loopback import LoopbackServer, default_top_logprobs
from contagion.traits.assess import pre_play_context
from contagion.traits.inventory import load_inventory
from contagion.traits.profile import drift
from contagion.traits.settings import AssessmentSettings, measure


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(("items", "source"), [(3, 3), (10, 6), (None, 4)])
def test_source_and_measurement_sets_are_disjoint_for_every_trait(seed: int, items: int | None, source: int) -> None:
    settings = AssessmentSettings(items=items, source_items=source, seed=seed)
    measured, held = settings.inventory_sample(), settings.inventory_source()
    assert held is not None
    assert not {i.id for i in measured.items} & {i.id for i in held.items}
    assert not {i.statement for i in measured.items} & {i.statement for i in held.items}
    for trait in load_inventory("builtin").traits():
        assert held.by_trait(trait) and measured.by_trait(trait), trait
        assert len(held.by_trait(trait)) == source
        if items is not None:
            assert len(measured.by_trait(trait)) == items
    # the measurement set does not depend on whether a source set is held back
    if items is not None:
        alone = AssessmentSettings(items=items, source_items=0, seed=seed)
        assert alone.inventory_sample() == measured and alone.inventory_source() is None


QUOTE = re.compile(r'"(.*)\."$')


@pytest.mark.slow
def test_a_sit_game_on_the_embedded_model_quotes_only_source_items_and_records_both_drifts() -> None:
    settings = AssessmentSettings(traits=("agreeableness", "machiavellianism"), items=3, source_items=3,
                                  bootstrap=100, min_mass=0.0)
    spec = TrialSpec(
        game=GameSpec(players=(PlayerSpec(backend="embedded"), PlayerSpec(backend="scripted:always-defect",
                                                                          focal=False)),
                      rounds=2, chat_turns=0, seed=5),
        intervention=parse_intervention("sit:k=1,n=2"), assessment=settings,
    )
    record = run_sync(run_trial(spec))
    assert record.error is None, record.error
    agent = record.players[0]
    pre, post = agent.pre_profile, agent.post_profile
    assert pre and post
    roles = {it["item_id"]: it["role"] for it in pre["items"]}
    assert set(roles.values()) == {"measure", "source"}
    source = {it["statement"].rstrip(".") for it in pre["items"] if it["role"] == "source"}
    measured = {it["statement"].rstrip(".") for it in pre["items"] if it["role"] == "measure"}
    quoted = [QUOTE.search(line).group(1) for e in agent.injections  # type: ignore[union-attr]
              for line in e.text.splitlines()[1:]]
    assert quoted, "SIT said nothing"
    assert set(quoted) <= source and not set(quoted) & measured
    # every item has its answer mass; both drifts are in reach of the record
    assert all(0.0 < it["mass"] <= 1.0 for it in pre["items"] + post["items"])
    from contagion.traits.profile import Profile

    primary = drift(Profile.from_record(pre), Profile.from_record(post))
    echo = drift(Profile.from_record(pre), Profile.from_record(post), role="source")
    assert primary.items == "measure" and echo.items == "source"
    assert primary.prosocial_delta is not None and echo.prosocial_delta is not None
    assert primary.mass_delta is not None and primary.toward_half_delta is not None


def _omitting(word: str) -> Any:
    """A responder whose first-token candidates leave out both answers when the question mentions ``word``
    (and both action names when asked to act)."""

    def respond(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = str(body["messages"][-1]["content"])
        top = default_top_logprobs(body)
        if word in text or "choose your action" in text:
            top = [{"token": " Maybe", "logprob": math.log(0.6)}, {"token": " Perhaps", "logprob": math.log(0.3)}]
        return str(top[0]["token"]).strip(), top

    return respond


def test_answers_a_server_omits_are_flagged_and_excluded_never_scored_as_half() -> None:
    inventory = load_inventory("builtin").sample(["agreeableness", "machiavellianism"], 4, seed=2)
    victim = inventory.items[0].statement.split()[-1].strip(".")  # a word of the first statement
    settings = AssessmentSettings(traits=("agreeableness", "machiavellianism"), items=4, source_items=0, seed=2,
                                  bootstrap=100)
    with LoopbackServer(_omitting(victim)) as server:
        backend = resolve(f"openai:loopback@{server.base_url}")
        profile = run_sync(measure(backend, pre_play_context("You are Avery."), settings, context_kind="pre"))
    flagged = [it for it in profile.items if not it.included]
    assert flagged and all(it.floored for it in flagged)
    assert all(victim in it.statement for it in flagged)
    assert profile.excluded == len(flagged)
    counted = sum(t.n for t in profile.traits.values())
    assert counted == len(profile.items) - len(flagged)


def test_an_action_whose_names_a_server_omits_is_invalid_never_cooperate() -> None:
    with LoopbackServer(_omitting("\x00never")) as server:
        model = f"openai:loopback@{server.base_url}"
        spec = TrialSpec(game=GameSpec(players=(PlayerSpec(backend=model), PlayerSpec(backend="scripted:tit-for-tat",
                                                                                     focal=False)),
                                       rounds=2, chat_turns=0, action_mode="score"), measure=False)
        record = run_sync(run_trial(spec))
    assert record.error is None, record.error
    actions = record.players[0].actions
    assert [a.action for a in actions] == ["invalid", "invalid"]
    assert all(len(a.floored) == 2 for a in actions)
    assert record.players[0].total == 0
