"""Power planning: how many games per cell each primary contrast needs, before a paper-scale run.

The planner mirrors the structure of the primary family (:data:`contagion.analysis.contrasts.PRIMARY_FAMILY`):
per model, the pro-social index drift of default agents, games as clusters, in

* **contagion** — the primary drift (post − sham; post − pre in a run without the sham) per composition (games
  without an intervention): a one-sample test;
* **amplification** / **reciprocity** — malicious LM − all-default / − scripted always-defect;
* **chat** — chat − no chat, pooled over compositions;
* **mitigation** — every intervention − none, SIT − repetition, SIT − placebo (pooled over compositions);

the two-condition ones being two-sample tests within strata (game type × the other design factors).
The behaviour slope has another scale; it is not planned, but counted in the family as a null test.

The arithmetic (normal approximation with the t test's degrees of freedom):

* ``σ²`` of an arm is the **between-game variance of the per-game mean drift** (default agents'
  pro-social index averaged within a game), taken within strata for two-sample arms, from the pilot
  (:func:`game_means`), or a stated default (:data:`DEFAULT_GAME_SD`) when planning from a config;
* with ``n`` games per cell and an arm of ``k`` cells, were games independent, a two-sample contrast would
  have ``SE² = σ²_a/(n·k_a) + σ²_b/(n·k_b)`` and a one-sample (post − pre) contrast
  ``SE² = σ²/(n·k) + σ²_base``, where ``σ²_base`` is the error of the shared baseline measurement
  (:func:`contagion.analysis.contrasts.item_baseline_variance`), which more games never remove;
* but a grid plays every cell on the same ``n`` seeds, and the analysis clusters on games a seed links and
  pairs two-arm rows by seed: so the games part of ``SE² · n`` is the variance across seeds of the seed's arm
  mean (one-sample) or of its paired difference A − B (two-sample), measured in the pilot
  (:func:`seed_variance`, ``Member.var_seed``), and the test has ``n − 1`` df. Games of one seed that move
  together (a game-level effect shared across cells, the sampled actions' common draws) raise a one-sample
  arm's variance above ``σ²/k``; pairing removes from a two-sample one what both arms share. The ratio is the
  row's ``design_effect``. From a config (no pilot) that correlation is unknown and taken as nil;
* without correction the closed form is ``n = (z₁₋α/₂ + z_power)² · SE²·n / δ²`` (:func:`normal_games`);
* the family is Holm-corrected, so the power of one test depends on the others: :func:`plan` draws
  each member's statistic as ``N(δ/SE(n), 1)`` (independent; every planned member has effect ``δ``,
  unplanned members none), applies Holm at ``α`` with p-values from t with ``G − 1`` df (``G``: the seeds,
  or every game for a pilot without seeds), and reports the smallest ``n`` at which the member is rejected in
  the right direction with probability ≥ power.

This module only reads records (tables); it plays nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from contagion.analysis.contrasts import item_baseline_variance
from contagion.analysis.tables import (
    ALL_DEFAULT,
    MALICIOUS_LM,
    PROSOCIAL,
    SCRIPTED_DEFECTOR,
    SHAM_ESTIMAND,
    RunTables,
)

DEFAULT_GAME_SD = 0.10
"""The between-game SD of the per-game mean pro-social index drift assumed when planning from a config
(no pilot): a stated guess, not a measurement — run a pilot to replace it."""
DEFAULT_BASELINE_SD = 0.0
"""The baseline measurement error SD assumed for post − pre without a pilot (none: an optimistic guess)."""
POWER = 0.8
ALPHA = 0.05
MAX_GAMES = 100_000
"""Games per cell beyond which a contrast is reported as out of reach."""
CELL_COLUMNS = ("model", "game", "composition", "composition_kind", "intervention", "intervention_kind",
                "chat_turns")
CORRECTIONS = ("holm", "bonferroni", "none")


@dataclass
class Member:
    """One planned comparison of the primary family: its cells and variance components."""

    contrast: str
    comparison: str
    model: str
    cells_a: int
    cells_b: int = 0
    """0 for a one-sample (post − pre) contrast."""
    var_a: float = math.nan
    var_b: float = math.nan
    baseline_var: float = 0.0
    pilot_games: float = math.nan
    """Mean distinct games per cell in the pilot (NaN without one)."""
    pilot_estimate: float = math.nan
    var_seed: float = math.nan
    """The games part of ``SE² · n`` when the cells are played on common seeds (a grid plays every cell on seeds
    ``seed .. seed + n − 1``): the variance across seeds of the seed's arm mean (one-sample) or of its paired
    difference A − B (two-sample). It holds whatever games of one seed share (a game-level effect, the sampled
    actions' random draws): positively correlated games of one arm add variance, pairing removes the part both
    arms share. NaN: the games are treated as independent (the per-cell variances above)."""

    @property
    def two_sample(self) -> bool:
        return self.cells_b > 0

    @property
    def linked(self) -> bool:
        """Whether games of one seed form one cluster (the test's clusters are the seeds)."""
        return bool(np.isfinite(self.var_seed))

    @property
    def independent_var(self) -> float:
        """``SE² · n`` from games, were every game independent: ``σ²_a/k_a (+ σ²_b/k_b)``."""
        return self.var_a / self.cells_a + (self.var_b / self.cells_b if self.two_sample else 0.0)

    @property
    def games_var(self) -> float:
        """``SE² · n`` from games: the seed-linked variance where the cells share seeds, else the independent one."""
        return self.var_seed if self.linked else self.independent_var

    @property
    def design_effect(self) -> float:
        """How much linking games by seed changes the games part of the variance (1: as if independent; > 1:
        games of a seed move together; < 1: pairing by seed removes what the arms share)."""
        ind = self.independent_var
        return self.var_seed / ind if self.linked and ind > 0 else math.nan

    def se2(self, n: np.ndarray | float) -> Any:
        """Squared standard error of the estimate with ``n`` games per cell."""
        return self.games_var / n + (0.0 if self.two_sample else self.baseline_var)

    def games(self, n: np.ndarray | float) -> Any:
        """Clusters the test sees with ``n`` games per cell: the ``n`` seeds where the cells share them (the
        analysis clusters on games linked by a seed), else every game."""
        return n if self.linked else n * (self.cells_a + self.cells_b)


@dataclass
class PowerPlan:
    """The planner's answer: one row per planned comparison, and how it was reached."""

    rows: pd.DataFrame
    effect: float
    power: float
    alpha: float
    correction: str
    source: str
    """``pilot`` or ``default variance``."""
    notes: list[str] = field(default_factory=list)


# -- the family's structure ------------------------------------------------------------------------------


def _baseline_filter(cells: pd.DataFrame) -> pd.DataFrame:
    none = cells["intervention_kind"].astype(str) == "none"
    return cells[none] if none.any() else cells


def family_structure(cells: pd.DataFrame, estimand: str = SHAM_ESTIMAND) -> list[
        tuple[str, str, str, pd.DataFrame, pd.DataFrame | None, tuple[str, ...]]]:
    """The primary comparisons a grid with these cells (one row per cell, :data:`CELL_COLUMNS`) holds:
    ``(contrast, comparison, model, cells of arm A, cells of arm B or None, strata columns)``, built as
    :mod:`contagion.analysis.contrasts` builds them (same arms, same baseline filter, same strata); a contagion
    row is named by the run's primary drift, ``estimand`` (post − sham, or post − pre where a run has no sham)."""
    out: list[tuple[str, str, str, pd.DataFrame, pd.DataFrame | None, tuple[str, ...]]] = []
    cells = cells.astype({c: str for c in CELL_COLUMNS if c != "chat_turns"}).astype({"chat_turns": int})
    base = _baseline_filter(cells)
    for model in pd.unique(cells["model"]):
        bm = base[base["model"] == model]
        cm = cells[cells["model"] == model]
        for comp in sorted(pd.unique(bm["composition"])):
            out.append(("contagion", f"{estimand} · {comp}", model, bm[bm["composition"] == comp], None, ()))
        for name, kind_b in (("amplification", ALL_DEFAULT), ("reciprocity", SCRIPTED_DEFECTOR)):
            a, b = bm[bm["composition_kind"] == MALICIOUS_LM], bm[bm["composition_kind"] == kind_b]
            if len(a) and len(b):
                label = f"{', '.join(sorted(set(a.composition)))} − {', '.join(sorted(set(b.composition)))}"
                out.append((name, label, model, a, b, ("game", "chat_turns", "intervention")))
        a, b = bm[bm["chat_turns"] > 0], bm[bm["chat_turns"] == 0]
        if len(a) and len(b):
            out.append(("chat", "chat − no chat (all compositions)", model, a, b,
                        ("game", "composition", "intervention")))
        kinds = cm.groupby("intervention")["intervention_kind"].first().to_dict()
        none = [lbl for lbl, k in kinds.items() if k == "none"]
        repeat = sorted(lbl for lbl, k in kinds.items() if k == "repeat-system")
        sit = sorted(lbl for lbl, k in kinds.items() if k.startswith("sit"))
        placebo = sorted(lbl for lbl, k in kinds.items() if k == "placebo")
        pairs = [(x, b_) for b_ in none for x in (*repeat, *placebo, *sit)]
        pairs += [(s, r) for s in sit for r in repeat] + [(s, p) for s in sit for p in placebo]
        for x, y in pairs:
            out.append(("mitigation", f"{x} − {y}", model, cm[cm["intervention"] == x], cm[cm["intervention"] == y],
                        ("game", "composition", "chat_turns")))
    return out


# -- the pilot's variance --------------------------------------------------------------------------------


def game_means(tables: RunTables) -> pd.DataFrame:
    """One row per distinct game (cluster) with measured default agents: its cell, baseline key, seed (where the
    records name one) and the mean pro-social index drift of its default agents (``drift``)."""
    df = tables.default_agents
    if df.empty:
        return pd.DataFrame(columns=[*CELL_COLUMNS, "cluster", "pre_key", "drift"])
    df = df[df["trait"].astype(str) == PROSOCIAL]
    keys = [*CELL_COLUMNS, "cluster"]
    more = {"seed": ("seed", "first")} if "seed" in df.columns else {}
    out = df.groupby(keys, observed=True, as_index=False).agg(pre_key=("pre_key", "first"), drift=("drift", "mean"),
                                                              **more)
    return out.astype({c: str for c in CELL_COLUMNS if c != "chat_turns"}).astype({"chat_turns": int})


def _in_cells(means: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    return means.merge(cells[list(CELL_COLUMNS)].drop_duplicates(), on=list(CELL_COLUMNS))


def within_strata_variance(values: np.ndarray, strata: np.ndarray) -> float:
    """Pooled variance of ``values`` around their stratum means (df = N − number of strata); NaN if no df."""
    s = pd.Series(values)
    resid = s - s.groupby(strata).transform("mean")
    dof = len(s) - len(set(strata))
    return float((resid ** 2).sum() / dof) if dof > 0 else math.nan


def seed_variance(a: pd.DataFrame, b: pd.DataFrame | None = None) -> float:
    """The variance across seeds of the seed's mean drift in arm ``a`` (one-sample), or of the seed's paired
    difference, mean in ``a`` − mean in ``b``, over the seeds both arms played (two-sample): the games part of
    ``SE² · n`` when every cell is played on the same ``n`` seeds, whatever games of one seed share included.
    NaN without a ``seed`` column or with fewer than 2 seeds."""
    if "seed" not in a.columns or (b is not None and "seed" not in b.columns):
        return math.nan
    per_seed = a.groupby(a["seed"].astype(str))["drift"].mean()
    if b is not None:
        per_seed = (per_seed - b.groupby(b["seed"].astype(str))["drift"].mean()).dropna()
    return float(np.var(per_seed, ddof=1)) if len(per_seed) >= 2 else math.nan


def members_from_pilot(tables: RunTables) -> list[Member]:
    """The primary comparisons of the pilot, each with its pilot variances."""
    means = game_means(tables)
    if means.empty:
        return []
    cells = means[list(CELL_COLUMNS)].drop_duplicates()
    agents = tables.default_agents
    polarity = {str(t): str(p) for t, p in agents.groupby("trait", observed=True)["polarity"].first().items()}
    out = []
    for contrast, comparison, model, a, b, strata in family_structure(cells, tables.info.estimand):
        ma = _in_cells(means, a)
        per_cell = ma.groupby(list(CELL_COLUMNS), observed=True).size()
        if b is None:
            sub = agents[agents["trait"].astype(str) == PROSOCIAL].astype(
                {c: str for c in CELL_COLUMNS if c != "chat_turns"}).astype({"chat_turns": int})
            sub = _in_cells(sub, a)
            base = item_baseline_variance(sub, tables.item_drift, PROSOCIAL, polarity)
            var = float(np.var(ma["drift"], ddof=1)) if len(ma) >= 2 else math.nan
            out.append(Member(contrast, comparison, model, len(per_cell), 0, var, math.nan,
                              base if np.isfinite(base) else 0.0, float(per_cell.mean()), float(ma["drift"].mean()),
                              seed_variance(ma)))
            continue
        mb = _in_cells(means, b)
        per_cell_b = mb.groupby(list(CELL_COLUMNS), observed=True).size()

        def stratum(m: pd.DataFrame, cols: tuple[str, ...] = strata) -> np.ndarray:
            return m[["pre_key", *cols]].astype(str).agg("|".join, axis=1).to_numpy()

        var_a = within_strata_variance(ma["drift"].to_numpy(), stratum(ma)) if len(ma) else math.nan
        var_b = within_strata_variance(mb["drift"].to_numpy(), stratum(mb)) if len(mb) else math.nan
        games = float(pd.concat([per_cell, per_cell_b]).mean()) if len(per_cell) + len(per_cell_b) else math.nan
        out.append(Member(contrast, comparison, model, len(per_cell), len(per_cell_b), var_a, var_b, 0.0, games,
                          float(ma["drift"].mean() - mb["drift"].mean()) if len(ma) and len(mb) else math.nan,
                          seed_variance(ma, mb) if len(ma) and len(mb) else math.nan))
    return out


def members_from_cells(cells: pd.DataFrame, sd: float = DEFAULT_GAME_SD,
                       baseline_sd: float = DEFAULT_BASELINE_SD) -> list[Member]:
    """The primary comparisons of a grid (one row per cell) with the stated default variances. A config's grid
    plays every cell on the same seeds, so the test's clusters are the seeds (its df: seeds − 1); how strongly
    games of one seed move together is not known without a pilot and is taken as nil (``var_seed`` = the
    independent games' variance)."""
    out = []
    for contrast, comparison, model, a, b, _ in family_structure(cells):
        m = Member(contrast, comparison, model, len(a), 0 if b is None else len(b), sd ** 2,
                   sd ** 2 if b is not None else math.nan, baseline_sd ** 2 if b is None else 0.0)
        m.var_seed = m.independent_var
        out.append(m)
    return out


def unplanned_members(tables: RunTables | None, cells: pd.DataFrame, rounds: int | None = None) -> dict[str, int]:
    """Per model, the family members not planned here, if the run has them: the behaviour slope of default
    agents, and the defection rate next to a malicious LM − next to a scripted always-defect player."""
    models = [str(m) for m in pd.unique(cells["model"].astype(str))]
    if tables is not None:
        acts = tables.actions
        has = (not acts.empty and int(acts["round"].max()) >= 2
               and (acts["persona"].astype(str) == "default").any())
        kinds = set(acts["composition_kind"].astype(str)) if not acts.empty else set()
    else:
        has = (rounds or 0) >= 2 and (cells["composition_kind"].astype(str).isin([ALL_DEFAULT, MALICIOUS_LM]).any())
        kinds = set(cells["composition_kind"].astype(str))
    rates = has and {MALICIOUS_LM, SCRIPTED_DEFECTOR} <= kinds
    return {m: int(has) + int(rates) for m in models}


# -- the arithmetic --------------------------------------------------------------------------------------


def normal_games(var_per_cell: float, effect: float, alpha: float = ALPHA, power: float = POWER,
                 fixed_var: float = 0.0) -> float:
    """Closed-form normal-approximation games per cell: smallest ``n`` with
    ``(z₁₋α/₂ + z_power)² · (var_per_cell/n + fixed_var) ≤ effect²`` (inf when ``fixed_var`` alone is too big).

    ``var_per_cell`` is ``Σ_arms σ²_arm / k_arm`` (so ``var_per_cell / n`` is the SE² from games)."""
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    room = effect ** 2 / z ** 2 - fixed_var
    if room <= 0:
        return math.inf
    return var_per_cell / room


def _holm_reject(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm step-down rejections for each row of ``p`` (draws × tests)."""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    sorted_p = np.take_along_axis(p, order, axis=1)
    ok = sorted_p <= alpha / (m - np.arange(m))
    passed = np.cumprod(ok, axis=1).astype(bool)
    out = np.zeros_like(passed)
    np.put_along_axis(out, order, passed, axis=1)
    return out


def member_power(members: list[Member], n: float, effect: float | list[float], alpha: float = ALPHA,
                 correction: str = "holm", extra_null: int = 0, draws: int = 4000, seed: int = 0) -> np.ndarray:
    """Power of each member with ``n`` games per cell (Monte Carlo over the family's correction; common random
    numbers, so power is monotone in ``n``); ``effect`` is one effect for all members or one per member."""
    rng = np.random.default_rng(seed)
    m = len(members) + extra_null
    noise = rng.standard_normal((draws, m))
    effects = [effect] * len(members) if isinstance(effect, float | int) else list(effect)
    ncp = np.array([e / math.sqrt(x.se2(n)) for e, x in zip(effects, members, strict=True)] + [0.0] * extra_null)
    dof = np.array([max(x.games(n) - 1, 1) for x in members] + [max(members[0].games(n) - 1, 1)] * extra_null
                   if members else [])
    z = ncp + noise
    p = 2 * sps.t.sf(np.abs(z), dof)
    if correction == "holm":
        reject = _holm_reject(p, alpha)
    elif correction == "bonferroni":
        reject = p <= alpha / m
    else:
        reject = p <= alpha
    return np.asarray((reject & (z > 0))[:, : len(members)].mean(axis=0))


def games_needed(members: list[Member], effect: float | list[float], *, power: float = POWER, alpha: float = ALPHA,
                 correction: str = "holm", extra_null: int = 0, draws: int = 4000, seed: int = 0) -> list[float]:
    """For each member, the smallest games per cell (integer ≥ 2) with power ≥ ``power``; inf if out of reach."""
    cache: dict[int, np.ndarray] = {}

    def pw_all(n: int) -> np.ndarray:
        if n not in cache:
            cache[n] = member_power(members, n, effect, alpha, correction, extra_null, draws, seed)
        return cache[n]

    out: list[float] = []
    for j, x in enumerate(members):
        if not (np.isfinite(x.var_a) and (not x.two_sample or np.isfinite(x.var_b))):
            out.append(math.nan)
            continue
        if pw_all(MAX_GAMES)[j] < power:
            out.append(math.inf)
            continue
        lo, hi = 1, 2
        while pw_all(hi)[j] < power:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if pw_all(mid)[j] < power else (lo, mid)
        out.append(float(max(hi, 2)))
    return out


def plan(members: list[Member], effect: float, *, power: float = POWER, alpha: float = ALPHA,
         correction: str = "holm", extra_null: dict[str, int] | None = None, source: str = "pilot",
         draws: int = 4000, seed: int = 0, effects: dict[str, float] | None = None) -> PowerPlan:
    """Games per cell for each member (per model's family), with the closed-form uncorrected figure beside it.

    ``effects`` overrides the effect of single comparisons (by comparison label), e.g. known planted effects."""
    effects = effects or {}
    if not effect > 0 or any(not abs(e) > 0 for e in effects.values()):
        raise ValueError("the effect must be positive")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
    extra_null = extra_null or {}
    rows: list[dict[str, Any]] = []
    for model in dict.fromkeys(x.model for x in members):
        mine = [x for x in members if x.model == model]
        eff = [abs(effects.get(x.comparison, effect)) for x in mine]
        needed = games_needed(mine, eff, power=power, alpha=alpha, correction=correction,
                              extra_null=extra_null.get(model, 0), draws=draws, seed=seed)
        for x, n, e in zip(mine, needed, eff, strict=True):
            per_cell = x.games_var
            rows.append({
                "contrast": x.contrast, "comparison": x.comparison, "model": x.model,
                "test": "two-sample" if x.two_sample else "post − pre", "cells": x.cells_a + x.cells_b,
                "sd_a": math.sqrt(x.var_a) if np.isfinite(x.var_a) else math.nan,
                "sd_b": math.sqrt(x.var_b) if np.isfinite(x.var_b) else math.nan,
                "baseline_sd": math.sqrt(x.baseline_var), "pilot_games_per_cell": x.pilot_games,
                "pilot_estimate": x.pilot_estimate, "effect": e, "design_effect": x.design_effect,
                "games_uncorrected": math.ceil(normal_games(per_cell, e, alpha, power, x.baseline_var))
                if np.isfinite(per_cell) and np.isfinite(normal_games(per_cell, e, alpha, power, x.baseline_var))
                else (math.inf if np.isfinite(per_cell) else math.nan),
                "games_per_cell": n,
                "total_games": n * (x.cells_a + x.cells_b) if np.isfinite(n) else n,
            })
    notes = [f"{k}: {v} behaviour test(s) (slope, defection rate) counted in the family as null (not planned)"
             for k, v in extra_null.items() if v]
    return PowerPlan(pd.DataFrame(rows), effect, power, alpha, correction, source, notes)


def achieved_power(row: Any, effect: float, alpha: float = ALPHA) -> float:
    """The power a report row's own test had to detect ``effect``: the two-sided t-test with the row's standard
    error and degrees of freedom (``se``, ``df``: G − 1 for G independent clusters — games linked by a seed or a
    transcript count once), ``P(|T| > t_crit)`` for ``T`` noncentral t with noncentrality ``effect / se``.

    What a card states as the power its own data achieved (the data decide it, not a planning assumption). NaN
    when the row has no test (too few clusters, no variation)."""
    def get(key: str) -> float:
        try:
            value = row.get(key) if hasattr(row, "get") else row[key]
            return math.nan if value is None else float(value)
        except (KeyError, TypeError, ValueError):
            return math.nan

    return t_test_power(effect, get("se"), get("df"), alpha)


def t_test_power(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test with standard error ``se`` and ``df`` degrees of freedom to detect
    ``effect``: ``P(|T| > t_crit)`` for ``T`` noncentral t with noncentrality ``effect / se``. NaN without a
    test (``se`` not positive and finite, ``df`` < 1)."""
    if not (math.isfinite(se) and se > 0 and math.isfinite(df) and df >= 1):
        return math.nan
    crit = float(sps.t.isf(alpha / 2, df))
    ncp = abs(effect) / se
    return float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))
