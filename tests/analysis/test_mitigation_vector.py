"""The mitigation contrast compares white-box ``vector`` steering with none and with SIT on the same games
and seeds (issue 29 item 4), on constructed tables with known differences."""

from __future__ import annotations

import pytest

from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
from tests.analysis.test_analysis_contrasts import synthetic_tables


def test_vector_steering_is_compared_with_none_and_with_sit() -> None:
    vector = "vector:alpha=1,file=v.json,trait=cooperativeness"
    tables = synthetic_tables({
        ("one-malicious", "malicious-lm", "none", 1): -0.10,
        ("one-malicious", "malicious-lm", "sit", 1): -0.02,
        ("one-malicious", "malicious-lm", "placebo", 1): -0.09,
        ("one-malicious", "malicious-lm", vector, 1): -0.06,
    })
    mit = compute_contrasts(tables, ("mitigation",), AnalysisSettings(resamples=300, mixed=False))["mitigation"]
    rows = mit.index_rows().set_index("comparison")
    assert rows.loc[f"{vector} − none", "estimate"] == pytest.approx(0.04, abs=0.01)
    assert rows.loc[f"sit − {vector}", "estimate"] == pytest.approx(0.04, abs=0.01)
    assert rows.loc["sit − placebo", "estimate"] == pytest.approx(0.07, abs=0.01)
    assert f"{vector} − sit" not in rows.index  # one direction per pair


def test_the_dose_response_section_plots_cooperation_and_drift_against_alpha() -> None:
    """Arms steered at alpha −1, +1 and an unsteered arm (alpha 0): the report section orders them by alpha and
    finds the planted cooperation and index drift of each; a run with one dose has no such section."""
    import numpy as np
    import pandas as pd

    from contagion.analysis.report_figures import dose_response_figure

    arms = {"none": (0.0, 0.5, -0.10), "vector:alpha=1,file=v.json,trait=cooperativeness": (1.0, 0.8, -0.05),
            "vector:alpha=-1,file=v.json,trait=cooperativeness": (-1.0, 0.2, -0.15)}
    tables = synthetic_tables({("one-malicious", "malicious-lm", iv, 1): d for iv, (_, _, d) in arms.items()})
    rng = np.random.default_rng(3)
    players = [{"game_id": g, "cluster": g, "composition": "one-malicious", "intervention": iv,
                "intervention_kind": iv.split(":")[0], "player": seat, "focal": True,
                "cooperation": float(np.clip(coop + rng.normal(0, 0.05), 0, 1))}
               for iv, (_, coop, _) in arms.items()
               for g in (f"one-malicious-{iv}-1-{k}" for k in range(12)) for seat in ("Avery", "Blake")]
    tables.players = pd.DataFrame(players)
    figure = dose_response_figure(tables, AnalysisSettings(resamples=0, mixed=False))
    assert figure is not None and figure.id == "dose-response" and "cooperativeness" in figure.title + figure.caption
    coop = [(row[0], float(row[2])) for row in figure.table.rows]  # type: ignore[union-attr]
    assert [a for a, _ in coop] == ["-1", "0 (none)", "+1"]
    assert [c for _, c in coop] == pytest.approx([0.2, 0.5, 0.8], abs=0.03)
    (drift,) = figure.extra_tables
    assert [float(row[2]) for row in drift.rows] == pytest.approx([-0.15, -0.10, -0.05], abs=0.01)
    one = tables.players[tables.players["intervention"] != arms_key(arms, -1.0)]
    one = one[one["intervention"] != arms_key(arms, 1.0)]
    tables.players = one  # only the unsteered arm: no dose to plot
    assert dose_response_figure(tables, AnalysisSettings(resamples=0, mixed=False)) is None


def arms_key(arms: dict[str, tuple[float, float, float]], alpha: float) -> str:
    return next(k for k, (a, _, _) in arms.items() if a == alpha)
