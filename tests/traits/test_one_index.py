"""One pro-social index: a profile with excluded items, and one with a missing side, give one answer in the
profile itself, in adaptive SIT's drift decision in a game, in the guard's, and in the analysis tables.

The model is a real OpenAI-compatible server on loopback whose answers the test plans item by item: a
probability for " Yes" per statement, or no " No" at all (a floored answer: the item is excluded).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

from contagion.analysis.tables import paired_index, paired_trait_means
from contagion.backends.base import run_sync
from contagion.backends.openai_compat import OpenAIBackend
from contagion.backends.registry import wrap
from contagion.backends.robust import RobustBackend
from contagion.errors import UserError
from contagion.games.engine import TurnContext
from contagion.guard import SITGuard
from contagion.messages import Message
from contagion.steering.interventions import SitAdaptive
from contagion.steering.params import AdaptiveParams
from contagion.testing import LoopbackServer
from contagion.traits.assess import post_play_context
from contagion.traits.profile import ItemScore, Profile
from contagion.traits.settings import AssessmentSettings, measure, measure_agent

PRO, ANTI = ("agreeableness", "honesty"), ("narcissism", "machiavellianism")
SETTINGS = AssessmentSettings(traits=(*PRO, *ANTI), items=3, source_items=1, bootstrap=100)
SCHEDULE = "sit-adaptive:m=1,k=1,threshold=0.05,probe_items=20"  # every measured item is probed
SYSTEM = "You are Avery. You are playing a game with two others."
HISTORY = [Message(role="system", content=SYSTEM), Message(role="user", content="Round 1 results: all cooperated."),
           Message(role="assistant", content="cooperate")]
_STATEMENT = re.compile(r'"(.*)"\nAnswer')


class PlannedAnswers:
    """The server's answers to the trait questions: p(" Yes") per statement, ``None`` for a floored " No";
    a statement not planned gets a probability hashed from its text."""

    def __init__(self) -> None:
        self.plan: dict[str, float | None] = {}

    def p_yes(self, statement: str) -> float | None:
        if statement in self.plan:
            return self.plan[statement]
        return 0.2 + 0.6 * int(hashlib.sha256(statement.encode()).hexdigest()[:8], 16) / 2**32

    def __call__(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        match = _STATEMENT.search(str(body["messages"][-1]["content"]))
        assert match is not None, body["messages"][-1]
        p = self.p_yes(match.group(1))
        top = [{"token": " Yes", "logprob": math.log(p if p is not None else 0.9)}]
        if p is not None:
            top.append({"token": " No", "logprob": math.log(1 - p)})
        top.sort(key=lambda t: -t["logprob"])
        return str(top[0]["token"]), top


@pytest.fixture(scope="module")
def answers() -> PlannedAnswers:
    return PlannedAnswers()


@pytest.fixture(scope="module")
def model(answers: PlannedAnswers) -> Iterator[RobustBackend]:
    with LoopbackServer(answers) as server:
        yield wrap(OpenAIBackend("loopback", server.base_url))


@pytest.fixture(scope="module")
def pre(model: RobustBackend) -> Profile:
    profile = run_sync(measure_agent(model, SYSTEM, SETTINGS))
    assert profile.excluded == 0 and set(profile.traits) == {*PRO, *ANTI}
    return profile


def by_hand(items: list[ItemScore], polarity: dict[str, str]) -> tuple[float | None, float | None]:
    """(the index as the profile defines it, the index of items pooled across traits) over included items."""
    kept = [it for it in items if it.included]
    means = {t: [it.score for it in kept if it.trait == t] for t in polarity}
    means = {t: v for t, v in means.items() if v}
    pro = [sum(v) / len(v) for t, v in means.items() if polarity[t] == "pro"]
    anti = [sum(v) / len(v) for t, v in means.items() if polarity[t] == "anti"]
    pooled_pro = [it.score for it in kept if polarity[it.trait] == "pro"]
    pooled_anti = [it.score for it in kept if polarity[it.trait] == "anti"]
    if not pro or not anti:
        return None, None
    return (sum(pro) / len(pro) - sum(anti) / len(anti),
            sum(pooled_pro) / len(pooled_pro) - sum(pooled_anti) / len(pooled_anti))


def four_answers(pre: Profile, model: RobustBackend) -> tuple[dict[str, tuple[float | None, float | None]],
                                                               dict[str, bool | None]]:
    """(index now, index before) from the profile, adaptive SIT in a game, the guard and the analysis (for
    the last three, before = over the items valid now, as a drift is paired); and
    the two adaptive SITs' decisions (drifting or not; None: no valid probe)."""
    post = run_sync(measure(model, post_play_context(HISTORY), SETTINGS, context_kind="post"))
    means = paired_trait_means(pre.to_record(), post.to_record())
    out: dict[str, tuple[float | None, float | None]] = {
        "profile": (post.prosocial_index, pre.prosocial_index),
        "analysis": (paired_index(means, 2), paired_index(means, 1)),
    }
    sit = SitAdaptive(AdaptiveParams(m=1, k=1, threshold=0.05, probe_items=20), chat=False, profile=pre, seed=0,
                      settings=SETTINGS)
    ctx = TurnContext(player=0, name="Avery", round=2, phase="act", turn=0, messages=tuple(HISTORY),
                      system_prompt=SYSTEM, pre_profile=pre.to_record(), backend=model, seed=0)
    run_sync(sit.before_turn(ctx))
    (entry,) = [e for e in sit.log() if e["event"] == "probe"]
    out["game"] = (entry["index"], entry["pre_index"])
    decisions: dict[str, bool | None] = {"game": entry["inject"] if entry["drop"] is not None else None}
    guard = SITGuard(pre, system_prompt=SYSTEM, schedule=SCHEDULE, backend=model, settings=SETTINGS)
    guard.decide(HISTORY)  # turn 1: no probe yet
    probe = guard.decide(HISTORY).probe
    assert probe is not None
    out["guard"] = (probe.index, probe.pre_index)
    decisions["guard"] = probe.drifting
    return out, decisions


