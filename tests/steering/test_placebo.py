"""Placebo interventions: SIT's schedule exactly, SIT's length within 10 % (characters), none of SIT's
content; the banks hold no game or control-trait vocabulary; parameters and errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from contagion.errors import UserError
from contagion.experiment.trial import GameRecord, TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import needs_profile, parse_intervention
from contagion.steering.placebo import GENERIC, NEUTRAL, TOLERANCE, LengthMatcher
from contagion.traits.inventory import load_inventory
from tests.traits.test_inventory_v2 import FORBIDDEN, _game_words, _words

ASSESS = {"items": 4, "bootstrap": 100}


async def pair(placebo: str, sit: str, *, seed: int, chat_turns: int, rounds: int = 6) -> tuple[GameRecord, GameRecord]:
    """The same game under the placebo and under the SIT it stands in for."""
    out = []
    for iv in (placebo, sit):
        spec = TrialSpec(game=GameSpec(players=(PlayerSpec(backend="sim:planted"), PlayerSpec(backend="sim:null"),
                                                PlayerSpec(backend="scripted:always-defect")),
                                       rounds=rounds, chat_turns=chat_turns, seed=seed),
                         intervention=parse_intervention(iv), assessment=ASSESS, measure=False)
        record = await run_trial(spec)
        assert record.error is None, record.error
        out.append(record)
    return out[0], out[1]


def bullets(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines()[1:]]


@pytest.mark.parametrize("kind", ["neutral", "generic"])
@pytest.mark.parametrize("params", ["k=1,n=3", "k=2,n=2,position=act", "k=1,n=1,role=user", "k=1,source=summary"])
@pytest.mark.parametrize("chat_turns", [0, 1])
async def test_a_placebo_matches_sits_schedule_exactly_and_its_length_within_ten_percent(
    kind: str, params: str, chat_turns: int
) -> None:
    ratios = []
    for seed in (0, 1, 2):
        placebo, sit = await pair(f"placebo:kind={kind},{params}", f"sit:{params}", seed=seed, chat_turns=chat_turns)
        for p, s in zip(placebo.players, sit.players, strict=True):
            schedule = [(e.round, e.phase, e.role) for e in s.injections]
            assert [(e.round, e.phase, e.role) for e in p.injections] == schedule
            assert {e.intervention for e in p.injections} <= {"placebo"}
            for pe, se, log in zip(p.injections, s.injections, [x for x in p.intervention_log
                                                              if x["event"] == "placebo"], strict=True):
                assert abs(len(pe.text) - len(se.text)) <= TOLERANCE * len(se.text), (pe.text, se.text)
                assert len(bullets(pe.text)) == len(bullets(se.text))  # the same shape
                assert (log["sit_chars"], log["placebo_chars"]) == (len(se.text), len(pe.text))
                assert not set(bullets(pe.text)) & set(bullets(se.text))
                assert "who I am" not in pe.text and "my own answers" not in pe.text.lower()
                ratios.append(len(pe.text) / len(se.text))
            if s.injections:
                assert p.pre_profile is not None  # it needs the profile to know SIT's message
            # where SIT has nothing to say, neither does the placebo (and it logs why)
            assert [x["round"] for x in p.intervention_log if x["event"] == "skipped"] == \
                [x["round"] for x in s.intervention_log if x["event"] == "skipped"]
    assert ratios, "SIT injected nothing in any game: the test would prove nothing"


async def test_placebo_sentences_come_from_its_bank_not_from_the_agents_profile() -> None:
    inventory = load_inventory("builtin")
    statements = {i.statement.strip().rstrip(".").lower() for i in inventory.items}
    for kind, bank in (("neutral", NEUTRAL), ("generic", GENERIC)):
        placebo, _ = await pair(f"placebo:kind={kind},k=1,n=3", "sit:k=1,n=3", seed=4, chat_turns=0)
        agent = placebo.players[0]
        assert agent.injections
        profile_statements = {it["statement"].strip().rstrip(".").lower() for it in agent.pre_profile["items"]}
        for e in agent.injections:
            for b in bullets(e.text):
                parts = [x for x in re.split(r"(?<=[.!?]) ", b) if x]
                assert all(part in bank for part in parts), b
                assert not any(s in b.lower() for s in profile_statements | statements)


@pytest.mark.parametrize(("name", "bank"), [("neutral", NEUTRAL), ("generic", GENERIC)])
def test_the_banks_hold_no_game_vocabulary(name: str, bank: tuple[str, ...]) -> None:
    forbidden = FORBIDDEN | _game_words()
    hits = {s: sorted(_words(s) & forbidden) for s in bank if _words(s) & forbidden}
    assert hits == {}
    assert len(set(bank)) == len(bank)


def test_the_neutral_bank_has_no_trait_content_and_avoids_the_control_traits() -> None:
    # the built-in inventory's neutral control traits are mathematics and cold weather: a placebo about them
    # would move the controls it is meant to leave alone
    topics = {"mathematics", "mathematical", "equation", "equations", "number", "numbers", "cold", "winter", "snow",
              "weather", "ice", "frost", "rain"}
    social = {"people", "others", "honest", "honesty", "kind", "kindness", "fair", "trust", "help", "respect",
              "care", "i", "me", "my", "you", "your"}
    for s in NEUTRAL:
        assert not _words(s) & (topics | social), s


def test_the_matcher_reaches_any_reminder_length_within_tolerance() -> None:
    for bank in (NEUTRAL, GENERIC):
        matcher = LengthMatcher(bank, "t")
        # a SIT bullet is at least 30 characters ('I hold this about myself: "…."'); hub items run long
        for target in [*range(30, 400, 3), 600, 900]:
            got = len(matcher.pick(target))
            assert abs(got - target) <= (0.05 if target >= 60 else TOLERANCE) * target, (target, got)


def test_placebo_parameters_and_errors() -> None:
    spec = parse_intervention("placebo:kind=generic,k=2,n=3")
    assert spec.label() == "placebo:k=2,kind=generic,n=3" and needs_profile(spec)
    assert parse_intervention("placebo").params == {}
    with pytest.raises(UserError, match="intervention placebo: kind"):
        parse_intervention("placebo:kind=loud")
    with pytest.raises(UserError, match="intervention placebo"):
        parse_intervention("placebo:colour=red")


async def test_the_sim_models_rule_ignores_a_placebo() -> None:
    """Today's planted rule responds to SIT-tagged injections only: a placebo changes no trait answer."""
    records: dict[str, Any] = {}
    for iv in ("none", "placebo:kind=generic,k=1"):
        spec = TrialSpec(game=GameSpec(players=(PlayerSpec(backend="sim:planted"),
                                                PlayerSpec(backend="scripted:always-defect")),
                                       rounds=3, chat_turns=0, seed=1, action_mode="auto"),
                         intervention=parse_intervention(iv), assessment=ASSESS, measure=True)
        records[iv] = await run_trial(spec)
    a, b = (records[k].players[0] for k in records)
    assert b.injections and not a.injections
    assert [a_.action for a_ in a.actions] == [b_.action for b_ in b.actions]
