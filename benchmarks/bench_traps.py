"""What today's analysis claims on simulated models built to fool it, and whether its standard errors hold
when common seeds link games.

1. **Traps.** For each model, ``--runs`` seeded runs of the check's own grid (:class:`contagion.check.ValidationGrid`:
   prisoner's dilemma, all-default and one-malicious groups, none / SIT / neutral placebo, 6 games per cell)
   played by :func:`contagion.check.play_grid` and analysed exactly as the check and the report do
   (:func:`~contagion.analysis.tables.tables_from_records`, :func:`~contagion.analysis.contrasts.compute_contrasts`,
   primary family Holm-corrected, the confidence gate). Run ``k`` uses model seed ``k`` and item sample ``k``. Prints,
   per model and primary row, in how many runs the report claims it (significant after Holm and the gates) and the
   mean estimate; then, per contrast, the check's false-positive rule (any primary row or gated trait claimed).
   The default models: the check's planted model (``contagion=0.05``) with and without a pro-social lean, ``sim:null``,
   ``sim:flatten`` with and without ``lean=0.25``, the mass-keeping flattener with the lean, ``sim:trait-echo``,
   the planted model with slight flattening (``flatten=0.02``) and ``sim:null`` with a game effect (``game_sd=0.1``).
2. **Variance.** A three-game common-seed grid (the same grid on prisoner's dilemma, chicken and stag hunt; every
   cell plays game seeds 0..5) on ``sim:planted?contagion=0.05&game_sd=G``, ``--reps`` replications (model seed and
   item sample ``k``): the empirical SD of the contagion estimate (pro-social index, post − pre next to a malicious
   player) against the mean SE the report's test used (recovered from the row's p-value and its G − 1 degrees of
   freedom), the share of replications whose 95 % t-interval holds the mean estimate, and the correlation of a
   seed's mean drift across game types. At ``--game-sd`` (0.10) and at 0 for reference.

    PYTHONPATH=src python benchmarks/bench_traps.py [--runs 20] [--reps 30] [--workers 2] [--models SPEC ...]

Specs are given without ``seed``; the script adds it. Re-run after any change to the analysis.

Measured on the analysis of commit 991b15d (default arguments, 1 worker, 3,291 s while other work shared the 2
cores). Claimed in 20 runs, mean estimate: ``sim:flatten?lean=0.25`` contagion (one-malicious) 20/20, −0.143 (and
all-default 20/20, −0.144); ``sim:flatten-keep?lean=0.25`` contagion 20/20, −0.143, SIT − none 20/20, −0.056 and
placebo − none 20/20, −0.056 (both "harmful"); ``sim:trait-echo`` SIT − placebo 20/20, +0.069 and SIT − none 20/20;
``sim:planted?contagion=0.05&flatten=0.02`` SIT − none 0/20 (+0.023, held back by the confidence gate) while
SIT − placebo 19/20; ``sim:null``, ``sim:flatten``: nothing claimed; ``sim:null?game_sd=0.1`` behaviour 2/20;
planted with and without ``lean=0.25``: contagion 17/20 and 16/20, amplification 20/20, SIT − placebo 19/20 and
20/20. Variance, 30 replications: at ``game_sd=0.1`` the contagion estimate (−0.055) has an empirical SD of 0.0416
against a mean reported SE of 0.0222 (0.53), and 20 of 30 95 % t-intervals hold the mean estimate; at
``game_sd=0``: SD 0.0058, SE 0.0068 (1.17), 29 of 30.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from contagion.check import ValidationGrid
from contagion.coverage import CoverageGrid, seeded

MODELS = (
    "sim:planted?contagion=0.05",
    "sim:planted?contagion=0.05&lean=0.25",
    "sim:null",
    "sim:flatten",
    "sim:flatten?lean=0.25",
    "sim:flatten-keep?lean=0.25",
    "sim:trait-echo",
    "sim:planted?contagion=0.05&flatten=0.02",
    "sim:null?game_sd=0.1",
)
CONTRAST_ORDER = ("contagion", "amplification", "mitigation", "behaviour", "reciprocity", "chat")
CONTAGION_ROW = ("contagion", "post − pre · one-malicious")


GamesGrid = CoverageGrid
"""The check's grid on three game types with common seeds: the coverage test's grid (:mod:`contagion.coverage`)."""


def analyse(grid: ValidationGrid, spec: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """Play one run and analyse it as the check does: (tables, contrasts)."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts
    from contagion.analysis.tables import tables_from_records
    from contagion.check import play_grid

    tables = tables_from_records(play_grid(grid, seeded(spec, seed), seed))
    return tables, compute_contrasts(tables, settings=AnalysisSettings(resamples=0, mixed=False))


