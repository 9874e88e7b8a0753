"""Profiles: trait means with bootstrap CIs, the pro-social index, records, and drift."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contagion.errors import UserError
from contagion.traits.inventory import Polarity
from contagion.traits.profile import ItemScore, Profile, ProfileDrift, build_profile, drift

POLARITY: dict[str, Polarity] = {"kind": "pro", "honest": "pro", "cruel": "anti", "curious": "neutral"}


def items(scores: dict[str, list[float]], prefix: str = "") -> list[ItemScore]:
    return [
        ItemScore(item_id=f"{prefix}{trait}-{i}", trait=trait, statement=f"s{i}", matching="Yes", score=s)
        for trait, values in scores.items()
        for i, s in enumerate(values)
    ]


def profile(
    scores: dict[str, list[float]],
    *,
    seed: int = 0,
    context: str = "pre",
    version: int = 1,
    bootstrap: int = 2000,
) -> Profile:
    return build_profile(
        items(scores),
        POLARITY,
        context_kind=context,
        backend="test",
        method="simulated",
        debiased=False,
        question_format_version=version,
        inventory="test",
        seed=seed,
        bootstrap=bootstrap,
    )


def test_trait_means_cis_and_index_definition() -> None:
    p = profile({"kind": [0.8, 0.6, 0.7], "honest": [0.9, 0.9], "cruel": [0.2, 0.4], "curious": [0.5]})
    assert p.traits["kind"].mean == pytest.approx(0.7)
    assert p.traits["kind"].n == 3 and p.traits["kind"].polarity == "pro"
    assert p.traits["curious"].polarity == "neutral"
    for t in p.traits.values():
        assert t.ci_low <= t.mean <= t.ci_high
    assert p.traits["curious"].ci_low == p.traits["curious"].ci_high == 0.5  # one item: no spread
    # mean of pro-social trait means minus mean of anti-social trait means; neutral left out
    assert p.prosocial_index == pytest.approx((0.7 + 0.9) / 2 - 0.3)
    assert p.prosocial_index is not None
    assert p.prosocial_ci_low is not None and p.prosocial_ci_high is not None
    assert p.prosocial_ci_low <= p.prosocial_index <= p.prosocial_ci_high


def test_bootstrap_ci_matches_a_plain_percentile_bootstrap_in_width() -> None:
    rng = np.random.default_rng(0)
    values = list(rng.uniform(0, 1, size=60))
    p = profile({"kind": values, "cruel": values})
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    width = p.traits["kind"].ci_high - p.traits["kind"].ci_low
    assert width == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_index_is_none_without_both_sides() -> None:
    p = profile({"kind": [0.8], "curious": [0.3]})
    assert p.prosocial_index is None and p.prosocial_ci_low is None


def test_seeded_and_trait_ci_independent_of_other_traits() -> None:
    a = profile({"kind": [0.1, 0.5, 0.9, 0.3], "cruel": [0.2, 0.4]}, seed=3)
    b = profile({"kind": [0.1, 0.5, 0.9, 0.3], "cruel": [0.2, 0.4]}, seed=3)
    alone = profile({"kind": [0.1, 0.5, 0.9, 0.3]}, seed=3)
    assert a == b
    assert a.traits["kind"] == alone.traits["kind"]
    spread = [0.05 * i + 0.013 * (i % 3) for i in range(15)]
    assert profile({"kind": spread}, seed=4).traits["kind"] != profile({"kind": spread}, seed=3).traits["kind"]


def test_record_round_trip_through_json() -> None:
    p = profile({"kind": [0.81234567891, 0.6], "cruel": [0.2, 0.4]})
    text = json.dumps(p.to_record())
    back = Profile.from_record(json.loads(text))
    assert back == p
    assert json.dumps(back.to_record()) == text


def test_drift_pairs_items_and_finds_the_change() -> None:
    pre = profile({"kind": [0.8, 0.7, 0.9, 0.6, 0.75], "cruel": [0.2, 0.3, 0.25, 0.2, 0.3]})
    post = profile(
        {"kind": [0.6, 0.5, 0.7, 0.4, 0.55], "cruel": [0.3, 0.4, 0.35, 0.3, 0.4], "honest": [0.5]},
        context="post",
    )
    d = drift(pre, post)
    assert set(d.traits) == {"kind", "cruel"}  # 'honest' has no pre items
    assert d.traits["kind"].delta == pytest.approx(-0.2)
    assert d.traits["kind"].ci_low == pytest.approx(-0.2) == d.traits["kind"].ci_high  # constant differences
    assert d.traits["cruel"].delta == pytest.approx(0.1)
    assert d.traits["kind"].pre_mean == pytest.approx(0.75) and d.traits["kind"].post_mean == pytest.approx(0.55)
    assert d.traits["kind"].significant
    assert d.prosocial_delta == pytest.approx(-0.3)
    # over the traits both measured, the index drift is the difference of the two indices
    common = profile({"kind": [0.6, 0.5, 0.7, 0.4, 0.55], "cruel": [0.3, 0.4, 0.35, 0.3, 0.4]})
    assert common.prosocial_index is not None and pre.prosocial_index is not None
    assert d.prosocial_delta == pytest.approx(common.prosocial_index - pre.prosocial_index)
    assert (d.pre_context, d.post_context) == ("pre", "post")
    assert ProfileDrift.from_record(json.loads(json.dumps(d.to_record()))) == d


def test_drift_of_a_profile_with_itself_is_zero() -> None:
    p = profile({"kind": [0.8, 0.1, 0.5], "cruel": [0.3, 0.9]})
    d = drift(p, p)
    for t in d.traits.values():
        assert t.delta == 0 and t.ci_low == 0 and t.ci_high == 0 and not t.significant
    assert d.prosocial_delta == 0


def test_drift_refuses_incomparable_profiles() -> None:
    with pytest.raises(UserError, match="different question formats"):
        drift(profile({"kind": [0.5]}), profile({"kind": [0.5]}, version=2))
    other = build_profile(
        items({"kind": [0.5]}, prefix="x"),
        POLARITY,
        context_kind="post",
        backend="test",
        method="simulated",
        debiased=False,
        question_format_version=1,
        inventory="t",
        seed=0,
        bootstrap=10,
    )
    with pytest.raises(UserError, match="share no items"):
        drift(profile({"kind": [0.5]}), other)


def test_bootstrap_must_be_positive() -> None:
    with pytest.raises(UserError, match="at least 1"):
        profile({"kind": [0.5]}, bootstrap=0)


scores_strategy = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(kind=scores_strategy, honest=scores_strategy, cruel=scores_strategy, seed=st.integers(0, 2**31))
def test_index_and_cis_stay_in_range(kind: list[float], honest: list[float], cruel: list[float], seed: int) -> None:
    p = profile({"kind": kind, "honest": honest, "cruel": cruel}, seed=seed, bootstrap=200)
    assert p.prosocial_index is not None and p.prosocial_ci_low is not None and p.prosocial_ci_high is not None
    assert -1 <= p.prosocial_ci_low <= p.prosocial_ci_high <= 1
    assert -1 - 1e-12 <= p.prosocial_index <= 1 + 1e-12
    for t in p.traits.values():
        assert 0 <= t.ci_low <= t.ci_high <= 1
        assert t.ci_low - 1e-12 <= t.mean <= t.ci_high + 1e-12
