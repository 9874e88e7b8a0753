"""The white-box monitor's analysis on tables with a planted truth: projection change per round (round 1 is the
reference), the questionnaire drift beside it, the correlation across agents with an interval that resamples
whole clusters, and the report figure. Readings from a real model are tests/whitebox/test_vectors.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contagion.analysis.monitor import (
    agent_drifts,
    black_box_drift,
    monitor_correlations,
    projection_drift_by_round,
)
from contagion.analysis.report_figures import monitor_figure
from contagion.analysis.tables import RunInfo, RunTables

CLUSTERS, AGENTS, ROUNDS = 12, 3, 4


def planted(slope: float, seed: int = 0) -> RunTables:
    """Agents whose projection falls by ``slope`` × their questionnaire drift over the game, plus noise; the
    drift shares a cluster effect (agents of one cluster move together)."""
    rng = np.random.default_rng(seed)
    mon, drift = [], []
    for c in range(CLUSTERS):
        shared = rng.normal(0, 0.05)
        for a in range(AGENTS):
            d = shared + rng.normal(-0.03, 0.03)
            start = rng.normal(2.0, 0.5)  # agents start at different projections: change removes it
            base = {"game_id": f"g{c}", "cluster": f"c{c}", "model": "m", "composition": "one-malicious",
                    "intervention": "none", "player": f"P{a}", "persona": "default"}
            for r in range(1, ROUNDS + 1):
                value = start + slope * d * (r - 1) / (ROUNDS - 1) + rng.normal(0, 0.002)
                for phase in ("talk", "act"):
                    mon.append({**base, "focal": True, "round": r, "phase": phase, "turn": 0,
                                "trait": "cooperativeness", "value": value})
            mon.append({**base, "player": "X", "focal": False, "round": 1, "phase": "act", "turn": 0,
                        "trait": "cooperativeness", "value": 99.0})  # a co-player: never in the agents' numbers
            drift.append({**base, "trait": "cooperativeness", "drift": d})
            drift.append({**base, "trait": "machiavellianism", "drift": -d})
    empty = pd.DataFrame()
    return RunTables(drift=pd.DataFrame(drift), actions=empty, players=empty, games=empty, info=RunInfo(),
                     monitor=pd.DataFrame(mon))


def test_the_projection_change_starts_at_zero_and_follows_the_planted_drift() -> None:
    tables = planted(slope=10.0)
    rounds = projection_drift_by_round(tables)
    assert list(rounds["round"]) == [1, 2, 3, 4]
    first = rounds.iloc[0]
    assert first["estimate"] == 0 and first["ci_low"] == first["ci_high"] == 0
    mean_drift = tables.drift[tables.drift["trait"] == "cooperativeness"]["drift"].mean()
    last = rounds.iloc[-1]
    assert last["estimate"] == pytest.approx(10.0 * mean_drift, abs=0.01)
    assert last["ci_low"] < last["estimate"] < last["ci_high"]
    assert last["agents"] == CLUSTERS * AGENTS and last["clusters"] == CLUSTERS
    box = black_box_drift(tables, ["cooperativeness"])
    assert box["estimate"].iloc[0] == pytest.approx(mean_drift) and box["agents"].iloc[0] == CLUSTERS * AGENTS


def test_the_correlation_finds_a_planted_link_and_not_a_missing_one() -> None:
    (linked,) = monitor_correlations(planted(slope=10.0))
    assert linked.trait == "cooperativeness" and linked.agents == CLUSTERS * AGENTS and linked.clusters == CLUSTERS
    assert linked.r > 0.9 and linked.boot_low > 0.5 and linked.fisher_low > 0.5
    assert linked.boot_low <= linked.r <= linked.boot_high
    # no link (the projection is noise around its start): over 40 runs the cluster interval covers r = 0 in
    # most (a percentile bootstrap of 12 clusters runs a little short of 95 %) and r scatters around 0
    nulls = [monitor_correlations(planted(slope=0.0, seed=s), resamples=400, seed=s)[0] for s in range(40)]
    covered = sum(c.boot_low < 0 < c.boot_high for c in nulls)
    assert covered >= 34, [(round(c.boot_low, 2), round(c.boot_high, 2)) for c in nulls]
    assert abs(float(np.mean([c.r for c in nulls]))) < 0.1
    # only traits both monitored and measured; co-players never
    assert set(agent_drifts(planted(slope=1.0))["trait"]) == {"cooperativeness"}


def test_the_report_figure_shows_the_monitor_only_when_the_run_has_one() -> None:
    figure = monitor_figure(planted(slope=10.0))
    assert figure is not None and figure.id == "monitor"
    assert "cooperativeness" in str(figure.svg) and len(figure.table.rows) == ROUNDS  # type: ignore[union-attr]
    corr = figure.extra_tables[-1]
    assert corr.columns[1] == "Pearson r" and len(corr.rows) == 1
    bare = planted(slope=1.0)
    bare.monitor = pd.DataFrame()
    assert monitor_figure(bare) is None
