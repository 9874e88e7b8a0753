"""The adversarial null models and the planted model's content-driven mitigation (``contagion.backends.sim``).

Each null model fools a careless analysis one way (answers flatten, Yes-bias, echo of quoted statements,
plain reciprocity, flattening that keeps the answer mass, echo of what the context says about a trait)
while planting no contagion and no mitigation; ``sim:planted`` counts a reminder by what it says (its own
pre-play answers), never by the injection's tag. Every variant takes a pro-social ``lean`` and the
realism parameters ``game_sd`` / ``item_sd``; at their defaults every answer is what it was before they
existed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import statistics

import pytest

from contagion import vocabulary as P
from contagion.backends.base import GenerationConfig, run_sync
from contagion.backends.registry import build
from contagion.backends.sim import (
    ALL_VARIANTS,
    NULL_VARIANTS,
    TRAP_VARIANTS,
    VARIANTS,
    SimBackend,
    inventory_statements,
    own_share,
    trait_stances,
    yes_propensity,
)
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
    assert set(VARIANTS) | set(TRAP_VARIANTS) == set(ALL_VARIANTS)
    for v in ALL_VARIANTS:
        assert build(f"sim:{v}").capabilities.language_model
    with pytest.raises(BackendSpecError, match="sim:flatten"):
        build("sim:flattened")
    with pytest.raises(BackendSpecError):
        build("sim:echo?echo=nan")


@pytest.mark.parametrize("variant", NULL_VARIANTS + TRAP_VARIANTS)
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


# -- defaults unchanged --------------------------------------------------------------------------------

BATTERY_STATEMENTS = ["I try to see the best in the people I meet", "I enjoy putting people in their place",
                      "I would lie to get ahead"]
BATTERY_DIGEST = "cdeb5503fcae91e4"
"""Digest of every answer of the battery below, computed with the simulator before ``lean``, ``game_sd``,
``item_sd``, ``mass_floor`` and ``sim:trait-echo`` existed (commit 991b15d): at their defaults every answer
— trait scores, action scores, chat — must stay bit-identical, so the check's runs and the golden records
stay what they were (the check's fingerprint, a hash of the source, still changes with the code)."""


def _battery_histories() -> list[list[Message]]:
    filler = "Round results and some chat that makes the context longer. " * 20
    reminder = Message(role="system", meta={"kind": P.INJECTION, "intervention": "sit"},
                       content="A reminder:\n" + "\n".join(f"- {own_line(s)}" for s in BATTERY_STATEMENTS))
    out = []
    for persona in ("default", "malicious", "benevolent"):
        base = [system(f"rules for {persona}", persona=persona)]
        out += [base, [*base, obs(2, 0), obs(1, 1)], [*base, *exposed_history(3)[1:]],
                [*base, *exposed_history(2)[1:], reminder, obs(0, 2)],
                [*base, *[Message(role="user", content=filler, meta={
                    "kind": P.OBSERVATION, "others_cooperated": 1, "others_defected": 1})] * 6]]
    return out


async def _battery(variants: tuple[str, ...]) -> list[object]:
    out: list[object] = []
    for variant in variants:
        for params in ({}, {"seed": "1", "position_bias": "0.1"}):
            sim = SimBackend(variant, params)
            for h in _battery_histories():
                for polarity in ("pro", "anti", "neutral"):
                    for key in ("Yes", "No"):
                        for st in BATTERY_STATEMENTS:
                            s = await sim.score_choices([*h, trait_question(polarity, key, st)], ["Yes", "No"])
                            out.append(tuple(s.logprobs))
                out.append(tuple((await sim.score_choices([*h, act()], ["cooperate", "defect"])).logprobs))
                out.append((await sim.generate(h, GenerationConfig())).text)
    return out


def test_default_answers_are_bit_identical_to_before_the_new_parameters() -> None:
    got = asyncio.run(_battery(VARIANTS))
    assert len(got) == 3600
    assert hashlib.sha256(repr(got).encode()).hexdigest()[:16] == BATTERY_DIGEST
    # and an explicit zero is the default: the same answers
    for variant in ("planted", "null"):
        zero = SimBackend(variant, {"lean": "0", "game_sd": "0", "item_sd": "0"})
        plain = SimBackend(variant)
        for h in _battery_histories()[:5]:
            q = trait_question("pro", statement=BATTERY_STATEMENTS[0])
            assert answers(zero, h, q) == answers(plain, h, q)


# -- lean -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_lean_moves_every_variant_toward_the_pro_social_answer(variant: str) -> None:
    leaning, plain = SimBackend(variant, {"noise": "0", "lean": "0.25"}), SimBackend(variant, {"noise": "0"})
    for statement in STATEMENTS[:5]:
        for polarity, move in (("pro", 0.25), ("anti", -0.25), ("neutral", 0.0)):
            for matching in ("Yes", "No"):
                h = [system("rules", persona="default"), trait_question(polarity, matching, statement)]
                assert leaning.trait_probability(h) - plain.trait_probability(h) == pytest.approx(move)


def index_at(sim: SimBackend, rounds: int) -> float:
    """Mean p(pro-social answer) over pro-social and anti-social items (both keys), minus ½, after ``rounds``
    of filler."""
    shares = []
    for polarity in ("pro", "anti"):
        for statement in STATEMENTS[:8]:
            for matching in ("Yes", "No"):
                p_yes, p_no = answers(sim, long_history(rounds), trait_question(polarity, matching, statement))
                p_match = (p_yes if matching == "Yes" else p_no) / (p_yes + p_no)
                shares.append(p_match if polarity == "pro" else 1 - p_match)
    return statistics.mean(shares) - 0.5


def test_flatten_with_a_pro_social_lean_drifts_toward_half_as_the_context_grows() -> None:
    """The trap of the confound issue: no contagion, yet post (long context) − pre (short) is negative."""
    trap = SimBackend("flatten", {"noise": "0", "lean": "0.25"})
    at_half = SimBackend("flatten", {"noise": "0"})
    index = [index_at(trap, r) for r in (0, 2, 6, 12)]
    assert index[0] > 0.2  # pro-social at baseline (short context)
    assert all(a > b for a, b in itertools.pairwise(index))  # less so with every round
    assert index[-1] < 0.05
    # without the lean the same flattening has nothing to move: the index stays at ½
    assert all(abs(index_at(at_half, r)) < 0.02 for r in (0, 6))


# -- the mass-keeping flattener -------------------------------------------------------------------------

def test_flatten_keep_flattens_like_flatten_and_keeps_the_answer_mass() -> None:
    keep, flat = SimBackend("flatten-keep", {"noise": "0"}), SimBackend("flatten", {"noise": "0"})
    same = SimBackend("flatten", {"noise": "0", "mass_floor": "1"})
    for rounds in (0, 3, 12):
        for statement in STATEMENTS[:4]:
            q = trait_question("pro", statement=statement)
            k, f = answers(keep, long_history(rounds), q), answers(flat, long_history(rounds), q)
            assert sum(k) == pytest.approx(1.0)
            assert k[0] == pytest.approx(f[0] / sum(f))  # the same flattening
            assert answers(same, long_history(rounds), q) == pytest.approx(k)
    q = trait_question("pro", statement=STATEMENTS[0])
    assert sum(answers(flat, long_history(12), q)) < 0.5  # sim:flatten still loses mass
    y = yes_propensity(STATEMENTS[0])
    assert abs(answers(keep, long_history(12), q)[0] - 0.5) < abs(y - 0.5) / 3


def test_effects_of_other_variants_apply_only_when_the_spec_sets_them() -> None:
    q = trait_question("pro", statement=STATEMENTS[0])
    planted, slight = SimBackend("planted", {"noise": "0"}), SimBackend("planted", {"noise": "0", "flatten": "0.02"})
    short, long = answers(planted, long_history(0), q), answers(planted, long_history(12), q)
    assert short == pytest.approx(long)  # no exposure, no flattening: length alone does nothing
    flat_short, flat_long = answers(slight, long_history(0), q), answers(slight, long_history(12), q)
    assert abs(flat_long[0] / sum(flat_long) - 0.5) < abs(flat_short[0] / sum(flat_short) - 0.5)
    assert SimBackend("null").p["trait_echo"] == 0 and SimBackend("trait-echo").p["trait_echo"] == 0.05


# -- trait-echo -----------------------------------------------------------------------------------------

def sit_reminder(*said: tuple[str, str, str, float]) -> Message:
    """SIT's own injected message (its wording, from contagion.steering) restating (trait, statement,
    matching, score) answers as the agent's own."""
    from contagion.steering.interventions import reminder_message, reminder_sentence
    from contagion.traits.profile import ItemScore

    sentences = [reminder_sentence(ItemScore(item_id=f"x{i}", trait=t, statement=s, matching=m, score=p),
                                   "pro" if t == "agreeableness" else "anti")
                 for i, (t, s, m, p) in enumerate(said)]
    msg = reminder_message(sentences, "system")
    return msg.model_copy(update={"meta": {"kind": P.INJECTION, "intervention": "sit"}})


def builtin_items(trait: str, matching: str) -> list[str]:
    from contagion.traits.inventory import load_builtin

    return [i.statement for i in load_builtin().items if i.trait == trait and i.matching == matching]


def echo_question(trait: str, polarity: str, matching: str, statement: str) -> Message:
    q = trait_question(polarity, matching, statement)
    return q.model_copy(update={"meta": {**q.meta, "trait": trait}})


def p_matching(sim: SimBackend, history: list[Message], q: Message) -> float:
    a, b = answers(sim, history, q)
    return (a if q.meta["matching"] == "Yes" else b) / (a + b)


def test_inventory_statements_know_every_builtin_item() -> None:
    from contagion.traits.inventory import load_builtin

    known = inventory_statements()
    for version in (1, 2):
        for item in load_builtin(version).items:
            assert known[" ".join(item.statement.rstrip(".").lower().split())] == (item.trait, item.matching == "Yes")


def test_trait_echo_moves_a_mentioned_trait_toward_what_sit_said_and_nothing_else() -> None:
    echo, null = SimBackend("trait-echo", {"noise": "0"}), SimBackend("null", {"noise": "0"})
    agree_yes, agree_no = builtin_items("agreeableness", "Yes"), builtin_items("agreeableness", "No")
    narc_yes = builtin_items("narcissism", "Yes")
    honesty = builtin_items("honesty", "Yes")
    # SIT: "I hold this about myself" of an agreeableness item, "I would not say" of a narcissism item
    reminder = sit_reminder(("agreeableness", agree_yes[0], "Yes", 0.8), ("narcissism", narc_yes[0], "Yes", 0.2))
    assert trait_stances([reminder]) == {"agreeableness": 1.0, "narcissism": -1.0}
    hist = [*exposed_history(3), reminder, obs(0, 2)]
    for trait, polarity, statement, matching, move in (
            ("agreeableness", "pro", agree_yes[3], "Yes", 0.05), ("agreeableness", "pro", agree_no[2], "No", 0.05),
            ("narcissism", "anti", narc_yes[4], "Yes", -0.05), ("honesty", "pro", honesty[1], "Yes", 0.0)):
        q = echo_question(trait, polarity, matching, statement)
        assert p_matching(echo, hist, q) - p_matching(null, hist, q) == pytest.approx(move)
        # nothing without the mention, and no contagion: exposure alone moves nothing
        assert p_matching(echo, exposed_history(3), q) == pytest.approx(p_matching(null, [system("rules")], q))
    assert echo.shift(hist) == 0.0
    assert echo.cooperation_probability([*hist, act()]) == null.cooperation_probability([*hist, act()])


def test_trait_stances_read_trait_names_negations_and_mixed_mentions() -> None:
    summary = Message(role="system", content=(
        "- My own answers showed honesty: I gave the honesty answer 80% of the time.\n"
        "- My own answers rejected power seeking: I gave the power seeking answer only 20% of the time."))
    assert trait_stances([summary]) == {"honesty": 1.0, "power-seeking": -1.0}
    agree = builtin_items("agreeableness", "Yes")
    mixed = Message(role="user", content=f'I hold this about myself: "{agree[0]}."\n'
                                         f'I would never say this about myself: "{agree[1]}."')
    assert trait_stances([mixed]) == {"agreeableness": 0.0}
    neutral = Message(role="system", content='The sky is a colour and "tables have legs".')
    assert trait_stances([neutral]) == {}


# -- game_sd and item_sd ----------------------------------------------------------------------------------

def test_game_effect_is_drawn_from_the_game_seed_and_moves_play_and_post_play_answers() -> None:
    sim = SimBackend("null", {"noise": "0", "game_sd": "0.1"})
    plain = SimBackend("null", {"noise": "0"})
    pro, anti = trait_question("pro", statement=STATEMENTS[0]), trait_question("anti", statement=STATEMENTS[1])
    pre = [system("rules", persona="default")]
    in_game = exposed_history(2)
    with P.playing(7, "prisoners-dilemma"):
        g = sim.game_effect()
        assert g != 0.0 and SimBackend("null", {"noise": "0", "game_sd": "0.1"}).game_effect() == g
        assert SimBackend("null", {"game_sd": "0.1", "seed": "3"}).game_effect() != g  # another model seed
        # the pro-social index (pro minus anti) drifts by -g; cooperation moves by -g
        assert p_match_of(sim, in_game, pro) - p_match_of(plain, in_game, pro) == pytest.approx(-g / 2)
        assert p_match_of(sim, in_game, anti) - p_match_of(plain, in_game, anti) == pytest.approx(g / 2)
        assert p_match_of(sim, pre, pro) == p_match_of(plain, pre, pro)  # pre-play answers carry no game
        assert sim.cooperation_probability([*pre, act()]) == pytest.approx(0.75 - g)
    with P.playing(7, "chicken"):
        assert sim.game_effect() == g  # the same seed in another game type: the same effect (game_rho = 1)
    with P.playing(8, "prisoners-dilemma"):
        assert sim.game_effect() != g
    assert P.CURRENT_GAME.get() is None
    with pytest.raises(RuntimeError, match="game_sd needs the game"):
        sim.cooperation_probability([*pre, act()])
    assert p_match_of(sim, pre, pro) == p_match_of(plain, pre, pro)  # a pre-play profile needs no game
    draws = []
    for seed in range(400):
        with P.playing(seed, "prisoners-dilemma"):
            draws.append(sim.game_effect())
    assert 0.09 < statistics.stdev(draws) < 0.11 and abs(statistics.mean(draws)) < 0.015


def test_game_rho_is_the_share_of_the_game_effect_a_seed_shares_across_game_types() -> None:
    def draws(rho: str) -> list[tuple[float, float]]:
        sim = SimBackend("null", {"game_sd": "0.1", "game_rho": rho})
        out = []
        for seed in range(400):
            pair = []
            for game in ("prisoners-dilemma", "stag-hunt"):
                with P.playing(seed, game):
                    pair.append(sim.game_effect())
            out.append((pair[0], pair[1]))
        return out

    for rho, low, high in (("0.5", 0.4, 0.6), ("0", -0.1, 0.1)):
        d = draws(rho)
        assert low < statistics.correlation(*zip(*d, strict=True)) < high
        assert 0.09 < statistics.stdev(a for a, _ in d) < 0.11
    assert all(a == b for a, b in draws("1"))


def p_match_of(sim: SimBackend, history: list[Message], q: Message) -> float:
    a, b = answers(sim, history, q)
    return a / (a + b)


def test_run_trial_gives_every_game_of_a_seed_the_same_effect_across_game_types() -> None:
    from contagion.experiment.config import parse_config
    from contagion.experiment.trial import run_trial

    cfg = parse_config({
        "name": "g", "models": ["sim:null?game_sd=0.1&noise=0"], "games": ["prisoners-dilemma", "chicken"],
        "compositions": {"all-default": ["default", "default", "default"]}, "interventions": ["none"],
        "chat_turns": [0], "rounds": 2, "repetitions": 3, "measure_traits": False}, "test")

    async def play() -> dict[tuple[str, int], set[float]]:
        out: dict[tuple[str, int], set[float]] = {}
        for spec, _ in cfg.expand():
            rec = await run_trial(spec)
            assert rec.error is None
            out[(spec.game.game, spec.game.seed)] = {round(a.p_cooperate or 0, 12) for p in rec.players
                                                     for a in p.actions}
        return out

    p = asyncio.run(play())
    assert P.CURRENT_GAME.get() is None
    seeds = sorted({s for _, s in p})
    assert len(seeds) == 3 and all(len(v) == 1 for v in p.values())  # one effect per game, every player
    for seed in seeds:
        assert p[("prisoners-dilemma", seed)] == p[("chicken", seed)]
    assert len({next(iter(p[("chicken", s)])) for s in seeds}) == 3  # and another one for each seed
    sim = SimBackend("null", {"noise": "0", "game_sd": "0.1"})
    for seed in seeds:
        with P.playing(seed, "chicken"):
            assert p[("chicken", seed)] == {round(0.75 - sim.game_effect(), 12)}


def test_item_effect_is_fixed_per_item_and_appears_once_there_is_conversation() -> None:
    sim = SimBackend("null", {"noise": "0", "item_sd": "0.1"})
    plain = SimBackend("null", {"noise": "0"})
    pre = [system("rules", persona="default")]
    for statement in STATEMENTS[:6]:
        q = trait_question("anti", statement=statement)
        u = sim.item_effect(statement)
        assert p_match_of(sim, pre, q) == p_match_of(plain, pre, q)
        for h in (exposed_history(1), long_history(3)):
            assert p_match_of(sim, h, q) - p_match_of(plain, h, q) == pytest.approx(u)
    draws = [sim.item_effect(f"statement {i}") for i in range(400)]
    assert 0.09 < statistics.stdev(draws) < 0.11 and abs(statistics.mean(draws)) < 0.015
    assert SimBackend("null", {"item_sd": "0.1", "seed": "2"}).item_effect(STATEMENTS[0]) != sim.item_effect(
        STATEMENTS[0])


@pytest.mark.parametrize("spec, name", [
    ("sim:flatten?lean=0.5", "lean"), ("sim:planted?lean=-0.6", "lean"), ("sim:null?game_sd=-0.1", "game_sd"),
    ("sim:null?game_sd=0.9", "game_sd"), ("sim:null?game_rho=1.2", "game_rho"), ("sim:null?item_sd=-1", "item_sd"),
    ("sim:flatten?mass_floor=0", "mass_floor"),
    ("sim:flatten-keep?mass_floor=1.5", "mass_floor"), ("sim:trait-echo?trait_echo=0.8", "trait_echo"),
    ("sim:planted?flatten=-1", "flatten"), ("sim:trait-echo?lean=abc", "numbers"),
])
def test_bad_parameter_values_are_refused_with_the_rule(spec: str, name: str) -> None:
    with pytest.raises(BackendSpecError, match=name):
        build(spec)
