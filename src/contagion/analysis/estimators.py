"""Generic estimators for clustered data: one- and two-sample tests with games as clusters, the cluster
bootstrap, multiplicity corrections (Holm, Benjamini–Hochberg) and a mixed-model cross-check.

Nothing here knows the study; :mod:`contagion.analysis.contrasts` applies these to trait drift.
Two facts about the data shape them:

1. **Observations in one cluster are not independent** (agents of one game saw the same
   conversation; games of one seed share its random draws). Every estimator treats the *cluster* as the
   unit of variance (cluster-robust): a cluster-robust (CR1) t-test with G − 1 degrees of freedom
   (G = number of clusters) for p-values and the same test's t interval for confidence intervals.
2. **A baseline measured once and shared carries an error that does not average out.** The two-sample
   estimator compares observations within baseline (fixed effects per baseline measurement), so the
   error cancels exactly; the one-sample estimator cannot cancel it and adds the baseline's error
   variance (:func:`baseline_variance`).

Effect sizes are Cohen's *d_z* (mean / SD over observations) for one sample and Cohen's *d*
(difference / pooled SD) for two. Every :class:`Estimate` carries the name of the test that produced
it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

CI_LEVEL = 0.95

ONE_SAMPLE_TEST = "cluster-robust t (CR1, games as clusters, df = G−1) + baseline measurement error"
TWO_SAMPLE_TEST = "cluster-robust t (CR1, games as clusters, df = G−1), paired by baseline"
TWO_SAMPLE_UNPAIRED_TEST = "cluster-robust t (CR1, games as clusters, df = G−1) + baseline measurement error"
SLOPE_TEST = "within-stratum OLS slope, cluster-robust t (CR1, games as clusters, df = G−1)"
ONE_SAMPLE_ITEM_TEST = "cluster-robust t (CR1, games as clusters, df = G−1) + baseline error by item resampling"
TWO_SAMPLE_SEED_TEST = ("cluster-robust t (CR1, linked games as clusters, df = G−1), paired by baseline and seed")
MIXED_TEST = "MixedLM (random intercept per game, baseline fixed effects; Wald z)"
BOOT_CI = "cluster bootstrap 95% CI (games resampled)"
T_CI = "cluster-robust t 95% CI (df = G−1)"
PAIRING_SHARE = 0.8
"""Two arms are paired by seed only where the strata shared by both arms keep at least this share of the agents
the comparison by baseline alone keeps (a grid that plays every arm on common seeds keeps them all)."""


# -- multiple comparisons ---------------------------------------------------------------------------


def _adjust(pvalues: np.ndarray | list[float], method: str) -> np.ndarray:
    """statsmodels' adjusted p-values over the non-NaN entries; NaN entries stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error). NaN entries stay NaN and do not count.

    The step-down formula itself (the i-th smallest of m p-values times m − i + 1, made monotone, capped
    at 1), equal to statsmodels' ``multipletests(method="holm")`` (a test checks it), which runs a full
    garbage collection on every call — a quarter of a second each in a large analysis."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        m = order.size
        stepped = np.maximum.accumulate(p[order] * np.arange(m, 0, -1))
        out[order] = np.minimum(stepped, 1.0)
    return out


