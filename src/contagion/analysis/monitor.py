"""The white-box monitor's numbers: projection drift per round beside the black-box drift, and how well the one
tracks the other across agents.

A monitored run (``monitor:`` in the config) records, for every turn of every agent under study, the residual
stream of its prompt's last token projected on each trait's direction (:attr:`RunTables.monitor`). Here:

* :func:`projection_drift_by_round` — per trait, condition and round, the agents' mean projection *change since
  round 1* (each agent's readings of a round averaged, minus its round-1 average), with the cluster-robust t
  interval of :func:`contagion.analysis.estimators.one_sample` (linked games as clusters, the same clustering as
  every row of the report);
* :func:`black_box_drift` — per trait and condition, the agents' mean questionnaire drift (the run's primary
  estimand, post − sham, or post − pre without sham profiles) with the same interval;
* :func:`monitor_correlations` — per trait, across agents, Pearson's r between the projection drift (last
  round − round 1) and the black-box drift of that trait, with the Fisher-z interval (which treats agents as
  independent: optimistic) and a cluster-bootstrap interval (whole clusters resampled: the one to quote).

A direction's sign is the vectors file's: + is toward the statements *high* in the trait. For a pro-social
trait a falling projection is toward anti-social; for an anti-social trait a rising one is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contagion.analysis.attention import correlations
from contagion.analysis.estimators import one_sample
from contagion.analysis.tables import RunTables

BOOT_RESAMPLES = 2000
"""Cluster-bootstrap resamples of the correlation interval."""


def agent_rounds(tables: RunTables) -> pd.DataFrame:
    """Per focal agent, trait and round: the mean of its readings that round (``value``) and the change since
    its first round (``change``). Columns: condition columns, ``player``, ``trait``, ``round``, ``value``,
    ``change``. Empty when the run was not monitored."""
    df = tables.monitor
    if df is None or df.empty:
        return pd.DataFrame()
    df = df[df["focal"].astype(bool)]
    keys = ["game_id", "cluster", "model", "composition", "intervention", "player", "trait"]
    per_round = df.groupby([*keys, "round"], observed=True)["value"].mean().reset_index()
    first = per_round.sort_values("round").groupby(keys, observed=True)["value"].transform("first")
    return per_round.assign(change=per_round["value"] - first)


def projection_drift_by_round(tables: RunTables, by: tuple[str, ...] = ("composition", "intervention")
                              ) -> pd.DataFrame:
    """Per trait, ``by`` condition and round: mean projection change since round 1 across agents, with the
    cluster-robust t interval. Columns: ``trait``, the ``by`` columns, ``round``, ``estimate``, ``ci_low``,
    ``ci_high``, ``agents``, ``clusters``."""
    rows = agent_rounds(tables)
    out = []
    if rows.empty:
        return pd.DataFrame(columns=["trait", *by, "round", "estimate", "ci_low", "ci_high", "agents", "clusters"])
    for key, sub in rows.groupby(["trait", *by, "round"], observed=True, sort=True):
        est = one_sample(sub["change"].to_numpy(float), sub["cluster"].astype(str).to_numpy(), resamples=0)
        first_round = int(key[-1]) == int(rows["round"].min())
        out.append((*key, est.estimate, 0.0 if first_round else est.ci_low, 0.0 if first_round else est.ci_high,
                    len(sub), est.n_games))
    return pd.DataFrame(out, columns=["trait", *by, "round", "estimate", "ci_low", "ci_high", "agents", "clusters"])


def black_box_drift(tables: RunTables, traits: list[str],
                    by: tuple[str, ...] = ("composition", "intervention")) -> pd.DataFrame:
    """Per trait and ``by`` condition: the agents' mean questionnaire drift (the run's primary estimand) with
    the cluster-robust t interval. Columns: ``trait``, the ``by`` columns, ``estimate``, ``ci_low``,
    ``ci_high``, ``agents``."""
    d = tables.drift
    cols = ["trait", *by, "estimate", "ci_low", "ci_high", "agents"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d[d["trait"].isin(traits)]
    out = []
    for key, sub in d.groupby(["trait", *by], observed=True, sort=True):
        est = one_sample(sub["drift"].to_numpy(float), sub["cluster"].astype(str).to_numpy(), resamples=0)
        out.append((*key, est.estimate, est.ci_low, est.ci_high, len(sub)))
    return pd.DataFrame(out, columns=cols)


@dataclass(frozen=True)
class MonitorCorrelation:
    """Across agents: the monitor's projection drift against the questionnaire's drift of one trait."""

    trait: str
    r: float
    fisher_low: float
    fisher_high: float
    boot_low: float
    boot_high: float
    p: float
    agents: int
    clusters: int


def agent_drifts(tables: RunTables) -> pd.DataFrame:
    """Per focal agent and trait: ``projection`` (last round − round 1 of its mean reading) beside
    ``drift`` (its questionnaire drift of that trait), with its ``cluster``. Only agents with both."""
    rows = agent_rounds(tables)
    if rows.empty or tables.drift.empty:
        return pd.DataFrame()
    last = rows.sort_values("round").groupby(["game_id", "player", "trait"], observed=True).last().reset_index()
    proj = last[["game_id", "cluster", "player", "trait", "change"]].rename(columns={"change": "projection"})
    drift = tables.drift[["game_id", "player", "trait", "drift"]]
    merged = proj.astype({"game_id": str, "player": str}).merge(
        drift.astype({"game_id": str, "player": str}), on=["game_id", "player", "trait"], how="inner")
    return merged.dropna(subset=["projection", "drift"]).reset_index(drop=True)


def monitor_correlations(tables: RunTables, *, resamples: int = BOOT_RESAMPLES, seed: int = 0
                         ) -> list[MonitorCorrelation]:
    """Per monitored trait that was also measured: Pearson's r across agents of projection drift and
    questionnaire drift, with the Fisher-z 95 % interval (agents as independent) and a percentile 95 %
    interval from resampling whole clusters (linked games) ``resamples`` times. NaN where fewer than 4
    agents or either drift is constant."""
    df = agent_drifts(tables)
    out: list[MonitorCorrelation] = []
    if df.empty:
        return out
    rng = np.random.default_rng(seed)
    for trait, sub in df.groupby("trait", observed=True, sort=True):
        x, y = sub["projection"].to_numpy(float), sub["drift"].to_numpy(float)
        pearson = correlations(x, y)[0]
        codes, uniques = pd.factorize(sub["cluster"].astype(str))
        g = len(uniques)
        low = high = math.nan
        if math.isfinite(pearson.r) and g >= 3 and resamples > 0:
            members = [np.flatnonzero(codes == c) for c in range(g)]
            reps = []
            for _ in range(resamples):
                take = np.concatenate([members[c] for c in rng.integers(0, g, size=g)])
                bx, by_ = x[take], y[take]
                if np.ptp(bx) > 0 and np.ptp(by_) > 0:
                    reps.append(float(np.corrcoef(bx, by_)[0, 1]))
            if len(reps) >= resamples // 2:
                low, high = (float(v) for v in np.percentile(reps, [2.5, 97.5]))
        out.append(MonitorCorrelation(str(trait), pearson.r, pearson.ci_low, pearson.ci_high, low, high,
                                      pearson.p, pearson.n, g))
    return out
