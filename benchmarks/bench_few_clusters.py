"""How well does the report's cluster-robust t interval cover with few clusters, and can a standard alternative do
better? Synthetic cluster totals with a known mean, put through the project's own estimator.

The coverage test (``python -m contagion.coverage``) measures the report's intervals on a simulated grid with 6
seeds, hence 6 clusters: with t intervals its pooled coverage sat about one point under 95 %, most of it in SIT's
protection rows, whose misses fell almost all on one side. Those rows are differences of defection rates between
arms played on common seeds: the arms' actions differ only where the reminder flips a draw, so a seed's difference
is a sum of a few rare flips — a skewed, discrete cluster total whose spread grows with its mean. This script builds
such totals (and normal and exponential ones for reference) and asks
:func:`contagion.analysis.estimators.one_sample` for its interval, then prints, per case and number of clusters G,
the coverage of the true mean, the misses below and above it, for the flip cases the same of the discordance-scaled
interval, and, at G = 6, the coverage of the wild cluster restricted bootstrap (the test's p-value from Webb's
six-point weights, all 6^6 draws enumerated, and from Rademacher signs, all 2^6): the usual few-cluster
alternatives.

    PYTHONPATH=src python benchmarks/bench_few_clusters.py [--reps 4000] [--seed 0]

Measured (``--reps 2000``, beside a coverage run on both cores, 58 s): the t interval covers normal totals at
0.947 / 0.951 / 0.951 (G = 6 / 10 / 16), misses split evenly; rare flips 0.954 / 0.925 / 0.928 and rare flips with
seed noise 0.947 / 0.929 / 0.947, the misses 76–133 above the truth (nearer zero) against 16–31 below; 3.4 flips
per seed 0.949 / 0.944 / 0.949 (74 above, 28 below at G = 6); exponential totals 0.893 / 0.900 / 0.914 (205 of 213
misses on one side). More clusters barely help a skewed total: its misses stay one-sided. At G = 6 (500 draws
each) the wild cluster restricted bootstrap with Webb weights covers 0.950 (normal), 0.926 and 0.924 (rare
flips), 0.954, 0.896 (exponential) — no better than t — and with Rademacher signs 0.968, 0.960, 0.966, 0.964,
0.936: with 2^6 draws its test can only reject at level 1/32, so it is a 96.9 % interval, and it loses less of
that to skew than t does of 95 % (0.033 against 0.057 on exponential totals). A lead for the report's intervals
at few clusters, not adopted: it changes every p-value, so the check and both coverage grids would be re-run.

What SIT's protection rows adopted instead keeps the t-test and its p-value and scales the interval's SE by the
discordance each hypothesised mean needs (:func:`contagion.analysis.estimators.paired_score_interval`; the flip
cases only, whose totals are counts among known paired units). Measured on the same draws (``--reps 2000``, beside
the check and a coverage run, 845 s; the t figures above unchanged): rare flips 0.966 / 0.963 / 0.953 (G = 6 / 10 /
16) with the misses 69 / 53 / 63 below the truth against 0 / 21 / 31 above — no longer on zero's side —, 3.4
flips per seed 0.952 / 0.951 / 0.946 (53 below, 44 above at G = 6).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from contagion.analysis.estimators import one_sample, paired_score_interval

Draw = Callable[[np.random.Generator, int], np.ndarray]


def flips(units: int, rate: float) -> Draw:
    """A seed's arm difference when the arms differ only by rare flips: −(flips among ``units``) / ``units``."""
    return lambda rng, g: -rng.binomial(units, rate, size=g) / units


FLIP_UNITS = {"rare flips (30 units, rate 0.028: ~0.8 per seed)": 30,
              "flips (120 units, rate 0.028: ~3.4 per seed)": 120}
"""The cases whose totals are pure counts of flips (one direction) among this many paired units per seed: the
discordance-scaled interval (the one SIT's protection rows use) applies to them."""

