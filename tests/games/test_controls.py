"""The game-side controls of issue 14 on scripted, simulated and test players: option order (prompt and
scored order), sampled actions, neutral framing, the conversation control and tied games refused."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from contagion import vocabulary as P
from contagion.backends.base import Backend, Capabilities, ChoiceScore, ScoreMethod, Scores
from contagion.backends.registry import build
from contagion.errors import UserError
from contagion.games.dilemmas import BUILTIN, NEUTRAL_LABELS, neutral_framing, rules_text
from contagion.games.engine import ROUND_NOTE, system_messages
from contagion.messages import Message
from tests.games.game_helpers import Spy, make_spec, play

# -- option order ---------------------------------------------------------------------------------


class ChoiceSpy(Spy):
    """Keeps the choices each scoring request listed, in order."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.choices: list[tuple[str, ...]] = []

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        self.choices.append(tuple(choices))
        return await super().score_choices(messages, choices, prefix=prefix)


def act_prompts(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if m.meta.get("kind") == P.ACT]


@pytest.mark.parametrize("game", sorted(BUILTIN))
async def test_the_option_order_sets_the_act_prompt_and_the_scored_order(game: str) -> None:
    d = BUILTIN[game]
    for order in ("cooperate-first", "defect-first"):
        spies = [ChoiceSpy(build("sim:planted")), ChoiceSpy(build("scripted:always-defect"))]
        spec = make_spec("sim:planted", "scripted:always-defect", game=game, rounds=3, chat_turns=0, seed=4,
                         option_order=order)
        record = await play(spec, backends=spies)
        first, second = (d.cooperate, d.defect) if order == "cooperate-first" else (d.defect, d.cooperate)
        for spy, p in zip(spies, record.players, strict=True):
            assert act_prompts(p.messages) == [
                f"Round {r}: choose your action. Reply with one word: '{first}' or '{second}'." for r in (1, 2, 3)]
            assert spy.choices == [(first, second)] * 3
            for a in p.actions:  # the record keys log-probs by label, whatever the order they were scored in
                assert a.logprobs is not None and set(a.logprobs) == {d.cooperate, d.defect}
        assert [a.action for a in record.players[1].actions] == ["defect"] * 3  # read by role, not position
        # the simulated model's p(cooperate) is read by role: its probabilities sum to one, p_cooperate is the
        # cooperative label's
        for a in record.players[0].actions:
            assert a.logprobs is not None and a.p_cooperate is not None
            assert a.p_cooperate == pytest.approx(math.exp(a.logprobs[d.cooperate]))


async def test_a_reask_lists_the_options_in_the_games_order() -> None:
    from tests.games.game_helpers import TextPlayer

    spec = make_spec("test:text", "scripted:always-defect", rounds=1, chat_turns=0, option_order="defect-first")
    record = await play(spec, backends=[TextPlayer(["hmm", "defect"]), build("scripted:always-defect")])
    reasks = [m.content for m in record.players[0].messages if m.meta.get("kind") == "reask"]
    assert reasks == ["Please answer with exactly one word: 'defect' or 'cooperate'."]
    assert record.players[0].actions[0].action == "defect"


# -- sampled actions --------------------------------------------------------------------------------


class Fixed(Backend):
    """Scores the cooperative label with probability ``p`` (the defecting one 1 − p)."""

    capabilities = Capabilities(language_model=True, logprobs=True, score_method=ScoreMethod.FULL)

    def __init__(self, p: float) -> None:
        self.p = p
        self.spec = f"test:fixed-{p}"

    async def generate(self, messages: Sequence[Message], config: object) -> object:  # type: ignore[override]
        raise AssertionError("no chat in these games")

    async def score_choices(self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = "") -> Scores:
        act = P.last_of_kind(messages, P.ACT)
        assert act is not None
        coop_i, _ = P.choice_roles(act, choices)
        probs = [self.p if i == coop_i else 1 - self.p for i in range(len(choices))]
        return Scores(choices=[ChoiceScore(choice=c, logprob=math.log(q) if q > 0 else -math.inf)
                               for c, q in zip(choices, probs, strict=True)], method=ScoreMethod.FULL)


