"""The adversarial null models and the planted model's content-driven mitigation (``contagion.backends.sim``).

Each null model fools a careless analysis one way (answers flatten, Yes-bias, echo of quoted statements,
plain reciprocity) while planting no contagion and no mitigation; ``sim:planted`` counts a reminder by
what it says (its own pre-play answers), never by the injection's tag.
"""

from __future__ import annotations

import math

import pytest

from contagion import vocabulary as P
from contagion.backends.base import run_sync
from contagion.backends.registry import build
from contagion.backends.sim import NULL_VARIANTS, VARIANTS, SimBackend, own_share, yes_propensity
from contagion.errors import BackendSpecError
from contagion.messages import Message, system
from tests.backends.test_scripted_sim import act, exposed_history, obs, own_line, trait_question

STATEMENTS = [f"Statement number {i} about how I treat other people." for i in range(40)]


def injection(text: str, tag: str) -> Message:
    return Message(role="system", content=text, meta={"kind": P.INJECTION, "intervention": tag})


def answers(sim: SimBackend, history: list[Message], question: Message) -> tuple[float, float]:
    """(p(Yes), p(No)) as the backend scores them (not renormalised: their sum is the answer mass)."""
    s = run_sync(sim.score_choices([*history, question], ["Yes", "No"]))
    return math.exp(s.logprobs[0]), math.exp(s.logprobs[1])


def long_history(rounds: int) -> list[Message]:
    filler = "Round results and some chat that makes the context longer. " * 20
    return [system("rules", persona="default")] + [Message(role="user", content=filler, meta={
        "kind": P.OBSERVATION, "others_cooperated": 2, "others_defected": 0})] * rounds


def test_every_variant_builds_and_unknown_ones_are_refused() -> None:
    for v in VARIANTS:
        assert build(f"sim:{v}").capabilities.language_model
    with pytest.raises(BackendSpecError, match="sim:flatten"):
        build("sim:flattened")
    with pytest.raises(BackendSpecError):
        build("sim:echo?echo=nan")


@pytest.mark.parametrize("variant", NULL_VARIANTS)
def test_null_models_plant_no_trait_shift_even_when_asked(variant: str) -> None:
    sim = SimBackend(variant, {"noise": "0", "contagion": "0.5", "reminder": "1"})
    assert sim.shift(exposed_history(4)) == 0.0


def test_own_statements_help_and_placebo_text_does_not_whatever_the_tag() -> None:
    sim = SimBackend("planted", {"noise": "0", "contagion": "0.2", "reminder": "1"})
    exposed = exposed_history(2)
    own = "A reminder of who I am:\n" + "\n".join(f"- {own_line(s)}" for s in STATEMENTS[:3])
    disowned = own.replace("I hold this", "I would NOT say this").replace("I would not say", "I hold")
    neutral = "A reminder:\n" + "\n".join("- The sky is a colour and tables have legs." for _ in range(3))
    assert len(neutral) == pytest.approx(len(own), rel=0.5)
    base = sim.shift(exposed)
    assert sim.shift([*exposed, injection(own, "placebo")]) < base
    assert sim.shift([*exposed, injection(own, "sit")]) == sim.shift([*exposed, injection(own, "placebo")])
    assert sim.shift([*exposed, injection(neutral, "sit")]) == base
    assert sim.shift([*exposed, injection(disowned, "sit")]) == base
    assert own_share(own) == 1.0 and own_share(neutral) == 0.0 and own_share(disowned) == 0.0


def test_repetition_counts_only_the_agents_own_system_prompt() -> None:
    sim = SimBackend("planted", {"noise": "0", "repeat": "0.1"})
    exposed = exposed_history(2)
    assert sim.shift([*exposed, injection("rules", "anything")]) == pytest.approx(sim.shift(exposed) + 0.05)
    assert sim.shift([*exposed, injection("other rules", "repeat-system")]) == sim.shift(exposed)


def test_flatten_moves_answers_toward_half_and_loses_mass_with_length() -> None:
    sim = SimBackend("flatten", {"noise": "0"})
    q = trait_question("pro", statement=STATEMENTS[0])
    y = yes_propensity(STATEMENTS[0])
    short, long = answers(sim, long_history(0), q), answers(sim, long_history(12), q)
    dist = [abs(a / (a + b) - 0.5) for a, b in (short, long)]
    assert dist[1] < dist[0] <= abs(y - 0.5) + 1e-9
    assert sum(long) < sum(short) <= 1.0 + 1e-9
    assert (short[0] / sum(short) - 0.5) * (y - 0.5) > 0  # same side of ½: it flattens, never flips


def test_acquiescence_says_yes_more_with_length_whatever_the_key() -> None:
    sim = SimBackend("acquiescence", {"noise": "0"})
    for matching in ("Yes", "No"):
        q = trait_question("anti", matching=matching, statement=STATEMENTS[1])
        short, long = answers(sim, long_history(0), q), answers(sim, long_history(8), q)
        assert long[0] > short[0] + 0.1
        assert sum(long) == pytest.approx(1.0)


def test_echo_agrees_with_quoted_statements_in_its_context_and_nothing_else() -> None:
    sim = SimBackend("echo", {"noise": "0"})
    null = SimBackend("null", {"noise": "0"})
    quoted, other = STATEMENTS[2], STATEMENTS[3]
    hist = [*exposed_history(3), injection(f'I would not say this about myself: "{quoted}"', "sit")]
    assert answers(sim, hist, trait_question("anti", statement=quoted))[0] >= 0.9 - 1e-9
    for statement in (other,):
        q = trait_question("anti", statement=statement)
        assert answers(sim, hist, q) == pytest.approx(answers(null, [system("rules")], q))


def test_reciprocity_defects_after_defection_with_no_trait_change() -> None:
    sim = SimBackend("reciprocity", {"noise": "0"})
    calm = [system("rules", persona="default"), obs(2, 0)]
    hit = [system("rules", persona="default"), obs(0, 2)]
    assert sim.cooperation_probability([*calm, act()]) > 0.5 > sim.cooperation_probability([*hit, act()])
    q = trait_question("anti")
    assert answers(sim, exposed_history(5), q) == pytest.approx(answers(sim, [system("rules")], q))


def test_context_reading_is_cached_and_does_not_change_scores() -> None:
    a, b = SimBackend("planted"), SimBackend("planted")
    hist = exposed_history(3)
    q1, q2 = trait_question("anti", statement=STATEMENTS[4]), trait_question("pro", statement=STATEMENTS[5])
    first = [answers(a, hist, q) for q in (q1, q2)]
    again = [answers(a, hist, q) for q in (q1, q2)]
    fresh = [answers(b, list(hist), q) for q in (q1, q2)]
    assert first == again == fresh
