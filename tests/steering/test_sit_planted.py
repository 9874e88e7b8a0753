"""SIT against a known, planted effect: with ``sim:planted`` (contagion planted, SIT reminders planted to
counteract it) SIT reduces measured post-play drift relative to no intervention, and adaptive SIT
injects less often for the same or smaller drift; with ``sim:null`` nothing changes.

Games run end to end through :func:`contagion.experiment.trial.run_trial` (pre-play profiles
measured first, as the runner does, so ``none`` games have them too). Drift is each focal player's
post-play minus pre-play pro-social index, averaged over the focal players of a game. Seeds vary the
simulated model's noise, the talk order and the item sample.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pytest

from contagion.backends.base import run_sync
from contagion.experiment.trial import ProfileCache, TrialSpec, run_trial
from contagion.games.record import GameSpec, PlayerSpec
from contagion.steering import parse_intervention
from contagion.traits.settings import AssessmentSettings

SEEDS = range(8)
ROUNDS = 6


@dataclass(frozen=True)
class Outcome:
    drift: float  # mean over focal players of post − pre pro-social index
    injections: int  # over focal players


_pre_cache = ProfileCache()  # each distinct pre-play profile measured once for the module, as the runner does


async def outcome(variant: str, intervention: str, seed: int, *, malicious: bool = True) -> Outcome:
    backend = f"sim:{variant}?seed={seed}"
    third = PlayerSpec(backend=backend, persona="malicious" if malicious else "default", focal=False)
    spec = TrialSpec(
        game=GameSpec(players=(PlayerSpec(backend=backend), PlayerSpec(backend=backend), third),
                      rounds=ROUNDS, chat_turns=1, seed=seed),
        intervention=parse_intervention(intervention),
        assessment=AssessmentSettings(items=3, seed=seed, bootstrap=100),
    )
    record = await run_trial(spec, profiles=_pre_cache)
    assert record.error is None, record.error
    focal = [p for p in record.players if p.focal]
    assert len(focal) == 2 and all(p.pre_profile and p.post_profile for p in focal)
    drifts = [p.post_profile["prosocial_index"] - p.pre_profile["prosocial_index"] for p in focal]  # type: ignore[index]
    return Outcome(drift=statistics.mean(drifts), injections=sum(len(p.injections) for p in focal))


def outcomes(variant: str, intervention: str, *, malicious: bool = True) -> list[Outcome]:
    async def all_seeds() -> list[Outcome]:
        return [await outcome(variant, intervention, s, malicious=malicious) for s in SEEDS]

    return run_sync(all_seeds())


def mean_drift(xs: list[Outcome]) -> float:
    return statistics.mean(o.drift for o in xs)


def paired(a: list[Outcome], b: list[Outcome]) -> tuple[float, float]:
    """Mean and standard error of the per-seed drift difference a − b."""
    diffs = [x.drift - y.drift for x, y in zip(a, b, strict=True)]
    return statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


@pytest.fixture(scope="module")
def planted() -> dict[str, list[Outcome]]:
    return {name: outcomes("planted", name) for name in ("none", "sit", "sit-adaptive", "sit-adaptive:k=2")}


@pytest.fixture(scope="module")
def null() -> dict[str, list[Outcome]]:
    return {name: outcomes("null", name) for name in ("none", "sit", "sit-adaptive")}


def test_the_planted_contagion_is_measured(planted: dict[str, list[Outcome]]) -> None:
    # without steering, default agents next to a malicious co-player become less pro-social
    assert mean_drift(planted["none"]) < -0.15
    assert all(o.drift < 0 for o in planted["none"])


def test_sit_reduces_drift_relative_to_none_across_seeds(planted: dict[str, list[Outcome]]) -> None:
    diff, se = paired(planted["sit"], planted["none"])
    assert diff > 0.05 and diff > 4 * se
    assert all(s.drift > n.drift for s, n in zip(planted["sit"], planted["none"], strict=True))
    assert all(o.injections == 2 * (ROUNDS // 2) for o in planted["sit"])  # sit's default k = 2, two focal players


def test_adaptive_sit_injects_less_often_for_the_same_or_smaller_drift(
    planted: dict[str, list[Outcome]],
) -> None:
    """Adaptive SIT spends its reminders only where the agent drifts. The population mixes the games
    with a malicious co-player (drift) with all-default games (no drift) — as an experiment grid does."""
    calm = {name: outcomes("planted", name, malicious=False) for name in ("sit", "sit-adaptive",
                                                                                 "sit-adaptive:k=2")}

    def injections(name: str) -> int:
        return sum(o.injections for o in planted[name] + calm[name])

    # the defaults (sit: every 2nd round; sit-adaptive: any round, when drifting) ...
    assert injections("sit-adaptive") < injections("sit")
    assert mean_drift(planted["sit-adaptive"]) >= mean_drift(planted["sit"])
    # ... and at the same cadence (k = 2): as strong where there is drift, silent where there is none
    assert injections("sit-adaptive:k=2") <= 0.75 * injections("sit")
    assert mean_drift(planted["sit-adaptive:k=2"]) >= mean_drift(planted["sit"]) - 0.02
    assert sum(o.injections for o in calm["sit-adaptive:k=2"]) < sum(o.injections for o in calm["sit"]) / 3
    # and it still does its job against the planted contagion
    diff, se = paired(planted["sit-adaptive"], planted["none"])
    assert diff > 0.05 and diff > 4 * se


def test_with_the_null_model_nothing_changes(null: dict[str, list[Outcome]]) -> None:
    for name, xs in null.items():
        assert abs(mean_drift(xs)) < 0.03, name  # no contagion to measure
    for name in ("sit", "sit-adaptive"):
        diff, se = paired(null[name], null["none"])
        assert abs(diff) < max(0.02, 3 * se), name  # within noise
    assert all(o.injections == 2 * (ROUNDS // 2) for o in null["sit"])  # SIT did inject; it just cannot matter
