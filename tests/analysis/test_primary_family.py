"""The primary family (declared once, Holm-corrected as a whole), the item-resampled baseline error of a single
condition, and the behaviour contrast (a slope of defection on the defection seen)."""

from __future__ import annotations

import numpy as np
import pytest

from contagion.analysis.contrasts import FLAT_ROW, PRIMARY_FAMILY, AnalysisSettings, compute_contrasts
from contagion.analysis.estimators import item_resampling_variance, slope
from contagion.analysis.tables import PROSOCIAL, tables_from_records
from contagion.check import ValidationGrid, model_spec, play_grid


def test_item_resampling_variance_weights_each_group() -> None:
    vals = np.array([0.0, 0.2, 0.1, 0.3, 0.5, 0.4])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    va, vb = np.var(vals[:3], ddof=1) / 3, np.var(vals[3:], ddof=1) / 3
    assert item_resampling_variance(vals, groups, {"a": 0.5, "b": -0.5}) == pytest.approx(0.25 * va + 0.25 * vb)
    assert np.isnan(item_resampling_variance(vals[:4], groups[:4], {"a": 1.0, "b": 1.0}))


def test_slope_finds_a_planted_slope_and_nothing_in_noise() -> None:
    rng = np.random.default_rng(0)
    games = np.repeat(np.arange(60), 5)
    x = rng.random(games.size)
    planted = slope(0.5 * x + rng.normal(0, 0.1, x.size), x, games)
    assert planted.estimate == pytest.approx(0.5, abs=0.05) and planted.p < 1e-6
    noise = slope(rng.normal(0, 0.1, x.size), x, games)
    assert noise.p > 0.01
    assert np.isnan(slope(np.zeros(x.size), x, games).p)  # a constant player: nothing to test


@pytest.fixture(scope="module")
def planted_tables():
    return tables_from_records(play_grid(ValidationGrid(repetitions=4), model_spec("planted", 5), 5))


def test_primary_family_is_holm_corrected_as_a_whole(planted_tables) -> None:
    contrasts = compute_contrasts(planted_tables, settings=AnalysisSettings(resamples=0, mixed=False))
    primary = [r for name in PRIMARY_FAMILY for _, r in contrasts[name].index_rows().iterrows()
               if contrasts[name].available and str(r["correction"]).startswith("Holm over the primary family")]
    m = len(primary)
    assert m >= 5  # contagion ×2, amplification, mitigation pairs, behaviour
    assert all(f"({m} tests of" in str(r["correction"]) for r in primary)
    smallest = min(primary, key=lambda r: r["p"])
    assert smallest["p_adj"] == pytest.approx(min(1.0, m * smallest["p"]))
    # asking for one contrast computes the whole family: the same adjusted p
    alone = compute_contrasts(planted_tables, ("contagion",), AnalysisSettings(resamples=0, mixed=False))
    assert alone["contagion"].index_rows()["p_adj"].tolist() == contrasts["contagion"].index_rows()["p_adj"].tolist()
    # traits are significant only behind a significant index
    for c in contrasts.values():
        if not c.available:
            continue
        for comp, rows in c.rows.groupby("comparison"):
            idx = rows[rows["trait"] == PROSOCIAL]
            if len(idx) and not bool(idx["significant"].iloc[0]):
                assert not rows["significant"].any(), comp


def test_single_condition_baseline_error_comes_from_items(planted_tables) -> None:
    contrasts = compute_contrasts(planted_tables, ("contagion",), AnalysisSettings(resamples=0, mixed=False))
    rows = contrasts["contagion"].rows
    flat = rows["comparison"].str.startswith(FLAT_ROW)
    item_test = "cluster-robust t (CR1, games as clusters, df = G−1) + baseline error by item resampling"
    assert set(rows[~flat]["test"]) == {item_test}
    # the index net of flattening adds the flattening factor's own error
    assert flat.any() and set(rows[flat]["test"]) == {item_test + " + the flattening factor's error (control-item "
                                                      "jackknife)"}
    assert not planted_tables.item_drift.empty
    assert set(planted_tables.item_drift["persona"].astype(str)) == {"default"}


def test_behaviour_contrast_regresses_defection_on_defection_seen(planted_tables) -> None:
    rows = compute_contrasts(planted_tables, ("behaviour",),
                             AnalysisSettings(resamples=0, mixed=False))["behaviour"].rows
    assert set(rows["comparison"]) == {"defection ~ defection seen · default", "defection ~ defection seen · malicious"}
    default = rows[rows["comparison"].str.endswith("· default")].iloc[0]
    assert default["estimate"] > 0  # sim:planted reciprocates (and drifts) after defection
    secondary = rows[rows["comparison"].str.endswith("· malicious")].iloc[0]
    assert secondary["correction"].startswith("secondary") and not secondary["significant"]
