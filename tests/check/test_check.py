"""The statistical check: the analysis finds the planted effects and nothing on the null models (quick
variant of `contagion check`); the shipped figures are current (re-run when their fingerprint changes);
the fingerprint covers every module a check run imports; figures round-trip through validation.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contagion.analysis.validation import (
    FP_TARGET,
    POWER_TARGET,
    ValidationResult,
    analysis_fingerprint,
    find_validation,
    fingerprinted_paths,
    load_validation,
    save_validation,
    shipped_validation,
    wilson,
)
from contagion.check import TARGETS, ValidationGrid, null_contrasts, run_once, run_validation

FULL_RUNS = 100


def assert_meets_targets(result: ValidationResult) -> None:
    for line in result.summary_lines():
        print(line)
    for target in TARGETS:
        assert result.power[target] >= POWER_TARGET, result.summary_lines()
    for key, k in result.false_positives.items():
        assert k <= FP_TARGET * result.runs, (key, result.summary_lines())
    assert result.mean_planted_drift["contagion"] < 0 < result.mean_planted_drift["sit − placebo"]
    assert result.passed


@pytest.mark.slow
def test_shipped_figures_are_current_or_the_check_is_rerun(tmp_path: Path) -> None:
    """The shipped figures must be for this code; when the fingerprint changed, the full check runs again
    (100 seeds of each simulated model) and must meet every target — then ship its output."""
    shipped = shipped_validation()
    if shipped is not None and shipped.fingerprint == analysis_fingerprint():
        assert shipped.passed and shipped.runs >= FULL_RUNS
        return
    result = run_validation(FULL_RUNS, workers=2)
    out = save_validation(result, tmp_path / "validation.json")
    print(f"figures for {result.fingerprint} written to {out}: copy to src/contagion/analysis/validation.json")
    assert_meets_targets(result)


def test_one_run_is_deterministic() -> None:
    a = run_once(3, "null")
    b = run_once(3, "null")
    grid = ValidationGrid()
    assert a == b and a.games == 2 * len(grid.played_interventions()) * grid.repetitions


def test_every_null_model_is_held_to_the_trait_contrasts() -> None:
    assert null_contrasts("planted") == ()
    for v in ("null", "flatten", "acquiescence", "echo"):
        assert null_contrasts(v) == ("contagion", "amplification", "mitigation", "behaviour")
    assert null_contrasts("reciprocity") == ("contagion", "amplification", "mitigation")


def test_fingerprint_covers_every_module_a_check_run_imports() -> None:
    code = ("import sys, json\nfrom contagion.check import run_once\nrun_once(0, 'echo')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('contagion'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    covered = {p.removesuffix(".py").replace("/", ".") for p in fingerprinted_paths() if p.endswith(".py")}
    # packages' __init__ modules and the version are not code the check runs
    missing = [m.removeprefix("contagion.") for m in modules if m != "contagion" and
               m.removeprefix("contagion.") not in covered and
               m.removeprefix("contagion.") + ".__init__" not in covered and
               not any(m.removeprefix("contagion.") == p.rstrip(".") for p in covered)]
    missing = [m for m in missing if m.split(".")[-1] != "__init__" and
               not (m.count(".") == 0 and m in {"analysis", "backends", "experiment", "games", "steering", "traits"})]
    assert not missing, f"modules a check run imports but the fingerprint does not cover: {missing}"


def test_figures_round_trip_and_are_found_in_the_run_directory(tmp_path: Path) -> None:
    result = ValidationResult(
        runs=10, planted_model="sim:planted", null_model="sim:null", planted_size=0.05, grid={"repetitions": 8},
        power={"contagion": 0.9}, detected={"contagion": 9}, false_positives={"echo:contagion": 0},
        mean_planted_drift={"contagion": -0.05}, alpha=0.05, rule="r", seconds=1.0, fingerprint="abc")
    save_validation(result, tmp_path / "validation.json")
    loaded = load_validation(tmp_path / "validation.json")
    assert loaded is not None and loaded.power == result.power and loaded.passed
    found, source = find_validation(tmp_path)
    assert found is not None and found.fingerprint == "abc" and source.endswith("validation.json")
    assert load_validation(tmp_path / "missing.json") is None
    lo, hi = wilson(2, 40)
    assert 0 < lo < 0.05 < hi < 0.2