CASES: dict[str, tuple[Draw, float]] = {
    "normal": (lambda rng, g: rng.normal(0.0, 1.0, size=g), 0.0),
    "rare flips (30 units, rate 0.028: ~0.8 per seed)": (flips(30, 0.028), -0.028),
    "rare flips + seed noise (SD 0.01)": (lambda rng, g: flips(30, 0.028)(rng, g) + rng.normal(0, 0.01, g), -0.028),
    "flips (120 units, rate 0.028: ~3.4 per seed)": (flips(120, 0.028), -0.028),
    "exponential": (lambda rng, g: rng.exponential(1.0, size=g), 1.0),
}


def t_coverage(draw: Draw, truth: float, g: int, reps: int, rng: np.random.Generator,
               units: int = 0) -> tuple[float, int, int, tuple[float, int, int] | None]:
    """Coverage of ``one_sample``'s 95 % interval over ``reps`` draws of ``g`` cluster totals (one value per
    cluster), and the misses with the interval below and above the truth; for flip totals among ``units`` paired
    units per cluster also the same figures of :func:`paired_score_interval` (the t-test inverted with its SE scaled
    by the discordance each hypothesised mean needs) on the same draws."""
    below = above = s_below = s_above = 0
    clusters = np.arange(g)
    for _ in range(reps):
        x = draw(rng, g)
        est = one_sample(x, clusters, resamples=0)
        below += est.ci_high < truth
        above += est.ci_low > truth
        if units:
            down = int(np.rint(-x * units).sum())
            low, high = paired_score_interval(est.estimate, est.se, est.df, down, 0, units * g)
            s_below += high < truth
            s_above += low > truth
    scaled = (1 - (s_below + s_above) / reps, s_below, s_above) if units else None
    return 1 - (below + above) / reps, below, above, scaled


def wild_coverage(draw: Draw, truth: float, g: int, reps: int, rng: np.random.Generator,
                  weights: np.ndarray) -> float:
    """Coverage of the wild cluster restricted bootstrap-t interval (the test at the truth not rejected at 5 %),
    every weight vector of ``weights``' values enumerated."""
    w = np.array(list(itertools.product(weights, repeat=g)))
    kept = 0
    for _ in range(reps):
        u = draw(rng, g) - truth  # residuals under the null mean = truth

        def t(x: np.ndarray) -> np.ndarray:
            sd = x.std(axis=-1, ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(sd > 0, x.mean(axis=-1) / (sd / np.sqrt(g)), 0.0)

        t0 = float(t(u[None, :])[0])
        kept += np.mean(np.abs(t(u[None, :] * w)) >= abs(t0) - 1e-12) > 0.05
    return kept / reps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=4000, help="draws per case and number of clusters")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    webb = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
    started = time.perf_counter()
    se = np.sqrt(0.95 * 0.05 / args.reps)
    print(f"{args.reps} draws per row (binomial SE of a coverage near 0.95: {se:.4f}); t interval = one_sample's "
          f"estimate ± t(0.975; G − 1)·SE")
    for name, (draw, truth) in CASES.items():
        print(name)
        for g in (6, 10, 16):
            cov, below, above, scaled = t_coverage(draw, truth, g, args.reps, rng, FLIP_UNITS.get(name, 0))
            line = f"  G = {g:>2}: t interval {cov:.3f} (misses below {below}, above {above})"
            if scaled:
                line += f"; scaled by discordance {scaled[0]:.3f} (below {scaled[1]}, above {scaled[2]})"
            if g == 6:
                quarter = args.reps // 4
                w_webb = wild_coverage(draw, truth, g, quarter, rng, webb)
                w_signs = wild_coverage(draw, truth, g, quarter, rng, np.array([-1.0, 1.0]))
                line += f"; wild restricted bootstrap, Webb {w_webb:.3f}, Rademacher {w_signs:.3f} ({quarter} draws)"
            print(line, flush=True)
    print(f"t(0.975) at 5, 9, 15 df: {', '.join(f'{stats.t.ppf(0.975, d):.3f}' for d in (5, 9, 15))}; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
