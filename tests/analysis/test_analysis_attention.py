"""The attention table's schema and its aggregation for plots (no model runs here)."""

from __future__ import annotations

import pandas as pd

from contagion.analysis.attention import COLUMNS, SEGMENTS, TABLE_COLUMNS, parquet_schema, system_share_by_length


def test_table_columns_extend_the_per_player_columns() -> None:
    assert TABLE_COLUMNS[-len(COLUMNS):] == COLUMNS
    assert [f"share_{s}" for s in SEGMENTS] == [c for c in TABLE_COLUMNS if c.startswith("share_")]
    schema = parquet_schema()
    assert schema.names == list(TABLE_COLUMNS)
    assert str(schema.field("layer").type) == "int64" and str(schema.field("share_system").type) == "double"
    assert str(schema.field("phase").type) == "string"


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
