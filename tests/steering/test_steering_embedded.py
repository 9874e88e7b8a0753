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


def test_yoked_placebo_on_the_embedded_model() -> None:
    """The yoke is the embedded model itself as a benevolent agent (its items sampled with the next seed): its
    message is SIT's form with statements the agent's own SIT would never quote (a skip says why)."""
    from contagion.experiment.profiles import ProfileCache
    from contagion.steering.placebo import yoked_statements
    from contagion.steering.sit import GAME_OPENING, ranked_statements

    assess = {"items": 2, "source_items": 6, "traits": ["agreeableness", "machiavellianism"], "bootstrap": 100}
    cache = ProfileCache()
    spec = TrialSpec(
        game=GameSpec(players=(PlayerSpec(backend="embedded"), PlayerSpec(backend="scripted:always-defect")),
                      rounds=2, chat_turns=0, seed=11, generation=GenerationConfig(max_tokens=8)),
        intervention=parse_intervention("placebo:kind=yoked,k=1,n=2"), assessment=assess, measure=False,
    )
    record = run_sync(run_trial(spec, profiles=cache))
    assert record.error is None, record.error
    lm = record.players[0]
    params = SitParams(k=1, n=2)
    own = Profile.from_record(lm.pre_profile)
    reminders = set(select_reminders(own, params, seed=record.spec.game.seed * 1000))
    events = lm.intervention_log
    assert len(events) == 2 and {e["yoke"]["persona"] for e in events} == {"benevolent"}
    yoke = Profile.from_record(cache.get(events[0]["yoke"]["profile"]))
    assert yoke.context_kind == "pre" and yoke.method == "first-token-top-logprobs"
    supported = {s for _, s in ranked_statements(yoke, params, record.spec.game.seed * 1000)}
    usable = yoked_statements(own, yoke, params, record.spec.game.seed * 1000)
    for e in lm.injections:
        lines = e.text.splitlines()
        assert lines[0] == GAME_OPENING
        told = [line[2:] for line in lines[1:]]
        assert set(told) <= supported and not set(told) & reminders  # another agent's, never its own reminders
        assert len(set(told)) == len(told) or len(usable) < 2  # no repeat within a message while there are enough
    assert lm.injections  # the yoke's own item sample gives it statements beyond the agent's reminders
    skipped = [e for e in events if e["event"] == "skipped"]
    assert len(skipped) + len(lm.injections) == 2
    for e in skipped:  # the model's yoke endorsed nothing beyond the agent's own reminders (or SIT had none)
        assert "yoke" in e["reason"] or "SIT would have no supported reminder" in e["reason"]
