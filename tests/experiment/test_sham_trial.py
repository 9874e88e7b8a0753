"""run_trial's post-play measurements: the profile of record after the history with injections removed,
the secondary profile with them in view (only where there were injections), and the sham baseline after a
neutral history of the same length — on a simulated model and on the embedded model."""

from __future__ import annotations

import asyncio

import pytest

from contagion import vocabulary as P
from contagion.backends.registry import resolve
from contagion.experiment.config import ExperimentConfig
from contagion.experiment.trial import TrialSpec, run_trial, sham_seed
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention
from contagion.traits.assess import post_play_context
from contagion.traits.settings import AssessmentSettings, measure
from contagion.traits.sham import context_chars, neutral_history, strip_injections

SETTINGS = AssessmentSettings(items=3, source_items=2, bootstrap=100)


def _spec(model: str, intervention: str = "none", *, sham: bool = True, rounds: int = 4, chat: int = 1,
          settings: AssessmentSettings = SETTINGS) -> TrialSpec:
    players = (PlayerSpec(backend=model), PlayerSpec(backend=model),
               PlayerSpec(backend=model, persona="malicious", focal=False))
    return TrialSpec(game=GameSpec(players=players, rounds=rounds, chat_turns=chat, seed=5),
                     intervention=parse_intervention(intervention), assessment=settings, sham=sham)


def test_sim_records_stripped_post_sham_and_injected_view_only_with_injections() -> None:
    plain = asyncio.run(run_trial(_spec("sim:planted")))
    steered = asyncio.run(run_trial(_spec("sim:planted", "sit:k=1,n=2")))
    assert plain.error is None and steered.error is None
    for record in (plain, steered):
        for i, p in enumerate(record.players[:2]):
            assert p.post_profile and p.sham_profile and p.sham_profile["context_kind"] == "sham"
            stripped = strip_injections(p.messages)
            # the profile of record is measured after the stripped history: re-measuring it there reproduces it
            again = asyncio.run(measure(resolve("sim:planted"), post_play_context(stripped), SETTINGS,
                                        context_kind="post"))
            assert again.measurement() == {k: v for k, v in p.post_profile.items() if k != "cost"}
            ctx = p.sham_context
            assert ctx is not None and ctx["chars_post"] == ctx["chars_sham"] == context_chars(stripped)
            assert ctx["messages_post"] == ctx["messages_sham"] == len(stripped) and ctx["seed"] == sham_seed(
                record.spec, i)
            sham = asyncio.run(measure(resolve("sim:planted"), neutral_history(stripped, seed=ctx["seed"]),
                                       SETTINGS, context_kind="sham"))
            assert sham.measurement() == {k: v for k, v in p.sham_profile.items() if k != "cost"}
        assert record.players[2].sham_profile is None and record.players[2].post_profile is None
    # no injections, no secondary profile (and the field is not written at all)
    assert all(p.post_profile_injected is None for p in plain.players)
    assert "post_profile_injected" not in plain.model_dump_json()
    # with injections: the secondary profile is measured with them in view, and it differs from the stripped one
    for p in steered.players[:2]:
        assert P.all_of_kind(p.messages, P.INJECTION) and p.post_profile_injected is not None
        assert p.post_profile_injected["context_messages"] > p.post_profile["context_messages"]
        assert p.post_profile_injected["items"] != p.post_profile["items"]
    # the planted contagion reads no exposure from the sham: its answers are the pre-play rule plus noise,
    # while the post-play profile next to a malicious player has drifted anti-social
    post = [p.post_profile["prosocial_index"] for p in plain.players[:2]]
    sham = [p.sham_profile["prosocial_index"] for p in plain.players[:2]]
    pre = [p.pre_profile["prosocial_index"] for p in plain.players[:2]]
    assert all(abs(s - b) < 0.1 for s, b in zip(sham, pre, strict=True))
    assert sum(post) < sum(sham)


def test_sim_flatten_flattens_the_sham_as_much_as_the_game() -> None:
    record = asyncio.run(run_trial(_spec("sim:flatten-keep?lean=0.25&noise=0")))
    for p in record.players[:2]:
        pre, post, sham = (p.pre_profile["prosocial_index"], p.post_profile["prosocial_index"],
                           p.sham_profile["prosocial_index"])
        assert post < pre - 0.05  # raw post − pre reads as contagion ...
        assert sham == pytest.approx(post, abs=1e-9)  # ... which the sham, just as long, shows too


def test_sham_off_is_explicit_and_hashed() -> None:
    on, off = _spec("sim:null"), _spec("sim:null", sham=False)
    assert "sham" not in on.model_dump(mode="json") and off.model_dump(mode="json")["sham"] is False
    assert on.stable_hash() != off.stable_hash()
    record = asyncio.run(run_trial(off))
    assert record.players[0].post_profile is not None and record.players[0].sham_profile is None
    config = ExperimentConfig.model_validate({"models": ["sim:null"], "sham": False})
    assert all(spec.sham is False for spec, _ in config.expand())
    assert all(spec.sham for spec, _ in ExperimentConfig.model_validate({"models": ["sim:null"]}).expand())


def test_embedded_model_records_a_sham_and_a_stripped_post_profile() -> None:
    """The embedded model (SmolLM2-135M, really run): the sham context matches the game's length in characters,
    and the record states both contexts' prompt tokens per question, as the model counted them."""
    settings = AssessmentSettings(items=1, source_items=0, bootstrap=100, traits=("agreeableness", "narcissism"))
    players = (PlayerSpec(backend="embedded"), PlayerSpec(backend="scripted:always-defect", focal=False))
    spec = TrialSpec(game=GameSpec(players=players, rounds=2, chat_turns=0, seed=1),
                     intervention=parse_intervention("repeat-system:k=1"), assessment=settings)
    record = asyncio.run(run_trial(spec))
    assert record.error is None
    p = record.players[0]
    assert P.all_of_kind(p.messages, P.INJECTION)
    assert p.post_profile and p.sham_profile and p.post_profile_injected
    ctx = p.sham_context
    assert ctx is not None and ctx["chars_post"] == ctx["chars_sham"]
    assert ctx["prompt_tokens_post"] > 0 and ctx["prompt_tokens_sham"] > 0
    # the same items, each scored in all three contexts
    ids = [it["item_id"] for it in p.post_profile["items"]]
    assert ids == [it["item_id"] for it in p.sham_profile["items"]] == [
        it["item_id"] for it in p.post_profile_injected["items"]]
    assert p.sham_profile["context_kind"] == "sham" and p.post_profile_injected["context_kind"] == "post-injected"
