"""Scripted players, simulated models and the spec registry."""

from __future__ import annotations

import math

import pytest

from contagion import vocabulary as P
from contagion.backends.base import GenerationConfig, ScoreMethod, run_sync
from contagion.backends.registry import VALID_FORMS, build, resolve
from contagion.backends.scripted import ScriptedBackend
from contagion.backends.sim import SimBackend
from contagion.errors import BackendSpecError
from contagion.messages import Message, system, user


def act() -> Message:
    return Message(role="user", content="choose", meta={"kind": P.ACT, "cooperate": "cooperate", "defect": "defect"})


def obs(coop: int, defect: int) -> Message:
    return Message(role="user", content="results",
                   meta={"kind": P.OBSERVATION, "others_cooperated": coop, "others_defected": defect})


def chooses(backend, history) -> str:
    s = run_sync(backend.score_choices([*history, act()], ["cooperate", "defect"], prefix="I choose: "))
    assert s.method == ScoreMethod.SCRIPTED
    return s.best()


def test_always_strategies() -> None:
    assert chooses(build("scripted:always-cooperate"), [obs(0, 2)]) == "cooperate"
    assert chooses(build("scripted:always-defect"), [obs(2, 0)]) == "defect"


def test_tit_for_tat_follows_the_majority_of_last_round() -> None:
    tft = build("scripted:tit-for-tat")
    assert chooses(tft, []) == "cooperate"
    assert chooses(tft, [obs(2, 0), obs(0, 2)]) == "defect"
    assert chooses(tft, [obs(0, 2), obs(2, 0)]) == "cooperate"


def test_grim_trigger_never_forgives() -> None:
    grim = build("scripted:grim-trigger")
    assert chooses(grim, [obs(2, 0)]) == "cooperate"
    assert chooses(grim, [obs(1, 1), obs(2, 0), obs(2, 0)]) == "defect"


def test_random_is_seeded_and_respects_p() -> None:
    a = [chooses(build("scripted:random?seed=1"), [obs(1, 1)] * r) for r in range(30)]
    b = [chooses(build("scripted:random?seed=1"), [obs(1, 1)] * r) for r in range(30)]
    c = [chooses(build("scripted:random?seed=2"), [obs(1, 1)] * r) for r in range(30)]
    assert a == b and a != c
    assert {chooses(build("scripted:random?p=0"), [obs(1, 1)] * r) for r in range(10)} == {"defect"}


def test_scripted_player_needs_an_act_prompt_and_talks() -> None:
    b = build("scripted:always-defect")
    with pytest.raises(ValueError):
        run_sync(b.score_choices([user("hi")], ["Yes", "No"]))
    assert run_sync(b.generate([user("talk")], GenerationConfig())).text
    assert not b.capabilities.language_model


def trait_question(polarity: str, matching: str = "Yes", statement: str = "I like people.") -> Message:
    return Message(role="user", content=f"Q: {statement}", meta={
        "kind": P.TRAIT_ITEM, "trait": "t", "matching": matching, "polarity": polarity, "statement": statement,
        "first_answer": "Yes"})


def own_line(statement: str = "I like to help people.") -> str:
    """A reminder line restating ``statement`` as the simulated model's own (noise-free) answer."""
    from contagion.backends.sim import yes_propensity

    if yes_propensity(statement) >= 0.5:
        return f'I hold this about myself: "{statement}"'
    return f'I would not say this about myself: "{statement}"'


def exposed_history(defections: int) -> list[Message]:
    return [system("rules", persona="default")] + [obs(0, 2)] * defections + [
        Message(role="user", content="Casey: you fool, I will crush you", meta={"kind": P.TALK, "speaker": "Casey"})]


def p_match(backend: SimBackend, history: list[Message], polarity: str) -> float:
    s = run_sync(backend.score_choices([*history, trait_question(polarity)], ["Yes", "No"]))
    assert s.method == ScoreMethod.SIMULATED
    return s.normalised()[0]


def test_planted_model_shifts_by_the_documented_rule() -> None:
    sim = SimBackend("planted", {"noise": "0", "contagion": "0.2"})
    base = [system("rules", persona="default")]
    exposed = exposed_history(3)
    assert sim.exposure(exposed) == pytest.approx(1.0)
    assert sim.shift(exposed) == pytest.approx(0.2)
    assert p_match(sim, exposed, "anti") - p_match(sim, base, "anti") == pytest.approx(0.2, abs=1e-9)
    assert p_match(sim, exposed, "pro") - p_match(sim, base, "pro") == pytest.approx(-0.2, abs=1e-9)


def test_reminders_counteract_the_planted_shift() -> None:
    sim = SimBackend("planted", {"noise": "0"})
    exposed = exposed_history(2)
    own = own_line()
    reminded = [*exposed, Message(role="system", content=f"A reminder:\n- {own}",
                                  meta={"kind": P.INJECTION, "intervention": "sit"})]
    assert sim.shift(reminded) < sim.shift(exposed)


def test_null_twin_ignores_context() -> None:
    null = SimBackend("null", {"noise": "0"})
    assert p_match(null, exposed_history(5), "anti") == p_match(null, [system("rules")], "anti")


def test_sim_is_deterministic_given_context_and_seed() -> None:
    h = [*exposed_history(1), trait_question("anti")]
    a = run_sync(build("sim:planted").score_choices(h, ["Yes", "No"])).logprobs
    b = run_sync(build("sim:planted").score_choices(h, ["Yes", "No"])).logprobs
    c = run_sync(build("sim:planted?seed=9").score_choices(h, ["Yes", "No"])).logprobs
    assert a == b and a != c
    assert all(math.isfinite(x) for x in a)


def test_sim_position_bias_favours_the_first_listed_answer() -> None:
    sim = SimBackend("null", {"noise": "0", "position_bias": "0.1"})
    plain = SimBackend("null", {"noise": "0"})
    h = [trait_question("neutral", matching="No")]
    yes_first = run_sync(sim.score_choices(h, ["Yes", "No"])).normalised()[0]
    assert yes_first == pytest.approx(run_sync(plain.score_choices(h, ["Yes", "No"])).normalised()[0] + 0.1)


@pytest.mark.parametrize("spec", ["nonsense", "openai:model-without-url", "scripted:always-nice", "sim:other",
                                  "sim:planted?bogus=1", "embedded?n_ctx=abc", "gguf:", "hf:"])
def test_unknown_specs_list_the_valid_forms(spec: str) -> None:
    with pytest.raises(BackendSpecError) as info:
        build(spec)
    assert str(info.value)


def test_unknown_spec_message_names_every_form() -> None:
    with pytest.raises(BackendSpecError) as info:
        build("bogus:thing")
    for form in VALID_FORMS:
        assert form.split(" ")[0] in str(info.value)


def test_resolve_shares_one_backend_per_spec() -> None:
    assert resolve("sim:null") is resolve("sim:null")
    assert isinstance(resolve("scripted:tit-for-tat").inner, ScriptedBackend)  # type: ignore[attr-defined]