def trap_run(job: tuple[str, int]) -> dict[str, Any]:
    """One run of the trap part: every primary row's (contrast, comparison, estimate, claimed) and the check's
    any-claim verdict per contrast."""
    from contagion.analysis.contrasts import is_primary_outcome
    from contagion.check import verdicts

    spec, seed = job
    grid = ValidationGrid()
    _, contrasts = analyse(grid, spec, seed)
    rows = []
    for name, c in contrasts.items():
        if not c.available:
            continue
        for _, r in c.rows.iterrows():
            if is_primary_outcome(r):
                rows.append((name, str(r["comparison"]), float(r["estimate"]), bool(r["significant"])))
    _, anysig, _ = verdicts(contrasts, grid)
    return {"spec": spec, "seed": seed, "rows": rows, "any": anysig}


def reported_se(row: Any) -> float:
    """The SE behind a row's test: its own ``se`` column when the analysis gives one, else recovered from the
    two-sided t-test's p-value with G − 1 degrees of freedom (G = the row's games)."""
    from scipy.stats import t

    if "se" in row and math.isfinite(float(row["se"])):
        return float(row["se"])
    p, est, df = float(row["p"]), float(row["estimate"]), int(row["n_games"]) - 1
    if df < 1 or not 0 < p < 1:
        return math.nan
    return abs(est) / float(t.isf(p / 2, df))


def variance_run(job: tuple[str, int]) -> dict[str, Any]:
    """One replication of the three-game grid: the contagion row (estimate, SE, games) and each (game, seed)'s
    mean index drift of default agents next to a malicious player."""
    from contagion.analysis.tables import PROSOCIAL

    spec, seed = job
    tables, contrasts = analyse(GamesGrid(), spec, seed)
    rows = contrasts[CONTAGION_ROW[0]].rows
    row = rows[(rows["trait"] == PROSOCIAL) & (rows["comparison"] == CONTAGION_ROW[1])].iloc[0]
    d = tables.drift
    d = d[(d["trait"] == PROSOCIAL) & (d["composition"].astype(str) == "one-malicious")
          & (d["persona"].astype(str) == "default")]
    cell = d.groupby(["game", "seed"], observed=True)["drift"].mean()
    return {"spec": spec, "seed": seed, "estimate": float(row["estimate"]), "se": reported_se(row),
            "games": int(row["n_games"]), "by_game_seed": {(str(g), int(s)): float(v) for (g, s), v in cell.items()}}


def run_jobs(fn: Callable[[tuple[str, int]], dict[str, Any]], jobs: list[tuple[str, int]],
             workers: int) -> list[dict[str, Any]]:
    """Run ``fn`` on every job, in ``workers`` processes when more than one; a dot per finished run."""
    out: list[dict[str, Any]] = []

    def done(results: Iterable[dict[str, Any]]) -> None:
        for r in results:
            out.append(r)
            print(".", end="", flush=True)

    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done(pool.map(fn, jobs))
    else:
        done(map(fn, jobs))
    print()
    return out


