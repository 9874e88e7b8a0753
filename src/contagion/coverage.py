"""The coverage test: do the report's 95 % intervals hold the truth when common seeds link a grid's games?

A grid runs every cell on the same game seeds, so games of one seed share its random draws — and, in a real
model as in ``sim:planted?game_sd=…``, whatever a seed's history does to a model — across compositions,
interventions and game types. The analysis clusters every estimator on the games a seed or a transcript links
and pairs two-arm rows by seed (:mod:`contagion.analysis.contrasts`); this module checks that the resulting
intervals cover.

One *replication* plays :class:`CoverageGrid` — the check's grid (:class:`contagion.check.ValidationGrid`: two
compositions, no intervention / SIT / the neutral placebo, 6 game seeds) on three game types (prisoner's dilemma,
chicken, stag hunt) with common seeds, replication ``k`` on game seeds ``6k .. 6k + 5`` — on :data:`MODEL`
(``sim:planted`` with contagion 0.05 and a game-level random effect of SD 0.10, the project's default
between-game SD), with model seed ``k`` and the same item sample in every replication (assessment seed 0), and
analyses it with the report's code (:func:`contagion.analysis.contrasts.compute_contrasts`). For each primary
contrast (:data:`CONTRASTS`, picked by what their arms are) it keeps the estimate, the test's SE and its 95 %
interval (the row's ``ci_low``/``ci_high``: the cluster-robust t interval; SIT's protection rows, paired by seed,
scale its SE by the discordant action pairs each hypothesised difference needs —
:func:`contagion.analysis.estimators.paired_score_interval`).

**Truth.** The estimand is a contrast's expected value for the run's item sample (a protocol fixes it; which
statements SIT quotes changes SIT's planted effect, and no row's SE claims to cover the choice of items).
The planted rule fixes that expected value but not in closed form: the index drift depends
on the exposure the games produce (sampled actions that themselves depend on the drift and the game effect) and
on clipping. So the truth of contrast ``c`` for replication ``k`` is the mean of ``c``'s estimate over the *other*
replications (leave-one-out: independent of the interval it judges; with R replications it differs from the
population mean by an error of SD σ/√(R−1), which lowers the coverage of an exact 95 % interval by about
0.1 percentage point at R = 200). ``placebo − none`` also has an exact truth, 0 (the planted model reads a
reminder only through the statements it quotes as the agent's own, which the neutral placebo has none of, and
this model does not flatten), and its coverage of 0 is reported too.

Coverage of each contrast must lie in [0.93, 0.97] (:data:`BAND`) over at least :data:`REPLICATIONS`
replications. Each replication's misses are counted by side (the interval wholly below or wholly above the truth):
with few clusters a skewed cluster total (SIT's protection rows: a seed's arm difference is a sum of a few rare
flips) makes a t interval miss mostly on one side. Two grids are shipped with :func:`coverage_fingerprint`: the
check's (:data:`SEEDS` = 6 game seeds, so 6 clusters) in ``contagion/analysis/coverage.json``, and the same grid on
:data:`CLAIM_SEEDS` = 10 seeds — the fewest clusters on which the report lets a row support a claim — in
``coverage-10-seeds.json``; a test reads both and checks they are current and in the band. Re-run (about 8.5 s per
replication and core at 6 seeds, more at 10)::

    PYTHONPATH=src python -m contagion.coverage --workers 2 --out src/contagion/analysis/coverage.json
    PYTHONPATH=src python -m contagion.coverage --seeds 10 --workers 2 \
        --out src/contagion/analysis/coverage-10-seeds.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contagion.analysis.contrasts import MIN_GAMES
from contagion.analysis.coverage_figures import coverage_file, read_coverage
from contagion.check import PLACEBO, SIT, SIT_KINDS, ValidationGrid, play_grid

MODEL = "sim:planted?contagion=0.05&game_sd=0.1"
"""The simulated model of the coverage test (a replication adds ``&seed=k``)."""
REPLICATIONS = 200
BAND = (0.93, 0.97)
"""Each primary contrast's coverage must lie in this band."""
GAMES = ("prisoners-dilemma", "chicken", "stag-hunt")
SEEDS = ValidationGrid.repetitions
"""Game seeds per replication of the shipped figures: the check's grid, 6 (so 6 clusters, 5 df)."""
CLAIM_SEEDS = MIN_GAMES
"""Game seeds of the second shipped grid: the fewest clusters on which the report lets a row support a claim (rows
on fewer carry a "too few to support a claim" warning)."""

