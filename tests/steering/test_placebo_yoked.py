"""The yoked placebo (``placebo:kind=yoked``): SIT's own message and first-person form, SIT's schedule and length
class, filled with another agent's statements (the same model and seat under another persona), never the
agent's own and never a measured item; deterministic; available in an all-default group, where every agent
has the same persona; the record names whose statements were used."""

from __future__ import annotations

import re

import pytest

from contagion.backends.registry import resolve
from contagion.errors import UserError
from contagion.experiment.profiles import ProfileCache, needed_profiles, profile_requests, yoke_persona, yoke_requests
from contagion.experiment.trial import GameRecord, TrialSpec, run_trial
from contagion.games.engine import TurnContext, system_messages
from contagion.games.record import GameSpec, PlayerSpec
from contagion.personas import Persona
from contagion.steering import Yoke, make_intervention, needs_yoke, parse_intervention, select_reminders
from contagion.steering.params import SitParams
from contagion.steering.placebo import YokedPicker, yoked_statements
from contagion.steering.sit import GAME_OPENING, ranked_statements
from contagion.traits.profile import Profile

ASSESS = {"items": 4, "bootstrap": 100}
ALL_DEFAULT = (PlayerSpec(backend="sim:planted"),) * 3
FORM = re.compile(r'^- I (hold this about myself|would not say this about myself): "(.+)"$')


async def play(intervention: str, *, seed: int, players: tuple[PlayerSpec, ...] = ALL_DEFAULT,
               cache: ProfileCache | None = None) -> GameRecord:
    spec = TrialSpec(game=GameSpec(players=players, rounds=4, chat_turns=1, seed=seed),
                     intervention=parse_intervention(intervention), assessment=ASSESS, measure=False)
    record = await run_trial(spec, profiles=cache)
    assert record.error is None, record.error
    return record


def quoted(text: str) -> list[tuple[str, str]]:
    """(form, statement) of each bullet of a reminder; fails on a bullet not in SIT's first-person form."""
    out = []
    for line in text.splitlines()[1:]:
        m = FORM.match(line)
        assert m is not None, line
        out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize("params", ["k=1,n=3", "k=2,n=2", "k=1,n=1,position=act"])
async def test_yoked_placebo_has_sits_form_schedule_and_length_but_another_agents_statements(params: str) -> None:
    cache = ProfileCache()
    ratios: list[float] = []
    for seed in (0, 1):
        yoked = await play(f"placebo:kind=yoked,{params}", seed=seed, cache=cache)
        sit = await play(f"sit:{params}", seed=seed, cache=cache)
        own_keys = {r.key for r in profile_requests(sit.spec, system_messages(sit.spec.game), sit.spec.agents())}
        for i, (p, s) in enumerate(zip(yoked.players, sit.players, strict=True)):
            assert p.persona == "default"  # an all-default group: every agent the same persona
            assert [(e.round, e.phase, e.role) for e in p.injections] == [(e.round, e.phase, e.role)
                                                                          for e in s.injections]
            assert p.injections, "SIT injected nothing: the test would prove nothing"
            own = Profile.from_record(p.pre_profile)
            sit_params = SitParams.model_validate(parse_intervention(f"sit:{params}").params)
            ranked = ranked_statements(own, sit_params, seed * 1000 + i)
            own_pool = {st.statement.rstrip(".") for st, _ in ranked[: sit_params.pool]}
            own_supported = {st.statement.rstrip(".") for st, _ in ranked}
            measured = {it.statement.rstrip(".") for it in own.items if it.role == "measure"}
            logs = [x for x in p.intervention_log if x["event"] == "placebo"]
            assert len(logs) == len(p.injections)
            for pe, se, log in zip(p.injections, s.injections, logs, strict=True):
                assert pe.text.splitlines()[0] == GAME_OPENING == se.text.splitlines()[0]  # SIT's own opening
                mine, theirs = quoted(pe.text), quoted(se.text)
                assert len(mine) == len(theirs)  # one bullet per SIT bullet
                statements = {st for _, st in mine}
                assert not statements & own_pool  # never the agent's own reminders
                # in this group the yoke supports enough statements the agent does not: only those are used
                assert not statements & own_supported
                assert not statements & measured  # never a measured item
                assert not statements & {st for _, st in theirs}
                assert (log["sit_chars"], log["placebo_chars"]) == (len(se.text), len(pe.text))
                ratios.append(len(pe.text) / len(se.text))
                # whose: the same model in the same seat, as a benevolent agent, named by its profile key
                assert log["yoke"]["persona"] == "benevolent" and log["yoke"]["backend"] == "sim:planted"
                yoke_record = cache.get(log["yoke"]["profile"])
                assert yoke_record is not None and log["yoke"]["profile"] not in own_keys
                yoke = Profile.from_record(yoke_record)
                supported = {it.item_id: sentence for it, sentence in ranked_statements(yoke, sit_params, 0)}
                assert log["items"] and set(log["items"]) <= set(supported)  # the yoke's supported statements
                assert [b[2:] for b in pe.text.splitlines()[1:]] == [supported[x] for x in log["items"]]
    # the length class of SIT's message: each bullet matched in characters to SIT's
    assert max(abs(r - 1) for r in ratios) < 0.25, ratios
    assert sum(abs(r - 1) for r in ratios) / len(ratios) < 0.10, ratios