def print_traps(results: list[dict[str, Any]], runs: int) -> None:
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_model[r["spec"]].append(r)
    print(f"\n== Traps: {runs} seeded runs per model of the check's grid; 'claimed' = the report's primary row "
          "significant (Holm over the primary family, gates applied)")
    for spec, rs in by_model.items():
        print(f"\n{spec}")
        stats: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
        for r in rs:
            for name, comparison, est, sig in r["rows"]:
                stats[(name, comparison)].append((est, sig))
        for (name, comparison), v in sorted(stats.items(), key=lambda kv: (CONTRAST_ORDER.index(kv[0][0])
                                                                         if kv[0][0] in CONTRAST_ORDER else 99,
                                                                         kv[0][1])):
            ests = [e for e, _ in v if math.isfinite(e)]
            mean = statistics.mean(ests) if ests else math.nan
            print(f"  {name:<13} {comparison:<52} claimed {sum(s for _, s in v):>3}/{len(v):<3} "
                  f"mean estimate {mean:+.4f}")
        anysig = {c: sum(r["any"][c] for r in rs) for c in rs[0]["any"]}
        print("  check rule (any primary row or gated trait claimed): "
              + ", ".join(f"{c} {k}/{len(rs)}" for c, k in anysig.items()))


def print_variance(results: list[dict[str, Any]], game_sds: list[float], spec_of: dict[float, str]) -> None:
    print("\n== Variance: three-game common-seed grid (prisoners-dilemma, chicken, stag-hunt; game seeds 0..5 in "
          "every cell), contagion = pro-social index post − pre next to a malicious player")
    for sd in game_sds:
        rs = [r for r in results if r["spec"] == spec_of[sd]]
        est = [r["estimate"] for r in rs]
        ses = [r["se"] for r in rs if math.isfinite(r["se"])]
        mean, emp = statistics.mean(est), statistics.stdev(est)
        mean_se = statistics.mean(ses) if ses else math.nan
        from scipy.stats import t

        covered = sum(abs(r["estimate"] - mean) <= float(t.ppf(0.975, r["games"] - 1)) * r["se"]
                      for r in rs if math.isfinite(r["se"]))
        corr = game_correlation(rs)
        print(f"{spec_of[sd]}  ({len(rs)} replications, {rs[0]['games']} games in the row)")
        print(f"  mean estimate {mean:+.4f}; empirical SD {emp:.4f}; mean reported SE {mean_se:.4f}; "
              f"SE / SD {mean_se / emp:.2f}; 95% t-intervals holding the mean estimate {covered}/{len(ses)}; "
              f"per-seed drift correlation across game types {corr:.2f}")


def game_correlation(rs: list[dict[str, Any]]) -> float:
    """Mean Pearson correlation, over pairs of game types, of a (replication, seed)'s mean drift in each."""
    import numpy as np

    units: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for r in rs:
        for (game, seed), v in r["by_game_seed"].items():
            units[(r["seed"], seed)][game] = v
    games = sorted({g for u in units.values() for g in u})
    table = np.array([[u[g] for g in games] for u in units.values() if len(u) == len(games)])
    if len(table) < 3:
        return math.nan
    c = np.corrcoef(table.T)
    return float(np.mean([c[i, j] for i in range(len(games)) for j in range(i + 1, len(games))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="seeded runs per model in the trap part")
    ap.add_argument("--reps", type=int, default=30, help="replications per game SD in the variance part")
    ap.add_argument("--game-sd", type=float, default=0.10, help="game SD of the variance part (also run at 0)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="model specs of the trap part (no seed)")
    ap.add_argument("--workers", type=int, default=1, help="processes (the machine's cores are shared: be modest)")
    ap.add_argument("--skip-traps", action="store_true")
    ap.add_argument("--skip-variance", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    if not args.skip_traps:
        t0 = time.perf_counter()
        jobs = [(m, k) for m in args.models for k in range(args.runs)]
        print(f"trap part: {len(jobs)} runs", end=" ", flush=True)
        print_traps(run_jobs(trap_run, jobs, args.workers), args.runs)
        print(f"(trap part {time.perf_counter() - t0:.0f} s, {args.workers} worker(s))")
    if not args.skip_variance:
        t0 = time.perf_counter()
        sds = [args.game_sd, 0.0]
        spec_of = {sd: f"sim:planted?contagion=0.05&game_sd={sd:g}" for sd in sds}
        jobs = [(spec_of[sd], k) for sd in sds for k in range(args.reps)]
        print(f"variance part: {len(jobs)} runs", end=" ", flush=True)
        print_variance(run_jobs(variance_run, jobs, args.workers), sds, spec_of)
        print(f"(variance part {time.perf_counter() - t0:.0f} s, {args.workers} worker(s))")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