CONTRASTS: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    "contagion · one-malicious": ("contagion", lambda a, b: a == "malicious-lm" and not b),  # b: a secondary row
    "contagion · all-default": ("contagion", lambda a, b: a == "all-default" and not b),
    "amplification": ("amplification", lambda a, b: True),
    "sit − none": ("mitigation", lambda a, b: a in SIT_KINDS and b == "none"),
    "placebo − none": ("mitigation", lambda a, b: a == "placebo" and b == "none"),
    "sit − placebo": ("mitigation", lambda a, b: a in SIT_KINDS and b == "placebo"),
    "behaviour · default": ("behaviour", lambda a, b: True),
    # SIT's primary outcome: defection from the first reminder on, the pooled rows (not per composition)
    "protection: sit − none": ("protection", lambda a, b: a in SIT_KINDS and b == "none"),
    "protection: sit − placebo": ("protection", lambda a, b: a in SIT_KINDS and b == "placebo"),
}
"""The primary contrasts of the grid: name -> (contrast, a test on its comparison's arms)."""
EXACT_ZERO = ("placebo − none",)
"""Contrasts whose truth on :data:`MODEL` is exactly 0."""


@dataclass(frozen=True)
class CoverageGrid(ValidationGrid):
    """The check's grid played on several game types with common seeds (every cell: game seeds 0..reps−1)."""

    games: tuple[str, ...] = GAMES

    def config(self, model: str, seed: int = 0) -> dict[str, Any]:
        # replication k plays its own game seeds (k·reps .. k·reps + reps − 1): the seeds' sampled actions and
        # game effects are part of what a replication draws, as they are of what the intervals account for
        # the item sample is the same in every replication (assessment seed 0): it is fixed by a study's protocol,
        # and its effect on the true drift (which statements SIT quotes, which items sit near a bound) is part of
        # the estimand a run's interval is about, not of its sampling error
        cfg = super().config(model, seed)
        return {**cfg, "games": list(self.games), "seed": seed * self.repetitions,
                "assessment": {**cfg["assessment"], "seed": 0}}


def seeded(spec: str, seed: int) -> str:
    """``spec`` with the model seed ``seed``."""
    return f"{spec}{'&' if '?' in spec else '?'}seed={seed}"


