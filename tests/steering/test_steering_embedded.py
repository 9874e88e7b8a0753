"""Every intervention in a real game on the embedded model (SmolLM2-135M through llama.cpp): 2 rounds, a
small trait assessment (2 measured and 2 SIT-source items for each of 2 traits) for the pre-play profile SIT needs."""

from __future__ import annotations

import pytest

from contagion import vocabulary as P
from contagion.backends.base import GenerationConfig, run_sync
from contagion.experiment.trial import GameRecord, TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention, select_reminders
from contagion.steering.interventions import SitParams
from contagion.traits.profile import Profile

pytestmark = pytest.mark.slow

ASSESS = {"items": 2, "source_items": 2, "traits": ["agreeableness", "machiavellianism"], "bootstrap": 100}


def play(intervention: str, chat_turns: int = 0) -> GameRecord:
    spec = TrialSpec(
        game=GameSpec(players=(PlayerSpec(backend="embedded"), PlayerSpec(backend="scripted:always-defect")),
                      rounds=2, chat_turns=chat_turns, seed=11, generation=GenerationConfig(max_tokens=8)),
        intervention=parse_intervention(intervention), assessment=ASSESS, measure=False,
    )
    record = run_sync(run_trial(spec))
    assert record.error is None, record.error
    lm = record.players[0]
    assert [a.method for a in lm.actions] == ["score:first-token-top-logprobs"] * 2
    assert record.invalid_rate == 0.0 and lm.model_seconds > 0
    GameRecord.model_validate_json(record.to_json())
    return record


def test_none_on_the_embedded_model() -> None:
    record = play("none")
    assert record.players[0].injections == [] and record.players[0].pre_profile is None


def test_repeat_system_on_the_embedded_model() -> None:
    record = play("repeat-system:k=1", chat_turns=1)
    lm = record.players[0]
    assert [(e.round, e.phase) for e in lm.injections] == [(1, "talk"), (2, "talk")]
    injected = [m for m in lm.messages if m.meta.get("kind") == P.INJECTION]
    assert [m.content for m in injected] == [lm.system_prompt] * 2
    assert lm.completion_tokens > 0  # it talked after the reminder


def sit_checks(record: GameRecord, params: SitParams) -> list[str]:
    lm = record.players[0]
    assert lm.pre_profile is not None
    profile = Profile.from_record(lm.pre_profile)
    assert profile.context_kind == "pre" and profile.method == "first-token-top-logprobs"
    assert len(profile.measured_items()) == 4 and len(profile.source_items()) == 4
    own = select_reminders(profile, params, seed=record.spec.game.seed * 1000)
    told = [line[2:] for e in lm.injections for line in e.text.splitlines()[1:]]
    assert set(told) <= set(own)  # only the agent's own, supported statements
    return own


def test_sit_on_the_embedded_model() -> None:
    record = play("sit:k=1,n=2")
    own = sit_checks(record, SitParams(k=1, n=2))
    lm = record.players[0]
    if own:
        assert [(e.round, e.phase) for e in lm.injections] == [(1, "act"), (2, "act")]
    else:  # the tiny model endorsed nothing pro-social strongly enough: SIT says so rather than invent
        assert lm.injections == [] and {e["event"] for e in lm.intervention_log} == {"skipped"}


def test_sit_adaptive_on_the_embedded_model() -> None:
    record = play("sit-adaptive:k=1,m=1,threshold=0,probe_items=1")
    sit_checks(record, SitParams(k=1, n=3))
    lm = record.players[0]
    probes = [e for e in lm.intervention_log if e["event"] == "probe"]
    assert [e["round"] for e in probes] == [2]
    (probe,) = probes
    assert -1 <= probe["index"] <= 1 and -1 <= probe["pre_index"] <= 1
    assert probe["inject"] == (probe["drop"] > 0)
    assert [e.round for e in lm.injections] in ([], [2])
    if lm.injections:
        assert probe["inject"]


def test_sit_adaptive_probes_count_in_the_players_totals() -> None:
    # An unreachable threshold: the probe runs but never injects, so the game is the one played with
    # no intervention, and the player's totals differ from it by exactly the probe's model work.
    plain = play("none").players[0]
    lm = play("sit-adaptive:m=1,threshold=2,probe_items=1").players[0]
    assert lm.injections == [] and [m.content for m in lm.messages] == [m.content for m in plain.messages]
    (probe,) = [e for e in lm.intervention_log if e["event"] == "probe"]
    assert probe["calls"] == 2 and probe["prompt_tokens"] > 0  # 1 item for each of 2 traits
    assert lm.prompt_tokens == plain.prompt_tokens + probe["prompt_tokens"]
    assert lm.completion_tokens == plain.completion_tokens
