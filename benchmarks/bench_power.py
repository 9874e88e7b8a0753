"""Does ``contagion power`` predict the games at which the check really reaches power 0.8?

1. Plays a small pilot on ``sim:planted?contagion=SIZE`` (the check's grid: prisoner's dilemma, all-default and
   one-malicious groups, one chat turn; by default no intervention, to keep it to minutes) and builds the planner's
   family from its records (:func:`contagion.analysis.power.members_from_pilot`).
2. Runs the check's own runs (:func:`contagion.check.play_grid`, then the report's tables and contrasts, the
   primary family Holm-corrected) with ``--seeds`` seeds at each of ``--sizes`` games per cell, and counts how
   often each target (contagion next to a malicious player, amplification; SIT − placebo with ``--mitigation``) is
   significant in the planted direction: the measured power curve, and where it crosses 0.8 (linear interpolation).
3. Asks the planner for the games per cell at power 0.8, giving it each family member's true effect (the mean
   estimate over every run of step 2: precise, unlike one pilot's), and prints predicted, measured and their ratio.

    PYTHONPATH=src python benchmarks/bench_power.py [--size 0.02] [--seeds 20] [--sizes 2 4 6 8 12]

Measured (2 idle cores, ``--size 0.02 --seeds 16 --sizes 4 6 8 11``, pilot of 8 games per cell, 160 s, on the
code of the shipped check figures, fingerprint d48fedc37444): amplification power 0.44 / 0.56 / 0.62 / 0.88 at
4 / 6 / 8 / 11 games per cell, crossing 0.8 at 10.1; the planner predicted 9 (ratio 0.89). Contagion (post − pre):
the planner reports it out of reach (the 5-item baseline's error alone exceeds what an effect of 0.019 allows); the
check's power was 0.00 / 0.00 / 0.00 / 0.12. With 16 seeds a power figure has an SE of about 0.1, so the crossing
is itself uncertain by a game or two. (Before the faster placebo matcher and Holm the same run took 1,001 s.)
These figures predate the planner's seed-linked variance (games of one seed as one cluster, arms paired by seed).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from typing import Any

import numpy as np

TARGETS = {"contagion": ("contagion", "post − pre · one-malicious", -1.0),
           "amplification": ("amplification", "one-malicious − all-default", -1.0),
           "sit − placebo": ("mitigation", "sit:k=1,n=2 − placebo:k=1,kind=neutral,n=2", 1.0)}


def family_rows(grid: Any, model: str, seed: int) -> list[dict[str, Any]]:
    """One check-style run: the primary family's rows (comparison, estimate, significant)."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts, is_primary_outcome
    from contagion.analysis.tables import tables_from_records
    from contagion.check import play_grid

    tables = tables_from_records(play_grid(grid, model, seed))
    contrasts = compute_contrasts(tables, settings=AnalysisSettings(resamples=0, mixed=False))
    out = []
    for c in contrasts.values():
        if not c.available:
            continue
        for _, r in c.rows.iterrows():
            if is_primary_outcome(r):
                out.append({"comparison": str(r["comparison"]), "estimate": float(r["estimate"]),
                            "significant": bool(r["significant"])})
    return out


def crossing(sizes: list[int], power: list[float], target: float = 0.8) -> float:
    """Games per cell where the measured power curve first reaches ``target`` (linear interpolation)."""
    for i, p in enumerate(power):
        if p >= target:
            if i == 0:
                return float(sizes[0]) if p == target else math.nan
            x0, x1, p0 = sizes[i - 1], sizes[i], power[i - 1]
            return x0 + (target - p0) * (x1 - x0) / (p - p0)
    return math.nan


def main() -> None:
    from contagion.analysis import power as P
    from contagion.analysis.tables import tables_from_records
    from contagion.check import PLACEBO, SIT, ValidationGrid, model_spec, play_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=0.02, help="planted contagion of sim:planted")
    ap.add_argument("--seeds", type=int, default=20, help="check runs per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 12], help="games per cell to measure")
    ap.add_argument("--pilot", type=int, default=8, help="games per cell of the pilot")
    ap.add_argument("--mitigation", action="store_true", help="also none / SIT / placebo (3x slower)")
    args = ap.parse_args()
    interventions = ("none", SIT, PLACEBO) if args.mitigation else ("none",)
    targets = {k: v for k, v in TARGETS.items() if args.mitigation or v[0] != "mitigation"}

    started = time.perf_counter()
    pilot_grid = ValidationGrid(repetitions=args.pilot, interventions=interventions)
    pilot = tables_from_records(play_grid(pilot_grid, model_spec("planted", 10_000, args.size), 10_000))
    members = P.members_from_pilot(pilot)
    extra = P.unplanned_members(pilot, P.game_means(pilot))
    print(f"pilot: {args.pilot} games per cell, {len(members)} planned comparisons, "
          f"{time.perf_counter() - started:.0f} s")

    estimates: dict[str, list[float]] = defaultdict(list)
    hits: dict[tuple[str, int], int] = defaultdict(int)
    for n in args.sizes:
        t0 = time.perf_counter()
        grid = ValidationGrid(repetitions=n, interventions=interventions)
        for seed in range(args.seeds):
            rows = {r["comparison"]: r for r in family_rows(grid, model_spec("planted", seed, args.size), seed)}
            for comp, r in rows.items():
                estimates[comp].append(float(r["estimate"]))
            for target, (_, comp, sign) in targets.items():
                hit = rows.get(comp)
                if hit is not None and hit["significant"] and float(hit["estimate"]) * sign > 0:
                    hits[(target, n)] += 1
        print(f"  {n:>3} games/cell: " + ", ".join(f"{t} {hits[(t, n)] / args.seeds:.2f}" for t in targets)
              + f"  ({time.perf_counter() - t0:.0f} s)")

    truth = {comp: float(np.mean(v)) for comp, v in estimates.items()}
    result = P.plan(members, 0.05, extra_null=extra,
                    effects={m.comparison: truth[m.comparison] for m in members if m.comparison in truth})
    total = time.perf_counter() - started
    print(f"\nplanted contagion {args.size:g}; {args.seeds} seeds per size; total {total:.0f} s")
    print(f"{'target':<15} {'true effect':>11} {'predicted n':>11} {'measured n':>10} {'ratio':>6}")
    for target, (_, comp, _) in targets.items():
        row = result.rows[result.rows["comparison"] == comp]
        predicted = float(row["games_per_cell"].iloc[0]) if len(row) else math.nan
        measured = crossing(args.sizes, [hits[(target, n)] / args.seeds for n in args.sizes])
        ratio = predicted / measured if measured and math.isfinite(measured) else math.nan
        print(f"{target:<15} {truth.get(comp, math.nan):>11.4f} {predicted:>11g} {measured:>10.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
