"""The statistical check: the analysis finds the planted effect and nothing on the null twin (quick variant
of `contagion check`); its figures round-trip through validation.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from contagion.analysis.validation import (
    FP_TARGET,
    POWER_TARGET,
    ValidationResult,
    analysis_fingerprint,
    find_validation,
    load_validation,
    save_validation,
    wilson,
)
from contagion.check import run_once, run_validation

QUICK_RUNS = 40


@pytest.mark.slow
def test_quick_validation_meets_its_targets() -> None:
    result = run_validation(QUICK_RUNS, workers=2)
    for line in result.summary_lines():
        print(line)
    for contrast in ("contagion", "amplification"):
        assert result.power[contrast] >= POWER_TARGET, result.summary_lines()
        assert result.false_positives[contrast] <= FP_TARGET * QUICK_RUNS, result.summary_lines()
        assert result.mean_planted_drift[contrast] < 0
    assert result.passed
    assert result.fingerprint == analysis_fingerprint()


def test_one_run_is_deterministic() -> None:
    a = run_once(3, "null")
    b = run_once(3, "null")
    assert a == b and a.games == 16


def test_figures_round_trip_and_are_found_in_the_run_directory(tmp_path: Path) -> None:
    result = ValidationResult(
        runs=10, planted_model="sim:planted", null_model="sim:null", planted_size=0.05, grid={"repetitions": 8},
        power={"contagion": 0.9}, detected={"contagion": 9}, false_positives={"contagion": 0},
        mean_planted_drift={"contagion": -0.05}, alpha=0.05, rule="r", seconds=1.0, fingerprint="abc")
    save_validation(result, tmp_path / "validation.json")
    loaded = load_validation(tmp_path / "validation.json")
    assert loaded is not None and loaded.power == result.power and loaded.passed
    found, source = find_validation(tmp_path)
    assert found is not None and found.fingerprint == "abc" and source.endswith("validation.json")
    assert load_validation(tmp_path / "missing.json") is None
    lo, hi = wilson(2, 40)
    assert 0 < lo < 0.05 < hi < 0.2
