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
