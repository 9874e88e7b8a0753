"""Power of a headline contrast: achieved (from a run's standard error) and planned (games needed).

A headline's test is a cluster-robust t-test with ``G − 1`` degrees of freedom (games are clusters).
Its standard error is recovered exactly from the reported estimate and two-sided p-value
(``|estimate| / se = t⁻¹(1 − p/2; df)``), so the power comes from the very test the report ran, with
no second estimator. Power at effect ``δ``: ``P(|T| > t_crit)`` for ``T`` noncentral t with
noncentrality ``δ / se``.
"""

from __future__ import annotations

import math

from scipy import stats

from contagion.analysis.power import t_test_power


def standard_error(estimate: float, p: float, df: int, ci: tuple[float, float] | None = None) -> float:
    """The t-test's standard error from its estimate and two-sided p-value; where that cannot be inverted
    accurately (p near 0 or 1, a zero estimate) the 95 % interval's half-width over ``t(0.975; df)``.
    NaN when neither is available."""
    if df < 1:
        return math.nan
    if math.isfinite(estimate) and math.isfinite(p) and estimate != 0 and 1e-12 < p < 0.9:
        t = float(stats.t.isf(p / 2, df))
        if t > 0:
            return abs(estimate) / t
    if ci is not None and all(math.isfinite(x) for x in ci) and ci[1] > ci[0]:
        return (ci[1] - ci[0]) / (2 * float(stats.t.isf(0.025, df)))
    return math.nan


def power(effect: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test (``df``) to detect ``effect`` given standard error ``se`` (the analysis's
    own :func:`contagion.analysis.power.t_test_power`)."""
    return t_test_power(effect, se, df, alpha)


def games_needed(effect: float, se: float, games: int, *, alpha: float = 0.05, target: float = 0.8,
                 limit: int = 100_000) -> int | None:
    """Games per arm for ``target`` power at ``effect``, from a pilot whose standard error was ``se`` with
    ``games`` games per arm (the standard error falls as ``1/√games``). None when the pilot says nothing."""
    if games < 1 or not math.isfinite(se) or se <= 0:
        return None
    unit = se * math.sqrt(games)
    n = 2
    while n <= limit:
        if power(effect, unit / math.sqrt(n), 2 * n - 1, alpha) >= target:
            return n
        n += 1 if n < 50 else max(1, n // 20)
    return None


def scale_for_power(effect: float, se: float, df: float, scale: int, *, alpha: float = 0.05, target: float = 0.8,
                    limit: int = 64) -> int | None:
    """The smallest benchmark scale (a multiple of the protocol's games per cell) at which a test that had
    standard error ``se`` and ``df`` degrees of freedom at ``scale`` reaches ``target`` power at ``effect``:
    the standard error falls as ``1/√scale`` and the clusters (seeds) grow with it. ``scale`` itself when the
    test is powered already; None beyond ``limit`` or without a usable standard error."""
    if not (math.isfinite(se) and se > 0 and math.isfinite(df) and df >= 1 and scale >= 1):
        return None
    for k in range(scale, limit + 1):
        if power(effect, se * math.sqrt(scale / k), (df + 1) * k / scale - 1, alpha) >= target:
            return k
    return None


def under_powered(card: dict, *, limit: int = 64) -> list[tuple[str, float, int | None]]:
    """The card's primary headlines under the protocol's target power: (title, power, scale needed or None)."""
    proto = card["protocol"]
    scale = int(proto.get("scale", 1))
    out = []
    for h in card["headlines"]:
        pw = h.get("power")
        if not (h.get("primary") and h.get("available") and isinstance(pw, float) and math.isfinite(pw)):
            continue
        if pw >= proto["target_power"]:
            continue
        se, df = h.get("se"), h.get("df")
        needed = None
        if isinstance(se, (int, float)) and isinstance(df, (int, float)):
            needed = scale_for_power(float(h["power_effect"]), float(se), float(df), scale, alpha=proto["alpha"],
                                     target=proto["target_power"], limit=limit)
        out.append((str(h["title"]), float(pw), needed))
    return out
