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
    _behaviour,
    analysis_fingerprint,
    find_validation,
    fingerprinted_paths,
    gate_case_met,
    load_validation,
    save_validation,
    shipped_validation,
    wilson,
)
from contagion.check import (
    GATE_CASE_RUNS,
    GATE_CASES,
    PLANTED_MODELS,
    TARGETS,
    ValidationGrid,
    check_models,
    null_contrasts,
    run_once,
    run_validation,
    target_key,
)

FULL_RUNS = 100


def assert_meets_targets(result: ValidationResult) -> None:
    for line in result.summary_lines():
        print(line)
    # both planted models: the default one and the one from a pro-social baseline
    assert {target_key(t, m) for t in TARGETS for m in PLANTED_MODELS} <= set(result.power)
    for key, power in result.power.items():
        assert power >= POWER_TARGET, (key, result.summary_lines())
    # every null model and trap of the check, held to every contrast whose null holds on it
    assert {f"{v}:{c}" for v in check_models() for c in null_contrasts(v)} == set(result.false_positives)
    for key, k in result.false_positives.items():
        assert k <= FP_TARGET * result.runs, (key, result.summary_lines())
    # the gate cases: the slightly flattening real effect claimed, the mass-keeping flattener not called harmful
    assert set(result.gate_cases) == set(GATE_CASES)
    for name, case in result.gate_cases.items():
        assert case["runs"] >= GATE_CASE_RUNS and gate_case_met(case), (name, case)
    # contagion: toward anti-social; SIT − placebo: less defection from the first reminder on (protection)
    for model in PLANTED_MODELS:
        assert result.mean_planted_drift[target_key("contagion", model)] < 0
        assert result.mean_planted_drift[target_key("sit − placebo", model)] < 0
    assert result.passed


RERUN_SEEDS = 20
"""Seeds per simulated model when the shipped figures are stale: a bounded re-run (a few minutes on 2 cores)
whose counts must be consistent with the targets; the full 100-seed figures are regenerated with
``contagion check --out src/contagion/analysis/validation.json``."""


def _consistent_with_targets(result: ValidationResult) -> list[str]:
    """Targets the counts contradict at the 1 % level (one-sided binomial tests): power below 0.8, or a
    false-positive rate above 5 %. A small re-run cannot prove the targets; it can refute them."""
    from scipy.stats import binom

    problems = []
    for target, k in result.detected.items():
        if binom.cdf(k, result.runs, POWER_TARGET) < 0.01:
            problems.append(f"{target}: detected in {k} of {result.runs} runs (power < {POWER_TARGET})")
    for name, case in result.gate_cases.items():
        if not gate_case_met(case):
            problems.append(f"gate case {name}: {case}")
    for key, k in result.false_positives.items():
        if binom.sf(k - 1, result.runs, FP_TARGET) < 0.01:
            problems.append(f"{key}: {k} false positives in {result.runs} runs (rate > {FP_TARGET})")
    return problems


@pytest.mark.slow
def test_shipped_figures_are_current_or_the_check_is_rerun(tmp_path: Path) -> None:
    """The shipped figures must be for this code and meet every target. When the fingerprint changed, the
    check runs again — a bounded re-run of RERUN_SEEDS seeds per simulated model, whose counts must not
    contradict the targets — and its figures are written for inspection."""
    shipped = shipped_validation()
    if shipped is not None and shipped.fingerprint == analysis_fingerprint():
        assert shipped.runs >= FULL_RUNS
        assert_meets_targets(shipped)
        return
    result = run_validation(RERUN_SEEDS, workers=2, gate_runs=GATE_CASE_RUNS)
    out = save_validation(result, tmp_path / "validation.json")
    print(f"shipped figures are stale; a {RERUN_SEEDS}-seed re-run wrote {out}. Regenerate the shipped ones with "
          "`contagion check --out src/contagion/analysis/validation.json`")
    for line in result.summary_lines():
        print(line)
    # contagion: toward anti-social; SIT − placebo: less defection from the first reminder on (protection)
    for model in PLANTED_MODELS:
        assert result.mean_planted_drift[target_key("contagion", model)] < 0
        assert result.mean_planted_drift[target_key("sit − placebo", model)] < 0
    problems = _consistent_with_targets(result)
    assert not problems, problems


def test_one_run_is_deterministic() -> None:
    a = run_once(3, "null")
    b = run_once(3, "null")
    grid = ValidationGrid()
    assert a == b and a.games == 2 * len(grid.played_interventions()) * grid.repetitions


def test_every_null_model_is_held_to_the_trait_contrasts() -> None:
    assert null_contrasts("planted") == ()
    for v in ("null", "flatten", "acquiescence", "echo"):
        assert null_contrasts(v) == ("contagion", "amplification", "mitigation", "behaviour", "protection")
    assert null_contrasts("reciprocity") == ("contagion", "amplification", "mitigation", "protection")


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


def test_fingerprint_follows_behaviour_not_comments_or_docstrings() -> None:
    """An edited comment, docstring or YAML comment keeps the shipped figures current (CI would otherwise
    re-run the check for a typo fix); a changed constant, operator or data value makes them stale."""
    from importlib import resources

    source = resources.files("contagion").joinpath("analysis", "estimators.py").read_text(encoding="utf-8")
    base = _behaviour("analysis/estimators.py", source.encode())
    lines = source.splitlines()
    first_def = next(i for i, line in enumerate(lines) if line.startswith("def "))
    cosmetic = [
        source.replace("\n", "\n# a comment a maintainer added\n", 1),
        source.replace('"""', '"""Reworded. ', 1),
        "\n".join(lines[:first_def]) + "\n\n\n" + "\n".join(lines[first_def:]) + "\n",
    ]
    for edited in cosmetic:
        assert edited != source
        assert _behaviour("analysis/estimators.py", edited.encode()) == base
    # a docstring-only function still hashes (its body becomes `pass`, not an empty list)
    assert _behaviour("x.py", b'def f():\n    """Only a docstring."""\n') == _behaviour("x.py", b"def f():\n    pass\n")
    renamed = lines[first_def].replace("def ", "def x", 1)
    behavioural = [source + "\nMARGIN = 1\n", source.replace(lines[first_def], renamed)]
    for edited in behavioural:
        assert edited != source
        assert _behaviour("analysis/estimators.py", edited.encode()) != base
    data = b"# inventory\nitems:\n  - id: a  # first\n    trait: x\n"
    same = b"items:\n- id: a\n  trait: x\n"
    assert _behaviour("data/i.yaml", data) == _behaviour("data/i.yaml", same)
    assert _behaviour("data/i.yaml", data) != _behaviour("data/i.yaml", same.replace(b"x", b"y"))
