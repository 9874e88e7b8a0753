"""The attention table's schema and its aggregation for plots (no model runs here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from contagion.analysis.attention import (
    BASELINE,
    COLUMNS,
    SEGMENTS,
    TABLE_COLUMNS,
    correlations,
    decay_by_agent,
    parquet_schema,
    system_share_by_length,
)


def test_table_columns_extend_the_per_player_columns() -> None:
    assert TABLE_COLUMNS[-len(COLUMNS):] == COLUMNS
    assert [f"share_{s}" for s in SEGMENTS] == [c for c in TABLE_COLUMNS if c.startswith("share_")]
    schema = parquet_schema()
    assert schema.names == list(TABLE_COLUMNS)
    assert str(schema.field("layer").type) == "int64" and str(schema.field("share_system").type) == "double"
    assert str(schema.field("phase").type) == "string"
    assert str(schema.field("baseline_system").type) == "double" and str(schema.field("system_tokens").type) == "int64"


def test_system_share_by_length_bins_every_turn() -> None:
    lengths = [100 + 37 * k for k in range(30)]
    turns = pd.DataFrame({"intervention": ["none", "sit"] * 15, "tokens_so_far": lengths,
                          "share_system": [1.0 / (1 + k) for k in range(30)]})
    binned = system_share_by_length(turns)
    assert binned["n"].sum() == 30  # the shortest and the longest context are in a bin too
    assert binned["tokens"].between(min(lengths), max(lengths)).all()
    assert binned["tokens"].nunique() <= 10 and not binned.isna().any().any()
    exact = system_share_by_length(turns.head(12))
    assert sorted(exact["tokens"]) == sorted(float(x) for x in lengths[:12])
    assert (exact["se"] == 0).all() and (exact["n"] == 1).all()


def test_baseline_is_averaged_beside_the_share() -> None:
    turns = pd.DataFrame({"intervention": ["none"] * 4, "tokens_so_far": [100, 100, 200, 200],
                          "share_system": [0.5, 0.3, 0.2, 0.2], BASELINE: [0.2, 0.2, 0.1, 0.1]})
    out = system_share_by_length(turns).sort_values("tokens")
    assert list(out[BASELINE]) == [0.2, 0.1] and list(out["share_system"]) == [0.4, 0.2]


def test_decay_by_agent_separates_dilution() -> None:
    turns = pd.DataFrame({"game": ["g"] * 3 + ["h"] * 3 + ["k"], "player": ["A"] * 3 + ["B"] * 3 + ["C"],
                          "intervention": ["none"] * 7, "turn": [1, 2, 3, 1, 2, 3, 1],
                          "share_system": [0.5, 0.4, 0.3, 0.5, 0.45, 0.4, 0.9],
                          BASELINE: [0.2, 0.15, 0.1, 0.2, 0.15, 0.1, 0.5]})
    d = decay_by_agent(turns).set_index("player")
    assert list(d.index) == ["A", "B"]  # C has one turn: no decay to measure
    assert d.loc["A", "decay"] == pytest.approx(0.2) and d.loc["A", "decay_beyond_dilution"] == pytest.approx(0.1)
    assert d.loc["B", "decay"] == pytest.approx(0.1) and d.loc["B", "decay_beyond_dilution"] == pytest.approx(0.0)


def test_correlations_have_fisher_intervals() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 0.6 * x + rng.normal(scale=0.8, size=200)
    pearson, spearman = correlations(x, y)
    assert pearson.method == "Pearson" and spearman.method == "Spearman" and pearson.n == 200
    assert pearson.r == pytest.approx(stats.pearsonr(x, y)[0])
    assert pearson.ci_low < pearson.r < pearson.ci_high and spearman.ci_low < spearman.r < spearman.ci_high
    z = math.atanh(pearson.r)
    assert pearson.ci_high == pytest.approx(math.tanh(z + 1.959964 / math.sqrt(197)), rel=1e-5)
    assert spearman.ci_high - spearman.ci_low > 0
    assert pearson.p < 1e-10
    flat = correlations([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert all(math.isnan(c.r) for c in flat)


def test_report_section_relates_decay_to_drift(sim_run_dir: Path, tmp_path: Path) -> None:
    from contagion.analysis.report_figures import attention_figure
    from contagion.analysis.tables import load_tables
    from contagion.experiment.rundir import RunDir

    tables = load_tables(sim_run_dir)
    agents = tables.agents.drop_duplicates(["game_id", "player"]).head(12)
    rows = []
    for k, a in enumerate(agents.itertuples()):
        for turn in (1, 2, 3):
            tokens = 100 * turn
            rows.append({"game": a.game_id, "player": a.player, "intervention": a.intervention, "turn": turn,
                         "layer": 0, "tokens_so_far": tokens, "system_tokens": 20, BASELINE: 20 / tokens,
                         "share_system": 0.5 - 0.05 * turn * (1 + k % 3)})
    path = RunDir(tmp_path).attention_csv
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    fig, note = attention_figure(tmp_path, tables)
    assert fig is not None and note == ""
    assert "dilution baseline" in fig.table.columns and "dilution baseline" in fig.caption  # type: ignore[union-attr]
    assert str(fig.svg).count("<svg") == 2  # the lines with their baselines, and the decay-drift scatter
    (corr,) = fig.extra_tables
    methods = {r[1] for r in corr.rows}
    assert methods == {"Pearson", "Spearman"} and {r[-1] for r in corr.rows} == {str(len(agents))}
    fig_old, _ = attention_figure(tmp_path)  # without tables: no drift relation
    assert fig_old is not None and not fig_old.extra_tables