def benjamini_hochberg(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate). NaN entries stay NaN."""
    return _adjust(pvalues, "fdr_bh")


CORRECTIONS = {"holm": (holm, "Holm"), "bh": (benjamini_hochberg, "Benjamini–Hochberg")}


# -- estimates ----------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """One number with its uncertainty and the names of the methods that produced them."""

    estimate: float
    se: float
    df: int
    p: float
    ci_low: float
    ci_high: float
    test: str
    ci_method: str
    n_agents: int
    n_games: int
    effect: float
    effect_name: str
    extra: dict[str, Any] = field(default_factory=dict)


def _codes(values: Any) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(values).astype(str))
    return codes.astype(np.int64), len(uniques)


def _t_p(estimate: float, se: float, df: int) -> float:
    # no variation between games (or a single game) leaves nothing to test against: no p-value
    if df < 1 or not np.isfinite(se) or se <= 0:
        return math.nan
    return float(2 * sps.t.sf(abs(estimate / se), df))


def t_interval(estimate: float, se: float, df: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """``estimate ± t((1 + level)/2; df)·se``: the interval of the cluster-robust t-test (NaN without a test)."""
    if df < 1 or not np.isfinite(se) or se <= 0 or not np.isfinite(estimate):
        return math.nan, math.nan
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    return estimate - half, estimate + half


def tost(estimate: float, se: float, df: int, margin: float) -> float:
    """p-value of the two one-sided tests (TOST) that ``|true difference| < margin``: the larger of
    P(T ≥ (estimate + margin)/se) and P(T ≤ (estimate − margin)/se) under t(df). Below α: the difference is
    shown to lie within ±margin (equivalence). NaN without a test."""
    if df < 1 or not np.isfinite(se) or se < 0 or not np.isfinite(estimate):
        return math.nan
    if se == 0:  # no variation at all: the difference is exactly the estimate
        return 0.0 if abs(estimate) < margin else 1.0
    lower = float(sps.t.sf((estimate + margin) / se, df))
    upper = float(sps.t.cdf((estimate - margin) / se, df))
    return max(lower, upper)


# -- paired actions: an interval scaled by the discordance a hypothesised difference needs ---------------------

PAIRED_SCORE_CI = ("cluster-robust t 95% CI (df = G−1), its variance at each hypothesised difference scaled by the "
                   "discordant action pairs that difference needs (restricted estimate)")


def discordance(down: int, up: int, pairs: int, d: float | np.ndarray) -> np.ndarray:
    """The restricted maximum-likelihood estimate of the total discordance p₊ + p₋ of ``pairs`` paired binary
    outcomes under the hypothesis p₊ − p₋ = ``d``, where ``up`` pairs went 0 → 1 (p₊) and ``down`` went 1 → 0 (p₋).

    With x = p₋ the likelihood u·log(x + d) + w·log x + (n − u − w)·log(1 − 2x − d) (u = up, w = down, n = pairs)
    is maximal at the positive root of 2n·x² − B·x − w·d(1 − d) = 0, B = u + w − d(2n − u + w) (Tango's
    restricted estimate); the total discordance is 2x + d. At d = 0 it is the observed (u + w)/n. ``d`` outside
    (−1, 1) gives NaN."""
    dd = np.asarray(d, dtype=float)
    n, u, w = float(pairs), float(up), float(down)
    if n <= 0:
        return np.full_like(dd, np.nan)
    b = u + w - dd * (2 * n - u + w)
    x = (b + np.sqrt(np.maximum(b * b + 8 * n * w * dd * (1 - dd), 0.0))) / (4 * n)
    x = np.maximum(x, np.maximum(-dd, 0.0))  # rounding: p₋ ≥ 0 and p₊ = x + d ≥ 0
    q = np.minimum(2 * x + dd, 1.0)
    return np.where(np.abs(dd) < 1, q, np.nan)


def discordant_variance(down: int, up: int, pairs: int, d: float | np.ndarray) -> np.ndarray:
    """Variance of one pair's difference (p₊ − p₋ estimated from one pair) under the hypothesis p₊ − p₋ = ``d``,
    at the restricted estimate: q(d) − d² (:func:`discordance`). McNemar's variance at d = 0."""
    dd = np.asarray(d, dtype=float)
    return discordance(down, up, pairs, dd) - dd * dd


