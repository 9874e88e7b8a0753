"""The report says what the shipped interval-coverage figures hold, beside the validation figures: one sentence per
shipped grid, and a warning when a grid's figures are missing or were made for other analysis code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contagion.analysis import coverage_figures
from contagion.analysis.coverage_figures import SHIPPED_SEEDS, coverage_file, coverage_lines, pooled, read_coverage
from contagion.analysis.report_text import COVERAGE_READING, validation_lines
from contagion.analysis.validation import analysis_fingerprint, shipped_validation


def _figures(seeds: int, fingerprint: str) -> dict:
    row = {"replications": 100, "covered": 94, "coverage": 0.94, "missed_below": 1, "missed_above": 5,
           "mean_estimate": 0.2}  # positive: misses below are on zero's side
    low = {**row, "covered": 90, "coverage": 0.90, "missed_below": 0, "missed_above": 10, "mean_estimate": -0.1}
    return {"model": "sim:planted", "seeds": seeds, "replications": 100, "band": [0.93, 0.97],
            "analysis_fingerprint": fingerprint,
            "contrasts": {"a": row, "b": low, "zero": {**row, "mean_estimate": -0.001, "covered_zero": 95}}}


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[int, Path]:
    paths = {s: tmp_path / f"coverage-{s}.json" for s in SHIPPED_SEEDS}
    monkeypatch.setattr(coverage_figures, "coverage_file", lambda seeds: paths[seeds])
    return paths


def test_each_grid_gets_a_sentence_with_pooled_coverage_range_and_misses_by_side(files: dict[int, Path]) -> None:
    for s, path in files.items():
        path.write_text(json.dumps(_figures(s, "f00")), encoding="utf-8")
    lines, warnings = coverage_lines("f00")
    assert warnings == [] and len(lines) == 2
    six = lines[0]
    assert "over 100 replications of a three-game grid on 6 common seeds (6 clusters)" in six
    assert "on 10 common seeds" in lines[1]
    assert "held the truth 278 times in 300 (0.927)" in six
    assert "0.900 (b) to 0.940 (a), 2 of 3 in 0.93–0.97" in six
    assert "of the 22 misses, 11 put the interval between the truth and zero (understating the effect) and 11 beyond " \
           "the truth (overstating it)." in six  # no protection row: nothing said of one


def test_the_protection_rows_misses_are_also_counted_apart(files: dict[int, Path]) -> None:
    """SIT's protection rows (negative truth: an interval above it is on zero's side) get their own count."""
    for s, path in files.items():
        figures = _figures(s, "f00")
        figures["contrasts"]["protection: sit − none"] = {
            "replications": 100, "covered": 93, "coverage": 0.93, "missed_below": 2, "missed_above": 5,
            "mean_estimate": -0.03}
        path.write_text(json.dumps(figures), encoding="utf-8")
    six = coverage_lines("f00")[0][0]
    assert "of the 29 misses, 16 put the interval between the truth and zero (understating the effect) and 13 " \
           "beyond the truth (overstating it); SIT's protection rows alone: 5 understating, 2 overstating." in six


def test_missing_broken_or_stale_figures_are_warned_about(files: dict[int, Path]) -> None:
    files[6].write_text(json.dumps(_figures(6, "old")), encoding="utf-8")
    files[10].write_text("{not json", encoding="utf-8")
    lines, warnings = coverage_lines("new")
    assert len(lines) == 1
    assert any("coverage-6.json are for analysis code old, not this code (new)" in w for w in warnings)
    assert any("no interval-coverage figures for the 10-seed grid" in w for w in warnings)
    files[10].unlink()
    assert len(coverage_lines("new")[1]) == 2


def test_the_shipped_figures_are_read_and_current() -> None:
    """Both shipped files exist, hold every contrast and were made for this analysis code (the report then warns of
    nothing), and the report's validation section carries them with what limits them."""
    for seeds in SHIPPED_SEEDS:
        figures = read_coverage(coverage_file(seeds))
        covered, total = pooled(figures)
        assert figures["seeds"] == seeds and len(figures["contrasts"]) == 9
        assert total == 9 * figures["replications"] and 0 < covered <= total
        assert figures["analysis_fingerprint"] == analysis_fingerprint()
    lines, warnings = validation_lines(shipped_validation(), "shipped")
    assert not [w for w in warnings if "coverage" in w]
    assert sum("Interval coverage on a simulated model" in line for line in lines) == 2
    assert COVERAGE_READING in lines
