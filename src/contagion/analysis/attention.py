"""The attention table: its columns, its Parquet types, and how it is aggregated for plots.

``contagion attention`` (:mod:`contagion.whitebox.attention`, which runs the white-box model) writes
the table; the HTML report and the PNG plot read it. Each message of a player's history belongs to one
segment (:data:`SEGMENTS`), and each row holds the share of attention paid to every segment by the
position that produces the player's next reply, in one layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SYSTEM = "system"
INJECTION = "injection"
OTHERS = "others"
OBSERVATION = "observation"
OWN = "own"
OTHER_PROMPTS = "other_prompts"
TEMPLATE = "template"
"""The chat-format tokens between message contents (the label the white-box backend gives them)."""

SEGMENTS = (SYSTEM, INJECTION, OTHERS, OBSERVATION, OWN, OTHER_PROMPTS, TEMPLATE)
"""Every segment, in column order; ``template`` is the chat-format tokens between message contents."""

COLUMNS = ("turn", "message_index", "tokens_so_far", "layer", *(f"share_{s}" for s in SEGMENTS))
"""Columns of one player's rows: ``turn`` (1-based), ``message_index`` (index of the assistant message),
``tokens_so_far`` (prompt tokens), ``layer`` (0-based) and one ``share_*`` per segment (they sum to 1)."""

TABLE_COLUMNS = (
    "game", "player", "persona", "player_backend", "intervention", "composition", "attention_model",
    "round", "phase", *COLUMNS,
)
"""Columns of ``attention.csv`` / ``attention.parquet``, one row per (game, player, turn, layer):

``game`` the spec hash; ``player`` its name in the game; ``persona`` and ``player_backend`` who played
the seat; ``intervention`` (``record.spec.intervention.label()``) and ``composition`` (the run's
label, empty for a single game) the condition; ``attention_model`` the white-box model that replayed
the history; ``round`` (1-based, from the assistant message's meta) and ``phase`` (``talk`` / ``act``)
of the turn; then :data:`COLUMNS`.
"""

INT_COLUMNS = ("round", "turn", "message_index", "tokens_so_far", "layer")
"""Integer columns; ``share_*`` columns are floats, the others strings."""


def parquet_schema() -> Any:
    """The Arrow schema of ``attention.parquet`` (:data:`TABLE_COLUMNS` with their types)."""
    import pyarrow as pa

    def kind(column: str) -> Any:
        if column.startswith("share_"):
            return pa.float64()
        return pa.int64() if column in INT_COLUMNS else pa.string()

    return pa.schema([(c, kind(c)) for c in TABLE_COLUMNS])


def system_share_by_length(turn_means: pd.DataFrame, *, max_exact: int = 12, bins: int = 10) -> pd.DataFrame:
    """Mean share of attention to the system prompt by intervention and context length.

    ``turn_means`` has one row per turn (``intervention``, ``tokens_so_far``, ``share_system`` already
    averaged over layers). Lengths are used as they are when there are at most ``max_exact`` distinct
    values, else grouped into ``bins`` equal-width bins (``tokens`` is the bin centre). Returns
    ``intervention``, ``tokens``, ``share_system``, ``se`` (standard error over turns; 0 for one
    turn) and ``n`` (turns).
    """
    import numpy as np

    df = turn_means.copy()
    tokens = df["tokens_so_far"].to_numpy(dtype=float)
    if len(np.unique(tokens)) <= max_exact:
        df["tokens"] = tokens
    else:
        edges = np.linspace(tokens.min(), tokens.max(), bins + 1)
        # bins are closed on the left, the last one on both sides: every length falls in one
        index = np.clip(np.searchsorted(edges, tokens, side="right") - 1, 0, bins - 1)
        df["tokens"] = (edges[index] + edges[index + 1]) / 2
    out = (
        df.groupby(["intervention", "tokens"], observed=True)
        .agg(share_system=("share_system", "mean"), sd=("share_system", "std"), n=("share_system", "size"))
        .reset_index()
    )
    out["se"] = (out["sd"] / out["n"].pow(0.5)).fillna(0.0)
    return out.drop(columns="sd")