def paired_score_interval(estimate: float, se: float, df: int, down: int, up: int, pairs: int,
                          level: float = CI_LEVEL) -> tuple[float, float]:
    """The 95 % interval of a difference of rates that rests on paired binary actions, few of which differ.

    The t interval ``estimate ± t·se`` treats the SE as the same whatever the true difference d. But when the
    arms' actions are paired (common seeds) the difference is a net count of discordant pairs, whose variance
    grows with their number: a true difference far from the estimate needs more (or fewer) discordant pairs than
    were seen, so a larger (smaller) SE. This interval keeps every d with

        |estimate − d| ≤ t((1 + level)/2; df) · se · √(q(d) / q̂)

    where q̂ = (down + up)/pairs is the discordance seen and q(d) the discordance the hypothesis d needs
    (:func:`discordance`, the restricted estimate). q(0) = q̂, so the interval excludes 0 exactly when the
    t-test rejects: the p-value stays the t-test's. The SE keeps the clustering (a seed's flips move together);
    only its dependence on d comes from the pairs. ``up`` counts pairs where arm A's action is the 1 and arm B's
    the 0 (they push the difference A − B up), ``down`` the other way.

    With no discordant pair (se 0) the interval is the set of d the paired score test keeps with none seen:
    ``estimate ± t²/(pairs + t²)``. Without pairs, or without a test, the t interval (:func:`t_interval`)."""
    if df < 1 or not np.isfinite(estimate) or not np.isfinite(se) or se < 0 or pairs <= 0:
        return t_interval(estimate, se, df, level)
    t = float(sps.t.ppf(0.5 + level / 2, df))
    q_seen = (down + up) / pairs
    if se == 0 or q_seen == 0:
        half = t * t / (pairs + t * t)
        return max(estimate - half, -1.0), min(estimate + half, 1.0)

    def kept(d: np.ndarray) -> np.ndarray:
        q = discordance(down, up, pairs, d)
        return np.abs(estimate - d) <= t * se * np.sqrt(np.maximum(q, 0.0) / q_seen)

    # the kept set on a fine grid of d in (−1, 1), then each end refined by bisection between the last kept
    # and the first rejected grid point (the estimate itself is always kept)
    grid = np.union1d(np.linspace(-1 + 1e-9, 1 - 1e-9, 4001), [estimate])
    ok = kept(grid)
    inside = np.flatnonzero(ok)
    lo_i, hi_i = int(inside[0]), int(inside[-1])

    def edge(a: float, b: float) -> float:  # a kept, b rejected
        for _ in range(60):
            m = (a + b) / 2
            if bool(kept(np.array([m]))[0]):
                a = m
            else:
                b = m
        return a

    low = -1.0 if lo_i == 0 else edge(float(grid[lo_i]), float(grid[lo_i - 1]))
    high = 1.0 if hi_i == grid.size - 1 else edge(float(grid[hi_i]), float(grid[hi_i + 1]))
    return low, high


def _percentile_ci(replicates: np.ndarray) -> tuple[float, float]:
    reps = replicates[np.isfinite(replicates)]
    if reps.size == 0:
        return math.nan, math.nan
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


_COUNTS_CACHE: dict[tuple[Any, ...], tuple[np.ndarray, Any]] = {}


