"""Models as people serve them (issue 27): a whole trial per answer style against the loopback server.

Each emulated style (direct, markdown opener, a few words first, inline reasoning, reasoning in a field,
no logprobs) plays a game with talk and is measured before and after play, with ``score=auto``. Every
style yields valid actions; its profiles match the style's known answer probabilities within 0.02; the
scoring method is recorded (and is the right one for the style); reasoning never reaches a co-player.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contagion.backends.base import run_sync
from contagion.experiment.record import GameRecord
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.testing.loopback import LoopbackServer
from contagion.testing.styles import REASONING_MARKER, STYLES, StyleResponder, expected_item_score, label_probability
from contagion.traits.settings import AssessmentSettings

TOLERANCE = 0.02
METHOD = {"direct": "first-token-top-logprobs", "markdown": "answer-token-top-logprobs",
          "words": "answer-token-top-logprobs", "inline-reasoning": "answer-token-top-logprobs",
          "field-reasoning": "answer-token-top-logprobs", "no-logprobs": "sampled-fallback"}
REASONS = ("inline-reasoning", "field-reasoning")


@pytest.fixture(scope="module", params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(style: str) -> Iterator[LoopbackServer]:
    with LoopbackServer(StyleResponder(style), logprobs=style != "no-logprobs") as s:
        yield s


def trial(server: LoopbackServer, *, reasoning: str = "strip", seed: int = 3) -> GameRecord:
    spec = f"openai:served@{server.base_url}?score=auto&samples=64"
    game = GameSpec(game="chicken", players=(PlayerSpec(backend=spec), PlayerSpec(backend=spec),
                                             PlayerSpec(backend="scripted:tit-for-tat", focal=False)),
                    rounds=2, chat_turns=1, seed=seed, action_mode="auto", reasoning=reasoning)  # type: ignore[arg-type]
    settings = AssessmentSettings(traits=("agreeableness", "machiavellianism"), items=3, source_items=0,
                                  bootstrap=100, min_mass=0.0)
    return run_sync(run_trial(TrialSpec(game=game, assessment=settings, measure=True)))


@pytest.fixture(scope="module")
def record(server: LoopbackServer) -> GameRecord:
    return trial(server)


def test_every_style_yields_valid_actions(record: GameRecord, style: str) -> None:
    assert record.error is None, record.error
    for player in record.players[:2]:
        assert player.actions and all(a.action != "invalid" for a in player.actions), (style, player.actions)


def test_the_scoring_method_is_recorded(record: GameRecord, style: str) -> None:
    for player in record.players[:2]:
        for profile in (player.pre_profile, player.post_profile):
            assert profile is not None and profile["method"] == METHOD[style]
        expected = "generate" if style == "no-logprobs" else f"score:{METHOD[style]}"
        assert {a.method for a in player.actions} == {expected}


def test_profiles_match_the_known_answer_probabilities(record: GameRecord, style: str) -> None:
    for player in record.players[:2]:
        for profile in (player.pre_profile, player.post_profile):
            assert profile is not None
            assert len(profile["items"]) == 6
            for item in profile["items"]:
                known = expected_item_score(item["statement"], item["matching"])
                assert abs(item["score"] - known) <= TOLERANCE, (style, item["statement"], item["score"], known)
                assert item["included"]


def test_scored_actions_follow_the_known_probabilities(record: GameRecord, style: str) -> None:
    if style == "no-logprobs":
        pytest.skip("actions of a server without logprobs are generated and parsed, not scored")
    p_swerve = label_probability("swerve", "straight")
    for player in record.players[:2]:
        for action in player.actions:
            assert action.p_cooperate == pytest.approx(p_swerve, abs=TOLERANCE)
            assert action.label == ("swerve" if p_swerve >= 0.5 else "straight")


def test_reasoning_never_reaches_a_co_player(record: GameRecord, style: str) -> None:
    for i, player in enumerate(record.players):
        own = [m for m in player.messages if m.role == "assistant"]
        heard = [m for m in player.messages if m.role != "assistant"]
        assert not any(REASONING_MARKER in m.content or "<think>" in m.content for m in heard), (style, i)
        assert not any(REASONING_MARKER in m.content for m in own)  # strip: not even in its own view
    for talk in (t for r in record.rounds for t in r.talk):
        assert REASONING_MARKER not in talk[1]


def test_reasoning_is_recorded_with_the_speakers_own_messages(record: GameRecord, style: str) -> None:
    for player in record.players[:2]:
        talk = [m for m in player.messages if m.meta.get("kind") == "own_talk"]
        acts = [m for m in player.messages if m.meta.get("kind") == "own_action"]
        assert talk and acts
        if style in REASONS:
            assert all(m.reasoning and REASONING_MARKER in m.reasoning for m in talk + acts)
            assert all(m.content == "Let us all do well together this round." for m in talk)
        else:
            assert all(m.reasoning is None for m in player.messages)
            assert "reasoning" not in player.model_dump(mode="json")["messages"][0]


def test_keep_leaves_reasoning_in_the_speakers_own_view_only(server: LoopbackServer, style: str) -> None:
    if style not in REASONS:
        pytest.skip("only a reasoning model has reasoning to keep")
    kept = trial(server, reasoning="keep")
    assert kept.error is None and kept.spec.game.reasoning == "keep"
    for i, player in enumerate(kept.players):
        own = [m for m in player.messages if m.meta.get("kind") == "own_talk"]
        heard = [m for m in player.messages if m.role != "assistant"]
        if i < 2:
            assert own and all(REASONING_MARKER in m.content for m in own)
        assert not any(REASONING_MARKER in m.content for m in heard)
    assert kept.spec_hash != trial(server).spec_hash  # keep changes the record, so it is part of the spec