def primary_rows(contrasts: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each :data:`CONTRASTS` row of a run's contrasts: estimate, SE, df, CI and p (missing rows are left out)."""
    out: dict[str, dict[str, float]] = {}
    for name, (contrast, match) in CONTRASTS.items():
        c = contrasts.get(contrast)
        if c is None or not c.available:
            continue
        rows = c.index_rows()
        if contrast == "behaviour":
            rows = rows[rows["comparison"].astype(str).str.endswith("· default")]
        else:
            if contrast == "protection":  # the pooled rows; per composition ("· …") and SIT × composition aside
                rows = rows[~rows["comparison"].astype(str).str.contains("·|×")]
            rows = rows[[match(*c.arms[str(comp)]) for comp in rows["comparison"]]]
        if len(rows) != 1:
            continue
        r = rows.iloc[0]
        out[name] = {k: float(r[k]) for k in ("estimate", "se", "df", "ci_low", "ci_high", "p")}
    return out


def play(job: tuple[str, int, CoverageGrid]) -> Any:
    """Play replication ``k`` of the grid on ``spec`` (``job`` = spec, k, grid): its run tables
    (:class:`contagion.analysis.tables.RunTables`)."""
    from contagion.analysis.tables import tables_from_records

    spec, k, grid = job
    return tables_from_records(play_grid(grid, seeded(spec, k), k))


def analyse(k: int, tables: Any) -> dict[str, Any]:
    """Replication ``k``'s primary rows, from its run tables analysed as the report does."""
    from contagion.analysis.contrasts import AnalysisSettings, compute_contrasts

    contrasts = compute_contrasts(tables, settings=AnalysisSettings(resamples=0, mixed=False))
    return {"seed": k, "rows": primary_rows(contrasts)}


def replicate(job: tuple[str, int, CoverageGrid]) -> dict[str, Any]:
    """One replication: play the grid on ``spec`` with seed ``k`` and analyse it as the report does."""
    return analyse(job[1], play(job))


def summarise(reps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contrast: coverage of the leave-one-out truth (and of 0 where that is exact) and the misses with the
    interval wholly below (``missed_below``) and wholly above (``missed_above``) it, the mean estimate, its empirical
    SD over replications, the mean SE the test reported and two ratios to the SD: the mean SE's (below 1 even for an
    exact interval: √ of an unbiased variance is biased low, by a factor 0.95 at 5 df) and the root-mean-square SE's
    (about 1 when the variance the test estimates is the estimate's)."""
    out: dict[str, dict[str, Any]] = {}
    for name in CONTRASTS:
        got = [r["rows"][name] for r in reps if name in r["rows"] and math.isfinite(r["rows"][name]["estimate"])]
        if len(got) < 3:
            continue
        ests = [g["estimate"] for g in got]
        total, n = sum(ests), len(ests)
        truths = [(total - g["estimate"]) / (n - 1) for g in got]
        below = sum(g["ci_high"] < t for g, t in zip(got, truths, strict=True))
        above = sum(g["ci_low"] > t for g, t in zip(got, truths, strict=True))
        covered = sum(g["ci_low"] <= t <= g["ci_high"] for g, t in zip(got, truths, strict=True))  # NaN: a miss
        sd = statistics.stdev(ests)
        ses = [g["se"] for g in got if math.isfinite(g["se"])]
        rms = math.sqrt(statistics.mean(s * s for s in ses)) if ses else math.nan
        entry: dict[str, Any] = {
            "replications": n, "covered": covered, "coverage": covered / n, "missed_below": below,
            "missed_above": above, "mean_estimate": total / n,
            "empirical_sd": sd, "mean_se": statistics.mean(ses) if ses else math.nan,
            "se_over_sd": (statistics.mean(ses) / sd) if ses and sd > 0 else math.nan,
            "rms_se_over_sd": rms / sd if sd > 0 else math.nan,
            "mean_df": statistics.mean(g["df"] for g in got),
            "in_band": BAND[0] <= covered / n <= BAND[1]}
        if name in EXACT_ZERO:
            zero = sum(g["ci_low"] <= 0.0 <= g["ci_high"] for g in got)
            entry["covered_zero"], entry["coverage_zero"] = zero, zero / n
        out[name] = entry
    return out


def coverage_fingerprint() -> str:
    """The analysis fingerprint (:func:`contagion.analysis.validation.analysis_fingerprint`: the analysis, the
    check's grid and games, the simulated models) combined with what this module does: figures saved with another
    fingerprint were made by other code."""
    from contagion.analysis.validation import _behaviour, analysis_fingerprint

    here = Path(__file__)
    h = hashlib.sha256(analysis_fingerprint().encode())
    h.update(_behaviour(here.name, here.read_bytes()))
    return h.hexdigest()[:12]


def run_coverage(replications: int = REPLICATIONS, workers: int = 1, spec: str = MODEL,
                 grid: CoverageGrid | None = None, on_rep: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """``replications`` replications (seeds 0..R−1) of the grid on ``spec``; the figures :func:`save` writes."""
    grid = grid or CoverageGrid()
    jobs = [(spec, k, grid) for k in range(replications)]
    started = time.perf_counter()
    reps: list[dict[str, Any]] = []
    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for r in pool.map(replicate, jobs):
                reps.append(r)
                if on_rep:
                    on_rep(r)
    else:
        for job in jobs:
            r = replicate(job)
            reps.append(r)
            if on_rep:
                on_rep(r)
    return figures_of(reps, grid, spec, time.perf_counter() - started, workers)


PER_REPLICATION = ("estimate", "se", "ci_low", "ci_high")
"""What the figures keep of each replication's row: its estimate, the test's SE and the row's interval."""


def figures_of(reps: list[dict[str, Any]], grid: CoverageGrid, spec: str = MODEL, seconds: float = math.nan,
               workers: int = 1, made: str = "") -> dict[str, Any]:
    """The figures :func:`save` writes, from replications (:func:`replicate`'s results, in any order; ``made``: how
    they were made when not by one :func:`run_coverage`, said in the file)."""
    from contagion.analysis.validation import analysis_fingerprint

    reps = sorted(reps, key=lambda r: r["seed"])
    out = {
        "fingerprint": coverage_fingerprint(), "analysis_fingerprint": analysis_fingerprint(), "model": spec,
        "seeds": grid.repetitions, "replications": len(reps),
        "grid": {**asdict(grid), "interventions": grid.played_interventions()},
        "band": list(BAND),
        "truth": "leave-one-out mean of the contrast's estimate over the other replications, all on one item sample "
                 "(the planted rule's expected value has no closed form: exposure and clipping); exact 0 also for "
                 + ", ".join(EXACT_ZERO),
        "interval": "the report row's 95% interval (ci_low, ci_high); per replication: "
                    + ", ".join(PER_REPLICATION),
        "contrasts": summarise(reps),
        "seconds": round(seconds, 1), "workers": workers,
        "per_replication": [{"seed": r["seed"], **{n: [round(v[key], 12) for key in PER_REPLICATION]
                                                   for n, v in r["rows"].items()}} for r in reps],
        "sit": SIT, "placebo": PLACEBO,
    }
    if made:
        out["made"] = made
    return out


def coverage_path(seeds: int = SEEDS) -> Path:
    """Where the shipped figures for a grid of ``seeds`` game seeds live (beside ``validation.json``):
    ``coverage.json`` for the check's 6, ``coverage-10-seeds.json`` for :data:`CLAIM_SEEDS`."""
    return coverage_file(seeds)


def load_coverage(path: Path | None = None, seeds: int = SEEDS) -> dict[str, Any]:
    """The saved coverage figures (of the grid with ``seeds`` game seeds)."""
    return read_coverage(path or coverage_path(seeds))


def save(figures: dict[str, Any], path: Path) -> None:
    """Write the figures as JSON (NaN as null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    path.write_text(json.dumps(clean(figures), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m contagion.coverage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--replications", type=int, default=REPLICATIONS)
    ap.add_argument("--workers", type=int, default=1, help="processes (the machine's cores may be shared)")
    ap.add_argument("--seeds", type=int, default=SEEDS,
                    help=f"game seeds per replication, hence clusters (the shipped figures: {SEEDS}, the check's "
                         f"grid, and {CLAIM_SEEDS}, the fewest on which a report row may support a claim)")
    ap.add_argument("--out", type=Path, help="write the figures here (the shipped ones: "
                                             "src/contagion/analysis/coverage.json, coverage-10-seeds.json)")
    args = ap.parse_args(argv)
    if args.seeds < 2 or args.replications < 3:
        ap.error("--seeds needs at least 2 (one cluster has no variance) and --replications at least 3")
    figures = run_coverage(args.replications, args.workers, grid=CoverageGrid(repetitions=args.seeds),
                           on_rep=lambda r: print(".", end="", flush=True))
    print()
    for name, e in figures["contrasts"].items():
        extra = f"; covers 0 in {e['coverage_zero']:.3f}" if "coverage_zero" in e else ""
        print(f"{name:<26} coverage {e['coverage']:.3f} ({e['covered']}/{e['replications']}; missed below "
              f"{e['missed_below']}, above {e['missed_above']}){extra}; mean estimate {e['mean_estimate']:+.4f}; "
              f"empirical SD {e['empirical_sd']:.4f}; mean SE {e['mean_se']:.4f} (SE/SD {e['se_over_sd']:.2f}, "
              f"rms SE/SD {e['rms_se_over_sd']:.2f}); mean df {e['mean_df']:.1f}")
    print(f"{figures['replications']} replications in {figures['seconds']:.0f} s with {args.workers} worker(s); "
          f"fingerprint {figures['fingerprint']}")
    if args.out:
        save(figures, args.out)
        print(f"wrote {args.out}")
    return 0 if all(e["in_band"] for e in figures["contrasts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
