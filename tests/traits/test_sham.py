"""The sham baseline's context (contagion.traits.sham): a neutral history shaped like a game's — same leading
system prompt, same roles, the same length in characters — with nothing of the game in it."""

from __future__ import annotations

import random

import pytest

from contagion import vocabulary as P
from contagion.backends.sim import HOSTILE_WORDS, SimBackend, trait_stances
from contagion.experiment.trial import TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.messages import Message
from contagion.steering import parse_intervention
from contagion.traits.settings import AssessmentSettings
from contagion.traits.sham import (
    BANK,
    NEUTRAL,
    _Deck,
    context_chars,
    neutral_history,
    neutral_text,
    strip_injections,
)


def _game_history(intervention: str = "sit:k=1,n=2", chat: int = 1, rounds: int = 4) -> list[Message]:
    """A real game's history of a focal agent (sim:planted next to a malicious one), injections included."""
    players = (PlayerSpec(backend="sim:planted"), PlayerSpec(backend="sim:planted"),
               PlayerSpec(backend="sim:planted", persona="malicious", focal=False))
    spec = TrialSpec(game=GameSpec(players=players, rounds=rounds, chat_turns=chat, seed=3),
                     intervention=parse_intervention(intervention),
                     assessment=AssessmentSettings(items=2, bootstrap=100), measure=False)
    record = asyncio_run(run_trial(spec))
    assert record.error is None
    return record.players[0].messages


def asyncio_run(coro):  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.run(coro)


def test_lengths_roles_and_system_prompt_are_matched_exactly() -> None:
    history = strip_injections(_game_history())
    sham = neutral_history(history, seed=7)
    assert len(sham) == len(history)
    assert sham[0] == history[0] and sham[0].role == "system" and "persona" in sham[0].meta
    for real, fake in zip(history[1:], sham[1:], strict=True):
        # the tolerance is zero: every message has exactly its original's role and length in characters
        assert fake.role == real.role and len(fake.content) == len(real.content)
        assert fake.meta == {P.KIND: NEUTRAL} and fake.name is None
    assert context_chars(sham) == context_chars(history)
    # nothing of the game is carried over (the messages are replaced, not copied)
    assert not {m.content for m in sham[1:] if len(m.content) > 20} & {m.content for m in history}


def test_deterministic_in_seed_and_never_reads_the_text() -> None:
    history = strip_injections(_game_history())
    assert neutral_history(history, seed=7) == neutral_history(history, seed=7)
    assert neutral_history(history, seed=7) != neutral_history(history, seed=8)
    # the text of the history is never read: same roles and lengths, same sham
    scrambled = [history[0], *(m.model_copy(update={"content": "x" * len(m.content)}) for m in history[1:])]
    assert neutral_history(scrambled, seed=7) == neutral_history(history, seed=7)


def test_no_game_meta_no_hostility_and_no_trait_talk() -> None:
    sham = neutral_history(strip_injections(_game_history()), seed=1)
    kinds = {m.meta.get(P.KIND) for m in sham[1:]}
    assert kinds == {NEUTRAL}
    assert not P.all_of_kind(sham, P.OBSERVATION) and not P.all_of_kind(sham, P.TALK)
    assert not P.all_of_kind(sham, P.ACT) and not P.all_of_kind(sham, P.INJECTION)
    text = " ".join(BANK).lower()
    assert not [w for w in HOSTILE_WORDS if w in text]
    # no statement of the inventories, no trait's name: sim:trait-echo finds nothing to echo
    assert trait_stances([Message(role="user", content=s) for s in BANK]) == {}
    assert trait_stances(sham[1:]) == {}


def test_injections_are_stripped_and_only_they() -> None:
    history = _game_history("sit:k=1,n=2")
    injected = P.all_of_kind(history, P.INJECTION)
    assert injected, "the SIT game injected reminders"
    stripped = strip_injections(history)
    assert len(stripped) == len(history) - len(injected)
    assert stripped == [m for m in history if m not in injected]
    assert strip_injections(_game_history("none")) == _game_history("none")


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 27, 200, 5000])
def test_every_length_is_reached_exactly(length: int) -> None:
    for seed in range(20):
        text = neutral_text(length, _Deck(random.Random(seed)))
        assert len(text) == length
        assert text == text.strip() or length == 0


def test_a_long_game_is_covered_without_repeating_a_sentence_early() -> None:
    """The sentences come from a shuffled deck: none is dealt twice before every one has been dealt."""
    lengths = [180] * 45  # about 8,000 characters, less than the bank holds
    history = [Message(role="system", content="rules"),
               *(Message(role="user" if i % 2 else "assistant", content="y" * n) for i, n in enumerate(lengths))]
    sham = " ".join(m.content for m in neutral_history(history, seed=3)[1:])
    whole = [s for s in BANK if s in sham]
    assert len(whole) > 30
    assert all(sham.count(s) == 1 for s in whole)


def test_sim_planted_reads_no_exposure_and_flatten_flattens_it_equally() -> None:
    """What a simulated model reads from the sham: no exposure or game (so sim:planted's contagion is not
    triggered), the same persona, and the same length (so sim:flatten flattens post and sham alike)."""
    history = strip_injections(_game_history("none"))
    sham = neutral_history(history, seed=5)
    planted = SimBackend("planted")
    assert planted.exposure(history) > 0 and planted.exposure(sham) == 0.0
    assert planted.shift(sham) == 0.0
    ctx_real, ctx_sham = planted._context(history), planted._context(sham)
    assert ctx_sham.in_game is False and ctx_real.in_game is True
    assert ctx_sham.persona == ctx_real.persona and ctx_sham.tokens_k == ctx_real.tokens_k