def _multiplicities(groups: list[np.ndarray], n_clusters: int, resamples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(resamples × clusters) counts: each group of clusters resampled with replacement within itself.

    The draws depend only on the groups and the generator's state, so the traits of one comparison
    (same games) reuse one draw instead of redrawing it (the generator advances the same way).
    """
    key = (n_clusters, resamples, tuple(m.tobytes() for m in groups), str(rng.bit_generator.state))
    hit = _COUNTS_CACHE.get(key)
    if hit is not None:
        rng.bit_generator.state = hit[1]
        return hit[0]
    counts = _draw_multiplicities(groups, n_clusters, resamples, rng)
    _COUNTS_CACHE.clear()  # keep one: a comparison's traits come one after another
    _COUNTS_CACHE[key] = (counts, rng.bit_generator.state)
    return counts


def _draw_multiplicities(groups: list[np.ndarray], n_clusters: int, resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    counts = np.zeros((resamples, n_clusters))
    rows = np.arange(resamples)[:, None] * n_clusters
    for members in groups:
        if members.size == 0:
            continue
        draws = members[rng.integers(0, members.size, size=(resamples, members.size))]
        counts += np.bincount((rows + draws).ravel(), minlength=resamples * n_clusters).reshape(
            resamples, n_clusters)
    return counts


def baseline_variance(post: np.ndarray, baseline: np.ndarray) -> float:
    """Variance that the shared baseline measurements add to a mean of post − pre differences.

    With ``n_k`` agents sharing baseline ``k`` (one measurement, error variance ``σ²_k``), the mean of
    all N differences carries ``Σ_k (n_k / N)² σ²_k``. ``σ²_k`` is estimated by the variance of the
    post-play readings of the agents sharing ``k`` (same instrument, same items; an upper bound,
    since it also holds real between-game differences). Baselines seen once borrow the pooled
    within-baseline variance.
    """
    post = np.asarray(post, dtype=float)
    codes, k = _codes(baseline)
    n = post.size
    if n == 0:
        return math.nan
    counts = np.bincount(codes, minlength=k).astype(float)
    variances = np.full(k, np.nan)
    for j in range(k):
        vals = post[codes == j]
        if vals.size >= 2:
            variances[j] = float(np.var(vals, ddof=1))
    known = ~np.isnan(variances)
    if known.any():
        pooled = float(np.sum((counts[known] - 1) * variances[known]) / max(1.0, np.sum(counts[known] - 1)))
    else:
        pooled = float(np.var(post, ddof=1)) if n >= 2 else 0.0
    variances[~known] = pooled
    return float(np.sum((counts / n) ** 2 * variances))


def item_resampling_variance(item_means: np.ndarray, groups: Any, weights: dict[str, float]) -> float:
    """Variance of ``Σ_g weights[g] · mean(item_means in g)`` when each group's items are resampled.

    ``item_means`` holds one number per item (e.g. an item's post − pre averaged over the agents that
    share one baseline measurement); ``groups`` names each item's group (its trait). The variance is
    ``Σ_g w_g² s²_g / n_g`` (``s²_g`` the sample variance of group g's items): the error a finite item
    sample puts into the shared baseline, whatever the number of games. NaN when a weighted group has
    fewer than two items (nothing to resample).
    """
    vals = np.asarray(item_means, dtype=float)
    names = pd.Series(groups).astype(str).to_numpy()
    total = 0.0
    for group, w in weights.items():
        g = vals[names == group]
        if w == 0:
            continue
        if g.size < 2:
            return math.nan
        total += w * w * float(np.var(g, ddof=1)) / g.size
    return total


def slope(y: np.ndarray, x: np.ndarray, clusters: Any, *, strata: Any | None = None) -> Estimate:
    """Within-strata OLS slope of ``y`` on ``x`` with a cluster-robust (CR1) t-test, df = G − 1.

    With ``strata`` each stratum gets its own intercept (fixed effects). No p-value when ``x`` or the
    residuals do not vary (a deterministic player gives nothing to test).
    """
    yv = np.asarray(y, dtype=float)
    xv = np.asarray(x, dtype=float)
    codes, g = _codes(clusters)
    st, k = _codes(strata if strata is not None else np.zeros(yv.size))
    n = yv.size
    if n == 0:
        return Estimate(math.nan, math.nan, 0, math.nan, math.nan, math.nan, SLOPE_TEST, "t interval", 0, 0,
                        math.nan, "slope")
    beta, xt, resid = _fe_beta(yv, xv, st, k)
    sxx = float(xt @ xt)
    se = math.nan
    if g >= 2 and n > 1 + k and sxx > 0 and np.isfinite(beta):
        scores = np.bincount(codes, weights=xt * resid, minlength=g)
        v = (g / (g - 1)) * ((n - 1) / (n - 1 - k)) * float(np.sum(scores**2)) / sxx**2
        se = math.sqrt(v)
    df = g - 1
    p = _t_p(beta, se, df)
    half = float(sps.t.ppf(0.5 + CI_LEVEL / 2, df)) * se if df >= 1 and np.isfinite(se) else math.nan
    return Estimate(beta, se, df, p, beta - half, beta + half, SLOPE_TEST, "cluster-robust t interval", n, g,
                    math.nan, "slope")


def one_sample(values: np.ndarray, clusters: Any, *, baseline_var: float = 0.0, resamples: int = 2000,
               seed: int = 0) -> Estimate:
    """Mean of ``values`` (e.g. post − pre) with game-clustered inference.

    p-value: cluster-robust (CR1) t-test with G − 1 degrees of freedom, adding ``baseline_var`` (see
    :func:`baseline_variance`) to the variance. CI: the same test's interval, estimate ± t(0.975; G − 1)·SE
    (:func:`t_interval`), so the interval excludes 0 exactly when p < 0.05. With few clusters (a grid on
    common seeds has as many as it has seeds) a percentile bootstrap of whole clusters is too narrow —
    its variance lacks the G/(G − 1) factor and its tails are normal, not t — so it is only kept, when
    ``resamples`` > 0, in ``extra["boot_ci"]`` (each replicate also drawing the baseline error from
    N(0, ``baseline_var``)). Effect size: Cohen's d_z.
    """
    y = np.asarray(values, dtype=float)
    codes, g = _codes(clusters)
    n = y.size
    mean = float(y.mean()) if n else math.nan
    sd = float(y.std(ddof=1)) if n >= 2 else math.nan
    if n == 0:
        return Estimate(math.nan, math.nan, 0, math.nan, math.nan, math.nan, ONE_SAMPLE_TEST, BOOT_CI, 0, 0,
                        math.nan, "d_z")
    resid_sums = np.bincount(codes, weights=y - mean, minlength=g)
    v_cluster = (g / (g - 1)) * float(np.sum(resid_sums**2)) / n**2 if g >= 2 else math.nan
    se = math.sqrt(v_cluster + baseline_var) if g >= 2 else math.nan
    df = g - 1
    p = _t_p(mean, se, df)
    low, high = t_interval(mean, se, df)
    extra: dict[str, Any] = {"baseline_var": baseline_var, "cluster_var": v_cluster}
    if resamples and g >= 2:
        rng = np.random.default_rng(seed)
        counts = _multiplicities([np.arange(g)], g, resamples, rng)
        sums = counts @ np.bincount(codes, weights=y, minlength=g)
        sizes = counts @ np.bincount(codes, minlength=g).astype(float)
        reps = sums / sizes
        if baseline_var > 0:
            reps = reps + rng.normal(0.0, math.sqrt(baseline_var), size=resamples)
        extra["boot_ci"] = _percentile_ci(reps)
    effect = mean / sd if sd and np.isfinite(sd) and sd > 0 else math.nan
    return Estimate(mean, se, df, p, low, high, ONE_SAMPLE_TEST if baseline_var else
                    ONE_SAMPLE_TEST.split(" + ")[0], T_CI, n, g, effect, "d_z", extra)


def _fe_beta(y: np.ndarray, x: np.ndarray, strata: np.ndarray, k: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Within-strata OLS slope of y on x; returns (beta, demeaned x, residuals)."""
    counts = np.bincount(strata, minlength=k).astype(float)
    xm = np.bincount(strata, weights=x, minlength=k) / np.maximum(counts, 1)
    ym = np.bincount(strata, weights=y, minlength=k) / np.maximum(counts, 1)
    xt, yt = x - xm[strata], y - ym[strata]
    sxx = float(xt @ xt)
    beta = float(xt @ yt) / sxx if sxx > 0 else math.nan
    return beta, xt, yt - beta * xt


def two_sample(values: np.ndarray, arm: np.ndarray, clusters: Any, *, baselines: Any | None = None,
               post: np.ndarray | None = None, pairs: Any | None = None, resamples: int = 2000,
               seed: int = 0) -> Estimate:
    """Difference in mean ``values`` between ``arm`` True (A) and False (B), clustered by game.

    With ``baselines`` (the id of each agent's pre-play measurement), agents are compared within
    baseline (fixed effects): the estimate is the within-baseline difference A − B, and the shared
    baseline error cancels. Agents whose baseline occurs in one arm only carry no information about
    the difference and drop out. When no baseline occurs in both arms the plain difference of means
    is used, adding each arm's baseline error variance (from ``post``; see :func:`baseline_variance`).

    With ``pairs`` (the seed each agent's game was played on, where the design plays both arms on common
    seeds) the arms are also **paired by seed**: the strata are baseline × seed, so whatever a seed shares
    across the cells of a grid (a game-level effect, the sampled actions' random draws) cancels from the
    difference, and ``clusters`` (then the linked components of :func:`contagion.analysis.contrasts.linked_clusters`,
    which hold both arms of a seed) are not split by arm: the sandwich sums each component's scores over
    both arms, so the covariance the pairing creates is counted. Pairing applies only where the strata both
    arms share keep at least :data:`PAIRING_SHARE` of the agents the comparison by baseline alone keeps;
    otherwise the comparison is by baseline, with ``clusters`` still whole (unsplit).

    Without ``pairs`` each cluster is keyed by arm and cluster (a transcript seen in both arms — an
    intervention that never fired — is one game per arm).

    p-value: cluster-robust (CR1) t-test with G − 1 df. CI: the same test's t interval (:func:`t_interval`);
    with ``resamples`` > 0 and clusters keyed by arm a cluster bootstrap resampling whole games within each
    arm is also computed, into ``extra["boot_ci"]``. Effect size: Cohen's d (difference / pooled SD over
    agents).
    """
    y = np.asarray(values, dtype=float)
    a = np.asarray(arm, dtype=bool)
    cl = pd.Series(clusters).astype(str).to_numpy()
    base = pd.Series(baselines if baselines is not None else np.zeros(y.size)).astype(str).to_numpy()
    in_a = set(base[a])
    in_b = set(base[~a])
    shared = in_a & in_b
    paired = baselines is not None and bool(shared)
    by_seed = False
    extra_var = 0.0
    if paired:
        keep = np.isin(base, list(shared))
        if pairs is not None:
            both = np.char.add(np.char.add(base, "|"), pd.Series(pairs).astype(str).to_numpy())
            shared_s = set(both[a]) & set(both[~a])
            keep_s = np.isin(both, list(shared_s))
            if shared_s and keep_s.sum() >= PAIRING_SHARE * keep.sum():
                keep, base, by_seed = keep_s, both, True
        y, a, cl, base = y[keep], a[keep], cl[keep], base[keep]
        test = TWO_SAMPLE_SEED_TEST if by_seed else TWO_SAMPLE_TEST
    else:
        base = np.zeros(y.size).astype(str)
        if baselines is not None and post is not None:
            pb = np.asarray(baselines).astype(str)
            pp = np.asarray(post, dtype=float)
            extra_var = (baseline_variance(pp[np.asarray(arm, bool)], pb[np.asarray(arm, bool)])
                         + baseline_variance(pp[~np.asarray(arm, bool)], pb[~np.asarray(arm, bool)]))
        test = TWO_SAMPLE_UNPAIRED_TEST if extra_var else TWO_SAMPLE_TEST.split(", paired")[0]
    n = y.size
    n_a, n_b = int(a.sum()), int((~a).sum())
    split = pairs is None
    arm_cluster = np.char.add(np.where(a, "A|", "B|"), cl)
    codes, g = _codes(arm_cluster if split else cl)
    g_a = len(set(cl[a]))
    g_b = len(set(cl[~a]))
    strata, k = _codes(base)
    sd_a = float(np.std(y[a], ddof=1)) if n_a >= 2 else math.nan
    sd_b = float(np.std(y[~a], ddof=1)) if n_b >= 2 else math.nan
    pooled = math.sqrt(((n_a - 1) * sd_a**2 + (n_b - 1) * sd_b**2) / (n_a + n_b - 2)) if n_a >= 2 and n_b >= 2 \
        else math.nan
    extra: dict[str, Any] = {
        "games_a": g_a, "games_b": g_b, "agents_a": n_a, "agents_b": n_b, "paired_by_baseline": paired,
        "paired_by_seed": by_seed, "mean_a": float(y[a].mean()) if n_a else math.nan,
        "mean_b": float(y[~a].mean()) if n_b else math.nan}
    if n_a == 0 or n_b == 0:
        return Estimate(math.nan, math.nan, 0, math.nan, math.nan, math.nan, test, T_CI, n, g, math.nan, "d",
                        extra)
    beta, xt, resid = _fe_beta(y, a.astype(float), strata, k)
    sxx = float(xt @ xt)
    scores = np.bincount(codes, weights=xt * resid, minlength=g)
    # strata nested within clusters (pairing by seed inside linked components) are absorbed by the clusters and
    # do not count as parameters in the small-sample factor, as for any fixed effect nested in a cluster
    nested = k > 1 and bool(np.all(pd.Series(codes).groupby(strata).nunique().to_numpy() == 1))
    n_params = 2 if nested else 1 + k
    if g >= 2 and n > n_params and sxx > 0:
        adj = (g / (g - 1)) * ((n - 1) / (n - n_params))
        v = adj * float(np.sum(scores**2)) / sxx**2
        se = math.sqrt(v + extra_var)
    else:
        se = math.nan
    df = g - 1
    p = _t_p(beta, se, df)
    low, high = t_interval(beta, se, df)
    if resamples and split and g_a >= 2 and g_b >= 2:
        extra["boot_ci"] = _boot_two_sample(y, codes, g, strata, k, a, extra_var, resamples, seed)
    effect = beta / pooled if pooled and np.isfinite(pooled) and pooled > 0 else math.nan
    return Estimate(beta, se, df, p, low, high, test, T_CI, n, g, effect, "d", extra)


def _boot_two_sample(y: np.ndarray, codes: np.ndarray, g: int, strata: np.ndarray, k: int, a: np.ndarray,
                     extra_var: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile CI of the within-stratum difference, resampling whole games within each arm."""
    rng = np.random.default_rng(seed)
    cluster_arm = np.zeros(g, dtype=bool)
    cluster_arm[codes[a]] = True
    counts = _multiplicities([np.flatnonzero(cluster_arm), np.flatnonzero(~cluster_arm)], g, resamples, rng)
    # per (game, stratum) cell sums: a replicate's within-stratum slope needs only these
    x = cluster_arm.astype(float)[:, None]
    n_gs = np.zeros((g, k))
    y_gs = np.zeros((g, k))
    np.add.at(n_gs, (codes, strata), 1.0)
    np.add.at(y_gs, (codes, strata), y)
    sw, swy = counts @ n_gs, counts @ y_gs
    swx, swxy = counts @ (x * n_gs), counts @ (x * y_gs)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(sw > 0, sw, 1.0)
        num = np.sum(np.where(sw > 0, swxy - swx * swy / safe, 0.0), axis=1)
        den = np.sum(np.where(sw > 0, swx - swx * swx / safe, 0.0), axis=1)
        reps = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), np.nan)
    if extra_var > 0:
        reps = reps + rng.normal(0.0, math.sqrt(extra_var), size=resamples)
    return _percentile_ci(reps)


def naive_one_sample(values: np.ndarray) -> Estimate:
    """An agent-level t-test that ignores clustering — for comparison only (it is overconfident)."""
    y = np.asarray(values, dtype=float)
    res = sps.ttest_1samp(y, 0.0)
    mean = float(y.mean())
    se = float(y.std(ddof=1) / math.sqrt(y.size))
    half = float(sps.t.ppf(0.975, y.size - 1)) * se
    return Estimate(mean, se, y.size - 1, float(res.pvalue), mean - half, mean + half,
                    "one-sample t over agents (ignores games)", "t interval", y.size, y.size,
                    mean / float(y.std(ddof=1)), "d_z")


def mixed_model(values: np.ndarray, arm: np.ndarray, clusters: Any, baselines: Any | None = None
                ) -> dict[str, Any] | None:
    """Difference A − B from a linear mixed model: value ~ arm [+ baseline] + (1 | game).

    ``None`` when the model cannot be fitted (too few games, singular design); convergence warnings
    are kept in the result's ``note``.
    """
    try:
        import statsmodels.formula.api as smf
    except ImportError:  # pragma: no cover - statsmodels is a core dependency
        return None
    df = pd.DataFrame({"y": np.asarray(values, float), "arm": np.asarray(arm, bool).astype(float),
                       "game": pd.Series(clusters).astype(str).to_numpy()})
    formula = "y ~ arm"
    if baselines is not None:
        df["base"] = pd.Series(baselines).astype(str).to_numpy()
        shared = set(df.loc[df.arm == 1, "base"]) & set(df.loc[df.arm == 0, "base"])
        if shared:
            df = df[df["base"].isin(shared)]
            if df["base"].nunique() > 1:
                formula += " + C(base)"
    if df["game"].nunique() < 3 or df["arm"].nunique() < 2:
        return None
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, df, groups=df["game"]).fit(reml=True, method=["lbfgs", "powell"])
        except Exception as exc:  # singular matrices and the like: report, do not crash the report
            return {"estimate": math.nan, "p": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                    "test": MIXED_TEST, "note": f"not fitted: {type(exc).__name__}"}
        notes = sorted({type(w.message).__name__ for w in caught if "Convergence" in type(w.message).__name__})
    ci = fit.conf_int().loc["arm"]
    return {"estimate": float(fit.params["arm"]), "p": float(fit.pvalues["arm"]), "ci_low": float(ci[0]),
            "ci_high": float(ci[1]), "test": MIXED_TEST, "note": ", ".join(notes)}


INTERACTION_TEST = "within-stratum OLS interaction, cluster-robust t (CR1, games per arm as clusters, df = G−1)"


def interaction(y: np.ndarray, arm: np.ndarray, group: np.ndarray, clusters: Any, *,
                strata: Any | None = None) -> Estimate:
    """The difference of a two-arm difference between two groups: (A − B in group 1) − (A − B in group 0).

    OLS of ``y`` on ``arm`` and ``arm · group`` with an intercept per stratum (strata should nest the
    group, so its main effect is absorbed); the estimate is the coefficient of ``arm · group``. p-value: a
    cluster-robust (CR1) t-test with G − 1 df, clusters keyed by arm as :func:`two_sample` keys them; CI: the
    t interval. No p-value when either arm lacks a group or the residuals do not vary.
    """
    yv = np.asarray(y, dtype=float)
    a = np.asarray(arm, dtype=bool)
    grp = np.asarray(group, dtype=bool)
    cl = np.char.add(np.where(a, "A|", "B|"), pd.Series(clusters).astype(str).to_numpy().astype(str))
    codes, g = _codes(cl)
    st, k = _codes(strata if strata is not None else np.zeros(yv.size))
    n = yv.size
    nan = Estimate(math.nan, math.nan, 0, math.nan, math.nan, math.nan, INTERACTION_TEST,
                   "cluster-robust t interval", n, g, math.nan, "d")
    if n == 0 or not (a & grp).any() or not (a & ~grp).any() or not (~a & grp).any() or not (~a & ~grp).any():
        return nan
    x = np.column_stack([a.astype(float), (a & grp).astype(float)])

    def within(v: np.ndarray) -> np.ndarray:
        sums = np.zeros((k, *v.shape[1:]))
        np.add.at(sums, st, v)
        counts = np.bincount(st, minlength=k).astype(float)
        return v - (sums / counts.reshape((k, *(1,) * (v.ndim - 1))))[st]

    xt, yt = within(x), within(yv)
    xtx = xt.T @ xt
    if abs(float(np.linalg.det(xtx))) < 1e-12:
        return nan
    bread = np.linalg.inv(xtx)
    beta = bread @ (xt.T @ yt)
    resid = yt - xt @ beta
    gamma = float(beta[1])
    se = math.nan
    if g >= 2 and n > 2 + k:
        scores = np.zeros((g, 2))
        np.add.at(scores, codes, xt * resid[:, None])
        v = (g / (g - 1)) * ((n - 1) / (n - 2 - k)) * (bread @ (scores.T @ scores) @ bread)
        se = math.sqrt(float(v[1, 1])) if v[1, 1] > 0 else math.nan
    df = g - 1
    p = _t_p(gamma, se, df)
    half = float(sps.t.ppf(0.5 + CI_LEVEL / 2, df)) * se if df >= 1 and np.isfinite(se) else math.nan
    return Estimate(gamma, se, df, p, gamma - half, gamma + half, INTERACTION_TEST, "cluster-robust t interval",
                    n, g, math.nan, "d")
