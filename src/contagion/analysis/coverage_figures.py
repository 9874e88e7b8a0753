"""The shipped coverage figures, read for the report: how often the report's 95 % intervals held the truth on a
simulated common-seed grid (made by ``python -m contagion.coverage``; see :mod:`contagion.coverage`).

Two grids are shipped beside ``validation.json``: the check's, on 6 game seeds (``coverage.json``), and the same
grid on 10 seeds (``coverage-10-seeds.json``), the fewest clusters on which a report row may support a claim. This
module only reads them (the analysis layer runs no model); the report and the card say what they hold with the
validation figures, since an interval's coverage is part of what a number rests on.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SHIPPED_SEEDS = (6, 10)
"""Game seeds (hence clusters) of the shipped grids."""

PROTECTION_PREFIX = "protection"
"""How the coverage figures name SIT's protection rows (``protection: sit − none``, ``protection: sit − placebo``):
their misses are also counted apart, as their interval is built for their skew."""


def coverage_file(seeds: int) -> Path:
    """Where the shipped figures of the grid on ``seeds`` game seeds live."""
    name = "coverage.json" if seeds == SHIPPED_SEEDS[0] else f"coverage-{seeds}-seeds.json"
    return Path(str(resources.files("contagion.analysis").joinpath(name)))


def read_coverage(path: Path) -> dict[str, Any]:
    """Figures saved by ``python -m contagion.coverage`` (raises ``OSError``/``ValueError`` on a missing or broken
    file)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def pooled(figures: dict[str, Any]) -> tuple[int, int]:
    """Intervals that covered, and intervals, over every contrast of a figures file."""
    rows = figures.get("contrasts", {}).values()
    return sum(int(e["covered"]) for e in rows), sum(int(e["replications"]) for e in rows)


def _count(value: Any) -> str:
    """A count with thousands separators (anything else as it is)."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def _sides(entry: dict[str, Any]) -> tuple[int, int]:
    """A contrast's misses with the interval on zero's side of the truth, and beyond it (the truth's sign taken
    from the mean estimate). Where the truth is exactly 0 (``covered_zero`` recorded), every miss claims an effect
    that is not there: all count as beyond."""
    below, above = int(entry["missed_below"]), int(entry["missed_above"])
    if "covered_zero" in entry:
        return 0, below + above
    return (above, below) if float(entry.get("mean_estimate", 0.0)) < 0 else (below, above)


def coverage_lines(analysis_fingerprint: str) -> tuple[list[str], list[str]]:
    """One sentence per shipped grid (its coverage, pooled and per contrast, and the misses by side), and warnings
    for figures that are missing or were made for other analysis code than ``analysis_fingerprint``."""
    lines: list[str] = []
    warnings: list[str] = []
    for seeds in SHIPPED_SEEDS:
        path = coverage_file(seeds)
        try:
            figures = read_coverage(path)
        except (OSError, ValueError):
            warnings.append(f"no interval-coverage figures for the {seeds}-seed grid ({path.name})")
            continue
        rows = figures.get("contrasts", {})
        if not rows:
            warnings.append(f"the interval-coverage figures in {path.name} hold no contrast")
            continue
        covered, total = pooled(figures)
        band = figures.get("band", [0.93, 0.97])
        low = min(rows.items(), key=lambda kv: kv[1]["coverage"])
        high = max(rows.items(), key=lambda kv: kv[1]["coverage"])
        inside = sum(band[0] <= e["coverage"] <= band[1] for e in rows.values())
        sides = ""
        if all("missed_below" in e for e in rows.values()):
            toward, beyond = zip(*(_sides(e) for e in rows.values()), strict=True)
            sides = (f"; of the {total - covered:,} misses, {sum(toward):,} put the interval between the truth and "
                     f"zero (understating the effect) and {sum(beyond):,} beyond the truth (overstating it)")
            protection = [_sides(e) for name, e in rows.items() if name.startswith(PROTECTION_PREFIX)]
            if protection:
                sides += (f"; SIT's protection rows alone: {sum(t for t, _ in protection):,} understating, "
                          f"{sum(b for _, b in protection):,} overstating")
        lines.append(
            f"Interval coverage on a simulated model ({figures.get('model')}): over "
            f"{_count(figures.get('replications'))} replications of a three-game grid on {seeds} common seeds "
            f"({seeds} clusters), the report's 95% intervals held the truth {covered:,} times in {total:,} "
            f"({covered / total:.3f}) — per contrast {low[1]['coverage']:.3f} ({low[0]}) to "
            f"{high[1]['coverage']:.3f} ({high[0]}), {inside} of {len(rows)} in {band[0]:.2f}–{band[1]:.2f}{sides}.")
        made_for = figures.get("analysis_fingerprint")
        if made_for and made_for != analysis_fingerprint:
            warnings.append(f"the interval-coverage figures in {path.name} are for analysis code {made_for}, not this "
                            f"code ({analysis_fingerprint})")
    return lines, warnings
