"""A real three-player game on the embedded model (SmolLM2-135M through llama.cpp), kept small: 2 rounds,
1 chat turn, short messages. Played twice, on two freshly loaded models, to prove determinism."""

from __future__ import annotations

import pytest
from game_helpers import make_spec, without_timing

from contagion.backends import protocol as P
from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.registry import build
from contagion.games.record import GameRecord, GameSpec

pytestmark = pytest.mark.slow

SPEC: GameSpec = make_spec(
    "embedded", "embedded", "malicious=embedded",
    game="chicken", rounds=2, chat_turns=1, seed=7,
    generation=GenerationConfig(max_tokens=24, temperature=0.0, seed=7),
)


def play_on_a_fresh_model() -> GameRecord:
    """One game on a newly loaded embedded model (empty prefix cache), shared by the three players."""
    from contagion.games.engine import play_game

    backend = build("embedded")
    try:
        return run_sync(play_game(SPEC, backends=[backend] * 3))
    finally:
        run_sync(backend.aclose())


@pytest.fixture(scope="module")
def game() -> GameRecord:
    return play_on_a_fresh_model()


def test_a_real_three_player_game_completes_with_valid_actions(game: GameRecord) -> None:
    assert game.error is None
    assert len(game.rounds) == 2 and len(game.players) == 3
    assert game.invalid_rate == 0.0
    for p in game.players:
        assert p.backend == "embedded"
        assert len(p.actions) == 2
        for a in p.actions:
            # the embedded model scores both action names (full-continuation log-likelihood)
            assert a.action in ("cooperate", "defect") and a.label in ("swerve", "straight")
            assert a.method == "score:full-continuation"
            assert a.logprobs is not None and set(a.logprobs) == {"swerve", "straight"}
            assert all(-1e9 < v < 0 for v in a.logprobs.values())
            chosen = "swerve" if a.action == "cooperate" else "straight"
            assert a.logprobs[chosen] == max(a.logprobs.values())
        # every player wrote one chat message per round and read the two others'
        assert sum(m.meta.get("kind") == "own_talk" for m in p.messages) == 2
        assert sum(m.meta.get("kind") == P.TALK for m in p.messages) == 4
        assert all(m.content.strip() for m in p.messages if m.meta.get("kind") == "own_talk")
        # token counts and model time are recorded per player
        assert p.prompt_tokens > 500 and 0 < p.prompt_tokens_encoded <= p.prompt_tokens
        assert 0 < p.completion_tokens <= 2 * 24
        assert p.model_seconds > 0
    d = game.game
    for r in game.rounds:
        coop = [a == "cooperate" for a in r.actions]
        for i, a in enumerate(r.actions):
            others = sum(coop) - coop[i]
            expected = d["S"] + (d["R"] - d["S"]) * others / 2 if coop[i] else d["P"] + (d["T"] - d["P"]) * others / 2
            assert r.payoffs[i] == pytest.approx(expected)
    assert game.players[2].persona == "malicious" and "Lie to them" in game.players[2].system_prompt


def test_same_seed_on_a_fresh_model_gives_an_identical_record(game: GameRecord) -> None:
    again = play_on_a_fresh_model()
    assert without_timing(again) == without_timing(game)
