"""The controls of issue 14 on real games of the embedded model (SmolLM2-135M through llama.cpp), played
through the real runner from a config: 2 rounds, no chat, a few trait items for the profile SIT and the
placebo need. Placebo reminders match SIT's schedule exactly and its length within 10 %; the option order
alternates with the seed; the malicious player's seat varies with the seed; actions are sampled."""

from __future__ import annotations

import pytest
from rich.console import Console

from contagion import vocabulary as P
from contagion.experiment.config import parse_config
from contagion.experiment.record import GameRecord
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from contagion.steering.placebo import TOLERANCE

pytestmark = pytest.mark.slow

SIT = "sit:k=1,n=2"
PLACEBO = "placebo:kind=neutral,k=1,n=2"
GRID = {
    "name": "controls on the embedded model",
    "models": ["embedded"],
    "games": ["prisoners-dilemma"],
    "compositions": {"one-malicious": ["default", "default", "malicious"]},
    "interventions": [SIT, PLACEBO],
    "chat_turns": [0],
    "rounds": 2,
    "repetitions": 2,  # seeds 0 and 1: even and odd (option order), and two different seatings
    "seed": 0,
    "measure_traits": False,
    "assessment": {"items": 2, "traits": ["agreeableness", "machiavellianism"], "bootstrap": 100},
    "generation": {"max_tokens": 8},
}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], GameRecord]:
    out = tmp_path_factory.mktemp("controls") / "run"
    config = parse_config(GRID)
    assert config.action_mode == "sample" and config.seat_order == "shuffled"
    summary = Runner(config, out, progress=False, console=Console(quiet=True)).run()
    assert summary.finished == 4 and summary.failed == 0
    with Store.open_existing(out) as store:
        found = {(r.labels["intervention"], r.spec.game.seed): r for r in store.iter_records()}
    assert all(r.error is None for r in found.values())
    return found


def test_placebo_reminders_match_sits_schedule_exactly_and_its_length_within_ten_percent(
    records: dict[tuple[str, int], GameRecord],
) -> None:
    compared = 0
    for seed in (0, 1):
        sit = records[("sit:k=1,n=2", seed)]
        placebo = records[("placebo:k=1,kind=neutral,n=2", seed)]
        for s, p in zip(sit.players, placebo.players, strict=True):
            assert s.persona == p.persona and s.pre_profile == p.pre_profile  # the same agent, the same profile
            assert [(e.round, e.phase, e.role) for e in p.injections] == [(e.round, e.phase, e.role)
                                                                           for e in s.injections]
            for se, pe in zip(s.injections, p.injections, strict=True):
                assert pe.intervention == "placebo" and se.intervention == "sit"
                assert abs(len(pe.text) - len(se.text)) <= TOLERANCE * len(se.text), (se.text, pe.text)
                assert pe.text.count("\n- ") == se.text.count("\n- ")
                compared += 1
            if s.persona == "malicious":
                assert s.injections == [] and p.injections == []  # only the agents under study are steered
    # the tiny model may endorse too little for SIT to speak; the test must still compare something
    assert compared > 0


def test_the_option_order_alternates_with_the_seed(records: dict[tuple[str, int], GameRecord]) -> None:
    for (_, seed), record in records.items():
        expected = "cooperate-first" if seed % 2 == 0 else "defect-first"
        assert record.spec.game.option_order == expected == record.labels["option_order"]
        first = "'cooperate' or 'defect'" if expected == "cooperate-first" else "'defect' or 'cooperate'"
        for p in record.players:
            prompts = [m.content for m in p.messages if m.meta.get("kind") == P.ACT]
            assert len(prompts) == 2 and all(first in m for m in prompts)


def test_the_malicious_seat_varies_with_the_seed(records: dict[tuple[str, int], GameRecord]) -> None:
    seat = {}
    for (_, seed), record in records.items():
        personas = [p.persona for p in record.players]
        assert sorted(personas) == ["default", "default", "malicious"]
        where = personas.index("malicious")
        assert record.labels["seats"][where] == 2  # the composition's malicious seat, recorded
        seat.setdefault(seed, set()).add(where)
    assert all(len(v) == 1 for v in seat.values())  # the same seating in both interventions of a seed
    assert seat[0] != seat[1]


def test_actions_are_sampled_with_recorded_seeds(records: dict[tuple[str, int], GameRecord]) -> None:
    for record in records.values():
        for p in record.players:
            for a in p.actions:
                assert a.method.startswith("score:") and a.selection == "sample"
                assert a.sample_seed is not None and a.p_cooperate is not None and 0.0 < a.p_cooperate < 1.0
                assert a.action in ("cooperate", "defect")
