"""The coverage test's shipped figures (``contagion/analysis/coverage.json``, made by ``python -m contagion.coverage``):
current for this code, and every primary contrast's 95 % interval covering its truth in 0.93–0.97 of 200
replications of a three-game common-seed grid. The replication itself runs only when asked (slow test below: a
few replications re-played and compared with the shipped per-replication figures)."""

from __future__ import annotations

import math

import pytest

from contagion.coverage import (
    BAND,
    CONTRASTS,
    EXACT_ZERO,
    MODEL,
    REPLICATIONS,
    CoverageGrid,
    coverage_fingerprint,
    load_coverage,
    replicate,
    summarise,
)

REGENERATE = ("regenerate them: PYTHONPATH=src python -m contagion.coverage --workers 2 "
              "--out src/contagion/analysis/coverage.json (about 7 s per replication and core)")


@pytest.fixture(scope="module")
def shipped() -> dict:
    return load_coverage()


def test_shipped_coverage_figures_are_current(shipped: dict) -> None:
    assert shipped["fingerprint"] == coverage_fingerprint(), "figures made by other code: " + REGENERATE
    assert shipped["model"] == MODEL and shipped["replications"] == REPLICATIONS


def test_every_primary_contrast_covers_in_the_band(shipped: dict) -> None:
    figures = shipped["contrasts"]
    assert set(figures) == set(CONTRASTS)
    for name, e in figures.items():
        assert e["replications"] == REPLICATIONS, name
        assert BAND[0] <= e["coverage"] <= BAND[1], f"{name}: coverage {e['coverage']:.3f} outside {BAND}"
    for name in EXACT_ZERO:
        assert BAND[0] <= figures[name]["coverage_zero"] <= BAND[1], name


def test_the_figures_follow_from_the_shipped_replications(shipped: dict) -> None:
    """The summary is recomputed from the per-replication estimates it ships (so the figures are what the
    replications say); the intervals are rebuilt from each replication's estimate and SE with its df."""
    from scipy.stats import t

    reps = []
    for r in shipped["per_replication"]:
        rows = {}
        for name, (est, se) in ((k, v) for k, v in r.items() if k != "seed"):
            df = shipped["contrasts"][name]["mean_df"]
            half = float(t.ppf(0.975, df)) * se if se is not None and math.isfinite(se) else math.nan
            rows[name] = {"estimate": est, "se": se if se is not None else math.nan, "df": df,
                          "ci_low": est - half, "ci_high": est + half, "p": math.nan}
        reps.append({"seed": r["seed"], "rows": rows})
    again = summarise(reps)
    for name, e in shipped["contrasts"].items():
        assert again[name]["mean_estimate"] == pytest.approx(e["mean_estimate"], abs=1e-9)
        assert again[name]["empirical_sd"] == pytest.approx(e["empirical_sd"], rel=1e-6)
        assert abs(again[name]["covered"] - e["covered"]) <= 2, name  # df is rebuilt as the mean df


@pytest.mark.slow
def test_replications_replay_exactly(shipped: dict) -> None:
    """Two replications re-played give the shipped estimates and SEs (the figures are reproducible)."""
    per = {r["seed"]: r for r in shipped["per_replication"]}
    for k in (0, 1):
        got = replicate((MODEL, k, CoverageGrid()))["rows"]
        for name, (est, se) in ((n, v) for n, v in per[k].items() if n != "seed"):
            assert got[name]["estimate"] == pytest.approx(est, abs=1e-9), name
            if se is not None:
                assert got[name]["se"] == pytest.approx(se, rel=1e-6), name
