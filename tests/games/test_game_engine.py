"""The round engine on deterministic backends: determinism, simultaneity, scripted controls, honest
handling of invalid actions, strict parsing, personas, hooks and the record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contagion import vocabulary as P
from contagion.backends.base import Backend, Completion, GenerationConfig
from contagion.backends.registry import build
from contagion.errors import BackendError, UserError
from contagion.games.dilemmas import BUILTIN, CHICKEN, PRISONERS_DILEMMA, STAG_HUNT, Dilemma
from contagion.games.engine import GameEngine, Injection, TurnContext, parse_action, player_name
from contagion.games.record import GamePlay, GameSpec
from contagion.messages import Message
from contagion.personas import MALICIOUS, Persona, load_personas
from tests.games.game_helpers import (
    Garbage,
    Spy,
    TextPlayer,
    ZeroProbability,
    act_prompt_index,
    make_spec,
    play,
    without_timing,
)

# -- determinism -------------------------------------------------------------------------------

MIXED = ("scripted:tit-for-tat", "sim:planted", "malicious=sim:planted", "scripted:random?seed=4")


async def test_same_seed_same_record_with_scripted_and_sim_players() -> None:
    spec = make_spec(*MIXED, rounds=4, chat_turns=1, seed=7)
    first = await play(spec, backends=[build(p.backend) for p in spec.players])
    second = await play(spec, backends=[build(p.backend) for p in spec.players])  # fresh backends
    assert first.error is None
    assert without_timing(first) == without_timing(second)
    # byte for byte, as JSON
    assert json.dumps(without_timing(first), sort_keys=True) == json.dumps(without_timing(second), sort_keys=True)


async def test_a_different_seed_changes_the_talk_order() -> None:
    a = await play(make_spec(*MIXED, rounds=3, chat_turns=1, seed=1))
    b = await play(make_spec(*MIXED, rounds=3, chat_turns=1, seed=2))
    assert [t[0] for r in a.rounds for t in r.talk] != [t[0] for r in b.rounds for t in r.talk]


async def test_the_record_round_trips_through_json() -> None:
    record = await play(make_spec(*MIXED, rounds=2, chat_turns=1, seed=3))
    again = GamePlay.model_validate_json(record.to_json())
    assert again == record
    data = json.loads(record.to_json())
    assert "invalid_rate" in data and all("invalid_rate" in p for p in data["players"])


# -- simultaneity ------------------------------------------------------------------------------


def assert_no_action_of_this_round(seen: list[Message], round_no: int, names: list[str]) -> None:
    """Nothing in ``seen`` tells the player what anyone chose in ``round_no`` (meta or text)."""
    for m in seen:
        assert not (m.meta.get("kind") == P.OBSERVATION and m.meta.get("round") == round_no), m
        assert f"Round {round_no} results" not in m.content, m
    # everything the player was shown since the previous round's results: no "<name> chose" at all
    previous = [i for i, m in enumerate(seen) if m.meta.get("kind") == P.OBSERVATION]
    for m in seen[previous[-1] + 1 if previous else 1:]:
        for name in names:
            assert f"{name} chose" not in m.content, m
            assert f"{name} gave no valid action" not in m.content, m


@pytest.mark.parametrize("chat_turns", [0, 2])
async def test_no_player_sees_another_players_action_of_the_round_before_choosing(chat_turns: int) -> None:
    # scoring players (sim, scripted) and text players (generate and parse) in one game
    spies = [
        Spy(build("sim:planted")),
        Spy(build("scripted:always-defect")),
        Spy(TextPlayer(["I say cooperate"])),
        Spy(build("sim:planted")),
    ]
    spec = make_spec("sim:planted", "scripted:always-defect", "sim:planted", "malicious=sim:planted",
                     rounds=3, chat_turns=chat_turns, seed=5)
    record = await play(spec, backends=spies)
    names = [p.name for p in record.players]
    act_calls = 0
    for spy in spies:
        for _, seen in spy.requests:
            act = P.last_of_kind(seen, P.ACT)
            if act is None or seen[-1] is not act:
                continue  # a talk request
            act_calls += 1
            assert_no_action_of_this_round(seen, int(act.meta["round"]), names)
    assert act_calls == 4 * 3
    # the final histories agree: up to each act prompt, nothing of that round's actions
    for p in record.players:
        for r in range(1, 4):
            i = act_prompt_index(p.messages, r)
            assert_no_action_of_this_round(p.messages[:i + 1], r, names)
            # ... and the results do arrive afterwards, for everyone
            assert any(m.meta.get("kind") == P.OBSERVATION and m.meta.get("round") == r for m in p.messages[i:])


# -- scripted controls -------------------------------------------------------------------------


@pytest.mark.parametrize("game", sorted(BUILTIN))
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("strategy", ["always-defect", "always-cooperate"])
async def test_uniform_scripted_groups_earn_exactly_what_the_game_data_implies(
    game: str, n: int, strategy: str
) -> None:
    d = BUILTIN[game]
    rounds = 3
    record = await play(make_spec(*[f"scripted:{strategy}"] * n, game=game, rounds=rounds, chat_turns=1))
    cooperate = strategy == "always-cooperate"
    expected = d.R if cooperate else d.P  # the anchors: everyone cooperates / nobody does
    assert expected == d.payoff(cooperate, n - 1 if cooperate else 0, n)
    for r in record.rounds:
        assert r.actions == ["cooperate" if cooperate else "defect"] * n
        assert r.payoffs == [expected] * n
    for p in record.players:
        assert p.payoffs == [expected] * rounds
        assert p.total == pytest.approx(expected * rounds)
        assert all(a.method == "score:scripted" and a.label == (d.cooperate if cooperate else d.defect)
                   for a in p.actions)
    assert record.invalid_rate == 0.0


@pytest.mark.parametrize("game", sorted(BUILTIN))
@pytest.mark.parametrize(("n", "cooperators"), [(3, 1), (4, 2), (5, 4)])
async def test_mixed_scripted_groups_earn_what_the_game_data_implies(game: str, n: int, cooperators: int) -> None:
    d = BUILTIN[game]
    seats = ["scripted:always-cooperate"] * cooperators + ["scripted:always-defect"] * (n - cooperators)
    record = await play(make_spec(*seats, game=game, rounds=2, chat_turns=0))
    defectors = n - cooperators
    expected = [d.payoff(True, cooperators - 1, n)] * cooperators + [d.payoff(False, cooperators, n)] * defectors
    assert all(r.payoffs == expected for r in record.rounds)
    obs = P.last_of_kind(record.players[-1].messages, P.OBSERVATION)
    assert obs is not None and obs.meta["others_cooperated"] == cooperators
    assert obs.meta["others_defected"] == n - cooperators - 1


def actions_of(record: GamePlay, i: int) -> list[str]:
    return [a.action for a in record.players[i].actions]


async def test_tit_for_tat_copies_the_other_players_previous_action() -> None:
    record = await play(make_spec("scripted:tit-for-tat", "scripted:random?seed=5", rounds=14, chat_turns=0))
    tft, other = actions_of(record, 0), actions_of(record, 1)
    assert {"cooperate", "defect"} <= set(other), "the opponent must vary for the test to mean anything"
    assert tft[0] == "cooperate"
    assert tft[1:] == other[:-1]


async def test_tit_for_tat_against_always_defect_and_majority_rule() -> None:
    record = await play(make_spec("scripted:tit-for-tat", "scripted:always-defect", rounds=4, chat_turns=1))
    assert actions_of(record, 0) == ["cooperate", "defect", "defect", "defect"]
    # with several others it follows the majority of the previous round
    record = await play(make_spec("scripted:tit-for-tat", "scripted:always-defect", "scripted:always-defect",
                                       "scripted:always-cooperate", rounds=3, chat_turns=0))
    assert actions_of(record, 0) == ["cooperate", "defect", "defect"]
    record = await play(make_spec("scripted:tit-for-tat", "scripted:always-cooperate",
                                       "scripted:always-cooperate", "scripted:always-defect", rounds=3, chat_turns=0))
    assert actions_of(record, 0) == ["cooperate"] * 3


async def test_grim_trigger_defects_forever_after_the_first_defection() -> None:
    record = await play(make_spec("scripted:grim-trigger", "scripted:random?seed=1&p=0.8",
                                       "scripted:always-cooperate", rounds=12, chat_turns=0))
    grim, other = actions_of(record, 0), actions_of(record, 1)
    first = other.index("defect")  # the seeded opponent defects at least once ...
    assert "cooperate" in other[first + 1:]  # ... and cooperates again afterwards: grim must not forgive
    assert grim == ["cooperate"] * (first + 1) + ["defect"] * (len(grim) - first - 1)


async def test_random_strategy_is_seeded() -> None:
    def spec(seed: int, p: float = 0.5) -> GameSpec:
        return make_spec(f"scripted:random?seed={seed}&p={p}", "scripted:always-cooperate", rounds=40, chat_turns=0)

    a1, a2, b = [actions_of(await play(spec(s)), 0) for s in (11, 11, 12)]
    assert a1 == a2
    assert a1 != b
    assert actions_of(await play(spec(3, 0.0)), 0) == ["defect"] * 40
    assert actions_of(await play(spec(3, 1.0)), 0) == ["cooperate"] * 40
    many = actions_of(await play(make_spec("scripted:random?seed=9&p=0.3", "scripted:always-defect",
                                                rounds=300, chat_turns=0)), 0)
    assert 0.2 < many.count("cooperate") / 300 < 0.4


# -- invalid actions ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_reasks", [0, 2, 4])
async def test_garbage_is_invalid_earns_nothing_and_never_counts_as_cooperation(max_reasks: int) -> None:
    garbage = Garbage()
    spec = make_spec("test:garbage", "scripted:always-cooperate", "scripted:always-cooperate",
                     rounds=3, chat_turns=0, max_reasks=max_reasks)
    record = await play(spec, backends=[garbage, build("scripted:always-cooperate"),
                                             build("scripted:always-cooperate")])
    assert record.error is None
    d = PRISONERS_DILEMMA
    bad = record.players[0]
    assert [a.action for a in bad.actions] == ["invalid"] * 3
    for a in bad.actions:
        assert a.label is None and a.method == "generate"
        assert a.attempts == max_reasks + 1 and len(a.raw) == max_reasks + 1  # bounded re-asks
    assert garbage.calls == 3 * (max_reasks + 1)
    assert sum(m.meta.get("kind") == "reask" for m in bad.messages) == 3 * max_reasks
    assert bad.payoffs == [0.0] * 3 and bad.total == 0
    # the cooperators see only one other cooperator: the invalid action is not cooperation
    for r in record.rounds:
        assert r.actions == ["invalid", "cooperate", "cooperate"]
        assert r.payoffs == [0.0, d.payoff(True, 1, 3), d.payoff(True, 1, 3)]
        assert d.payoff(True, 1, 3) < d.payoff(True, 2, 3)
    obs = P.last_of_kind(record.players[1].messages, P.OBSERVATION)
    assert obs is not None
    assert (obs.meta["others_cooperated"], obs.meta["others_defected"], obs.meta["others_invalid"]) == (1, 0, 1)
    assert "Avery gave no valid action" in obs.content
    # the invalid rate is part of the record, in Python and in the JSON
    assert bad.invalid_rate == 1.0 and record.players[1].invalid_rate == 0.0
    assert record.invalid_rate == pytest.approx(1 / 3)
    data = json.loads(record.to_json())
    assert data["invalid_rate"] == pytest.approx(1 / 3) and data["players"][0]["invalid_rate"] == 1.0


async def test_a_valid_answer_after_a_reask_counts() -> None:
    player = TextPlayer(["Hmm, cooperate or defect? Hard to say.", "Defect."])
    record = await play(make_spec("test:text", "scripted:always-cooperate", rounds=1, chat_turns=0),
                             backends=[player, build("scripted:always-cooperate")])
    action = record.players[0].actions[0]
    assert (action.action, action.label, action.attempts) == ("defect", "defect", 2)
    assert action.raw == ["Hmm, cooperate or defect? Hard to say.", "Defect."]
    assert record.players[0].payoffs == [PRISONERS_DILEMMA.T]


async def test_zero_probability_for_every_action_is_invalid() -> None:
    record = await play(make_spec("test:zero", "scripted:always-cooperate", rounds=2, chat_turns=0),
                             backends=[ZeroProbability(), build("scripted:always-cooperate")])
    for a in record.players[0].actions:
        assert a.action == "invalid" and a.method == "score:full-continuation"
        assert a.logprobs == {"cooperate": -1e9, "defect": -1e9}
    assert record.players[0].payoffs == [0.0, 0.0]
    assert record.players[1].payoffs == [PRISONERS_DILEMMA.S, PRISONERS_DILEMMA.S]


@pytest.mark.parametrize(
    ("text", "dilemma", "expected"),
    [
        ("cooperate", PRISONERS_DILEMMA, "cooperate"),
        ("Defect.", PRISONERS_DILEMMA, "defect"),
        ("I choose: COOPERATE!", PRISONERS_DILEMMA, "cooperate"),
        ("defect, defect, defect", PRISONERS_DILEMMA, "defect"),
        ("cooperate or defect", PRISONERS_DILEMMA, None),  # both names: ambiguous
        ("I will not cooperate; I defect", PRISONERS_DILEMMA, "defect"),  # the negated mention is no choice
        ("cooperation", PRISONERS_DILEMMA, None),  # not the word itself
        ("uncooperative", PRISONERS_DILEMMA, None),
        ("defection", PRISONERS_DILEMMA, None),
        ("", PRISONERS_DILEMMA, None),
        ("C", PRISONERS_DILEMMA, None),
        ("swerve", PRISONERS_DILEMMA, None),  # another game's label
        ("I swerve.", CHICKEN, "cooperate"),
        ("Straight ahead", CHICKEN, "defect"),
        ("cooperate", CHICKEN, None),
        ("stag", STAG_HUNT, "cooperate"),
        ("hare!", STAG_HUNT, "defect"),
        ("stag or hare", STAG_HUNT, None),
    ],
)
def test_parse_action_is_strict(text: str, dilemma: Dilemma, expected: str | None) -> None:
    assert parse_action(text, dilemma) == expected


@pytest.mark.parametrize(
    ("text", "dilemma", "expected"),
    [
        # refusals: never the negated action; the other action only when it is named plainly
        ("I refuse to cooperate", PRISONERS_DILEMMA, None),
        ("I refuse to cooperate.", PRISONERS_DILEMMA, None),
        ("I won't defect", PRISONERS_DILEMMA, None),
        ("I won’t defect", PRISONERS_DILEMMA, None),  # typographic apostrophe
        ("not cooperating", PRISONERS_DILEMMA, None),
        ("I will not cooperate", PRISONERS_DILEMMA, None),
        ("I am not going to cooperate", PRISONERS_DILEMMA, None),
        ("I'd never defect", PRISONERS_DILEMMA, None),
        ("I decline to defect", PRISONERS_DILEMMA, None),
        ("I don't want to cooperate, I defect", PRISONERS_DILEMMA, "defect"),
        ("I refuse to defect. I cooperate.", PRISONERS_DILEMMA, "cooperate"),
        ("I will cooperate and not defect", PRISONERS_DILEMMA, "cooperate"),
        ("defect rather than cooperate", PRISONERS_DILEMMA, "defect"),
        ("cooperate instead of defect", PRISONERS_DILEMMA, "cooperate"),
        ("Not defect, cooperate", PRISONERS_DILEMMA, "cooperate"),
        # a negation in another clause does not reach the action
        ("No, I cooperate", PRISONERS_DILEMMA, "cooperate"),
        ("I cannot help but cooperate", PRISONERS_DILEMMA, "cooperate"),
        ("Never mind. Defect.", PRISONERS_DILEMMA, "defect"),
        ("I refuse to swerve", CHICKEN, None),
        ("I won't hunt hare; stag it is", STAG_HUNT, "cooperate"),
        ("I can't go straight", CHICKEN, None),
    ],
)
def test_parse_action_reads_refusals_as_no_choice_never_as_the_negated_action(
    text: str, dilemma: Dilemma, expected: str | None
) -> None:
    got = parse_action(text, dilemma)
    assert got == expected
    negated = {"cooperate": dilemma.cooperate, "defect": dilemma.defect}
    for action, label in negated.items():
        if f"refuse to {label}" in text.lower() or f"won't {label}" in text.lower():
            assert got != action


# -- errors are recorded, not hidden -----------------------------------------------------------


class Failing(TextPlayer):
    async def generate(self, messages: Any, config: GenerationConfig) -> Completion:
        self.calls += 1
        if self.calls > 2:
            raise BackendError("server went away", transient=True)
        return Completion(text="cooperate")


async def test_a_backend_failure_ends_the_game_with_an_error_in_the_record() -> None:
    record = await play(make_spec("test:text", "scripted:always-defect", rounds=5, chat_turns=1),
                             backends=[Failing(["x"]), build("scripted:always-defect")])
    assert record.error == "BackendError: server went away"
    assert len(record.rounds) == 1  # round 1 finished, round 2 failed in its talk phase


async def test_fewer_than_two_players_is_a_user_error() -> None:
    with pytest.raises(UserError, match="at least 2 players"):
        await play(make_spec("scripted:always-defect"))


# -- personas, system prompts and the record ---------------------------------------------------


async def test_personas_are_in_the_system_prompt_and_the_record(tmp_path: Path) -> None:
    path = tmp_path / "personas.yaml"
    path.write_text("- name: stoic\n  text: You stay calm and say little.\n", encoding="utf-8")
    extra = load_personas(path)
    spec = make_spec("sim:null", "malicious=sim:null", "stoic=sim:null", "benevolent=scripted:always-cooperate",
                     rounds=1, chat_turns=0, game="chicken")
    record = await play(spec, personas=extra)
    by_name = {p.persona: p for p in record.players}
    assert set(by_name) == {"default", "malicious", "stoic", "benevolent"}
    assert by_name["default"].persona_text == ""
    assert by_name["malicious"].persona_text == MALICIOUS.text
    assert by_name["malicious"].system_prompt.endswith(MALICIOUS.text)
    assert "lie" in MALICIOUS.text.lower() and "exploit" in MALICIOUS.text.lower()
    assert by_name["stoic"].persona_text == "You stay calm and say little."
    for p in record.players:
        assert p.system_prompt.startswith(f"You are {p.name}.\n")
        assert "(Chicken) with 3 other players" in p.system_prompt
        first = p.messages[0]
        assert first.role == "system" and first.content == p.system_prompt
        assert first.meta == {"kind": "system_prompt", "persona": p.persona}
    assert [p.backend for p in record.players] == ["sim:null"] * 3 + ["scripted:always-cooperate"]


async def test_unknown_persona_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown persona 'sneaky'; known personas: default, benevolent, malicious"):
        await play(make_spec("sneaky=sim:null", "sim:null"))


def test_user_personas_from_yaml_and_their_errors(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text("name: zealot\ntext: Win at all costs.\n", encoding="utf-8")
    assert load_personas(one) == {"zealot": Persona(name="zealot", text="Win at all costs.")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [zealot\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid YAML") as info:
        load_personas(bad)
    assert "\n" not in str(info.value)
    bad.write_text("- name: a\n  txt: typo\n", encoding="utf-8")
    with pytest.raises(UserError, match="entry 1: txt"):
        load_personas(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_personas(tmp_path / "nope.yaml")


async def test_every_message_says_its_kind_and_round_and_phases_come_in_order() -> None:
    record = await play(make_spec("sim:planted", "sim:planted", "scripted:tit-for-tat", rounds=2, chat_turns=2,
                                       seed=4))
    for p in record.players:
        for m in p.messages[1:]:
            assert "kind" in m.meta and m.meta["round"] in (1, 2), m
        kinds = [m.meta["kind"] for m in p.messages[1:] if m.meta["round"] == 1]
        # talk (own turn + the others' messages, twice), then act, then the observation
        assert kinds.count("talk_prompt") == 2 and kinds.count("own_talk") == 2 and kinds.count(P.TALK) == 4
        assert kinds.index(P.ACT) > max(i for i, k in enumerate(kinds) if k in ("own_talk", P.TALK))
        assert kinds[-1] == P.OBSERVATION and kinds[-2] == "own_action"
        assert len(p.actions) == len(p.payoffs) == 2
    assert [len(r.talk) for r in record.rounds] == [6, 6]


async def test_no_chat_control_has_no_talk() -> None:
    record = await play(make_spec("sim:planted", "sim:planted", rounds=2, chat_turns=0))
    assert all(r.talk == [] for r in record.rounds)
    assert not any(m.meta.get("kind") in ("talk_prompt", "own_talk", P.TALK) for p in record.players
                   for m in p.messages)


async def test_hidden_horizon() -> None:
    record = await play(make_spec("sim:null", "sim:null", rounds=2, chat_turns=0, reveal_horizon=False))
    assert "unknown number of rounds" in record.players[0].system_prompt
    assert "2 rounds" not in record.players[0].system_prompt


def test_player_names_beyond_the_list() -> None:
    assert player_name(0) == "Avery" and player_name(12) == "Player 13"


# -- the pre-turn hook -------------------------------------------------------------------------


class Recorder:
    """A hook that remembers every context and injects a note before each act."""

    def __init__(self) -> None:
        self.contexts: list[TurnContext] = []

    async def before_turn(self, ctx: TurnContext) -> list[Injection]:
        self.contexts.append(ctx)
        if ctx.phase != "act":
            return []
        note = Message(role="system", content=f"note for {ctx.name}, round {ctx.round}")
        return [Injection(message=note, reason="test", intervention="recorder")]

    def log(self) -> list[dict[str, Any]]:
        return [{"calls": len(self.contexts)}]


async def test_the_hook_runs_before_every_language_model_turn_and_its_messages_are_recorded() -> None:
    hooks = [Recorder(), Recorder()]
    events: list[tuple[str, dict[str, Any]]] = []
    spec = make_spec("sim:null", "scripted:always-defect", rounds=2, chat_turns=2, seed=1)
    record = await play(spec, hooks=hooks, on_event=lambda kind, data: events.append((kind, data)))
    lm, scripted = hooks
    assert [(c.round, c.phase, c.turn) for c in lm.contexts] == [
        (1, "talk", 0), (1, "talk", 1), (1, "act", 0), (2, "talk", 0), (2, "talk", 1), (2, "act", 0)]
    assert scripted.contexts == []  # scripted players are not language models: nothing to steer
    ctx = lm.contexts[0]
    assert ctx.system_prompt == record.players[0].system_prompt and ctx.messages[0].role == "system"
    p = record.players[0]
    assert [(e.round, e.phase, e.text, e.reason, e.intervention) for e in p.injections] == [
        (1, "act", "note for Avery, round 1", "test", "recorder"), (2, "act", "note for Avery, round 2", "test",
                                                                      "recorder")]
    for r in (1, 2):
        i = act_prompt_index(p.messages, r)
        injected = p.messages[i - 1]
        assert injected.meta["kind"] == P.INJECTION and injected.meta["round"] == r
        assert injected.meta["intervention"] == "recorder" and injected.content == f"note for Avery, round {r}"
    assert p.intervention_log == [{"calls": 6}]
    assert record.players[1].injections == [] and record.players[1].intervention_log == [{"calls": 0}]
    assert sum(kind == "injection" for kind, _ in events) == 2
    assert not any(m.meta.get("kind") == P.INJECTION for m in record.players[1].messages)


def test_engine_players_get_their_own_histories() -> None:
    engine = GameEngine(make_spec("sim:null", "sim:null", "sim:null"), [build("sim:null")] * 3)
    histories = [p.messages for p in engine.players]
    assert len({id(h) for h in histories}) == 3
    assert [h[0].content.split("\n")[0] for h in histories] == ["You are Avery.", "You are Blake.", "You are Casey."]


def test_backends_are_used_as_given() -> None:
    given: list[Backend] = [build("sim:null"), build("sim:null")]
    engine = GameEngine(make_spec("sim:null", "sim:null"), given)
    assert [p.backend for p in engine.players] == given


async def test_each_players_record_says_what_it_is() -> None:
    record = await play(make_spec("sim:null", "scripted:always-defect", "scripted:random?seed=3&p=0.5", rounds=1,
                                  chat_turns=0))
    assert [(p.language_model, p.strategy) for p in record.players] == [
        (True, None), (False, "always-defect"), (False, "random")]
