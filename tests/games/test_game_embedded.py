"""A real three-player game on the embedded model (SmolLM2-135M through llama.cpp), kept small: 2 rounds,
1 chat turn, short messages. Played again on two freshly loaded models to prove that the same seed gives
the same record at temperature 0, whatever the state of the prefix cache."""

from __future__ import annotations

import math

import pytest

from contagion import vocabulary as P
from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.embedded import LlamaCppBackend
from contagion.backends.registry import build, resolve
from contagion.games.record import GamePlay, GameSpec
from tests.games.game_helpers import make_spec, play, without_timing

pytestmark = pytest.mark.slow

MAX_TOKENS = 30
SPEC: GameSpec = make_spec(
    "embedded", "embedded", "malicious=embedded",
    game="chicken", rounds=2, chat_turns=1, seed=7,
    generation=GenerationConfig(max_tokens=MAX_TOKENS, temperature=0.0, seed=7),
)


def play_on_a_fresh_model(spec: GameSpec) -> GamePlay:
    """One game on a newly loaded embedded model (empty prefix cache) shared by its language-model players."""
    backend = build("embedded")
    try:
        backends = [build(p.backend) if p.backend.startswith("scripted:") else backend for p in spec.players]
        return run_sync(play(spec, backends=backends))
    finally:
        run_sync(backend.aclose())


@pytest.fixture(scope="module")
def game() -> GamePlay:
    return run_sync(play(SPEC, backends=[resolve("embedded")] * 3))


def test_a_real_three_player_game_completes_and_records_each_action_as_scored(game: GamePlay) -> None:
    assert game.error is None
    assert len(game.rounds) == 2 and len(game.players) == 3
    invalid = 0
    for p in game.players:
        assert p.backend == "embedded"
        assert len(p.actions) == 2
        for a in p.actions:
            # format v2: the reply's first token, scored by the shared rule; a choice no candidate owns is floored
            assert a.method == "score:first-token-top-logprobs" and a.format_version == 2
            assert a.logprobs is not None and set(a.logprobs) == {"swerve", "straight"}
            assert all(-1e9 < v < 0 for v in a.logprobs.values())
            assert a.mass is not None and 0 < a.mass <= 1
            # raw mass of the two actions; a floored one counts at its floor (the mass is then an upper bound)
            assert a.mass == pytest.approx(sum(math.exp(v) for v in a.logprobs.values()))
            if len(a.floored) == 2 or a.logprobs["swerve"] == a.logprobs["straight"]:
                # the model gave neither action: recorded as invalid, never mapped to a default
                assert a.action == "invalid" and a.label is None
                invalid += 1
                continue
            assert a.action in ("cooperate", "defect") and a.label in ("swerve", "straight")
            chosen = "swerve" if a.action == "cooperate" else "straight"
            assert a.logprobs[chosen] == max(a.logprobs.values()) and chosen not in a.floored
    assert game.invalid_rate == pytest.approx(invalid / 6)
    for p in game.players:
        # every player wrote one chat message per round and read the two others'
        assert sum(m.meta.get("kind") == "own_talk" for m in p.messages) == 2
        assert sum(m.meta.get("kind") == P.TALK for m in p.messages) == 4
        assert all(m.content.strip() for m in p.messages if m.meta.get("kind") == "own_talk")
        # token counts and model time are recorded per player
        assert p.prompt_tokens > 500 and p.prompt_tokens_encoded > 0
        assert 0 < p.completion_tokens <= 2 * MAX_TOKENS
        assert p.model_seconds > 0
    d = game.game
    for r in game.rounds:
        coop = [a == "cooperate" for a in r.actions]
        for i in range(len(r.actions)):
            others = sum(coop) - coop[i]
            expected = d["S"] + (d["R"] - d["S"]) * others / 2 if coop[i] else d["P"] + (d["T"] - d["P"]) * others / 2
            if r.actions[i] == "invalid":  # no payoff, and never counted as cooperating for the others
                expected = 0.0
            assert r.payoffs[i] == pytest.approx(expected)
    assert game.players[2].persona == "malicious" and "Lie to them" in game.players[2].system_prompt


def test_same_seed_on_a_fresh_model_gives_an_identical_record(game: GamePlay) -> None:
    first = play_on_a_fresh_model(SPEC)
    again = play_on_a_fresh_model(SPEC)
    # identical except the timing fields: actions, log-probs, chat text, token counts, everything
    assert without_timing(again) == without_timing(first)
    # the shared model (its cache warmed by other tests, or not) gives the same game too; only the number
    # of prompt tokens it had to encode depends on what its cache held
    warm, fresh = without_timing(game), without_timing(first)
    for data in (warm, fresh):
        for p in data["players"]:
            p.pop("prompt_tokens_encoded")
    assert warm == fresh


def test_each_history_is_encoded_about_once(game: GamePlay) -> None:
    """Prefix reuse across a player's turns: the prompt tokens encoded over the game stay within 1.2 x
    the minimum (each player's final history, chat-templated, encoded once) — not the sum of all prompts."""
    backend = resolve("embedded").inner
    assert isinstance(backend, LlamaCppBackend)
    minimum = sum(len(backend.tokenize(backend.render(p.messages, add_generation_prompt=False))) for p in game.players)
    encoded = sum(p.prompt_tokens_encoded for p in game.players)
    from_scratch = sum(p.prompt_tokens for p in game.players)
    assert encoded <= 1.2 * minimum < from_scratch