async def test_sampled_actions_follow_the_recorded_seed_and_probability() -> None:
    spec = make_spec("test:a", "test:b", rounds=8, chat_turns=0, seed=21, action_mode="sample")
    record = await play(spec, backends=[Fixed(0.7), Fixed(0.7)])
    for p in record.players:
        for a in p.actions:
            assert a.selection == "sample" and a.p_cooperate == pytest.approx(0.7)
            assert a.sample_seed is not None
            # the recorded seed reproduces the draw: uniform < p(cooperate) is cooperate
            expected = "cooperate" if random.Random(a.sample_seed).random() < a.p_cooperate else "defect"
            assert a.action == expected
    seeds = [a.sample_seed for p in record.players for a in p.actions]
    assert len(set(seeds)) == len(seeds)  # one draw per player and round
    assert {a.action for p in record.players for a in p.actions} == {"cooperate", "defect"}
    again = await play(spec, backends=[Fixed(0.7), Fixed(0.7)])
    assert [r.actions for r in again.rounds] == [r.actions for r in record.rounds]


async def test_sampling_without_chat_makes_every_seed_a_different_game() -> None:
    games = set()
    for seed in range(12):
        spec = make_spec("test:a", "test:b", "test:c", rounds=4, chat_turns=0, seed=seed, action_mode="sample")
        record = await play(spec, backends=[Fixed(0.6)] * 3)
        games.add(tuple(tuple(r.actions) for r in record.rounds))
    assert len(games) == 12
    argmax = set()
    for seed in range(4):
        spec = make_spec("test:a", "test:b", "test:c", rounds=4, chat_turns=0, seed=seed, action_mode="auto")
        record = await play(spec, backends=[Fixed(0.6)] * 3)
        assert all(a.selection == "argmax" and a.sample_seed is None for a in record.players[0].actions)
        argmax.add(tuple(tuple(r.actions) for r in record.rounds))
    assert argmax == {(("cooperate",) * 3,) * 4}  # argmax replays one game for every seed


@pytest.mark.parametrize(("p", "expected"), [(1.0, "cooperate"), (0.0, "defect"), (0.5, "invalid")])
async def test_sampling_a_certain_or_tied_choice(p: float, expected: str) -> None:
    spec = make_spec("test:a", "scripted:always-defect", rounds=3, chat_turns=0, action_mode="sample")
    record = await play(spec, backends=[Fixed(p), build("scripted:always-defect")])
    # certain choices are drawn with probability 1; a tie is no choice (invalid) as in argmax mode
    assert [a.action for a in record.players[0].actions] == [expected] * 3


async def test_sample_mode_falls_back_to_generate_for_a_backend_that_cannot_score() -> None:
    from tests.games.game_helpers import TextPlayer

    spec = make_spec("test:text", "scripted:always-defect", rounds=2, chat_turns=0, action_mode="sample")
    record = await play(spec, backends=[TextPlayer(["I refuse to cooperate", "defect"]),
                                             build("scripted:always-defect")])
    a = record.players[0].actions[0]
    assert a.method == "generate" and a.selection is None and a.action == "defect" and a.attempts == 2


# -- neutral framing ------------------------------------------------------------------------------

MORAL = re.compile(r"\b(help|helps|group|yourself|safe|hurts|crash|trust|betray|fair|selfish|exploit)\b", re.I)