def test_excluded_items_give_one_index_everywhere(answers: PlannedAnswers, pre: Profile,
                                                  model: RobustBackend) -> None:
    measured = {t: [it for it in pre.measured_items() if it.trait == t] for t in (*PRO, *ANTI)}
    answers.plan = {it.statement: 0.3 if it.matching == "Yes" else 0.7 for t in PRO for it in measured[t]}
    answers.plan.update({it.statement: 0.6 if it.matching == "Yes" else 0.4 for t in ANTI for it in measured[t]})
    answers.plan[measured["agreeableness"][0].statement] = None  # excluded: agreeableness keeps 2 items of 3
    answers.plan[measured["agreeableness"][1].statement] = 0.9 if measured["agreeableness"][1].matching == "Yes" \
        else 0.1
    got, decisions = four_answers(pre, model)
    post = run_sync(measure(model, post_play_context(HISTORY), SETTINGS, context_kind="post"))
    assert post.excluded == 1
    polarity = {t: post.polarity_of(t) for t in (*PRO, *ANTI)}
    expected, pooled = by_hand([it for it in post.items if it.role == "measure"], polarity)
    assert expected is not None and pooled is not None
    assert abs(expected - pooled) > 0.01  # the case tells the definition from items pooled across traits
    valid = {it.item_id for it in post.items if it.included}
    paired_before, _ = by_hand([it for it in pre.measured_items() if it.item_id in valid], polarity)
    all_before, _ = by_hand(pre.measured_items(), polarity)
    assert paired_before is not None and all_before is not None and abs(paired_before - all_before) > 1e-4
    for where in ("profile", "analysis", "game", "guard"):
        now, before = got[where]
        assert now == pytest.approx(expected, abs=1e-6), where
        # a drift compares the same items before and after: the excluded item leaves both sides; the
        # profile's own index is over every item it scored
        assert before == pytest.approx(all_before if where == "profile" else paired_before, abs=1e-6), where
    # and the decision follows from that one number: the index fell, so both adaptive SITs now remind
    assert paired_before - expected > 0.05 and decisions == {"game": True, "guard": True}


def test_a_missing_side_gives_no_index_anywhere(answers: PlannedAnswers, pre: Profile, model: RobustBackend) -> None:
    answers.plan = {it.statement: None for it in pre.measured_items() if it.trait in ANTI}
    got, decisions = four_answers(pre, model)
    for where in ("profile", "analysis", "game", "guard"):
        assert got[where][0] is None, where  # never 0.0 for the missing side
    assert decisions == {"game": None, "guard": None}  # no valid probe: no decision either way


def test_a_pre_profile_without_one_side_has_no_index(pre: Profile, model: RobustBackend) -> None:
    no_anti = Profile.model_validate({**pre.model_dump(), "items": [
        it.model_copy(update={"included": False}) if it.trait in ANTI else it for it in pre.items]})
    assert no_anti.index_of(no_anti.measured_items()) is None
    sit = SitAdaptive(AdaptiveParams(m=1, k=1, probe_items=20), chat=False, profile=no_anti, seed=0,
                      settings=SETTINGS)
    assert sit.monitor.pre_index is None
    means = paired_trait_means(no_anti.to_record(), no_anti.to_record())
    assert paired_index(means, 1) is None
    with pytest.raises(UserError, match="adaptive SIT needs measured pro-social and anti-social items"):
        SITGuard(no_anti, system_prompt=SYSTEM, schedule=SCHEDULE, backend=model, settings=SETTINGS)