async def test_yoked_placebo_is_deterministic() -> None:
    a = await play("placebo:kind=yoked,k=1,n=3", seed=3)
    b = await play("placebo:kind=yoked,k=1,n=3", seed=3)  # fresh caches: every profile measured again
    for pa, pb in zip(a.players, b.players, strict=True):
        assert [e.text for e in pa.injections] == [e.text for e in pb.injections] and pa.injections
        assert pa.intervention_log == pb.intervention_log


async def test_agents_at_one_table_get_their_own_yokes_and_a_benevolent_agent_a_default_one() -> None:
    players = (PlayerSpec(backend="sim:planted"), PlayerSpec(backend="sim:planted", persona="benevolent"),
               PlayerSpec(backend="sim:planted", persona="malicious"))
    spec = TrialSpec(game=GameSpec(players=players, rounds=2, chat_turns=0, seed=0),
                     intervention=parse_intervention("placebo:kind=yoked,k=1"), assessment=ASSESS)
    requests = yoke_requests(spec, spec.agents())
    assert [r.system.meta["persona"] for r in requests] == ["benevolent", "default", "benevolent"]
    own = profile_requests(spec, system_messages(spec.game), spec.agents())
    assert not {r.key for r in requests} & {r.key for r in own}
    # the seat's name and rules are kept; only the persona's instruction differs
    for r, o in zip(requests, own, strict=True):
        assert r.system.content.splitlines()[0] == o.system.content.splitlines()[0]
    # the runner plans (and a Ray worker is given) the yokes with the agents' own profiles
    assert {r.key for r in needed_profiles(spec)} == {r.key for r in [*own, *requests]}
    record = await run_trial(spec)
    assert record.error is None, record.error
    for p, r in zip(record.players, requests, strict=True):
        assert {x["yoke"]["profile"] for x in p.intervention_log if x["event"] == "placebo"} == {r.key}


def test_yoke_persona_rule_and_errors() -> None:
    assert yoke_persona("default").name == "benevolent"
    assert yoke_persona("benevolent").name == "default"
    assert yoke_persona("malicious").name == "benevolent"
    # a user persona with the benevolent instruction's very text gets a yoke that differs from it
    twin = Persona(name="kind", text=yoke_persona("default").text)
    assert yoke_persona("kind", {"kind": twin}).name == "default"
    spec = parse_intervention("placebo:kind=yoked,k=2,n=3")
    assert needs_yoke(spec) and not needs_yoke(parse_intervention("placebo:kind=neutral"))
    with pytest.raises(UserError, match="source=items"):
        parse_intervention("placebo:kind=yoked,source=summary")


async def test_a_yoked_placebo_without_a_yoke_is_refused_and_never_quotes_the_agents_own() -> None:
    record = await play("sit:k=1,n=3", seed=0)
    own = Profile.from_record(record.players[0].pre_profile)
    with pytest.raises(UserError, match="yoke"):
        make_intervention(parse_intervention("placebo:kind=yoked"), chat=True, profile=own, seed=0)
    # yoked to itself (an identical profile) it offers only what the agent supports beyond its own reminders
    params = SitParams(pool=4)
    reminders = select_reminders(own, params, 0)
    rest = [s for _, s in yoked_statements(own, own, params, 0)]
    assert reminders and rest and not set(rest) & set(reminders)
    assert rest == [s for _, s in ranked_statements(own, params, 0)][4:8]
    assert yoked_statements(own, own, SitParams(pool=100), 0) == []  # nothing beyond: the placebo skips
    hook = make_intervention(parse_intervention("placebo:kind=yoked,k=1,pool=100"), chat=False, profile=own, seed=0,
                             yoke=Yoke(own, {"persona": "itself"}))
    ctx = TurnContext(player=0, name="A", round=1, phase="act", turn=0, messages=(), system_prompt="",
                      pre_profile=None, backend=resolve("sim:null"), seed=0)
    assert await hook.before_turn(ctx) == []
    assert hook.log() == [{"round": 1, "event": "skipped", "yoke": {"persona": "itself"},
                           "reason": "the yoke supports no statement beyond the agent's own reminders"}]


def test_the_picker_matches_lengths_uses_every_statement_and_repeats_none_within_a_message() -> None:
    own = Profile.from_record(run_sync_play().players[0].pre_profile)
    statements = ranked_statements(own, SitParams(), 0)[:3]
    picker = YokedPicker(statements)
    lengths = [len(s) for _, s in statements]
    first = picker.take([lengths[1], lengths[1]])  # the exact match, then the closest other
    assert first[0] == statements[1] and first[1] != first[0]
    second = picker.take([lengths[0], lengths[0]])  # one unused left, then all free again but the message's own
    assert second[0] not in first and second[1] != second[0]
    assert YokedPicker(statements[:1]).take([10, 10]) == [statements[0]] * 2  # fewer statements than bullets


def run_sync_play() -> GameRecord:
    from contagion.backends.base import run_sync

    return run_sync(play("sit:k=1,n=3", seed=0))