@pytest.mark.parametrize("game", sorted(BUILTIN))
async def test_neutral_framing_names_no_game_and_no_moral_words(game: str) -> None:
    d = BUILTIN[game]
    text = rules_text(neutral_framing(d), 3, 5)
    for word in (d.title, d.cooperate, d.defect, d.description):
        assert word not in text
    assert not MORAL.search(text), MORAL.search(text)
    assert "'J' or 'K'" in text
    spec = make_spec("sim:planted", "sim:planted", "scripted:always-defect", game=game, rounds=2, chat_turns=1,
                     framing="neutral", seed=3)
    system = system_messages(spec)[0].content
    assert d.title not in system and not MORAL.search(system)
    record = await play(spec)
    for p in record.players:
        assert all(f"'{NEUTRAL_LABELS[0]}' or '{NEUTRAL_LABELS[1]}'" in m for m in act_prompts(p.messages))
        assert {a.label for a in p.actions} <= set(NEUTRAL_LABELS)
    bot = record.players[2]
    assert [(a.action, a.label) for a in bot.actions] == [("defect", "K")] * 2  # the roles are kept
    # the payoffs are the game's own
    for r in record.rounds:
        coop = [a == "cooperate" for a in r.actions]
        for i, c in enumerate(coop):
            assert r.payoffs[i] == d.payoff(c, sum(coop) - c, 3)


# -- the conversation control ---------------------------------------------------------------------


@pytest.mark.parametrize("chat_turns", [1, 2])
async def test_the_conversation_talks_as_much_as_a_game_with_no_act_and_no_payoff(chat_turns: int) -> None:
    game = await play(make_spec("sim:planted", "sim:planted", "malicious=sim:planted", rounds=4,
                                     chat_turns=chat_turns, seed=2))
    talk = await play(make_spec("sim:planted", "sim:planted", "malicious=sim:planted", game="conversation",
                                     rounds=4, chat_turns=chat_turns, seed=2))
    assert talk.error is None and talk.game["kind"] == "conversation"
    assert talk.invalid_rate == 0.0
    for g, c in zip(game.players, talk.players, strict=True):
        kinds = [m.meta.get("kind") for m in c.messages]
        assert P.ACT not in kinds and P.OBSERVATION not in kinds and "own_action" not in kinds
        assert c.actions == [] and c.payoffs == [] and c.total == 0
        assert "points" not in c.system_prompt and "cooperate" not in c.system_prompt
        for kind in ("own_talk", P.TALK, "talk_prompt"):  # the same number of turns, said and heard
            assert kinds.count(kind) == [m.meta.get("kind") for m in g.messages].count(kind)
        assert kinds.count(ROUND_NOTE) == 4
        # its history is about as long as the game's (the note stands in for act prompt, reply and results)
        chars = [sum(len(m.content) for m in p.messages[1:]) for p in (g, c)]
        assert 0.75 < chars[1] / chars[0] < 1.25, chars
    assert [len(r.talk) for r in talk.rounds] == [3 * chat_turns] * 4
    assert all(r.actions == [] and r.payoffs == [] for r in talk.rounds)


async def test_the_conversation_hidden_horizon_and_its_records_round_trip() -> None:
    from contagion.games.record import GamePlay

    spec = make_spec("sim:null", "sim:null", game="conversation", rounds=2, chat_turns=1, reveal_horizon=False)
    record = await play(spec)
    assert "unknown number of rounds" in record.players[0].system_prompt
    assert GamePlay.model_validate_json(record.to_json()) == record


# -- tied games are refused -----------------------------------------------------------------------


async def test_a_game_that_ties_at_its_player_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old-stag.yaml"
    path.write_text(yaml.safe_dump({"name": "old-stag", "kind": "stag-hunt", "cooperate": "stag", "defect": "hare",
                                    "R": 5, "T": 3, "P": 2, "S": 0}), encoding="utf-8")
    with pytest.raises(UserError, match="the same when 1 of the 2 other players choose 'stag'"):
        await play(make_spec("sim:null", "sim:null", "sim:null", game=str(path), rounds=1, chat_turns=0))
    record = await play(make_spec("sim:null", "sim:null", game=str(path), rounds=1, chat_turns=0))
    assert record.error is None  # two players: no tie
