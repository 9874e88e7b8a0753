"""One question, every backend (issue 13, item 5): the same model through ``embedded`` (llama.cpp in
process), ``hf:embedded`` (transformers) and llama-cpp-python's own OpenAI-compatible server gives the
same per-item trait scores (within 0.02) and the same scored actions, because format v2 scores the same
first reply token on each, and ``embedded`` and the server run the weights transformers computes with.
Also the sampled fallback (item 7): a server without logprobs still gives a profile, labelled
``sampled-fallback``. The server is the suite's one llama.cpp server (``llama_server``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contagion.backends.base import Backend, ScoreMethod, run_sync
from contagion.backends.registry import resolve
from contagion.games.engine import ACTION_FORMAT_VERSION, system_messages
from contagion.games.record import GameSpec, PlayerSpec
from contagion.traits.assess import QUESTION_FORMAT_VERSION, assess, pre_play_context
from contagion.traits.inventory import Inventory, load_builtin
from contagion.traits.profile import Profile
from tests.backends.llama_server import LlamaServer
from tests.games.game_helpers import play as play_game

pytestmark = pytest.mark.slow

LLAMA_CPP_TOLERANCE = 0.02
"""The issue's bound for one model through every backend. Measured on these 24 items: embedded vs the
server 0.0001 at most (the same engine on the same float32 file); embedded vs hf:embedded 0.0012 at most
(llama.cpp's float32 kernels and float16 cache vs transformers in float32, on the same weights)."""


def items(inventory: Inventory) -> Inventory:
    """12 agreeableness and 12 machiavellianism items (24, a pro-social and an anti-social trait)."""
    chosen = [it for it in inventory.items if it.trait == "agreeableness"][:12]
    chosen += [it for it in inventory.items if it.trait == "machiavellianism"][:12]
    return inventory.model_copy(update={"items": chosen})


def game(backend: str, seed: int = 5) -> GameSpec:
    return GameSpec(players=(PlayerSpec(backend=backend), PlayerSpec(backend="scripted:tit-for-tat", focal=False),
                             PlayerSpec(backend="scripted:always-defect", focal=False)),
                    rounds=4, chat_turns=0, seed=seed, action_mode="score")


@pytest.fixture(scope="module")
def server(llama_server: LlamaServer) -> LlamaServer:
    return llama_server


@pytest.fixture(scope="module")
def backends(server: LlamaServer) -> Iterator[dict[str, Backend]]:
    out: dict[str, Backend] = {name: resolve(spec) for name, spec in
           (("embedded", "embedded"), ("hf", "hf:embedded"), ("server", server.spec()))}
    yield out
    for backend in out.values():
        run_sync(backend.aclose())


@pytest.fixture(scope="module")
def profiles(backends: dict[str, Backend]) -> dict[str, Profile]:
    inventory = items(load_builtin())
    context = pre_play_context(system_messages(game("embedded"))[0])
    return {name: run_sync(assess(b, context, inventory, context_kind="pre", bootstrap=20))
            for name, b in backends.items()}


def test_at_least_20_items_are_scored_the_same_way_everywhere(profiles: dict[str, Profile]) -> None:
    for name, profile in profiles.items():
        assert len(profile.items) >= 20, name
        assert profile.method == ScoreMethod.FIRST_TOKEN.value, name
        assert profile.question_format_version == QUESTION_FORMAT_VERSION == 2


def test_embedded_and_the_server_give_the_same_item_scores(profiles: dict[str, Profile]) -> None:
    a, b = profiles["embedded"].items, profiles["server"].items
    assert [x.item_id for x in a] == [y.item_id for y in b]
    gaps = [abs(x.score - y.score) for x, y in zip(a, b, strict=True)]
    assert max(gaps) <= LLAMA_CPP_TOLERANCE, gaps
    assert [x.floored for x in a] == [y.floored for y in b]  # even the floors agree: the same top-k


def test_transformers_scores_the_same_tokens_and_the_same_numbers(
    backends: dict[str, Backend], profiles: dict[str, Profile],
) -> None:
    """hf:embedded asks the same question (the same prompt tokens, the same position, the same method)
    and, because ``embedded`` runs the shipped weights de-quantised to float32 — the numbers transformers
    computes with —, gives the same item scores within the bound."""
    from contagion.backends.embedded import LlamaCppBackend
    from contagion.backends.hf import HFBackend
    from contagion.traits.assess import question_message

    embedded, hf = backends["embedded"], backends["hf"]
    inner_e = getattr(embedded, "inner", embedded)
    inner_h = getattr(hf, "inner", hf)
    assert isinstance(inner_e, LlamaCppBackend) and isinstance(inner_h, HFBackend)
    context = pre_play_context(system_messages(game("embedded"))[0])
    for item in items(load_builtin()).items:
        messages = [*context, question_message(item, "pro")]
        assert inner_h.encode(inner_h.render(messages)) == inner_e.prompt_tokens(messages)[0], item.id
    assert profiles["hf"].method == profiles["embedded"].method == ScoreMethod.FIRST_TOKEN.value
    a, b = profiles["embedded"].items, profiles["hf"].items
    assert [x.item_id for x in a] == [y.item_id for y in b]
    gaps = [abs(x.score - y.score) for x, y in zip(a, b, strict=True)]
    assert len(gaps) >= 20 and max(gaps) <= LLAMA_CPP_TOLERANCE, gaps
    assert [x.floored for x in a] == [y.floored for y in b]


def test_the_shipped_quantised_file_as_is_gives_other_numbers(profiles: dict[str, Profile]) -> None:
    """Why ``embedded`` de-quantises: llama.cpp's Q4_1 kernels round the activations to 8 bits, which
    moves these items by several hundredths (measured: 0.04 at the median, 0.08 at most) — the gap the
    float file closes. If this ever fails, the bound above no longer shows anything."""
    backend = resolve("embedded?weights=asis")
    try:
        context = pre_play_context(system_messages(game("embedded"))[0])
        asis = run_sync(assess(backend, context, items(load_builtin()), context_kind="pre", bootstrap=20))
    finally:
        run_sync(backend.aclose())
    assert asis.backend == "embedded?weights=asis" and profiles["embedded"].backend == "embedded"
    gaps = sorted(abs(x.score - y.score) for x, y in zip(asis.items, profiles["hf"].items, strict=True))
    assert gaps[len(gaps) // 2] > LLAMA_CPP_TOLERANCE, gaps


def test_a_scored_game_chooses_the_same_actions_in_process_on_the_server_and_in_transformers(
    backends: dict[str, Backend],
) -> None:
    plays = {}
    for name in ("embedded", "server", "hf"):
        backend = backends[name]
        spec = game(backend.spec)
        seats = [backend, resolve("scripted:tit-for-tat"), resolve("scripted:always-defect")]
        plays[name] = run_sync(play_game(spec, backends=seats))
    chosen = {name: [a.action for a in play.players[0].actions] for name, play in plays.items()}
    assert chosen["embedded"] == chosen["server"] == chosen["hf"], chosen
    assert len(set(chosen["embedded"])) == 2  # a game in which the choice really changes
    logprobs = {name: [a.logprobs for a in play.players[0].actions] for name, play in plays.items()}
    for other, bound in (("server", 1e-3), ("hf", 0.05)):
        for a, b in zip(logprobs["embedded"], logprobs[other], strict=True):
            assert a is not None and b is not None
            assert max(abs(a[k] - b[k]) for k in a) < bound, (other, a, b)
    for name, play in plays.items():
        for a in play.players[0].actions:
            assert a.method == f"score:{ScoreMethod.FIRST_TOKEN.value}", name
            assert a.format_version == ACTION_FORMAT_VERSION == 2
            assert a.action != "invalid"
    # the player's own replies are the one-word answers the format asks for (nothing pre-filled)
    replies = [m.content for m in plays["server"].players[0].messages if m.meta.get("kind") == "own_action"]
    assert replies and all(r in ("cooperate", "defect") for r in replies)


def test_sampled_fallback_gives_a_labelled_profile(server: LlamaServer) -> None:
    backend = resolve(server.spec() + "?logprobs=0&samples=8")
    inventory = items(load_builtin())
    two = inventory.model_copy(update={"items": inventory.items[:2]})
    try:
        profile = run_sync(assess(backend, pre_play_context(system_messages(game("embedded"))[0]), two,
                                  context_kind="pre", bootstrap=20))
    finally:
        run_sync(backend.aclose())
    assert profile.method == ScoreMethod.SAMPLED.value
    assert all(0.0 <= it.score <= 1.0 for it in profile.items)
